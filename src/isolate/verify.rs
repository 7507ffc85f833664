//! Prove containment held: from a fresh read of the instance, its ENIs, profile, Auto
//! Scaling group, load balancers, the case's trusted groups, the role policies and the
//! network around it, decide for every control whether it is in force, and say what
//! security groups cannot cut. Pure; the workflow does the reading.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::cloud::ec2::{ConnTrack, NetworkPaths};
use crate::cloud::{AsgGroup, Group, Instance, Purpose, TAG_CASE};
use crate::ids::{CaseId, VpcId};
use crate::isolate::observe::{Observed, PriorState};
use crate::isolate::plan::{CaseGroups, Controls, judge_deny};

/// One control and whether it is in force, or (`warning`) a limit of what containment
/// can do: shown, never counted as a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub control: String,
    pub ok: bool,
    pub detail: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

fn check(control: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check { control: control.into(), ok, detail: detail.into(), warning: false }
}

fn warning(control: impl Into<String>, detail: impl Into<String>) -> Check {
    Check { control: control.into(), ok: true, detail: detail.into(), warning: true }
}

/// What verification read again after the changes.
#[derive(Debug, Clone)]
pub struct Reread {
    pub obs: Observed,
    /// The case's trusted groups as they are now, and the untrusted ones carrying its tag.
    pub groups: CaseGroups,
    /// The deny policy of each role of the prior state (`None`: no policy).
    pub deny_docs: BTreeMap<String, Option<serde_json::Value>>,
    /// The prior Auto Scaling group read again: `None` when the instance had none,
    /// `Some(None)` when it is gone.
    pub asg_after: Option<Option<AsgGroup>>,
    /// Per VPC of the instance: its paths, or why they could not be read.
    pub paths: BTreeMap<VpcId, Result<NetworkPaths, String>>,
}

/// Every containment control for one instance, then the limits of containment.
pub fn containment_checks(
    case: &CaseId,
    instance_arn: &str,
    prior: &PriorState,
    reread: &Reread,
    controls: Controls,
) -> Vec<Check> {
    let now = &reread.obs;
    let groups = &reread.groups;
    let mut checks = Vec::new();
    for eni in &now.instance.enis {
        let isolation = groups.get(&eni.vpc, Purpose::Isolation);
        let ok = isolation.is_some_and(|g| eni.groups == [g.id.clone()]);
        let groups_text = eni.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        checks.push(check(format!("network {}", eni.id), ok, format!("groups [{groups_text}]")));
    }
    let vpcs: BTreeSet<_> = now.instance.enis.iter().map(|e| e.vpc.clone()).collect();
    for vpc in &vpcs {
        match groups.get(vpc, Purpose::Isolation) {
            Some(g) => checks.push(check(
                format!("isolation group {}", g.id),
                g.rules.is_empty(),
                if g.rules.is_empty() {
                    "no rules".to_owned()
                } else {
                    format!("{} rule(s) left", g.rules.len())
                },
            )),
            None => checks.push(check(format!("isolation group in {vpc}"), false, "missing")),
        }
    }
    checks.push(check(
        "termination protection",
        now.attributes.termination_protection,
        if now.attributes.termination_protection { "on" } else { "off" },
    ));
    checks.push(check(
        "shutdown behaviour",
        now.attributes.shutdown_behavior == "stop",
        now.attributes.shutdown_behavior.clone(),
    ));
    let deleting: Vec<&str> =
        now.instance.volumes.iter().filter(|v| v.delete_on_termination).map(|v| v.volume.as_str()).collect();
    checks.push(check(
        "volumes kept on termination",
        deleting.is_empty(),
        if deleting.is_empty() {
            format!("{} volume(s) DeleteOnTermination=false", now.instance.volumes.len())
        } else {
            format!("DeleteOnTermination=true: {}", deleting.join(", "))
        },
    ));
    checks.push(check(
        "case tag",
        now.instance.tags.get(TAG_CASE).map(String::as_str) == Some(case.as_str()),
        format!("{TAG_CASE}={}", now.instance.tags.get(TAG_CASE).map(String::as_str).unwrap_or("-")),
    ));
    if let Some(prior_asg) = &prior.auto_scaling_group {
        let member = now.asg.as_ref().map(|g| g.name.clone());
        checks.push(check(
            "auto scaling",
            member.is_none(),
            match &member {
                Some(g) => format!("still in {g}"),
                None => format!("detached from {}", prior_asg.name),
            },
        ));
        match &reread.asg_after {
            Some(Some(after)) => checks.push(check(
                "service capacity kept",
                after.desired >= prior_asg.desired,
                format!("{} desired {} (was {})", after.name, after.desired, prior_asg.desired),
            )),
            // The group is gone (or unreadable): its capacity is not known to be kept.
            _ => checks.push(check(
                "service capacity kept",
                false,
                format!("{} not found: capacity unknown", prior_asg.name),
            )),
        }
    } else {
        checks.push(check("auto scaling", now.asg.is_none(), "not in a group"));
    }
    checks.push(check(
        "target groups",
        now.targets.is_empty(),
        if now.targets.is_empty() {
            format!("deregistered from {}", prior.target_groups.len())
        } else {
            format!(
                "still in {}",
                now.targets.iter().map(|t| t.target_group_arn.as_str()).collect::<Vec<_>>().join(", ")
            )
        },
    ));
    checks.push(check(
        "classic load balancers",
        now.classic.is_empty(),
        if now.classic.is_empty() {
            format!("deregistered from {}", prior.classic_load_balancers.len())
        } else {
            format!("still in {}", now.classic.join(", "))
        },
    ));
    let profile_ok =
        now.profile.as_ref().is_none_or(|p| p.state == "disassociating" || p.state == "disassociated");
    checks.push(check(
        "instance profile",
        profile_ok,
        match &now.profile {
            Some(p) => format!("{} ({})", p.profile_arn, p.state),
            None => "none".into(),
        },
    ));
    for role in &prior.profile_roles {
        let doc = reread.deny_docs.get(role).and_then(|d| d.as_ref());
        let verdict = judge_deny(doc, instance_arn, &prior.captured_at, controls.revoke_all_role_sessions);
        checks.push(check(format!("role {role} credentials denied"), verdict.holds(), verdict.describe()));
    }
    if controls.minimal_conntrack {
        for eni in &now.instance.enis {
            checks.push(check(
                format!("connection tracking {}", eni.id),
                eni.conntrack.is_some_and(|c| c.is_minimal()),
                match eni.conntrack {
                    Some(c) => format!(
                        "TCP established {} s, UDP stream {} s, UDP {} s",
                        show(c.tcp_established),
                        show(c.udp_stream),
                        show(c.udp)
                    ),
                    None => "not reported by DescribeInstances".into(),
                },
            ));
        }
    }
    checks.extend(tampering(groups, &vpcs));
    checks.extend(network_limits(&now.instance, &reread.paths));
    checks
}

fn show(v: Option<i32>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

/// Groups that carry the case's tag in the instance's VPCs but are not recorded in the
/// case: someone else made them (or changed a tag). Never used; reported.
fn tampering(groups: &CaseGroups, vpcs: &BTreeSet<VpcId>) -> Vec<Check> {
    let row = |g: &Group, why: &str| {
        warning(
            format!("untrusted group {}", g.id),
            format!("{} in {} ({why}): not used; possible tampering", g.name, g.vpc),
        )
    };
    groups
        .untrusted
        .iter()
        .filter(|g| vpcs.contains(&g.vpc))
        .map(|g| row(g, "carries the case tag but is not recorded in the case"))
        .chain(
            groups
                .superseded
                .iter()
                .filter(|g| vpcs.contains(&g.vpc))
                .map(|g| row(g, "recorded, but a newer group of the case replaced it")),
        )
        .collect()
}

/// Route targets whose flows EC2 tracks whatever the security group rules (Amazon
/// EC2 User Guide, "Automatically tracked connections"), by id prefix.
const TRACKED_TARGETS: &[(&str, &str)] = &[
    ("nat-", "NAT gateway"),
    ("eigw-", "egress-only internet gateway"),
    ("tgw-", "transit gateway"),
    ("vpce-", "VPC endpoint (Gateway Load Balancer or Network Firewall)"),
];

/// Service-owned interface types whose flows EC2 tracks whatever the rules.
const TRACKED_INTERFACES: &[(&str, &str)] = &[
    ("network_load_balancer", "Network Load Balancer"),
    ("vpc_endpoint", "PrivateLink interface endpoint"),
    ("gateway_load_balancer", "Gateway Load Balancer"),
    ("gateway_load_balancer_endpoint", "Gateway Load Balancer endpoint"),
    ("nat_gateway", "NAT gateway"),
    ("transit_gateway", "transit gateway attachment"),
    ("global_accelerator_managed", "Global Accelerator"),
    ("lambda", "Lambda (Hyperplane)"),
];

/// What security groups cannot cut, where the API shows it: paths whose flows stay
/// tracked, link-local services no group filters, trunk ENIs' branches. Warnings.
pub fn network_limits(
    instance: &Instance,
    paths: &BTreeMap<VpcId, Result<NetworkPaths, String>>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let vpcs: BTreeSet<&VpcId> = instance.enis.iter().map(|e| &e.vpc).collect();
    for vpc in &vpcs {
        out.push(warning(
            format!("link-local services {vpc}"),
            "DNS to the VPC resolver (169.254.169.253, VPC base +2), IMDS (169.254.169.254) and Amazon Time Sync (169.254.169.123) are not filtered by security groups: DNS queries, and data tunnelled through them, still leave the instance. A Route 53 Resolver DNS Firewall rule group on the VPC can block them (VPC-wide; see README).",
        ));
    }
    let timeouts = |eni: &crate::cloud::Eni| ConnTrack::tcp_established_or_default(eni.conntrack.as_ref());
    for eni in &instance.enis {
        if eni.interface_type.as_deref() == Some("trunk") {
            out.push(warning(
                format!("trunk {}", eni.id),
                "a trunk interface: its branch ENIs (ECS awsvpc tasks) are not among the instance's interfaces and keep their own groups; contain the tasks separately",
            ));
        }
        let Some(Ok(p)) = paths.get(&eni.vpc) else { continue };
        let Some(subnet) = &eni.subnet else { continue };
        let Some(table) = p.table_of(subnet) else { continue };
        let mut seen = BTreeSet::new();
        for r in &table.routes {
            let Some((_, what)) = TRACKED_TARGETS.iter().find(|(prefix, _)| r.target.starts_with(prefix))
            else {
                continue;
            };
            if !seen.insert(r.target.clone()) {
                continue;
            }
            let idle = timeouts(eni);
            let hint = if ConnTrack::MINIMAL.tcp_established.is_some_and(|m| idle > m) {
                "; --minimal-conntrack-timeouts lowers it to 60 s"
            } else {
                ""
            };
            out.push(warning(
                format!("tracked path {} ({})", r.target, eni.id),
                format!(
                    "{what} on route {} of {}: flows through it stay tracked whatever the rules, so connections open before isolation survive until idle for {idle} s (TCP established{hint})",
                    r.destination, table.id
                ),
            ));
        }
    }
    for vpc in &vpcs {
        match paths.get(*vpc) {
            Some(Ok(p)) => {
                for (kind, what) in TRACKED_INTERFACES {
                    let n = p.interfaces.iter().filter(|i| i.interface_type == *kind).count();
                    if n == 0
                        || (*kind == "nat_gateway" && out.iter().any(|c| c.detail.starts_with("NAT gateway")))
                    {
                        continue;
                    }
                    let nlb = if *kind == "network_load_balancer" {
                        " (and an NLB keeps a deregistered target's connections unless connection termination is on)"
                    } else {
                        ""
                    };
                    out.push(warning(
                        format!("tracked service {kind} {vpc}"),
                        format!(
                            "{n} {what} interface(s) in the VPC: flows through them stay tracked whatever the rules{nlb}; connections open before isolation survive until idle"
                        ),
                    ));
                }
            }
            Some(Err(e)) => out.push(warning(
                format!("network paths {vpc}"),
                format!("could not read route tables and interfaces: {e}"),
            )),
            None => {}
        }
    }
    out
}

pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok)
}
