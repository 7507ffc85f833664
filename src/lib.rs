//! cleanroom: preserve a compromised EC2 instance as court-ready evidence.
//!
//! The pipeline, in the order of volatility (RFC 3227), is held in [`pipeline`]:
//! [`capture`], [`protect`], snapshot, [`isolate`], share, analyze, collect, seal; then,
//! at any later time, [`verify`], [`report`] and [`release`]. Stages talk to the narrow
//! traits of [`cloud`] in domain types; [`aws`] holds the only code that knows the SDK.

pub mod analyze;
pub mod aws;
pub mod capture;
pub mod cli;
pub mod cloud;
pub mod collect;
pub mod config;
pub mod error;
pub mod evidence;
/// In-memory fakes behind the cloud and store traits, with fault injection.
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
pub mod ids;
pub mod isolate;

/// The local lab: launcher and seeding, for the drill (and, with `test-support`, tests).
#[cfg(feature = "test-support")]
pub mod lab;
#[cfg(not(feature = "test-support"))]
#[allow(dead_code)]
pub(crate) mod lab;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod protect;
pub mod redact;
pub mod release;
pub mod report;
pub mod seal;
pub mod share;
pub mod snapshot;
pub mod teardown;
pub mod text;
pub mod verify;
