//! The binary through the templates' roles alone, in a lab that evaluates IAM identity
//! policies (`iam_enforce`): the roles are created from `cloudformation/*.yaml` as the
//! templates define them (the lab's roles-from-template), the responder is the root of
//! the lab's home account (a principal the templates' trust policies name), and every
//! call in the forensics and member accounts is made, and judged, as one of those roles.
//! A missing permission fails these tests, and the failure names the lab's reason.
//!
//! What the lab does not judge (lab/README.md, "IAM policy evaluation"): bucket and key
//! policies (the key policies EBS consults are checked by the lab's sharing extension),
//! SCPs, and condition keys it does not model (`aws:ResourceAccount`,
//! `iam:AssociatedResourceARN`, `ec2:Owner`: the templates use them with `IfExists`).

use cleanroom::ids::AccountId;
use serde_json::Value;

use super::support::{World, denials, deploy, enforced};

/// How many calls the enforcing lab allowed so far (every evaluated call counts).
async fn allowed(w: &World) -> u64 {
    let all = w.lab.admin(reqwest::Method::GET, "/_lab/iam-enforce/denials", None, None).await.unwrap();
    all["allowed"].as_u64().unwrap()
}

#[track_caller]
fn assert_no_denials(why: &str) {
    assert_eq!(why, "  (none)", "the lab refused calls of the templates' roles:\n{why}");
}

/// Takes `action` out of every Allow statement of `role`'s inline policies in `account`
/// (the template as deployed, minus one permission).
async fn revoke(w: &World, account: &AccountId, role: &str, action: &str) {
    let iam = w.clients(account).iam;
    let names = iam.list_role_policies().role_name(role).send().await.unwrap().policy_names().to_vec();
    let mut found = false;
    for name in names {
        let raw = iam.get_role_policy().role_name(role).policy_name(&name).send().await.unwrap();
        // IAM answers the document URL-encoded.
        let text = url::form_urlencoded::parse(format!("d={}", raw.policy_document()).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let mut doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        for s in doc["Statement"].as_array_mut().unwrap() {
            if s["Effect"] != "Allow" {
                continue;
            }
            let actions: Vec<Value> = match &s["Action"] {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            let kept: Vec<Value> = actions.iter().filter(|a| a.as_str() != Some(action)).cloned().collect();
            if kept.len() != actions.len() {
                found = true;
                s["Action"] =
                    if kept.is_empty() { Value::String("none:None".into()) } else { Value::Array(kept) };
            }
        }
        iam.put_role_policy()
            .role_name(role)
            .policy_name(&name)
            .policy_document(doc.to_string())
            .send()
            .await
            .unwrap();
    }
    assert!(found, "{role} never granted {action}");
}

#[tokio::test]
async fn isolate_verify_and_report_run_through_the_templates_roles_alone() {
    let w = World::seed().await;
    let _on = enforced().await;
    let before = allowed(&w).await;
    let case = "IR-PRIV-ISOLATE";
    let run = w.cleanroom(&["isolate", &w.suspect.arn(), "--case", case]);
    w.expect(&run, 0).await;
    run.stdout_has("isolated");
    let run = w.cleanroom(&["verify", "--case", case]);
    w.expect(&run, 0).await;
    run.stdout_has("VERIFIED");
    let run = w.cleanroom(&["report", "--case", case, "--format", "md"]);
    w.expect(&run, 0).await;
    assert_no_denials(&denials(&[&w.forensics, w.member()]).await);
    // The lab judged the calls (it was not letting everything through unevaluated).
    let judged = allowed(&w).await - before;
    assert!(judged > 50, "only {judged} calls were evaluated");
}

#[tokio::test]
async fn acquire_without_analysis_runs_through_the_templates_roles_alone() {
    let w = World::seed().await;
    let _on = enforced().await;
    let case = "IR-PRIV-ACQUIRE";
    let run = w.cleanroom(&["acquire", &w.suspect.arn(), "--case", case, "--no-analysis"]);
    w.expect(&run, 0).await;
    run.stdout_has("isolated");
    // Both disks reached the forensics account under its key, through the hand-off key
    // (the root volume is under aws/ebs: the relay copy used the template's key policy).
    let copies = w
        .clients(&w.forensics)
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:cleanroom:case").values(case).build())
        .send()
        .await
        .unwrap();
    assert_eq!(copies.snapshots().len(), 2, "{copies:#?}");
    for c in copies.snapshots() {
        assert_eq!(c.state().map(|s| s.as_str()), Some("completed"), "{c:?}");
        assert_eq!(c.kms_key_id(), Some(w.config.forensics.kms_key_arn.as_str()));
    }
    let run = w.cleanroom(&["verify", "--case", case]);
    w.expect(&run, 0).await;
    assert_no_denials(&denials(&[&w.forensics, w.member()]).await);
}

// Preflight's DryRun probes prove the permissions in the lab: with the templates' roles
// every probe passes; with one permission taken away, preflight names it and refuses.
#[tokio::test]
async fn preflight_passes_with_the_templates_roles_and_names_a_permission_taken_away() {
    let w = World::seed().await;
    let _on = enforced().await;
    let member = w.member().clone();
    let run = w.cleanroom(&["--json", "preflight", "--account", member.as_str()]);
    w.expect(&run, 0).await;
    let checks = run.json()["checks"].as_array().unwrap().clone();
    let ours: Vec<&Value> = checks
        .iter()
        .filter(|c| c["account"] == member.as_str() || c["account"] == w.forensics.as_str())
        .collect();
    assert!(ours.iter().filter(|c| c["name"].as_str().unwrap().starts_with("permission ")).count() >= 9);
    for c in &ours {
        assert_eq!(c["status"], "pass", "{c:#}");
    }

    revoke(&w, &member, "CleanroomResponder", "ec2:CreateSnapshots").await;
    revoke(&w, &w.forensics, "CleanroomForensics", "ec2:CreateVolume").await;
    let run = w.cleanroom(&["--json", "preflight", "--account", member.as_str()]);
    w.expect(&run, 2).await;
    let json = run.json();
    let failed: Vec<(String, String)> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| (c["account"].as_str().unwrap().to_owned(), c["name"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        failed,
        vec![
            (w.forensics.to_string(), "permission ec2:CreateVolume".to_owned()),
            (member.to_string(), "permission ec2:CreateSnapshots".to_owned()),
        ],
        "{json:#}"
    );
    let detail = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "permission ec2:CreateSnapshots" && c["account"] == member.as_str())
        .unwrap();
    assert!(
        detail["detail"].as_str().unwrap().contains("not authorized to perform: ec2:CreateSnapshots"),
        "{detail:#}"
    );
}

// A missing permission stops containment before any change, and the test harness names
// the lab's reason: here the member role without ec2:ModifyNetworkInterfaceAttribute.
#[tokio::test]
async fn a_permission_missing_from_the_member_role_is_refused_before_any_change_and_named() {
    let w = World::seed().await;
    let _on = enforced().await;
    let member = w.member().clone();
    revoke(&w, &member, "CleanroomResponder", "ec2:ModifyNetworkInterfaceAttribute").await;
    let run = w.cleanroom(&["isolate", &w.suspect.arn(), "--case", "IR-PRIV-DENIED"]);
    w.expect(&run, 2).await;
    let why = denials(&[&member]).await;
    assert!(
        why.contains("ec2:ModifyNetworkInterfaceAttribute") && why.contains("no_identity_allow"),
        "{why}"
    );
    assert!(why.contains("DryRun"), "refused at the DryRun, before any change: {why}");
    // Nothing changed: the instance's interface keeps its group.
    let i = w
        .clients(&member)
        .ec2
        .describe_instances()
        .instance_ids(w.suspect.instance.as_str())
        .send()
        .await
        .unwrap();
    let groups: Vec<String> = i.reservations()[0].instances()[0].network_interfaces()[0]
        .groups()
        .iter()
        .filter_map(|g| g.group_name().map(str::to_owned))
        .collect();
    assert_eq!(groups, vec!["web".to_owned()]);
    // Put back, it passes: the template's own role is what it needs.
    deploy(
        super::support::MEMBER_TEMPLATE,
        "ResponderRole",
        &member,
        &w.member_parameters,
        &w.member_resources,
    )
    .await;
    let run = w.cleanroom(&["isolate", &w.suspect.arn(), "--case", "IR-PRIV-DENIED"]);
    w.expect(&run, 0).await;
}
