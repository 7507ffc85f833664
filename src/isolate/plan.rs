//! What must change for one instance, decided from plain data: the observed state, the
//! recorded prior state and the case's groups. Pure, so every decision is tested
//! without a cloud; `--plan` prints the same plan as the API calls it would make.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cloud::{Group, Purpose, Rule, TAG_CASE, Target, V4_ANY, V6_ANY};
use crate::ids::{CaseId, NetworkInterfaceId, SecurityGroupId, VpcId};
use crate::isolate::observe::{Observed, PriorState};
use crate::protect::ProtectPlan;

/// The name of the inline deny put on the instance role.
pub fn deny_policy_name(case: &CaseId) -> String {
    format!("cleanroom-revoke-sessions-{case}")
}

/// Deny everything to sessions of the role issued before `issued_before` (RFC 3339):
/// credentials the instance (or an attacker holding its keys) already has stop working.
pub fn deny_policy(issued_before: &str) -> serde_json::Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "CleanroomRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}}
        }]
    })
}

/// The case's groups, one per (VPC, purpose).
#[derive(Debug, Clone, Default)]
pub struct CaseGroups {
    pub by_vpc: BTreeMap<(VpcId, Purpose), Group>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{count} {purpose} security groups of case {case} in {vpc} ({ids}): refusing to guess which is the one; delete the extra ones or remove their {TAG_CASE} tag"
)]
pub struct AmbiguousGroups {
    pub case: String,
    pub vpc: VpcId,
    pub purpose: &'static str,
    pub count: usize,
    pub ids: String,
}

impl CaseGroups {
    /// Indexes groups found by the case tag; two groups for one VPC and purpose is
    /// ambiguity, refused rather than guessed.
    pub fn index(case: &CaseId, found: &[Group]) -> Result<Self, AmbiguousGroups> {
        let mut by_vpc: BTreeMap<(VpcId, Purpose), Vec<Group>> = BTreeMap::new();
        for g in found {
            if let Some(p) = g.purpose {
                by_vpc.entry((g.vpc.clone(), p)).or_default().push(g.clone());
            }
        }
        let mut out = BTreeMap::new();
        for ((vpc, purpose), groups) in by_vpc {
            if groups.len() > 1 {
                return Err(AmbiguousGroups {
                    case: case.to_string(),
                    vpc,
                    purpose: purpose.tag(),
                    count: groups.len(),
                    ids: groups.iter().map(|g| g.id.to_string()).collect::<Vec<_>>().join(", "),
                });
            }
            out.insert((vpc, purpose), groups.into_iter().next().expect("one group"));
        }
        Ok(Self { by_vpc: out })
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
    pub disassociate: Option<String>,
    /// Roles that still need the deny (decided when their policies are read).
    pub deny_roles: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan { vpcs: self.vpcs.clone(), ..Plan::default() }
    }

    pub fn needs_allow_all(&self, vpc: &VpcId) -> bool {
        self.swaps.iter().any(|s| &s.vpc == vpc && s.via_allow_all)
    }
}

/// Decides what must change for `obs` to be contained for `case`. `roles_denied` are the
/// roles (of the prior profile) that already carry the case's deny.
pub fn decide(
    case: &CaseId,
    obs: &Observed,
    prior: &PriorState,
    groups: &CaseGroups,
    roles_denied: &BTreeSet<String>,
) -> Plan {
    let mut plan =
        Plan { protect: ProtectPlan::decide(case, &obs.instance, &obs.attributes), ..Plan::default() };
    plan.detach_asg = obs.asg.as_ref().map(|g| g.name.clone());
    plan.deregister = obs.targets.clone();
    plan.classic = obs.classic.clone();
    for eni in &obs.instance.enis {
        let isolation = groups.id(&eni.vpc, Purpose::Isolation);
        let allow_all = groups.id(&eni.vpc, Purpose::AllowAll);
        let on = |g: Option<&SecurityGroupId>| g.is_some_and(|g| eni.groups == [g.clone()]);
        if on(isolation) {
            continue;
        }
        plan.vpcs.insert(eni.vpc.clone());
        plan.swaps.push(Swap { eni: eni.id.clone(), vpc: eni.vpc.clone(), via_allow_all: !on(allow_all) });
    }
    plan.disassociate = obs.profile.as_ref().map(|p| p.association_id.clone());
    let roles: BTreeSet<&String> = prior.profile_roles.iter().chain(obs.profile_roles.iter()).collect();
    plan.deny_roles = roles.into_iter().filter(|r| !roles_denied.contains(*r)).cloned().collect();
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
                    calls.push(format!("ec2:CreateSecurityGroup DryRun=true VpcId={vpc} (permission check)"));
                    calls.push(format!(
                        "ec2:CreateSecurityGroup VpcId={vpc} GroupName={} TagSpecifications={TAG_CASE}={case},cleanroom:purpose={}",
                        p.group_name(case),
                        p.tag()
                    ));
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
            "iam:PutRolePolicy RoleName={r} PolicyName={} (Deny * when aws:TokenIssueTime < now)",
            deny_policy_name(case)
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
                    },
                    Eni {
                        id: "eni-0000000b".parse().unwrap(),
                        device_index: 1,
                        vpc: "vpc-01234567".parse().unwrap(),
                        groups: vec!["sg-0000000c".parse().unwrap()],
                        ipv6_addresses: vec!["2001:db8::1".into()],
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

    #[test]
    fn a_fresh_instance_needs_every_control() {
        let obs = observed(&["sg-0000000d"]);
        let prior = obs.prior_state(&"111122223333".parse().unwrap(), &"eu-west-1".parse().unwrap(), "t");
        let plan = decide(&case(), &obs, &prior, &CaseGroups::default(), &BTreeSet::new());
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
        let groups = CaseGroups::index(&case(), &[group("sg-0000000e", Purpose::Isolation, vec![])]).unwrap();
        let plan = decide(&case(), &obs, &prior, &groups, &["web".to_owned()].into());
        assert!(plan.is_empty(), "{plan:?}");
        assert!(api_calls(&case(), "i-01234567", &plan, &groups, true).is_empty());
    }

    #[test]
    fn an_eni_left_on_the_allow_all_group_goes_straight_to_isolation() {
        let obs = observed(&["sg-0000000f"]);
        let prior = obs.prior_state(&"111122223333".parse().unwrap(), &"eu-west-1".parse().unwrap(), "t");
        let groups = CaseGroups::index(
            &case(),
            &[
                group("sg-0000000e", Purpose::Isolation, vec![]),
                group("sg-0000000f", Purpose::AllowAll, Rule::allow_all()),
            ],
        )
        .unwrap();
        let plan = decide(&case(), &obs, &prior, &groups, &BTreeSet::new());
        assert_eq!(plan.swaps.iter().map(|s| s.via_allow_all).collect::<Vec<_>>(), vec![false, true]);
    }

    #[test]
    fn two_isolation_groups_in_one_vpc_are_refused() {
        let err = CaseGroups::index(
            &case(),
            &[
                group("sg-0000000e", Purpose::Isolation, vec![]),
                group("sg-0000001e", Purpose::Isolation, vec![]),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("refusing to guess"), "{err}");
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
    fn the_deny_names_the_token_issue_time() {
        let p = deny_policy("2026-11-22T05:00:00Z");
        assert_eq!(
            p["Statement"][0]["Condition"]["DateLessThan"]["aws:TokenIssueTime"],
            "2026-11-22T05:00:00Z"
        );
        assert_eq!(p["Statement"][0]["Effect"], "Deny");
    }
}
