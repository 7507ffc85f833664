//! cleanroom: preserve a compromised EC2 instance as court-ready evidence.
//!
//! The pipeline, in the order of volatility (RFC 3227), is held in [`pipeline`]:
//! [`capture`], [`protect`], snapshot, [`isolate`], share, analyze, collect, seal; then,
//! at any later time, [`verify`], [`report`] and [`release`]. Stages talk to the narrow
//! traits of [`cloud`] in domain types; [`aws`] holds the only code that knows the SDK.

pub mod aws;
pub mod capture;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod error;
pub mod evidence;
pub mod fake;
pub mod ids;
pub mod isolate;

pub mod lab;
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
pub mod text;
pub mod verify;
