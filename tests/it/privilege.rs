//! Least privilege, proven (issue "Trust" 2, 8, 9, 10, 11, 12): the templates grant each
//! role exactly the calls the code makes (`templates`, derived from the code by
//! `calls`); the binary runs isolate, verify, report and acquire through those roles
//! alone in a lab that evaluates IAM (`enforced`); preflight's DryRun probes find a
//! missing permission there; no log level prints a credential and no secret in an error
//! reaches a custody record (`secrets`).

mod calls;
mod enforced;
mod secrets;
mod support;
mod templates;
