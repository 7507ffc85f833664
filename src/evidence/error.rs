//! What can go wrong in the evidence layer, with the facts as fields.

use std::path::PathBuf;

use super::custody::ChainFinding;
use super::store::StoreError;
use crate::text::sanitize;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    #[error("evidence item {id:?}: {field} {problem}")]
    InvalidItem { id: String, field: &'static str, problem: String },
    #[error("{what}: {source}")]
    Store { what: String, source: StoreError },
    #[error(
        "read-back of {key} (version {}) does not match what was written: expected {expected}, read {found}",
        version_id.as_deref().unwrap_or("none")
    )]
    ReadBackMismatch { key: String, version_id: Option<String>, expected: String, found: String },
    #[error("S3 stored checksum {stored} for {key}, but we sent {sent}")]
    ChecksumMismatch { key: String, sent: String, stored: String },
    #[error(
        "evidence item {id:?}: {key} already holds different bytes ({existing}, new {new}); refusing to add a second version\nfix: store it under another name, or investigate who wrote {key}"
    )]
    Conflict { id: String, key: String, existing: String, new: String },
    #[error("the custody chain of case {case} is broken; refusing to append to it:\n{}", findings.iter().map(|f| format!("  {}: {}", sanitize(&f.key), sanitize(&f.problem))).collect::<Vec<_>>().join("\n"))]
    ChainBroken { case: String, findings: Vec<ChainFinding> },
    #[error(
        "custody record {seq} of case {case} is not authenticated by {key}: {}\nrefusing to append to (or sign) a chain that does not verify\nfix: run `cleanroom verify --case {case}` and find out who wrote record {seq}",
        sanitize(reason)
    )]
    Unauthenticated { case: String, seq: u64, key: String, reason: String },
    #[error(
        "custody record {seq} of case {case} is signed (by {}), but this run has no signing key: its records would not be authenticated\nfix: set forensics.signing_key_arn in the configuration to the case's signing key",
        sanitize(key_id)
    )]
    SigningKeyRequired { case: String, seq: u64, key_id: String },
    #[error("custody record {seq} of case {case} would be {size} bytes; a record holds at most {max}")]
    RecordTooLarge { case: String, seq: u64, size: usize, max: usize },
    #[error(
        "custody record {seq} of case {case} was written by another process {attempts} times in a row; giving up"
    )]
    ChainContended { case: String, seq: u64, attempts: u32 },
    #[error(
        "custody records of case {case} were not written:\n{}\nfix: the changes they describe were made; rerun the command: it reads the state again and records it",
        failures.iter().map(|f| format!("  {}", sanitize(f))).collect::<Vec<_>>().join("\n")
    )]
    RecordsNotWritten { case: String, failures: Vec<String> },
    #[error(
        "no case {case} in {location}\nfix: check the case id (`cleanroom cases` lists them) and the evidence bucket in the configuration"
    )]
    CaseMissing { case: String, location: String },
    #[error("case {case}: {} is not a valid {what}: {}", sanitize(key), sanitize(problem))]
    Corrupt { case: String, key: String, what: &'static str, problem: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("signing with {key} failed: {message}")]
    Signing { key: String, message: String },
    #[error("{path} is {size} bytes; S3 allows at most {max} bytes in one object")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("the upload of {key} was interrupted: {message}")]
    Interrupted { key: String, message: String },
}

impl EvidenceError {
    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(StoreError) -> Self {
        let what = what.into();
        move |source| EvidenceError::Store { what, source }
    }

    /// True when the user's input is at fault (exit 2, nothing changed).
    pub fn is_refusal(&self) -> bool {
        match self {
            EvidenceError::InvalidItem { .. }
            | EvidenceError::CaseMissing { .. }
            | EvidenceError::SigningKeyRequired { .. }
            | EvidenceError::TooLarge { .. } => true,
            EvidenceError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

impl From<EvidenceError> for crate::error::Error {
    fn from(e: EvidenceError) -> Self {
        if e.is_refusal() { crate::error::Error::refused(e) } else { crate::error::Error::failed(e) }
    }
}
