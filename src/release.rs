//! Release: undo containment of one instance, restoring exactly the state recorded
//! before the first change (security groups per ENI, instance profile, Auto Scaling
//! membership, target groups with their ports, classic load balancers, termination
//! protection, shutdown behaviour, DeleteOnTermination per volume, connection tracking
//! timeouts), and taking the instance out of the role's deny (the policy goes when no
//! other instance of the case is left in it). The decision is pure ([`restore_plan`]);
//! the change is recorded in custody with its request ids, then re-read and proved
//! ([`release_checks`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cloud::ec2::ConnTrack;
use crate::cloud::{AsgGroup, retry};
use crate::cloud::{Call, Cloud, CloudError, TAG_CONTAINED, Target};
use crate::ids::{CaseId, InstanceId, NetworkInterfaceId, SecurityGroupId};
use crate::isolate::observe::{ObserveError, Observed, PriorState, instance_arn, observe, prior_state_item};
use crate::isolate::plan::{Deny, deny_policy_name, released_deny};
use crate::isolate::verify::Check;
use crate::isolate::workflow::{Scope, deny_docs, role_lock};
use crate::pipeline::custody::{Action, CustodyError, CustodySink, Event};

/// What release does to one role's deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyRelease {
    pub role: String,
    /// The deny left for the other instances of the case (`None`: delete the policy).
    pub keep: Option<serde_json::Value>,
    /// The policy under the deny's name was not written by cleanroom.
    pub foreign: bool,
}

/// What must change to give the instance back its prior state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    pub enis: Vec<(NetworkInterfaceId, Vec<SecurityGroupId>)>,
    /// ENIs of the prior state no longer attached (reported, not restorable).
    pub missing_enis: Vec<NetworkInterfaceId>,
    pub associate_profile: Option<String>,
    pub deny: Vec<DenyRelease>,
    pub attach_asg: Option<String>,
    pub register: Vec<Target>,
    pub classic: Vec<String>,
    pub termination_protection: Option<bool>,
    pub shutdown_behavior: Option<String>,
    pub delete_on_termination: Vec<(String, bool)>,
    /// Connection tracking timeouts containment lowered, back to what they were.
    pub conntrack: Vec<(NetworkInterfaceId, ConnTrack)>,
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
        for (eni, t) in &self.conntrack {
            c.push(format!(
                "ec2:ModifyNetworkInterfaceAttribute {eni} ConnectionTrackingSpecification TcpEstablishedTimeout={} UdpStreamTimeout={} UdpTimeout={}",
                t.tcp_established.unwrap_or_default(),
                t.udp_stream.unwrap_or_default(),
                t.udp.unwrap_or_default()
            ));
        }
        if let Some(p) = &self.associate_profile {
            c.push(format!("ec2:AssociateIamInstanceProfile {id} {p}"));
        }
        for d in &self.deny {
            let name = deny_policy_name(case);
            c.push(match (&d.keep, d.foreign) {
                (None, false) => format!("iam:DeleteRolePolicy RoleName={} PolicyName={name}", d.role),
                (None, true) => format!(
                    "iam:DeleteRolePolicy RoleName={} PolicyName={name} (a policy under the deny's name that cleanroom did not write)",
                    d.role
                ),
                (Some(_), _) => format!(
                    "iam:PutRolePolicy RoleName={} PolicyName={name} (this instance taken out; the deny of the case's other instances on the role stays)",
                    d.role
                ),
            });
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

/// Decides what to restore from the recorded prior state, what is there now, and the
/// deny policy of each role (`instance_arn`: the instance's, as the deny names it).
pub fn restore_plan(
    prior: &PriorState,
    now: &Observed,
    deny_docs: &BTreeMap<String, Option<serde_json::Value>>,
    instance_arn: &str,
) -> RestorePlan {
    let mut plan = RestorePlan::default();
    for eni in &prior.enis {
        match now.instance.enis.iter().find(|e| e.id == eni.id) {
            Some(cur) => {
                if cur.groups != eni.groups {
                    plan.enis.push((eni.id.clone(), eni.groups.clone()));
                }
                // Only what containment lowered goes back: other changes are not ours.
                if cur.conntrack.is_some_and(|c| c.is_minimal()) && cur.conntrack != eni.conntrack {
                    plan.conntrack.push((eni.id.clone(), eni.conntrack.unwrap_or(ConnTrack::AWS_DEFAULT)));
                }
            }
            None => plan.missing_enis.push(eni.id.clone()),
        }
    }
    if let Some(p) = &prior.profile {
        if now.profile.as_ref().is_none_or(|c| c.state == "disassociating" || c.state == "disassociated") {
            plan.associate_profile = Some(p.profile_arn.clone());
        }
    }
    for role in &prior.profile_roles {
        let Some(Some(doc)) = deny_docs.get(role) else { continue };
        match Deny::parse(doc) {
            Some(d) if d.instances.contains(instance_arn) => plan.deny.push(DenyRelease {
                role: role.clone(),
                keep: released_deny(doc, instance_arn).map(|d| d.document()),
                foreign: false,
            }),
            Some(_) => {}
            None => plan.deny.push(DenyRelease { role: role.clone(), keep: None, foreign: true }),
        }
    }
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

/// The Auto Scaling group's desired capacity around a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capacity {
    pub group: String,
    /// Read before the release (`None`: the group was not found).
    pub before: Option<i32>,
    /// Read after it.
    pub after: Option<i32>,
    /// Release attached the instance (AttachInstances raises desired capacity by one).
    pub attached: bool,
}

/// Whether the prior state is back, control by control.
pub fn release_checks(
    prior: &PriorState,
    now: &Observed,
    deny_docs: &BTreeMap<String, Option<serde_json::Value>>,
    instance_arn: &str,
    capacity: Option<&Capacity>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut add = |control: String, ok: bool, detail: String| {
        checks.push(Check { control, ok, detail, warning: false })
    };
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
        if let Some(c) = cur.and_then(|c| c.conntrack) {
            let lowered = c.is_minimal() && !eni.conntrack.is_some_and(|p| p.is_minimal());
            add(
                format!("connection tracking {}", eni.id),
                !lowered,
                format!(
                    "TCP established {:?} s (prior {:?})",
                    c.tcp_established,
                    eni.conntrack.and_then(|p| p.tcp_established)
                ),
            );
        }
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
        let doc = deny_docs.get(r).and_then(|d| d.as_ref());
        let (ok, detail) = match doc.map(|d| (d, Deny::parse(d))) {
            None => (true, "no deny".to_owned()),
            Some((_, Some(d))) if d.instances.contains(instance_arn) => {
                (false, "the deny still names this instance".to_owned())
            }
            Some((_, Some(d))) => {
                (true, format!("the deny stays for {} other instance(s) of the case", d.instances.len()))
            }
            Some((_, None)) => (false, "a policy under the deny's name remains".to_owned()),
        };
        add(format!("role {r} credentials no longer denied"), ok, detail);
    }
    let prior_asg = prior.auto_scaling_group.as_ref().map(|g| g.name.clone());
    let now_asg = now.asg.as_ref().map(|g| g.name.clone());
    add(
        "auto scaling".into(),
        prior_asg == now_asg,
        now_asg.as_deref().unwrap_or("not in a group").to_owned(),
    );
    if let Some(c) = capacity {
        // AttachInstances raises desired capacity by exactly one; anything else means
        // the group is not where release left it.
        let expected = c.before.map(|b| b + i32::from(c.attached));
        add(
            "auto scaling capacity".into(),
            expected.is_some() && c.after == expected,
            match (c.before, c.after) {
                (Some(b), Some(a)) => format!(
                    "{} desired {a} (before release {b}{}; prior state {})",
                    c.group,
                    if c.attached { ", AttachInstances adds one" } else { "" },
                    prior.auto_scaling_group.as_ref().map(|g| g.desired).unwrap_or_default()
                ),
                _ => format!("{} not found: capacity unknown", c.group),
            },
        );
    }
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
    NothingRecorded { case: CaseId, instance: InstanceId, item: String },
    /// The instance cannot be found or is gone (or a read of it failed).
    #[error(transparent)]
    Instance(#[from] ObserveError),
    #[error(transparent)]
    Read(#[from] CloudError),
    #[error(transparent)]
    Custody(#[from] CustodyError),
    #[error("stored prior state {item} is unreadable: {reason}")]
    PriorUnreadable { item: String, reason: String },
}

impl ReleaseError {
    /// Bad input (exit 2) rather than a failed run (exit 1).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ReleaseError::NothingRecorded { .. })
            || matches!(self, ReleaseError::Instance(e) if !matches!(e, ObserveError::Aws(_)))
    }
}

/// One restore step that failed (the cloud's error boxed: it is large, and these are
/// collected by the dozen).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{eni}: {source}")]
    Eni { eni: NetworkInterfaceId, source: Box<CloudError> },
    #[error("{eni} connection tracking: {source}")]
    ConnTrack { eni: NetworkInterfaceId, source: Box<CloudError> },
    #[error("instance profile: {source}")]
    Profile { source: Box<CloudError> },
    #[error("deny on {role}: {source}")]
    Deny { role: String, source: Box<CloudError> },
    #[error("Auto Scaling group {group}: {source}")]
    AutoScaling { group: String, source: Box<CloudError> },
    #[error("target group {target_group}: {source}")]
    Target { target_group: String, source: Box<CloudError> },
    #[error("classic load balancer {balancer}: {source}")]
    Classic { balancer: String, source: Box<CloudError> },
    #[error("instance attribute: {source}")]
    Attribute { source: Box<CloudError> },
    #[error("{eni} is no longer attached: its groups cannot be restored")]
    EniGone { eni: NetworkInterfaceId },
    #[error("re-reading after release: {0}")]
    Reread(ReleaseError),
    #[error("custody record: {0}")]
    Custody(CustodyError),
}

/// What release found and would do, before the confirmation.
pub struct Pending {
    pub prior: PriorState,
    pub now: Observed,
    pub deny_docs: BTreeMap<String, Option<serde_json::Value>>,
    /// The prior Auto Scaling group as it is now (`None`: the instance had none).
    pub asg_before: Option<Option<AsgGroup>>,
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

async fn asg_now(cloud: &dyn Cloud, prior: &PriorState) -> Result<Option<Option<AsgGroup>>, CloudError> {
    match &prior.auto_scaling_group {
        Some(g) => retry(|| cloud.group(&g.name)).await.map(Some),
        None => Ok(None),
    }
}

async fn read(
    case: &CaseId,
    scope: &Scope,
    id: &InstanceId,
    prior: &PriorState,
) -> Result<(Observed, BTreeMap<String, Option<serde_json::Value>>, Option<Option<AsgGroup>>), ReleaseError> {
    let cloud = scope.cloud.as_ref();
    let tgs: Vec<String> = prior.target_groups.iter().map(|t| t.target_group_arn.clone()).collect();
    let (now, docs, asg) = futures::join!(
        observe(cloud, &scope.account, &scope.region, id, &tgs, !prior.classic_load_balancers.is_empty()),
        deny_docs(cloud, case, &prior.profile_roles),
        asg_now(cloud, prior)
    );
    Ok((now?, docs?, asg?))
}

/// Reads the recorded prior state and the current state, and decides the restore.
pub async fn prepare(
    case: &CaseId,
    scope: &Scope,
    id: &InstanceId,
    custody: &dyn CustodySink,
) -> Result<Pending, ReleaseError> {
    let item = prior_state_item(&scope.account, id);
    let (_, value) = custody.load_json(&item).await?.ok_or_else(|| ReleaseError::NothingRecorded {
        case: case.clone(),
        instance: id.clone(),
        item: item.clone(),
    })?;
    let prior: PriorState = serde_json::from_value(value)
        .map_err(|e| ReleaseError::PriorUnreadable { item: item.clone(), reason: e.to_string() })?;
    let (now, deny_docs, asg_before) = read(case, scope, id, &prior).await?;
    let arn = instance_arn(&scope.region, &scope.account, id);
    let plan = restore_plan(&prior, &now, &deny_docs, &arn);
    Ok(Pending { prior, now, deny_docs, asg_before, plan })
}

/// Takes the instance out of the role's deny, on the document as it is now (another
/// instance of the case may have been added since the plan was made).
async fn release_deny(
    cloud: &dyn Cloud,
    scope: &Scope,
    role: &str,
    name: &str,
    arn: &str,
) -> Result<Option<Call>, CloudError> {
    let lock = role_lock(&scope.account, role);
    let _one = lock.lock().await;
    let Some(doc) = retry(|| cloud.role_policy(role, name)).await? else { return Ok(None) };
    match (Deny::parse(&doc), released_deny(&doc, arn)) {
        (Some(d), _) if !d.instances.contains(arn) => Ok(None),
        (_, Some(keep)) => {
            let document = keep.document();
            retry(|| cloud.put_role_policy(role, name, &document)).await.map(Some)
        }
        (_, None) => retry(|| cloud.delete_role_policy(role, name)).await.map(Some),
    }
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
    let arn = instance_arn(&scope.region, &scope.account, id);
    let mut tags = BTreeMap::new();
    tags.insert(TAG_CONTAINED.to_owned(), "released".to_owned());
    let enis = futures::future::join_all(plan.enis.iter().map(|(eni, groups)| async move {
        retry(|| cloud.set_eni_groups(eni, groups))
            .await
            .map_err(|source| RestoreError::Eni { eni: eni.clone(), source: Box::new(source) })
    }));
    let conntrack = futures::future::join_all(plan.conntrack.iter().map(|(eni, t)| async move {
        retry(|| cloud.set_conntrack(eni, t))
            .await
            .map_err(|source| RestoreError::ConnTrack { eni: eni.clone(), source: Box::new(source) })
    }));
    let profile = async {
        match &plan.associate_profile {
            Some(p) => vec![
                retry(|| cloud.associate_profile(id, p))
                    .await
                    .map_err(|source| RestoreError::Profile { source: Box::new(source) }),
            ],
            None => vec![],
        }
    };
    let deny = futures::future::join_all(plan.deny.iter().map(|d| {
        let (policy, arn) = (&policy, &arn);
        async move {
            release_deny(cloud, scope, &d.role, policy, arn)
                .await
                .map_err(|source| RestoreError::Deny { role: d.role.clone(), source: Box::new(source) })
        }
    }));
    let asg =
        async {
            match &plan.attach_asg {
                Some(g) => vec![retry(|| cloud.attach(g, id)).await.map_err(|source| {
                    RestoreError::AutoScaling { group: g.clone(), source: Box::new(source) }
                })],
                None => vec![],
            }
        };
    let targets = futures::future::join_all(plan.register.iter().map(|t| async move {
        retry(|| cloud.register(t, id)).await.map_err(|source| RestoreError::Target {
            target_group: t.target_group_arn.clone(),
            source: Box::new(source),
        })
    }));
    let classic = futures::future::join_all(plan.classic.iter().map(|lb| async move {
        retry(|| cloud.classic_register(lb, id))
            .await
            .map_err(|source| RestoreError::Classic { balancer: lb.clone(), source: Box::new(source) })
    }));
    let attrs = async {
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
        [t, s, d, Some(tag)]
            .into_iter()
            .flatten()
            .map(|x| x.map_err(|source| RestoreError::Attribute { source: Box::new(source) }))
            .collect::<Vec<_>>()
    };
    let (e, ct, p, d, a, t, c, at) =
        futures::join!(enis, conntrack, profile, deny, asg, targets, classic, attrs);
    let mut calls: Vec<Call> = Vec::new();
    let mut errors: Vec<RestoreError> = Vec::new();
    for r in e.into_iter().chain(ct).chain(p).chain(a).chain(t).chain(c).chain(at) {
        match r {
            Ok(call) => calls.push(call),
            Err(err) => errors.push(err),
        }
    }
    for r in d {
        match r {
            Ok(call) => calls.extend(call),
            Err(err) => errors.push(err),
        }
    }
    for eni in &plan.missing_enis {
        errors.push(RestoreError::EniGone { eni: eni.clone() });
    }
    let request_ids: Vec<String> = calls.iter().filter_map(|c| c.request_id.clone()).collect();
    let checks = match read(case, scope, id, &pending.prior).await {
        Ok((now, docs, asg_after)) => {
            let capacity = pending.prior.auto_scaling_group.as_ref().map(|g| Capacity {
                group: g.name.clone(),
                before: pending.asg_before.clone().flatten().map(|g| g.desired),
                after: asg_after.flatten().map(|g| g.desired),
                attached: plan.attach_asg.is_some(),
            });
            release_checks(&pending.prior, &now, &docs, &arn, capacity.as_ref())
        }
        Err(e) => {
            errors.push(RestoreError::Reread(e));
            vec![]
        }
    };
    let ok = errors.is_empty() && checks.iter().all(|c| c.ok);
    let mut errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    if let Err(e) = custody
        .record(Event {
            action: if ok { Action::Released } else { Action::ReleaseFailed },
            subject: arn.clone(),
            evidence: vec![],
            aws_request_ids: request_ids.clone(),
            details: serde_json::json!({
                "case": case, "restored": plan, "calls": calls.iter().map(|c| c.operation.clone()).collect::<Vec<_>>(),
                "errors": errors, "checks": checks, "step": "release",
            }),
        })
        .await
    {
        errors.push(RestoreError::Custody(e).to_string());
    }
    Released {
        instance: id.to_string(),
        ok: ok && errors.is_empty(),
        checks,
        errors,
        aws_request_ids: request_ids,
    }
}
