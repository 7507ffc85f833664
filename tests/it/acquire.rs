//! Acquire, part 1 (capture, protect, snapshot, isolate, share, seal): against the
//! in-memory fake world (a crash after every call, throttling) and against the lab
//! (the binary, end to end).

mod clean_room;
mod fake;
mod lab;
mod launched_by;
