//! In-memory fakes behind the same traits as the AWS adapters, with fault injection
//! for what no emulator produces: throttling, partial failure, a crash between calls.
//! Tests use them beside the lab; neither replaces the other.

pub mod accounts;
pub mod cloud;
pub mod custody;
pub mod signer;
pub mod store;
pub mod world;
