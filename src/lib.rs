//! cleanroom: preserve a compromised EC2 instance as court-ready evidence.
//!
//! The pipeline, in the order of volatility (RFC 3227): preflight, capture, protect,
//! snapshot, isolate, share, analyze, collect, seal, verify. Stages talk to narrow
//! traits in domain types; [`aws`] holds the only code that knows the SDK.

pub mod aws;
pub mod capture;
pub mod cli;
pub mod config;
pub mod error;
pub mod evidence;
pub mod fake;
pub mod ids;
pub mod isolate;
pub mod lab;
pub mod preflight;
pub mod progress;
pub mod protect;
pub mod release;
pub mod report;
pub mod text;
pub mod verify;
