//! The integration tests: one binary, so one lab serves them all. Each test works in
//! accounts of its own, so tests run in parallel without sharing state.

mod support;

mod acquire;
mod cli;
mod collect;
mod containment;
mod drill;
mod evidence;
mod preflight;
mod privilege;
mod report;
