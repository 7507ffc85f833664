//! What must change for one instance, decided from plain data: the observed state, the
//! recorded prior state and the case's groups. Pure, so every decision is tested
//! without a cloud; `--plan` prints the same plan as the API calls it would make.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cloud::ec2::ConnTrack;
use crate::cloud::{Group, Purpose, Rule, TAG_CASE, Target, V4_ANY, V6_ANY};
use crate::ids::{AccountId, CaseId, NetworkInterfaceId, SecurityGroupId, VpcId};
use crate::isolate::observe::{Observed, PriorState};
use crate::protect::ProtectPlan;

/// The name of the inline deny put on the instance role.
pub fn deny_policy_name(case: &CaseId) -> String {
    format!("cleanroom-revoke-sessions-{case}")
}

/// Sid of the statement that denies the contained instances' credentials.
pub const SID_INSTANCE: &str = "CleanroomDenyInstanceCredentials";
/// Sid of the statement that denies every session of the role issued before a time.
pub const SID_OLDER_SESSIONS: &str = "CleanroomRevokeOlderSessions";

/// The case's deny on one role: what the policy `cleanroom-revoke-sessions-<case>`
/// says, and the only documents this tool writes under that name.
///
/// The first statement denies everything to credentials EC2 delivered to the listed
/// instances (`ec2:SourceInstanceARN`, present in every request signed with an
/// instance's role credentials, wherever they are used: copied off the instance too).
/// It spares every other principal of the role and holds for credentials issued at
/// any time. The second, only when asked for (`--revoke-all-role-sessions`), denies
/// every session of the role issued before a time: it also covers sessions of the role
/// obtained without the instance's credentials (role chaining into the same role), and
/// it cuts every other instance and service using the role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deny {
    /// Instance ARNs whose credentials are denied.
    pub instances: BTreeSet<String>,
    /// UTC, RFC 3339, whole seconds: sessions issued before it are denied.
    pub issued_before: Option<String>,
}

impl Deny {
    /// The policy document, canonical: the same `Deny` always gives the same bytes.
    pub fn document(&self) -> serde_json::Value {
        let mut statements = Vec::new();
        if !self.instances.is_empty() {
            statements.push(serde_json::json!({
                "Sid": SID_INSTANCE,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"StringEquals": {"ec2:SourceInstanceARN": self.instances.iter().collect::<Vec<_>>()}}
            }));
        }
        if let Some(t) = &self.issued_before {
            statements.push(serde_json::json!({
                "Sid": SID_OLDER_SESSIONS,
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": t}}
            }));
        }
        serde_json::json!({"Version": "2012-10-17", "Statement": statements})
    }

    /// Reads a stored document back. `None` unless it is exactly a document
    /// [`Deny::document`] writes: a policy planted under the same name, or ours with a
    /// statement added, changed or removed, is not ours.
    pub fn parse(doc: &serde_json::Value) -> Option<Deny> {
        let statements = doc.get("Statement")?.as_array()?;
        let mut deny = Deny::default();
        for st in statements {
            match st.get("Sid")?.as_str()? {
                SID_INSTANCE => {
                    let arns = &st["Condition"]["StringEquals"]["ec2:SourceInstanceARN"];
                    let arns: Vec<&str> = match arns {
                        serde_json::Value::Array(a) => a.iter().map(|v| v.as_str()).collect::<Option<_>>()?,
                        serde_json::Value::String(s) => vec![s.as_str()],
                        _ => return None,
                    };
                    deny.instances.extend(arns.into_iter().map(str::to_owned));
                }
                SID_OLDER_SESSIONS => {
                    deny.issued_before =
                        Some(st["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str()?.to_owned());
                }
                _ => return None,
            }
        }
        (deny.document() == *doc && (!deny.instances.is_empty() || deny.issued_before.is_some()))
            .then_some(deny)
    }
}

/// Whether the case's deny on one role holds for one instance, read from the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyVerdict {
    InForce {
        issued_before: Option<String>,
    },
    Missing,
    /// A policy under our name that this tool did not write (or that was edited).
    Foreign,
    /// Ours, without this instance.
    InstanceMissing,
    /// The time-based deny was asked for and is not there.
    TimeMissing,
    /// The time-based deny dates from before the instance's prior state was captured:
    /// not one this tool set for this case.
    TimeTooEarly {
        issued_before: String,
        not_before: String,
    },
}

impl DenyVerdict {
    pub fn holds(&self) -> bool {
        matches!(self, DenyVerdict::InForce { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            DenyVerdict::InForce { issued_before: None } => {
                "credentials of this instance denied (ec2:SourceInstanceARN)".into()
            }
            DenyVerdict::InForce { issued_before: Some(t) } => format!(
                "credentials of this instance denied (ec2:SourceInstanceARN); every session of the role issued before {t} denied"
            ),
            DenyVerdict::Missing => "no deny policy".into(),
            DenyVerdict::Foreign => {
                "a policy under the deny's name that cleanroom did not write (planted or edited)".into()
            }
            DenyVerdict::InstanceMissing => "the deny does not name this instance".into(),
            DenyVerdict::TimeMissing => "no time-based deny (--revoke-all-role-sessions)".into(),
            DenyVerdict::TimeTooEarly { issued_before, not_before } => format!(
                "time-based deny at {issued_before}, before the instance's state was captured ({not_before})"
            ),
        }
    }
}

fn rfc3339(t: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
}

/// `a < b` for two RFC 3339 times (an unreadable time counts as earliest).
fn earlier(a: &str, b: &str) -> bool {
    match (rfc3339(a), rfc3339(b)) {
        (Some(a), Some(b)) => a < b,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// Judges the stored document `doc` for `instance_arn`. `not_before` is the time the
/// instance's prior state was captured: a time-based deny must be later.
pub fn judge_deny(
    doc: Option<&serde_json::Value>,
    instance_arn: &str,
    not_before: &str,
    want_time: bool,
) -> DenyVerdict {
    let Some(doc) = doc else { return DenyVerdict::Missing };
    let Some(deny) = Deny::parse(doc) else { return DenyVerdict::Foreign };
    if !deny.instances.contains(instance_arn) {
        return DenyVerdict::InstanceMissing;
    }
    match deny.issued_before {
        Some(t) if earlier(&t, not_before) => {
            DenyVerdict::TimeTooEarly { issued_before: t, not_before: not_before.to_owned() }
        }
        None if want_time => DenyVerdict::TimeMissing,
        issued_before => DenyVerdict::InForce { issued_before },
    }
}

/// The deny to store: the instances of ours already there (a foreign document is
/// replaced whole) plus `instance_arn`; an existing time-based deny later than
/// `not_before` is kept (set once, after the first disassociation was confirmed),
/// else `time` when given.
pub fn intended_deny(
    doc: Option<&serde_json::Value>,
    instance_arn: &str,
    not_before: &str,
    time: Option<&str>,
) -> Deny {
    let mut deny = doc.and_then(Deny::parse).unwrap_or_default();
    deny.instances.insert(instance_arn.to_owned());
    if deny.issued_before.as_deref().is_some_and(|t| earlier(t, not_before)) {
        deny.issued_before = None;
    }
    if deny.issued_before.is_none() {
        deny.issued_before = time.map(str::to_owned);
    }
    deny
}

/// What release leaves on a role: the deny without `instance_arn` (`None`: nothing is
/// left, delete the policy). A foreign document under our name is deleted.
pub fn released_deny(doc: &serde_json::Value, instance_arn: &str) -> Option<Deny> {
    let mut deny = Deny::parse(doc)?;
    deny.instances.remove(instance_arn);
    // The time-based deny stays only while it protects another contained instance.
    (!deny.instances.is_empty()).then_some(deny)
}

/// Controls the user opts into beyond the defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Controls {
    /// Also deny every session of the instance's roles issued before isolation
    /// (`aws:TokenIssueTime`): cuts every other instance and service on the role.
    pub revoke_all_role_sessions: bool,
    /// Lower the ENIs' connection tracking timeouts to the minimum, so flows that stay
    /// tracked (NAT gateway, NLB, PrivateLink...) end a minute after going idle.
    pub minimal_conntrack: bool,
}

/// What the case records about one of its security groups: only groups recorded in
/// the case are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub schema: u32,
    pub case: CaseId,
    pub account: AccountId,
    pub vpc: VpcId,
    pub group: SecurityGroupId,
    pub purpose: Purpose,
    pub name: String,
    /// False: created by the tool. True: found tagged and named as the case's group
    /// but not recorded (a run that stopped between creating and recording it, or
    /// someone else), and recorded when adopted.
    pub adopted: bool,
    pub recorded_at: String,
}

/// Version of the [`GroupRecord`] document.
pub const GROUP_RECORD_SCHEMA: u32 = 1;

/// The evidence item id of a group record. The purpose is in the id, so a lookup
/// by group id trusts the purpose the case recorded, never the group's own tags.
pub fn group_item(account: &AccountId, vpc: &VpcId, purpose: Purpose, group: &SecurityGroupId) -> String {
    format!("{account}/{vpc}/containment/{}-group-{group}.json", purpose.tag())
}

/// The case's groups: the trusted ones (recorded in the case), one per (VPC, purpose),
/// and the others that carry the case tag (evidence of tampering, reported, never used).
#[derive(Debug, Clone, Default)]
pub struct CaseGroups {
    pub by_vpc: BTreeMap<(VpcId, Purpose), Group>,
    /// Tagged with the case, not recorded in it.
    pub untrusted: Vec<Group>,
    /// Recorded, but another recorded group of the same VPC and purpose is newer.
    pub superseded: Vec<Group>,
}

/// A recorded group, as found: which purpose the case recorded, and when.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub purpose: Purpose,
    pub recorded_at: String,
}

impl CaseGroups {
    /// Trusts the groups of `found` (tagged with the case) that the case recorded,
    /// with the purpose it recorded; the latest recorded one per VPC and purpose wins.
    pub fn trust(found: &[Group], recorded: &BTreeMap<SecurityGroupId, Recorded>) -> Self {
        let mut out = CaseGroups::default();
        let mut by: BTreeMap<(VpcId, Purpose), Vec<(&Recorded, Group)>> = BTreeMap::new();
        for g in found {
            match recorded.get(&g.id) {
                Some(r) => by
                    .entry((g.vpc.clone(), r.purpose))
                    .or_default()
                    .push((r, Group { purpose: Some(r.purpose), ..g.clone() })),
                None => out.untrusted.push(g.clone()),
            }
        }
        for (key, mut groups) in by {
            groups.sort_by_key(|(r, g)| (rfc3339(&r.recorded_at), g.id.clone()));
            let (_, newest) = groups.pop().expect("one group at least");
            out.superseded.extend(groups.into_iter().map(|(_, g)| g));
            out.by_vpc.insert(key, newest);
        }
        out
    }

    /// The untrusted group that a run of this case may adopt for (`vpc`, `purpose`):
    /// none is trusted there, and one carries the case's tags and exact group name.
    pub fn adoptable(&self, case: &CaseId, vpc: &VpcId, purpose: Purpose) -> Option<&Group> {
        if self.by_vpc.contains_key(&(vpc.clone(), purpose)) {
            return None;
        }
        self.untrusted
            .iter()
            .find(|g| &g.vpc == vpc && g.purpose == Some(purpose) && g.name == purpose.group_name(case))
    }

    pub fn get(&self, vpc: &VpcId, purpose: Purpose) -> Option<&Group> {
        self.by_vpc.get(&(vpc.clone(), purpose))
    }

    pub fn id(&self, vpc: &VpcId, purpose: Purpose) -> Option<&SecurityGroupId> {
        self.get(vpc, purpose).map(|g| &g.id)
    }
}

/// What a group needs so it serves its purpose: (rules to revoke, rules to add).
pub fn group_fix(purpose: Purpose, current: &[Rule]) -> (Vec<Rule>, Vec<Rule>) {
    match purpose {
        Purpose::Isolation => (current.to_vec(), vec![]),
        Purpose::AllowAll => {
            let want = Rule::allow_all();
            let have: BTreeSet<&Rule> = current.iter().collect();
            (vec![], want.into_iter().filter(|r| !have.contains(r)).collect())
        }
    }
}

/// The default rules of a new group: IPv4 egress, and IPv6 egress when the VPC has an
/// IPv6 CIDR. Both are revoked from an isolation group; a revoke of the IPv6 rule that
/// does not exist is expected and ignored.
pub fn default_rules() -> Vec<Rule> {
    vec![Rule::all(true, V4_ANY), Rule::all(true, V6_ANY)]
}

/// One ENI's swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swap {
    pub eni: NetworkInterfaceId,
    pub vpc: VpcId,
    /// False when the ENI is already on the allow-all group alone (a run stopped between
    /// the two steps): it goes straight to the isolation group.
    pub via_allow_all: bool,
}

/// Everything that must change for one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    #[serde(flatten)]
    pub protect: ProtectPlan,
    pub detach_asg: Option<String>,
    pub deregister: Vec<Target>,
    pub classic: Vec<String>,
    pub swaps: Vec<Swap>,
    /// VPCs whose isolation (and, for swaps via allow-all, allow-all) group is needed.
    pub vpcs: BTreeSet<VpcId>,
    /// VPCs whose trusted isolation group is missing or has rules although every ENI
    /// there is on it: re-checked and repaired on every run.
    pub repair: BTreeSet<VpcId>,
    pub disassociate: Option<String>,
    /// Roles whose deny does not hold for this instance yet (decided when their
    /// policies are read).
    pub deny_roles: Vec<String>,
    /// The time-based deny is asked for (`--revoke-all-role-sessions`).
    pub deny_older_sessions: bool,
    /// ENIs whose connection tracking timeouts go to the minimum.
    pub conntrack: Vec<NetworkInterfaceId>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self
            == Plan {
                vpcs: self.vpcs.clone(),
                deny_older_sessions: self.deny_older_sessions,
                ..Plan::default()
            }
    }

    pub fn needs_allow_all(&self, vpc: &VpcId) -> bool {
        self.swaps.iter().any(|s| &s.vpc == vpc && s.via_allow_all)
    }
}

/// Decides what must change for `obs` to be contained for `case`. `deny_docs` are the
/// deny policies read from the roles (a role not read is planned).
pub fn decide(
    case: &CaseId,
    instance_arn: &str,
    obs: &Observed,
    prior: &PriorState,
    groups: &CaseGroups,
    deny_docs: &BTreeMap<String, Option<serde_json::Value>>,
    controls: Controls,
) -> Plan {
    let mut plan =
        Plan { protect: ProtectPlan::decide(case, &obs.instance, &obs.attributes), ..Plan::default() };
    plan.detach_asg = obs.asg.as_ref().map(|g| g.name.clone());
    plan.deregister = obs.targets.clone();
    plan.classic = obs.classic.clone();
    for eni in &obs.instance.enis {
        let isolation = groups.get(&eni.vpc, Purpose::Isolation);
        let allow_all = groups.id(&eni.vpc, Purpose::AllowAll);
        let on = |g: Option<&SecurityGroupId>| g.is_some_and(|g| eni.groups == [g.clone()]);
        if controls.minimal_conntrack && !eni.conntrack.is_some_and(|c| c.is_minimal()) {
            plan.conntrack.push(eni.id.clone());
        }
        if on(isolation.map(|g| &g.id)) {
            if isolation.is_some_and(|g| !g.rules.is_empty()) {
                plan.vpcs.insert(eni.vpc.clone());
                plan.repair.insert(eni.vpc.clone());
            }
            continue;
        }
        plan.vpcs.insert(eni.vpc.clone());
        plan.swaps.push(Swap { eni: eni.id.clone(), vpc: eni.vpc.clone(), via_allow_all: !on(allow_all) });
    }
    plan.disassociate = obs.profile.as_ref().map(|p| p.association_id.clone());
    let roles: BTreeSet<&String> = prior.profile_roles.iter().chain(obs.profile_roles.iter()).collect();
    plan.deny_older_sessions = controls.revoke_all_role_sessions;
    plan.deny_roles = roles
        .into_iter()
        .filter(|r| match deny_docs.get(*r) {
            None => true,
            Some(doc) => {
                !judge_deny(doc.as_ref(), instance_arn, &prior.captured_at, controls.revoke_all_role_sessions)
                    .holds()
            }
        })
        .cloned()
        .collect();
    plan
}

/// The API calls `plan` makes, in order, for `--plan`. Groups not yet created are
/// named by what they will be.
pub fn api_calls(
    case: &CaseId,
    instance: &str,
    plan: &Plan,
    groups: &CaseGroups,
    stored: bool,
) -> Vec<String> {
    let mut calls = Vec::new();
    let group = |vpc: &VpcId, p: Purpose| {
        groups
            .id(vpc, p)
            .map(|g| g.to_string())
            .unwrap_or_else(|| format!("<new {} group in {vpc}>", p.tag()))
    };
    if plan.is_empty() {
        return calls;
    }
    calls.push(format!("ec2:ModifyInstanceAttribute DryRun=true InstanceId={instance} (permission check)"));
    calls.push(format!("ec2:CreateTags DryRun=true Resources={instance} (permission check)"));
    for s in &plan.swaps {
        calls.push(format!(
            "ec2:ModifyNetworkInterfaceAttribute DryRun=true NetworkInterfaceId={} (permission check)",
            s.eni
        ));
    }
    if !stored {
        calls.push(format!("s3:PutObject evidence item {instance} prior state (security groups per ENI, profile, Auto Scaling group, target groups, termination/shutdown, DeleteOnTermination), custody record"));
    }
    for vpc in &plan.vpcs {
        let mut purposes = vec![Purpose::Isolation];
        if plan.needs_allow_all(vpc) {
            purposes.push(Purpose::AllowAll);
        }
        for p in purposes {
            match groups.get(vpc, p) {
                None => {
                    match groups.adoptable(case, vpc, p) {
                        Some(g) => calls.push(format!(
                            "s3:PutObject record {} (tagged and named as the case's {} group, not recorded: adopted)",
                            g.id,
                            p.tag()
                        )),
                        None => {
                            calls.push(format!("ec2:CreateSecurityGroup DryRun=true VpcId={vpc} (permission check)"));
                            calls.push(format!(
                                "ec2:CreateSecurityGroup VpcId={vpc} GroupName={} TagSpecifications={TAG_CASE}={case},cleanroom:purpose={}",
                                p.group_name(case),
                                p.tag()
                            ));
                            calls.push(format!("s3:PutObject record of the new {} group (only recorded groups are trusted)", p.tag()));
                        }
                    }
                    match p {
                        Purpose::Isolation => {
                            calls
                                .push(format!("ec2:RevokeSecurityGroupEgress {} -1 {V4_ANY}", group(vpc, p)));
                            calls.push(format!(
                                "ec2:RevokeSecurityGroupEgress {} -1 {V6_ANY} (if the VPC has IPv6)",
                                group(vpc, p)
                            ));
                        }
                        Purpose::AllowAll => {
                            calls.push(format!(
                                "ec2:AuthorizeSecurityGroupIngress {} -1 {V4_ANY} {V6_ANY}",
                                group(vpc, p)
                            ));
                            calls.push(format!(
                                "ec2:AuthorizeSecurityGroupEgress {} -1 {V6_ANY} (if missing)",
                                group(vpc, p)
                            ));
                        }
                    }
                }
                Some(g) => {
                    let (revoke, add) = group_fix(p, &g.rules);
                    for r in revoke {
                        calls.push(format!(
                            "ec2:Revoke{} {} {} {}",
                            if r.egress { "SecurityGroupEgress" } else { "SecurityGroupIngress" },
                            g.id,
                            r.protocol,
                            r.peer
                        ));
                    }
                    for r in add {
                        calls.push(format!(
                            "ec2:Authorize{} {} {} {}",
                            if r.egress { "SecurityGroupEgress" } else { "SecurityGroupIngress" },
                            g.id,
                            r.protocol,
                            r.peer
                        ));
                    }
                }
            }
        }
    }
    calls.extend(plan.protect.api_calls(instance));
    if let Some(asg) = &plan.detach_asg {
        calls.push(format!(
            "autoscaling:DetachInstances {asg} {instance} ShouldDecrementDesiredCapacity=false"
        ));
    }
    for t in &plan.deregister {
        calls.push(format!(
            "elbv2:DeregisterTargets {} Id={instance}{}",
            t.target_group_arn,
            t.port.map(|p| format!(" Port={p}")).unwrap_or_default()
        ));
    }
    for lb in &plan.classic {
        calls.push(format!("elb:DeregisterInstancesFromLoadBalancer {lb} {instance}"));
    }
    if let Some(a) = &plan.disassociate {
        calls.push(format!("ec2:DisassociateIamInstanceProfile AssociationId={a}"));
    }
    for r in &plan.deny_roles {
        calls.push(format!(
            "iam:PutRolePolicy RoleName={r} PolicyName={} (Deny * to this instance's credentials: ec2:SourceInstanceARN; other instances of the case on the role kept)",
            deny_policy_name(case)
        ));
    }
    if plan.deny_older_sessions && !plan.deny_roles.is_empty() {
        calls.push(format!(
            "ec2:DescribeIamInstanceProfileAssociations InstanceId={instance} until the profile is gone"
        ));
        for r in &plan.deny_roles {
            calls.push(format!(
                "iam:PutRolePolicy RoleName={r} PolicyName={} (adds Deny * when aws:TokenIssueTime < the time the disassociation was confirmed)",
                deny_policy_name(case)
            ));
        }
    }
    for e in &plan.conntrack {
        calls.push(format!(
            "ec2:ModifyNetworkInterfaceAttribute {e} ConnectionTrackingSpecification TcpEstablishedTimeout={} UdpStreamTimeout={} UdpTimeout={}",
            ConnTrack::MINIMAL.tcp_established.unwrap_or_default(),
            ConnTrack::MINIMAL.udp_stream.unwrap_or_default(),
            ConnTrack::MINIMAL.udp.unwrap_or_default()
        ));
    }
    for s in &plan.swaps {
        if s.via_allow_all {
            calls.push(format!(
                "ec2:ModifyNetworkInterfaceAttribute {} Groups=[{}] (step 1: allow-all)",
                s.eni,
                group(&s.vpc, Purpose::AllowAll)
            ));
        }
    }
    for s in &plan.swaps {
        calls.push(format!(
            "ec2:ModifyNetworkInterfaceAttribute {} Groups=[{}] (step 2: isolation)",
            s.eni,
            group(&s.vpc, Purpose::Isolation)
        ));
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{Attributes, Eni, Instance, ProfileAssociation, TAG_CONTAINED, VolumeAttachment};
    use crate::isolate::observe::Observed;

    fn case() -> CaseId {
        "IR-1".parse().unwrap()
    }

    fn observed(groups: &[&str]) -> Observed {
        Observed {
            instance: Instance {
                id: "i-01234567".parse().unwrap(),
                state: "running".into(),
                vpc: Some("vpc-01234567".parse().unwrap()),
                enis: vec![
                    Eni {
                        id: "eni-0000000a".parse().unwrap(),
                        device_index: 0,
                        vpc: "vpc-01234567".parse().unwrap(),
                        groups: groups.iter().map(|g| g.parse().unwrap()).collect(),
                        ipv6_addresses: vec![],
                        subnet: None,
                        interface_type: None,
                        conntrack: None,
                    },
                    Eni {
                        id: "eni-0000000b".parse().unwrap(),
                        device_index: 1,
                        vpc: "vpc-01234567".parse().unwrap(),
                        groups: vec!["sg-0000000c".parse().unwrap()],
                        ipv6_addresses: vec!["2001:db8::1".into()],
                        subnet: None,
                        interface_type: None,
                        conntrack: None,
                    },
                ],
                volumes: vec![
                    VolumeAttachment {
                        device: "/dev/xvda".into(),
                        volume: "vol-01234567".parse().unwrap(),
                        delete_on_termination: true,
                    },
                    VolumeAttachment {
                        device: "/dev/xvdb".into(),
                        volume: "vol-01234568".parse().unwrap(),
                        delete_on_termination: false,
                    },
                ],
                tags: Default::default(),
                details: Default::default(),
            },
            attributes: Attributes { termination_protection: false, shutdown_behavior: "terminate".into() },
            profile: Some(ProfileAssociation {
                association_id: "iip-assoc-1".into(),
                instance: "i-01234567".parse().unwrap(),
                profile_arn: "arn:aws:iam::111122223333:instance-profile/web".into(),
                state: "associated".into(),
            }),
            profile_roles: vec!["web".into()],
            asg: None,
            targets: vec![],
            classic: vec![],
        }
    }

    fn group(id: &str, purpose: Purpose, rules: Vec<Rule>) -> Group {
        Group {
            id: id.parse().unwrap(),
            vpc: "vpc-01234567".parse().unwrap(),
            name: "g".into(),
            purpose: Some(purpose),
            rules,
        }
    }

    const ARN: &str = "arn:aws:ec2:eu-west-1:111122223333:instance/i-01234567";
    const OTHER: &str = "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456f";

    /// The case's groups, every one of them recorded.
    fn recorded(groups: &[Group]) -> CaseGroups {
        let rec = groups
            .iter()
            .map(|g| {
                (
                    g.id.clone(),
                    Recorded { purpose: g.purpose.unwrap(), recorded_at: "2026-11-22T05:00:00Z".into() },
                )
            })
            .collect();
        CaseGroups::trust(groups, &rec)
    }

    fn no_docs() -> BTreeMap<String, Option<serde_json::Value>> {
        BTreeMap::new()
    }

    #[test]
    fn a_fresh_instance_needs_every_control() {
        let obs = observed(&["sg-0000000d"]);
        let prior = obs.prior_state(&"111122223333".parse().unwrap(), &"eu-west-1".parse().unwrap(), "t");
        let plan =
            decide(&case(), ARN, &obs, &prior, &CaseGroups::default(), &no_docs(), Controls::default());
        assert!(plan.protect.termination_protection && plan.protect.shutdown_stop);
        assert_eq!(plan.protect.keep_volumes, vec!["/dev/xvda"]);
        assert_eq!(plan.swaps.len(), 2);
        assert!(plan.swaps.iter().all(|s| s.via_allow_all));
        assert_eq!(plan.disassociate.as_deref(), Some("iip-assoc-1"));
        assert_eq!(plan.deny_roles, vec!["web"]);
        let calls = api_calls(&case(), "i-01234567", &plan, &CaseGroups::default(), false);
        assert!(calls.iter().any(|c| {
            c.contains("CreateSecurityGroup VpcId=vpc-01234567 GroupName=cleanroom-isolation-IR-1")
        }));
        assert!(calls.iter().any(|c| c.contains("DryRun=true")));
        // Step 1 of every ENI comes before step 2 of any.
        let first_step2 = calls.iter().position(|c| c.contains("step 2")).unwrap();
        assert!(calls.iter().rposition(|c| c.contains("step 1")).unwrap() < first_step2);
    }

    #[test]
    fn a_contained_instance_needs_nothing() {
        let mut obs = observed(&["sg-0000000e"]);
        obs.instance.enis[1].groups = vec!["sg-0000000e".parse().unwrap()];
        obs.attributes = Attributes { termination_protection: true, shutdown_behavior: "stop".into() };
        obs.instance.volumes[0].delete_on_termination = false;
        obs.instance.tags =
            [(TAG_CASE.to_owned(), "IR-1".to_owned()), (TAG_CONTAINED.to_owned(), "true".to_owned())].into();
        let prior = observed(&["sg-0000000d"]).prior_state(
            &"111122223333".parse().unwrap(),
            &"eu-west-1".parse().unwrap(),
            "t",
        );
        obs.profile = None;
        obs.profile_roles = vec![];
        let groups = recorded(&[group("sg-0000000e", Purpose::Isolation, vec![])]);
        let deny = Deny { instances: [ARN.to_owned()].into(), issued_before: None };
        let docs = [("web".to_owned(), Some(deny.document()))].into();
        let plan = decide(&case(), ARN, &obs, &prior, &groups, &docs, Controls::default());
        assert!(plan.is_empty(), "{plan:?}");
        assert!(api_calls(&case(), "i-01234567", &plan, &groups, true).is_empty());
    }

    #[test]
    fn an_eni_left_on_the_allow_all_group_goes_straight_to_isolation() {
        let obs = observed(&["sg-0000000f"]);
        let prior = obs.prior_state(&"111122223333".parse().unwrap(), &"eu-west-1".parse().unwrap(), "t");
        let groups = recorded(&[
            group("sg-0000000e", Purpose::Isolation, vec![]),
            group("sg-0000000f", Purpose::AllowAll, Rule::allow_all()),
        ]);
        let plan = decide(&case(), ARN, &obs, &prior, &groups, &no_docs(), Controls::default());
        assert_eq!(plan.swaps.iter().map(|s| s.via_allow_all).collect::<Vec<_>>(), vec![false, true]);
    }

    // Issue "Trust" point 5: a second group carrying the case tag used to make the case
    // refuse containment forever ("refusing to guess"). Only recorded groups are
    // trusted; the other is reported, and containment goes on.
    #[test]
    fn a_planted_second_group_is_reported_not_a_reason_to_refuse() {
        let ours = group("sg-0000000e", Purpose::Isolation, vec![]);
        let planted = Group {
            name: "cleanroom-isolation-IR-1".into(),
            ..group("sg-0000001e", Purpose::Isolation, Rule::allow_all())
        };
        let rec =
            [(ours.id.clone(), Recorded { purpose: Purpose::Isolation, recorded_at: "t".into() })].into();
        let groups = CaseGroups::trust(&[ours.clone(), planted.clone()], &rec);
        assert_eq!(groups.id(&ours.vpc, Purpose::Isolation), Some(&ours.id));
        assert_eq!(groups.untrusted, vec![planted.clone()]);
        assert!(groups.adoptable(&case(), &ours.vpc, Purpose::Isolation).is_none(), "ours is trusted");
        // An ENI moved onto the planted group is swapped to ours.
        let obs = observed(&["sg-0000001e"]);
        let prior = obs.prior_state(&"111122223333".parse().unwrap(), &"eu-west-1".parse().unwrap(), "t");
        let plan = decide(&case(), ARN, &obs, &prior, &groups, &no_docs(), Controls::default());
        assert_eq!(plan.swaps.len(), 2, "{plan:?}");
    }

    #[test]
    fn the_purpose_is_the_recorded_one_not_the_tag() {
        // Our isolation group retagged allow-all by someone: still our isolation group.
        let g = group("sg-0000000e", Purpose::AllowAll, vec![]);
        let rec = [(g.id.clone(), Recorded { purpose: Purpose::Isolation, recorded_at: "t".into() })].into();
        let groups = CaseGroups::trust(std::slice::from_ref(&g), &rec);
        assert_eq!(groups.id(&g.vpc, Purpose::Isolation), Some(&g.id));
        assert_eq!(groups.id(&g.vpc, Purpose::AllowAll), None);
    }

    #[test]
    fn an_unrecorded_group_with_the_cases_name_is_adoptable_only_when_none_is_trusted() {
        let named = Group {
            name: "cleanroom-isolation-IR-1".into(),
            ..group("sg-0000000e", Purpose::Isolation, vec![])
        };
        let other = group("sg-0000001e", Purpose::Isolation, vec![]);
        let groups = CaseGroups::trust(&[named.clone(), other], &BTreeMap::new());
        assert_eq!(groups.adoptable(&case(), &named.vpc, Purpose::Isolation), Some(&named));
        assert_eq!(groups.adoptable(&case(), &named.vpc, Purpose::AllowAll), None);
    }

    #[test]
    fn of_two_recorded_groups_the_latest_recorded_is_trusted() {
        let old = group("sg-0000000e", Purpose::Isolation, vec![]);
        let new = group("sg-0000000a", Purpose::Isolation, vec![]);
        let rec = [
            (
                old.id.clone(),
                Recorded { purpose: Purpose::Isolation, recorded_at: "2026-11-22T05:00:00Z".into() },
            ),
            (
                new.id.clone(),
                Recorded { purpose: Purpose::Isolation, recorded_at: "2026-11-23T05:00:00Z".into() },
            ),
        ]
        .into();
        let groups = CaseGroups::trust(&[old.clone(), new.clone()], &rec);
        assert_eq!(groups.id(&old.vpc, Purpose::Isolation), Some(&new.id));
        assert_eq!(groups.superseded, vec![old]);
    }

    // Issue "Trust" point 5: an isolation group that gained rules was never repaired
    // once every ENI was on it (the plan was empty, verification failed forever).
    #[test]
    fn an_isolation_group_with_rules_is_repaired_even_when_every_eni_is_on_it() {
        let mut obs = observed(&["sg-0000000e"]);
        obs.instance.enis[1].groups = vec!["sg-0000000e".parse().unwrap()];
        let prior = obs.prior_state(&"111122223333".parse().unwrap(), &"eu-west-1".parse().unwrap(), "t");
        let groups = recorded(&[group("sg-0000000e", Purpose::Isolation, vec![Rule::all(false, V4_ANY)])]);
        let plan = decide(&case(), ARN, &obs, &prior, &groups, &no_docs(), Controls::default());
        assert!(plan.swaps.is_empty());
        assert!(!plan.is_empty(), "a repair is a change: {plan:?}");
        assert!(plan.repair.contains(&obs.instance.enis[0].vpc));
        let calls = api_calls(&case(), "i-01234567", &plan, &groups, true);
        assert!(calls.iter().any(|c| c.contains("RevokeSecurityGroupIngress sg-0000000e")), "{calls:#?}");
    }

    #[test]
    fn groups_are_fixed_to_their_purpose() {
        let (revoke, add) = group_fix(Purpose::Isolation, &default_rules());
        assert_eq!((revoke.len(), add.len()), (2, 0));
        let (revoke, add) = group_fix(Purpose::AllowAll, &default_rules());
        assert!(revoke.is_empty());
        assert_eq!(add, vec![Rule::all(false, V4_ANY), Rule::all(false, V6_ANY)]);
        assert_eq!(group_fix(Purpose::AllowAll, &Rule::allow_all()), (vec![], vec![]));
    }

    #[test]
    fn the_deny_names_the_instance_and_the_time_only_when_asked() {
        let d = Deny { instances: [ARN.to_owned()].into(), issued_before: None };
        let doc = d.document();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
        assert_eq!(doc["Statement"][0]["Condition"]["StringEquals"]["ec2:SourceInstanceARN"][0], ARN);
        assert_eq!(doc["Statement"][0]["Effect"], "Deny");
        let timed = Deny { issued_before: Some("2026-11-22T05:00:02Z".into()), ..d };
        assert_eq!(
            timed.document()["Statement"][1]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2026-11-22T05:00:02Z"
        );
        assert_eq!(Deny::parse(&timed.document()), Some(timed));
    }

    // Issue "Trust" point 6: a planted policy of the same name used to pass
    // verification (only its presence was checked).
    #[test]
    fn a_planted_policy_under_the_denys_name_does_not_hold() {
        let not_before = "2026-11-22T05:00:00Z";
        // Denies nothing: an impossible time.
        let planted = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": "1970-01-01T00:00:00Z"}}}]});
        assert_eq!(judge_deny(Some(&planted), ARN, not_before, false), DenyVerdict::Foreign);
        // Ours, with an Allow added for everyone else on the role.
        let mut widened = Deny { instances: [ARN.to_owned()].into(), issued_before: None }.document();
        widened["Statement"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"Effect": "Allow", "Action": "*", "Resource": "*"}));
        assert_eq!(judge_deny(Some(&widened), ARN, not_before, false), DenyVerdict::Foreign);
        // Ours, with our time statement moved into the past.
        let early =
            Deny { instances: [ARN.to_owned()].into(), issued_before: Some("2020-01-01T00:00:00Z".into()) };
        assert!(matches!(
            judge_deny(Some(&early.document()), ARN, not_before, false),
            DenyVerdict::TimeTooEarly { .. }
        ));
        // Ours, for another instance only.
        let theirs = Deny { instances: [OTHER.to_owned()].into(), issued_before: None };
        assert_eq!(
            judge_deny(Some(&theirs.document()), ARN, not_before, false),
            DenyVerdict::InstanceMissing
        );
        // The intended document replaces the planted one whole, keeps the other
        // instance of ours, and drops a time that is not ours.
        assert_eq!(
            intended_deny(Some(&planted), ARN, not_before, None).document(),
            Deny { instances: [ARN.to_owned()].into(), issued_before: None }.document()
        );
        let merged = intended_deny(Some(&theirs.document()), ARN, not_before, None);
        assert_eq!(merged.instances, [ARN.to_owned(), OTHER.to_owned()].into());
        assert_eq!(intended_deny(Some(&early.document()), ARN, not_before, None).issued_before, None);
        // A time of ours is kept: it was set after the first disassociation.
        let ours =
            Deny { instances: [OTHER.to_owned()].into(), issued_before: Some("2026-11-22T05:01:00Z".into()) };
        assert_eq!(
            intended_deny(Some(&ours.document()), ARN, not_before, Some("2026-11-22T06:00:00Z"))
                .issued_before
                .as_deref(),
            Some("2026-11-22T05:01:00Z")
        );
        assert!(judge_deny(Some(&merged.document()), ARN, not_before, false).holds());
        assert_eq!(judge_deny(Some(&merged.document()), ARN, not_before, true), DenyVerdict::TimeMissing);
    }

    #[test]
    fn release_keeps_the_deny_of_the_cases_other_instances() {
        let both = Deny {
            instances: [ARN.to_owned(), OTHER.to_owned()].into(),
            issued_before: Some("2026-11-22T05:01:00Z".into()),
        };
        let left = released_deny(&both.document(), ARN).unwrap();
        assert_eq!(left.instances, [OTHER.to_owned()].into());
        assert_eq!(left.issued_before, both.issued_before);
        let one =
            Deny { instances: [ARN.to_owned()].into(), issued_before: Some("2026-11-22T05:01:00Z".into()) };
        assert_eq!(released_deny(&one.document(), ARN), None, "nothing left: delete");
    }
}
