//! cleanroom: preserve a compromised EC2 instance as court-ready evidence.
//!
//! The pipeline, in the order of volatility (RFC 3227): preflight, capture, protect,
//! snapshot, isolate, share, analyze, collect, seal, verify. Stages talk to narrow
//! traits in domain types; [`aws`] holds the only code that knows the SDK.

pub mod aws;
pub mod cli;
pub mod config;
pub mod error;
pub mod ids;
pub mod lab;
pub mod progress;
