//! Protect: keep the evidence alive whoever terminates or shuts down the instance:
//! termination protection, shutdown behaviour `stop`, DeleteOnTermination=false on every
//! attached volume, and the case tags. Only what the plan says is missing is changed.
//! The isolate stage includes it (containment alone protects too); acquire runs it on
//! its own before the snapshots.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::cloud::{Attributes, Call, Cloud, Instance, TAG_CASE, TAG_CONTAINED, retry};
use crate::ids::{CaseId, InstanceId};
use crate::pipeline::custody::{Action, Event};
use crate::pipeline::{Check, Run, Stage, StageWork, TargetState, for_each_live};

/// What must change to protect one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProtectPlan {
    pub termination_protection: bool,
    pub shutdown_stop: bool,
    /// Devices whose DeleteOnTermination must become false.
    pub keep_volumes: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

impl ProtectPlan {
    /// Decides from what the instance is now.
    pub fn decide(case: &CaseId, instance: &Instance, attributes: &Attributes) -> Self {
        let mut plan = ProtectPlan {
            termination_protection: !attributes.termination_protection,
            shutdown_stop: attributes.shutdown_behavior != "stop",
            keep_volumes: instance
                .volumes
                .iter()
                .filter(|v| v.delete_on_termination)
                .map(|v| v.device.clone())
                .collect(),
            tags: BTreeMap::new(),
        };
        for (k, v) in [(TAG_CASE, case.as_str()), (TAG_CONTAINED, "true")] {
            if instance.tags.get(k).map(String::as_str) != Some(v) {
                plan.tags.insert(k.to_owned(), v.to_owned());
            }
        }
        plan
    }

    pub fn is_empty(&self) -> bool {
        *self == ProtectPlan::default()
    }

    /// The API calls, for `--plan`.
    pub fn api_calls(&self, instance: &str) -> Vec<String> {
        let mut calls = Vec::new();
        if self.termination_protection {
            calls.push(format!(
                "ec2:ModifyInstanceAttribute InstanceId={instance} DisableApiTermination=true"
            ));
        }
        if self.shutdown_stop {
            calls.push(format!(
                "ec2:ModifyInstanceAttribute InstanceId={instance} InstanceInitiatedShutdownBehavior=stop"
            ));
        }
        if !self.keep_volumes.is_empty() {
            calls.push(format!(
                "ec2:ModifyInstanceAttribute InstanceId={instance} BlockDeviceMappings DeleteOnTermination=false: {}",
                self.keep_volumes.join(", ")
            ));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            calls.push(format!("ec2:CreateTags {instance} {}", tags.join(" ")));
        }
        calls
    }
}

/// One protect call that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: {source}")]
pub struct ProtectError {
    pub what: &'static str,
    pub source: crate::cloud::CloudError,
}

/// Applies `plan`, all calls at once. Returns the calls made and every failure.
pub async fn apply(cloud: &dyn Cloud, id: &InstanceId, plan: &ProtectPlan) -> (Vec<Call>, Vec<String>) {
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
            Some(Err(source)) => errors.push(ProtectError { what, source }.to_string()),
            None => {}
        }
    }
    (calls, errors)
}

async fn read(
    cloud: &dyn Cloud,
    id: &InstanceId,
) -> Result<(Instance, Attributes), crate::cloud::CloudError> {
    let (instance, attributes) =
        futures::join!(retry(|| cloud.describe_instance(id)), retry(|| cloud.attributes(id)));
    let instance = instance?.ok_or_else(|| {
        crate::cloud::CloudError::new(
            "ec2",
            "DescribeInstances",
            crate::cloud::ErrorKind::NotFound,
            format!("{id} is gone"),
        )
    })?;
    Ok((instance, attributes?))
}

/// The protect stage of acquire.
pub struct ProtectStage;

#[async_trait]
impl StageWork for ProtectStage {
    fn stage(&self) -> Stage {
        Stage::Protect
    }

    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String> {
        match read(state.target.side.cloud.as_ref(), &state.target.id).await {
            Ok((i, a)) => {
                let calls = ProtectPlan::decide(&run.case, &i, &a).api_calls(state.target.id.as_str());
                if calls.is_empty() { vec!["already protected: nothing to change".into()] } else { calls }
            }
            Err(e) => vec![format!("cannot read the instance: {e}")],
        }
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        for_each_live(run, targets, |run, t| Box::pin(protect_one(run, t))).await;
    }

    async fn check(&self, run: &Run, state: &TargetState) -> Vec<Check> {
        match read(state.target.side.cloud.as_ref(), &state.target.id).await {
            Ok((i, a)) => {
                let left = ProtectPlan::decide(&run.case, &i, &a);
                vec![Check::new(
                    "protected",
                    !left.termination_protection && !left.shutdown_stop && left.keep_volumes.is_empty(),
                    if left.is_empty() {
                        "termination protection, stop on shutdown, volumes kept".into()
                    } else {
                        format!("missing: {left:?}")
                    },
                )]
            }
            Err(e) => vec![Check::new("protected", false, format!("cannot read the instance: {e}"))],
        }
    }
}

async fn protect_one(run: &Run, t: &mut TargetState) {
    let cloud = t.target.side.cloud.clone();
    let id = t.target.id.clone();
    run.reporter.step(id.as_str(), "protecting");
    let (instance, attributes) = match read(cloud.as_ref(), &id).await {
        Ok(r) => r,
        Err(e) => return t.fail(Stage::Protect, e),
    };
    let plan = ProtectPlan::decide(&run.case, &instance, &attributes);
    if plan.is_empty() {
        return;
    }
    let (calls, errors) = apply(cloud.as_ref(), &id, &plan).await;
    let details = serde_json::json!({
        "plan": plan, "calls": calls.iter().map(|c| c.operation.clone()).collect::<Vec<_>>(), "errors": errors,
        "step": "protect",
    });
    let event = Event {
        action: if errors.is_empty() { Action::InstanceProtected } else { Action::ContainmentFailed },
        subject: t.target.arn(),
        evidence: vec![],
        aws_request_ids: calls.iter().filter_map(|c| c.request_id.clone()).collect(),
        details,
    };
    if let Err(e) = run.custody.record(event).await {
        return t.fail(Stage::Protect, e);
    }
    if !errors.is_empty() {
        t.fail(Stage::Protect, format!("protect: {}", errors.join("; ")));
    }
}
