//! (lab tests: next)
