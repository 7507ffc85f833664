//! Containment: `cleanroom isolate` (protect, detach from the service, cut network and
//! credentials, prove it held) for one instance or a fleet.
pub mod cloud;
pub mod custody;
pub mod network;
pub mod plan;
pub mod verify;
pub mod workflow;
