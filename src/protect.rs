//! Protect: keep the evidence alive whoever terminates or shuts down the instance:
//! termination protection, shutdown behaviour `stop`, DeleteOnTermination=false on every
//! attached volume, and the case tags. Only what the plan says is missing is changed.

use crate::ids::InstanceId;
use crate::isolate::cloud::{Call, Cloud};
use crate::isolate::network::retry;
use crate::isolate::plan::Plan;

/// Applies the protect part of `plan`, all calls at once. Returns the calls made and
/// every failure (as text, for the outcome and the custody record).
pub async fn protect(cloud: &dyn Cloud, id: &InstanceId, plan: &Plan) -> (Vec<Call>, Vec<String>) {
    let devices: Vec<(String, bool)> = plan.keep_volumes.iter().map(|d| (d.clone(), false)).collect();
    let (term, shut, vols, tags) = futures::join!(
        async {
            if plan.termination_protection {
                Some(retry(|| cloud.set_termination_protection(id, true)).await)
            } else {
                None
            }
        },
        async {
            if plan.shutdown_stop {
                Some(retry(|| cloud.set_shutdown_behavior(id, "stop")).await)
            } else {
                None
            }
        },
        async {
            if devices.is_empty() {
                None
            } else {
                Some(retry(|| cloud.set_delete_on_termination(id, &devices)).await)
            }
        },
        async {
            if plan.tags.is_empty() { None } else { Some(retry(|| cloud.create_tags(id, &plan.tags)).await) }
        },
    );
    let mut calls = Vec::new();
    let mut errors = Vec::new();
    for (what, r) in [
        ("termination protection", term),
        ("shutdown behaviour", shut),
        ("DeleteOnTermination", vols),
        ("case tags", tags),
    ] {
        match r {
            Some(Ok(c)) => calls.push(c),
            Some(Err(e)) => errors.push(format!("{what}: {e}")),
            None => {}
        }
    }
    (calls, errors)
}
