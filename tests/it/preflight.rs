//! `cleanroom preflight` against the lab: a correct forensics setup passes; each
//! broken piece fails with exit 2, names the problem and the fix, and nothing changes.

use cleanroom::ids::AccountId;
use cleanroom::lab::seed;

use crate::support::*;

fn check<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {json:#}"))
}

#[tokio::test]
async fn a_correct_forensics_setup_passes_every_check() {
    let f = Forensics::seed().await;
    let run = f.cleanroom(&["preflight"]);
    run.success().stdout_has("preflight passed");
    let json = f.cleanroom(&["--json", "preflight"]).success().json();
    assert_eq!(json["ok"], true);
    let checks = json["checks"].as_array().unwrap();
    assert!(checks.len() >= 20, "{json:#}");
    for c in checks {
        assert_eq!(c["status"], "pass", "{c:#}");
    }
    assert!(check(&json, "forensics role")["detail"].as_str().unwrap().contains(f.account.as_str()));
    assert!(check(&json, "evidence bucket")["detail"].as_str().unwrap().contains("COMPLIANCE"));
}

#[tokio::test]
async fn a_bucket_without_object_lock_is_refused_with_the_fix() {
    let mut f = Forensics::seed().await;
    let plain = unique_bucket("plain");
    let s3 = f.clients().s3;
    s3.create_bucket()
        .bucket(plain.as_str())
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(REGION.into())
                .build(),
        )
        .send()
        .await
        .unwrap();
    f.config.forensics.evidence_bucket = plain;
    f.save();
    let run = f.cleanroom(&["--json", "preflight"]);
    run.expect_code(2);
    let bucket = check(&run.json(), "evidence bucket").clone();
    assert_eq!(bucket["status"], "fail");
    assert!(bucket["detail"].as_str().unwrap().contains("versioning is off"), "{bucket:#}");
    assert!(bucket["fix"].as_str().unwrap().contains("Object Lock"), "{bucket:#}");
}

#[tokio::test]
async fn a_disabled_key_is_refused_and_stays_disabled() {
    let f = Forensics::seed().await;
    let kms = f.clients().kms;
    // moto's DisableKey takes only the bare key id (AWS also takes the ARN).
    let key_id = f.config.forensics.kms_key_arn.as_str().rsplit('/').next().unwrap();
    kms.disable_key().key_id(key_id).send().await.unwrap();
    let run = f.cleanroom(&["--json", "preflight"]);
    run.expect_code(2);
    let key = check(&run.json(), "evidence key").clone();
    assert_eq!(key["status"], "fail");
    assert!(key["detail"].as_str().unwrap().contains("Disabled"), "{key:#}");
    assert!(key["fix"].as_str().unwrap().contains("enable-key"));
    // No check changes anything: the key is still disabled.
    let meta = kms.describe_key().key_id(f.config.forensics.kms_key_arn.as_str()).send().await.unwrap();
    assert_eq!(meta.key_metadata().unwrap().key_state().unwrap().as_str(), "Disabled");
}

#[tokio::test]
async fn a_role_that_cannot_be_assumed_is_named() {
    let mut f = Forensics::seed().await;
    let missing = format!("arn:aws:iam::{}:role/NoSuchRole", f.account);
    f.config.forensics.role_arn = Some(missing.parse().unwrap());
    f.save();
    let run = f.cleanroom(&["preflight"]);
    run.expect_code(2).stdout_has("cannot assume").stdout_has("NoSuchRole").stdout_has("fix:");
}

#[tokio::test]
async fn member_accounts_are_checked_through_the_member_role() {
    let f = Forensics::seed().await;
    let member = unique_account();
    seed::role(lab(), &member, &region(), seed::MEMBER_ROLE).await.unwrap();
    let stranger: AccountId = unique_account();
    let run =
        f.cleanroom(&["--json", "preflight", "--account", member.as_str(), "--account", stranger.as_str()]);
    run.expect_code(2);
    let json = run.json();
    let roles: Vec<_> =
        json["checks"].as_array().unwrap().iter().filter(|c| c["name"] == "member role").collect();
    assert_eq!(roles.len(), 2, "{json:#}");
    let ok = roles.iter().find(|c| c["account"] == member.as_str()).unwrap();
    assert_eq!(ok["status"], "pass");
    let refused = roles.iter().find(|c| c["account"] == stranger.as_str()).unwrap();
    assert_eq!(refused["status"], "fail");
    assert!(refused["detail"].as_str().unwrap().contains("CleanroomResponder"));
}

#[tokio::test]
async fn missing_clean_room_resources_are_each_named() {
    let mut f = Forensics::seed().await;
    f.config.analysis.subnet_id = "subnet-0000000000000dead".parse().unwrap();
    f.config.ssm.triage = "Cleanroom-NoSuchDocument".into();
    f.save();
    let run = f.cleanroom(&["--json", "preflight"]);
    run.expect_code(2);
    let json = run.json();
    assert_eq!(check(&json, "analysis subnet")["status"], "fail");
    let docs: Vec<_> =
        json["checks"].as_array().unwrap().iter().filter(|c| c["name"] == "SSM document").collect();
    let missing = docs.iter().find(|c| c["status"] == "fail").expect("the missing document fails");
    assert!(missing["detail"].as_str().unwrap().contains("Cleanroom-NoSuchDocument"));
}

#[tokio::test]
async fn preflight_creates_nothing() {
    let f = Forensics::seed().await;
    let ec2 = f.clients().ec2;
    let groups_before = ec2.describe_security_groups().send().await.unwrap().security_groups().len();
    f.cleanroom(&["preflight"]).success();
    let groups_after = ec2.describe_security_groups().send().await.unwrap().security_groups().len();
    assert_eq!(groups_before, groups_after);
    let home = clients(&cleanroom::lab::HOME_ACCOUNT.parse().unwrap()).ec2;
    let probe = home
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("cleanroom-preflight-probe")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(probe.security_groups().is_empty(), "a DryRun created a group");
}
