//! The one public error type the binary sees, and how it maps to exit codes.
//!
//! Every module keeps its own error enum; `From` impls here decide, once, whether a
//! module's failure is the user's input (exit 2, nothing was changed) or a failure of
//! the run (exit 1, state recorded, rerun resumes).

use std::fmt;

/// Exit codes of the command-line contract (PRODUCT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Done: exit 0.
    Done = 0,
    /// Failed: exit 1. State is recorded and a rerun resumes.
    Failed = 1,
    /// Bad input or preflight refused: exit 2. Nothing was changed.
    Refused = 2,
}

/// An error with the exit kind it implies.
pub struct Error {
    kind: ExitKind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl Error {
    /// The user's input or the environment is wrong; nothing was changed.
    pub fn refused(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { kind: ExitKind::Refused, source: source.into() }
    }

    /// The run failed part way; what was done is recorded.
    pub fn failed(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self { kind: ExitKind::Failed, source: source.into() }
    }

    pub fn kind(&self) -> ExitKind {
        self.kind
    }

    /// The source error, for tests that check which failure it was.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.kind, self.source)
    }
}

/// Displays the whole cause chain, one cause per line, so the user sees the AWS error
/// code under the high-level message.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        let mut cause = self.source.source();
        while let Some(c) = cause {
            write!(f, "\n  caused by: {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl From<crate::ids::InvalidId> for Error {
    fn from(e: crate::ids::InvalidId) -> Self {
        Error::refused(e)
    }
}

impl From<crate::config::ConfigError> for Error {
    fn from(e: crate::config::ConfigError) -> Self {
        Error::refused(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
