//! Prove containment held: from a fresh read of the instance, its ENIs, profile, Auto
//! Scaling group, load balancers, the case's groups and the role policies, decide for
//! every control whether it is in force. Pure; the workflow does the reading.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::cloud::{AsgGroup, Purpose, TAG_CASE};
use crate::ids::CaseId;
use crate::isolate::observe::{Observed, PriorState};
use crate::isolate::plan::CaseGroups;

/// One control and whether it is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub control: String,
    pub ok: bool,
    pub detail: String,
}

fn check(control: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check { control: control.into(), ok, detail: detail.into() }
}

/// Every containment control for one instance. `asg_after` is the prior Auto Scaling
/// group read again (its capacity must not have dropped).
pub fn containment_checks(
    case: &CaseId,
    prior: &PriorState,
    now: &Observed,
    groups: &CaseGroups,
    roles_denied: &BTreeSet<String>,
    asg_after: Option<&AsgGroup>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for eni in &now.instance.enis {
        let isolation = groups.get(&eni.vpc, Purpose::Isolation);
        let ok = isolation.is_some_and(|g| eni.groups == [g.id.clone()]);
        let groups_text = eni.groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(",");
        checks.push(check(format!("network {}", eni.id), ok, format!("groups [{groups_text}]")));
    }
    let vpcs: BTreeSet<_> = now.instance.enis.iter().map(|e| e.vpc.clone()).collect();
    for vpc in vpcs {
        match groups.get(&vpc, Purpose::Isolation) {
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
        if let Some(after) = asg_after {
            checks.push(check(
                "service capacity kept",
                after.desired >= prior_asg.desired,
                format!("{} desired {} (was {})", after.name, after.desired, prior_asg.desired),
            ));
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
        checks.push(check(
            format!("role sessions denied {role}"),
            roles_denied.contains(role),
            if roles_denied.contains(role) {
                "deny for sessions issued before isolation"
            } else {
                "no deny policy"
            },
        ));
    }
    checks
}

pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok)
}
