//! Containment: `cleanroom isolate` and the isolate stage of acquire (protect, detach
//! from the service, cut network and credentials, prove it held) for one instance or a
//! fleet. `observe` reads the state containment changes, before it changes it.
pub mod network;
pub mod observe;
pub mod plan;
pub mod stage;
pub mod verify;
pub mod workflow;
