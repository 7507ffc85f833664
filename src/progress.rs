//! How the library tells a person what it is doing. Only the binary knows indicatif;
//! stages call this trait, tests use [`Silent`] or [`Recorded`].

use std::sync::Mutex;

/// Progress of long work, for a human on stderr. Never carries results: those go to
/// stdout from the command, and to the custody log.
pub trait Reporter: Send + Sync {
    /// A step of `scope` (an instance id, a case, an object key) started.
    fn step(&self, scope: &str, message: &str);
    /// A step of `scope` finished.
    fn done(&self, scope: &str, message: &str);
    /// Something the user must know that does not stop the work.
    fn warn(&self, scope: &str, message: &str);
    /// Bytes moved so far in a transfer of `scope`.
    fn bytes(&self, _scope: &str, _done: u64, _total: Option<u64>) {}
    /// Percent done of `scope` (a snapshot, a copy), as AWS reports it.
    fn percent(&self, _scope: &str, _percent: u8) {}
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _: &str, _: &str) {}
    fn done(&self, _: &str, _: &str) {}
    fn warn(&self, _: &str, _: &str) {}
}

/// Keeps every report, so tests can assert on what a user would have been told.
#[derive(Default)]
pub struct Recorded {
    pub lines: Mutex<Vec<String>>,
}

impl Recorded {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("reporter lock").clone()
    }
}

impl Reporter for Recorded {
    fn step(&self, scope: &str, message: &str) {
        self.lines.lock().expect("reporter lock").push(format!("step {scope}: {message}"));
    }
    fn done(&self, scope: &str, message: &str) {
        self.lines.lock().expect("reporter lock").push(format!("done {scope}: {message}"));
    }
    fn warn(&self, scope: &str, message: &str) {
        self.lines.lock().expect("reporter lock").push(format!("warn {scope}: {message}"));
    }
}
