//! Release: undo containment of one instance, restoring exactly the state recorded
//! before the first change (security groups per ENI, instance profile, Auto Scaling
//! membership, target groups with their ports, classic load balancers, termination
//! protection, shutdown behaviour, DeleteOnTermination per volume), and removing the
//! inline deny from the role. The decision is pure ([`restore_plan`]); the change is
//! recorded in custody with its request ids, then re-read and proved ([`release_checks`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cloud::retry;
use crate::cloud::{Call, Cloud, TAG_CONTAINED, Target};
use crate::ids::{CaseId, InstanceId, NetworkInterfaceId, SecurityGroupId};
use crate::isolate::observe::{ObserveError, Observed, PriorState, instance_arn, observe, prior_state_item};
use crate::isolate::plan::deny_policy_name;
use crate::isolate::verify::Check;
use crate::isolate::workflow::Scope;
use crate::pipeline::custody::{Action, CustodySink, Event};

/// What must change to give the instance back its prior state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub enis: Vec<(NetworkInterfaceId, Vec<SecurityGroupId>)>,
    /// ENIs of the prior state no longer attached (reported, not restorable).
    pub missing_enis: Vec<NetworkInterfaceId>,
    pub associate_profile: Option<String>,
    pub remove_deny: Vec<String>,
    pub attach_asg: Option<String>,
    pub register: Vec<Target>,
    pub classic: Vec<String>,
    pub termination_protection: Option<bool>,
    pub shutdown_behavior: Option<String>,
    pub delete_on_termination: Vec<(String, bool)>,
}

impl RestorePlan {
    pub fn is_empty(&self) -> bool {
        *self == RestorePlan { missing_enis: self.missing_enis.clone(), ..RestorePlan::default() }
    }

    /// The API calls, for the confirmation prompt and `--plan`.
    pub fn api_calls(&self, id: &InstanceId, case: &CaseId) -> Vec<String> {
        let mut c = Vec::new();
        for (eni, groups) in &self.enis {
            c.push(format!(
                "ec2:ModifyNetworkInterfaceAttribute {eni} Groups=[{}]",
                groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",")
            ));
        }
        if let Some(p) = &self.associate_profile {
            c.push(format!("ec2:AssociateIamInstanceProfile {id} {p}"));
        }
        for r in &self.remove_deny {
            c.push(format!("iam:DeleteRolePolicy RoleName={r} PolicyName={}", deny_policy_name(case)));
        }
        if let Some(g) = &self.attach_asg {
            c.push(format!("autoscaling:AttachInstances {g} {id} (raises desired capacity by one)"));
        }
        for t in &self.register {
            c.push(format!(
                "elbv2:RegisterTargets {} Id={id}{}",
                t.target_group_arn,
                t.port.map(|p| format!(" Port={p}")).unwrap_or_default()
            ));
        }
        for lb in &self.classic {
            c.push(format!("elb:RegisterInstancesWithLoadBalancer {lb} {id}"));
        }
        if let Some(t) = self.termination_protection {
            c.push(format!("ec2:ModifyInstanceAttribute {id} DisableApiTermination={t}"));
        }
        if let Some(s) = &self.shutdown_behavior {
            c.push(format!("ec2:ModifyInstanceAttribute {id} InstanceInitiatedShutdownBehavior={s}"));
        }
        if !self.delete_on_termination.is_empty() {
            c.push(format!(
                "ec2:ModifyInstanceAttribute {id} BlockDeviceMappings {:?}",
                self.delete_on_termination
            ));
        }
        c.push(format!("ec2:CreateTags {id} {TAG_CONTAINED}=released"));
        c
    }
}

/// Decides what to restore from the recorded prior state and what is there now.
pub fn restore_plan(prior: &PriorState, now: &Observed, denied: &BTreeSet<String>) -> RestorePlan {
    let mut plan = RestorePlan::default();
    for eni in &prior.enis {
        match now.instance.enis.iter().find(|e| e.id == eni.id) {
            Some(cur) if cur.groups != eni.groups => plan.enis.push((eni.id.clone(), eni.groups.clone())),
            Some(_) => {}
            None => plan.missing_enis.push(eni.id.clone()),
        }
    }
    if let Some(p) = &prior.profile {
        if now.profile.as_ref().is_none_or(|c| c.state == "disassociating" || c.state == "disassociated") {
            plan.associate_profile = Some(p.profile_arn.clone());
        }
    }
    plan.remove_deny = prior.profile_roles.iter().filter(|r| denied.contains(*r)).cloned().collect();
    if let Some(g) = &prior.auto_scaling_group {
        if now.asg.as_ref().map(|a| &a.name) != Some(&g.name) {
            plan.attach_asg = Some(g.name.clone());
        }
    }
    plan.register = prior.target_groups.iter().filter(|t| !now.targets.contains(t)).cloned().collect();
    plan.classic =
        prior.classic_load_balancers.iter().filter(|l| !now.classic.contains(l)).cloned().collect();
    if now.attributes.termination_protection != prior.termination_protection {
        plan.termination_protection = Some(prior.termination_protection);
    }
    if now.attributes.shutdown_behavior != prior.shutdown_behavior {
        plan.shutdown_behavior = Some(prior.shutdown_behavior.clone());
    }
    let current: BTreeMap<&str, bool> =
        now.instance.volumes.iter().map(|v| (v.device.as_str(), v.delete_on_termination)).collect();
    for v in &prior.volumes {
        if current.get(v.device.as_str()).is_some_and(|c| *c != v.delete_on_termination) {
            plan.delete_on_termination.push((v.device.clone(), v.delete_on_termination));
        }
    }
    plan
}

/// Whether the prior state is back, control by control.
pub fn release_checks(prior: &PriorState, now: &Observed, denied: &BTreeSet<String>) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut add = |control: String, ok: bool, detail: String| checks.push(Check { control, ok, detail });
    for eni in &prior.enis {
        let cur = now.instance.enis.iter().find(|e| e.id == eni.id);
        let show = |g: &[SecurityGroupId]| g.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        add(
            format!("network {}", eni.id),
            cur.is_some_and(|c| c.groups == eni.groups),
            match cur {
                Some(c) => format!("groups [{}] (prior [{}])", show(&c.groups), show(&eni.groups)),
                None => "no longer attached".into(),
            },
        );
    }
    let prior_profile = prior.profile.as_ref().map(|p| p.profile_arn.clone());
    let now_profile = now
        .profile
        .as_ref()
        .filter(|p| p.state != "disassociating" && p.state != "disassociated")
        .map(|p| p.profile_arn.clone());
    add(
        "instance profile".into(),
        prior_profile == now_profile,
        now_profile.as_deref().unwrap_or("none").to_owned(),
    );
    for r in &prior.profile_roles {
        add(
            format!("role {r} deny removed"),
            !denied.contains(r),
            if denied.contains(r) { "deny still present".into() } else { "no deny".into() },
        );
    }
    let prior_asg = prior.auto_scaling_group.as_ref().map(|g| g.name.clone());
    let now_asg = now.asg.as_ref().map(|g| g.name.clone());
    add(
        "auto scaling".into(),
        prior_asg == now_asg,
        now_asg.as_deref().unwrap_or("not in a group").to_owned(),
    );
    let missing: Vec<&Target> = prior.target_groups.iter().filter(|t| !now.targets.contains(t)).collect();
    add(
        "target groups".into(),
        missing.is_empty(),
        format!(
            "{} of {} registrations back",
            prior.target_groups.len() - missing.len(),
            prior.target_groups.len()
        ),
    );
    let missing_lb: Vec<&String> =
        prior.classic_load_balancers.iter().filter(|l| !now.classic.contains(l)).collect();
    add(
        "classic load balancers".into(),
        missing_lb.is_empty(),
        format!(
            "{} of {} back",
            prior.classic_load_balancers.len() - missing_lb.len(),
            prior.classic_load_balancers.len()
        ),
    );
    add(
        "termination protection".into(),
        now.attributes.termination_protection == prior.termination_protection,
        format!("{} (prior {})", now.attributes.termination_protection, prior.termination_protection),
    );
    add(
        "shutdown behaviour".into(),
        now.attributes.shutdown_behavior == prior.shutdown_behavior,
        format!("{} (prior {})", now.attributes.shutdown_behavior, prior.shutdown_behavior),
    );
    let current: BTreeMap<&str, bool> =
        now.instance.volumes.iter().map(|v| (v.device.as_str(), v.delete_on_termination)).collect();
    let wrong: Vec<&str> = prior
        .volumes
        .iter()
        .filter(|v| current.get(v.device.as_str()).is_some_and(|c| *c != v.delete_on_termination))
        .map(|v| v.device.as_str())
        .collect();
    add(
        "DeleteOnTermination".into(),
        wrong.is_empty(),
        if wrong.is_empty() { "as before".into() } else { format!("differs: {}", wrong.join(", ")) },
    );
    checks
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "case {case} holds no containment record for {instance} (evidence item {item}): nothing to restore"
    )]
    NothingRecorded { case: String, instance: String, item: String },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// What release found and would do, before the confirmation.
pub struct Pending {
    pub prior: PriorState,
    pub now: Observed,
    pub denied: BTreeSet<String>,
    pub plan: RestorePlan,
}

#[derive(Debug, Clone, Serialize)]
pub struct Released {
    pub instance: String,
    pub ok: bool,
    pub checks: Vec<Check>,
    pub errors: Vec<String>,
    pub aws_request_ids: Vec<String>,
}

async fn denied_roles(
    cloud: &dyn Cloud,
    case: &CaseId,
    roles: &[String],
) -> Result<BTreeSet<String>, String> {
    let name = deny_policy_name(case);
    let mut out = BTreeSet::new();
    let found = futures::future::join_all(roles.iter().map(|r| retry(|| cloud.role_policy(r, &name)))).await;
    for (r, f) in roles.iter().zip(found) {
        if f.map_err(|e| e.to_string())?.is_some() {
            out.insert(r.clone());
        }
    }
    Ok(out)
}

async fn read(
    case: &CaseId,
    scope: &Scope,
    id: &InstanceId,
    prior: &PriorState,
) -> Result<(Observed, BTreeSet<String>), ReleaseError> {
    let cloud = scope.cloud.as_ref();
    let tgs: Vec<String> = prior.target_groups.iter().map(|t| t.target_group_arn.clone()).collect();
    let (now, denied) = futures::join!(
        observe(cloud, &scope.account, &scope.region, id, &tgs, !prior.classic_load_balancers.is_empty()),
        denied_roles(cloud, case, &prior.profile_roles)
    );
    let now = now.map_err(|e| match e {
        ObserveError::Aws(e) => ReleaseError::Failed(e.to_string()),
        other => ReleaseError::Refused(other.to_string()),
    })?;
    Ok((now, denied.map_err(ReleaseError::Failed)?))
}

/// Reads the recorded prior state and the current state, and decides the restore.
pub async fn prepare(
    case: &CaseId,
    scope: &Scope,
    id: &InstanceId,
    custody: &dyn CustodySink,
) -> Result<Pending, ReleaseError> {
    let item = prior_state_item(&scope.account, id);
    let (_, value) =
        custody.load_json(&item).await.map_err(|e| ReleaseError::Failed(e.to_string()))?.ok_or_else(
            || ReleaseError::NothingRecorded {
                case: case.to_string(),
                instance: id.to_string(),
                item: item.clone(),
            },
        )?;
    let prior: PriorState = serde_json::from_value(value)
        .map_err(|e| ReleaseError::Failed(format!("stored prior state is unreadable: {e}")))?;
    let (now, denied) = read(case, scope, id, &prior).await?;
    let plan = restore_plan(&prior, &now, &denied);
    Ok(Pending { prior, now, denied, plan })
}

/// Applies the restore (every call at once), records it, re-reads and proves it.
pub async fn apply(
    case: &CaseId,
    scope: &Scope,
    id: &InstanceId,
    pending: Pending,
    custody: &dyn CustodySink,
) -> Released {
    let cloud = scope.cloud.as_ref();
    let plan = &pending.plan;
    let policy = deny_policy_name(case);
    let mut tags = BTreeMap::new();
    tags.insert(TAG_CONTAINED.to_owned(), "released".to_owned());
    let enis = futures::future::join_all(plan.enis.iter().map(|(eni, groups)| async move {
        retry(|| cloud.set_eni_groups(eni, groups)).await.map_err(|e| format!("{eni}: {e}"))
    }));
    let profile = async {
        match &plan.associate_profile {
            Some(p) => vec![
                retry(|| cloud.associate_profile(id, p)).await.map_err(|e| format!("instance profile: {e}")),
            ],
            None => vec![],
        }
    };
    let deny =
        futures::future::join_all(plan.remove_deny.iter().map(|r| {
            let policy = &policy;
            async move {
                retry(|| cloud.delete_role_policy(r, policy)).await.map_err(|e| format!("deny on {r}: {e}"))
            }
        }));
    let asg = async {
        match &plan.attach_asg {
            Some(g) => {
                vec![retry(|| cloud.attach(g, id)).await.map_err(|e| format!("Auto Scaling group {g}: {e}"))]
            }
            None => vec![],
        }
    };
    let targets = futures::future::join_all(plan.register.iter().map(|t| async move {
        retry(|| cloud.register(t, id)).await.map_err(|e| format!("target group {}: {e}", t.target_group_arn))
    }));
    let classic = futures::future::join_all(plan.classic.iter().map(|lb| async move {
        retry(|| cloud.classic_register(lb, id)).await.map_err(|e| format!("classic load balancer {lb}: {e}"))
    }));
    let attrs = async {
        let mut r = Vec::new();
        let (t, s, d, tag) = futures::join!(
            async {
                match plan.termination_protection {
                    Some(v) => Some(retry(|| cloud.set_termination_protection(id, v)).await),
                    None => None,
                }
            },
            async {
                match &plan.shutdown_behavior {
                    Some(v) => Some(retry(|| cloud.set_shutdown_behavior(id, v)).await),
                    None => None,
                }
            },
            async {
                if plan.delete_on_termination.is_empty() {
                    None
                } else {
                    Some(retry(|| cloud.set_delete_on_termination(id, &plan.delete_on_termination)).await)
                }
            },
            retry(|| cloud.create_tags(id, &tags))
        );
        for x in [t, s, d, Some(tag)].into_iter().flatten() {
            r.push(x.map_err(|e| format!("instance attribute: {e}")));
        }
        r
    };
    let (e, p, d, a, t, c, at) = futures::join!(enis, profile, deny, asg, targets, classic, attrs);
    let mut calls: Vec<Call> = Vec::new();
    let mut errors = Vec::new();
    for r in e.into_iter().chain(p).chain(d).chain(a).chain(t).chain(c).chain(at) {
        match r {
            Ok(call) => calls.push(call),
            Err(err) => errors.push(err),
        }
    }
    for eni in &plan.missing_enis {
        errors.push(format!("{eni} is no longer attached: its groups cannot be restored"));
    }
    let request_ids: Vec<String> = calls.iter().filter_map(|c| c.request_id.clone()).collect();
    let subject = instance_arn(&scope.region, &scope.account, id);
    let (checks, read_error) = match read(case, scope, id, &pending.prior).await {
        Ok((now, denied)) => (release_checks(&pending.prior, &now, &denied), None),
        Err(e) => (vec![], Some(e.to_string())),
    };
    if let Some(e) = read_error {
        errors.push(format!("re-reading after release: {e}"));
    }
    let ok = errors.is_empty() && checks.iter().all(|c| c.ok);
    if let Err(e) = custody
        .record(Event {
            action: if ok { Action::Released } else { Action::ContainmentFailed },
            subject,
            evidence: vec![],
            aws_request_ids: request_ids.clone(),
            details: serde_json::json!({
                "case": case, "restored": plan, "calls": calls.iter().map(|c| c.operation.clone()).collect::<Vec<_>>(),
                "errors": errors, "checks": checks, "step": "release",
            }),
        })
        .await
    {
        errors.push(format!("custody record: {e}"));
    }
    Released {
        instance: id.to_string(),
        ok: ok && errors.is_empty(),
        checks,
        errors,
        aws_request_ids: request_ids,
    }
}
