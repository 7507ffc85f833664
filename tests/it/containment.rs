//! Containment (`cleanroom isolate` and `cleanroom release`), issue 5: against the
//! in-memory fake cloud (faults no emulator produces) and against the lab (the binary,
//! end to end).

mod fake;
mod lab;
mod offline;
mod trust;
