//! Both templates against the calls the code makes (derived in [`super::calls`]): every
//! call is granted to the role that makes it, nothing is granted that no call needs, no
//! action is a wildcard, and the denies and key and bucket policies the issue asks for
//! are there.
//!
//! **Which role calls what** (kept here, each call classified once; an unclassified call
//! fails the test, so a new call cannot ship without a decision):
//! - the *member role* (`CleanroomResponder`, in each suspect's account) makes every call
//!   of containment, capture, snapshots, the relay copy under the hand-off key and the
//!   share, and the member-account preflight probes;
//! - the *forensics role* (`CleanroomForensics`) writes and reads the evidence bucket,
//!   signs custody records with the KMS key, copies shared snapshots under the evidence
//!   key, runs the clean room (EC2 volumes and instances, SSM) and the forensics-account
//!   preflight probes;
//! - the *analysis role* (`CleanroomAnalysis`, the analysis instance's profile) runs the
//!   collection documents, whose scripts upload evidence to S3 and read it back.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::calls::{self, Operation};
use super::support::template;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Member,
    Forensics,
    Analysis,
}

/// Who makes each call the adapters can make. `&[]` with a reason: no stage calls it.
fn callers(op: &Operation) -> Result<&'static [Role], String> {
    use Role::*;
    const M: &[Role] = &[Member];
    const F: &[Role] = &[Forensics];
    const MF: &[Role] = &[Member, Forensics];
    Ok(match (op.service.as_str(), op.name.as_str()) {
        // Containment and capture in the suspect's account.
        (
            "ec2",
            "DescribeInstances" | "DescribeInstanceAttribute" | "DescribeIamInstanceProfileAssociations",
        )
        | ("ec2", "ModifyInstanceAttribute" | "ModifyNetworkInterfaceAttribute" | "CreateSecurityGroup")
        | ("ec2", "CreateTags" | "AuthorizeSecurityGroupIngress" | "AuthorizeSecurityGroupEgress")
        | ("ec2", "RevokeSecurityGroupIngress" | "RevokeSecurityGroupEgress")
        | ("ec2", "DisassociateIamInstanceProfile" | "AssociateIamInstanceProfile")
        | ("ec2", "DescribeNetworkInterfaces" | "GetConsoleOutput" | "GetConsoleScreenshot")
        | ("ec2", "DescribeInstanceTypes" | "DescribeRegions" | "DescribeVolumes")
        // Which paths of an ENI's subnet stay tracked (containment's warning rows).
        | ("ec2", "DescribeRouteTables")
        | (
            "ec2",
            "CreateSnapshots" | "CreateSnapshot" | "ModifySnapshotAttribute" | "DescribeSnapshotAttribute",
        )
        | ("iam", "ListInstanceProfilesForRole" | "GetRolePolicy" | "PutRolePolicy" | "DeleteRolePolicy")
        | (
            "iam",
            "GetRole" | "ListAttachedRolePolicies" | "ListRolePolicies" | "GetPolicy" | "GetPolicyVersion",
        )
        | ("autoscaling", _)
        | ("elbv2" | "elb", _)
        | ("cloudtrail", "LookupEvents") => M,
        // Both sides: the member reads the suspect's groups and profile, the forensics
        // preflight checks the clean room's; the member copies under the hand-off key
        // (relay), the forensics role under the evidence key; each checks its key.
        ("ec2", "DescribeSecurityGroups" | "DescribeSnapshots" | "CopySnapshot")
        | ("iam", "GetInstanceProfile")
        | ("kms", "DescribeKey")
        | ("sts", "GetCallerIdentity") => MF,
        // Evidence, custody, the clean room and its preflight.
        ("s3", _)
        | ("kms", "Sign" | "GetPublicKey")
        | ("ec2", "RunInstances" | "CreateVolume" | "DescribeSubnets" | "DescribeImages")
        | ("ec2", "AttachVolume" | "DetachVolume" | "DeleteVolume" | "TerminateInstances")
        | ("ssm", _) => F,
        ("ec2", "DeleteSnapshot") => {
            // `Ebs::delete_snapshot` exists for cleaning up a failed relay copy by hand;
            // no stage calls it, and both roles deny it (evidence is never destroyed).
            &[]
        }
        _ => {
            return Err(format!(
                "{op} is called by the code but not classified in tests/it/privilege/templates.rs `callers`: decide which role makes it"
            ));
        }
    })
}

/// The IAM service prefix of an adapter's service name.
fn prefix(service: &str) -> &str {
    match service {
        "elbv2" | "elb" => "elasticloadbalancing",
        s => s,
    }
}

/// What EBS asks of KMS when it copies a snapshot or restores a volume (EBS User Guide,
/// "Permissions to use AWS KMS keys"): on the source's key and on the result's key.
const EBS_SOURCE_KEY: [&str; 4] = ["kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt", "kms:ReEncryptFrom"];
const EBS_RESULT_KEY: [&str; 4] =
    ["kms:DescribeKey", "kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptTo"];

/// The IAM actions one call needs. Mostly the operation's own name; the exceptions are
/// where AWS authorizes a call under other names, or also under others.
fn actions(op: &Operation) -> Vec<String> {
    let own = format!("{}:{}", prefix(&op.service), op.name);
    let mut out: Vec<&str> = match (op.service.as_str(), op.name.as_str()) {
        ("sts", "GetCallerIdentity") => vec![], // never needs a permission (IAM User Guide)
        // S3's permission names (S3 User Guide, "Policy actions for Amazon S3"); the
        // evidence bucket is encrypted under the evidence key (SSE-KMS), so writing asks
        // KMS for a data key and reading (and completing a multipart upload) decrypts.
        ("s3", "PutObject") => vec!["s3:PutObject", "s3:PutObjectRetention", "kms:GenerateDataKey"],
        ("s3", "CreateMultipartUpload") => {
            vec!["s3:PutObject", "s3:PutObjectRetention", "kms:GenerateDataKey", "kms:Decrypt"]
        }
        ("s3", "UploadPart" | "CompleteMultipartUpload") => vec!["s3:PutObject"],
        ("s3", "GetObject") => vec!["s3:GetObject", "s3:GetObjectVersion", "kms:Decrypt"],
        // HeadObject returns the lock mode, retain-until date and legal hold only to a
        // caller with GetObjectRetention and GetObjectLegalHold: verify reads them.
        ("s3", "HeadObject") => {
            vec!["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:GetObjectLegalHold"]
        }
        ("s3", "ListObjectsV2") => vec!["s3:ListBucket"],
        ("s3", "ListObjectVersions") => vec!["s3:ListBucketVersions"],
        ("s3", "GetObjectLockConfiguration") => vec!["s3:GetBucketObjectLockConfiguration"],
        // Tags given in the creating call need ec2:CreateTags with ec2:CreateAction.
        ("ec2", "CreateSnapshots" | "CreateSnapshot" | "CreateSecurityGroup") => {
            vec![own.as_str(), "ec2:CreateTags"]
        }
        // A copy decrypts under the source's key and encrypts under the copy's.
        ("ec2", "CopySnapshot") => {
            let mut v = vec![own.as_str(), "ec2:CreateTags"];
            v.extend(EBS_SOURCE_KEY);
            v.extend(EBS_RESULT_KEY);
            v
        }
        // The clean room restores evidence copies (under the evidence key) as volumes.
        ("ec2", "CreateVolume") => {
            let mut v = vec![own.as_str(), "ec2:CreateTags"];
            v.extend(EBS_SOURCE_KEY.iter().take(3));
            v
        }
        // An instance profile in the call passes its role.
        ("ec2", "AssociateIamInstanceProfile") => vec![own.as_str(), "iam:PassRole"],
        ("ec2", "RunInstances") => vec![own.as_str(), "iam:PassRole", "ec2:CreateTags"],
        _ => vec![own.as_str()],
    };
    out.dedup();
    out.into_iter().map(str::to_owned).collect()
}

/// The analysis instance's calls: the AWS CLI commands of the collection scripts.
fn analysis_actions(call: &calls::CliCall) -> Vec<&'static str> {
    let version =
        |plain: &'static str, versioned: &'static str| if call.version_id { versioned } else { plain };
    match call.command.as_str() {
        // A free key must answer 404, which S3 does only to a caller that may list.
        "s3api head-object" => vec![version("s3:GetObject", "s3:GetObjectVersion"), "s3:ListBucket"],
        "s3api get-object" => vec![version("s3:GetObject", "s3:GetObjectVersion"), "kms:Decrypt"],
        "s3api put-object" => vec!["s3:PutObject", "kms:GenerateDataKey"],
        // `aws s3 cp` uploads in parts above its threshold and aborts a failed upload.
        "s3 cp" => vec!["s3:PutObject", "s3:AbortMultipartUpload", "kms:GenerateDataKey", "kms:Decrypt"],
        other => panic!(
            "{}: `{other}` is not mapped to IAM actions in tests/it/privilege/templates.rs `analysis_actions`",
            call.site
        ),
    }
}

/// Granted to the forensics role ahead of the clean-room stage, whose calls land with
/// another branch (the issue lists them): allowed to be unused until then, required after.
const CLEAN_ROOM_AHEAD: [&str; 12] = [
    "ec2:AttachVolume",
    "ec2:DetachVolume",
    "ec2:DeleteVolume",
    "ec2:TerminateInstances",
    "ec2:DescribeVolumes",
    // The analysis instance's state while it starts (the instance_running waiter).
    "ec2:DescribeInstances",
    "ssm:SendCommand",
    "ssm:GetCommandInvocation",
    "ssm:DescribeInstanceInformation",
    "ssm:CreateDocument",
    "ssm:UpdateDocument",
    "ssm:UpdateDocumentDefaultVersion",
];

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    }
}

/// The statements of a role's inline policies, with the policy name.
fn statements<'a>(template: &'a Value, role: &str) -> Vec<(&'a str, &'a Value)> {
    let props = &template["Resources"][role]["Properties"];
    assert!(props.is_object(), "no role {role} in the template");
    let mut out = Vec::new();
    for policy in as_list(&props["Policies"]) {
        let name = policy["PolicyName"].as_str().unwrap_or("?");
        for s in as_list(&policy["PolicyDocument"]["Statement"]) {
            out.push((name, s));
        }
    }
    out
}

/// The actions a role's Allow statements grant (literal: wildcards are refused below).
fn granted(template: &Value, role: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (policy, s) in statements(template, role) {
        let sid = s["Sid"].as_str().unwrap_or("?");
        assert!(
            s.get("NotAction").is_none(),
            "{role} {policy}/{sid}: NotAction grants what it does not name"
        );
        if s["Effect"] != "Allow" {
            continue;
        }
        for a in as_list(&s["Action"]) {
            let a = a.as_str().unwrap_or_else(|| panic!("{role} {policy}/{sid}: action {a} is not a string"));
            out.entry(a.to_owned()).or_default().push(format!("{policy}/{sid}"));
        }
    }
    out
}

fn denied_everywhere(template: &Value, role: &str) -> BTreeSet<String> {
    statements(template, role)
        .into_iter()
        .filter(|(_, s)| s["Effect"] == "Deny" && s["Resource"] == "*" && s.get("Condition").is_none())
        .flat_map(|(_, s)| as_list(&s["Action"]).into_iter().filter_map(|a| a.as_str().map(str::to_owned)))
        .collect()
}

/// What each role needs, from the derived calls, with the calls that need each action.
fn required() -> BTreeMap<Role, BTreeMap<String, Vec<String>>> {
    let mut need: BTreeMap<Role, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut unclassified = Vec::new();
    for op in calls::sdk_operations().keys() {
        match callers(op) {
            Ok(roles) => {
                for role in roles {
                    for a in actions(op) {
                        need.entry(*role).or_default().entry(a).or_default().push(op.to_string());
                    }
                }
            }
            Err(e) => unclassified.push(e),
        }
    }
    assert!(unclassified.is_empty(), "{}", unclassified.join("\n"));
    for call in calls::analysis_commands() {
        for a in analysis_actions(&call) {
            need.entry(Role::Analysis).or_default().entry(a.to_owned()).or_default().push(call.site.clone());
        }
    }
    need
}

fn role_of(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Member => ("cloudformation/member-account.yaml", "ResponderRole"),
        Role::Forensics => ("cloudformation/forensics-account.yaml", "ForensicsRole"),
        Role::Analysis => ("cloudformation/forensics-account.yaml", "AnalysisRole"),
    }
}

// The derivation itself must find calls, and find them all: a scanner that found nothing
// would make every other test here pass vacuously.
#[test]
fn the_calls_are_derived_from_the_code_and_every_sdk_call_is_named() {
    let named = calls::sdk_operations();
    for (service, op) in [
        ("ec2", "CreateSnapshots"),
        ("ec2", "ModifyNetworkInterfaceAttribute"),
        ("kms", "Sign"),
        ("iam", "GetRole"),
        ("s3", "PutObject"),
        ("s3", "HeadObject"),
        ("ec2", "RunInstances"),
        ("cloudtrail", "LookupEvents"),
    ] {
        let op = Operation { service: service.into(), name: op.into() };
        assert!(
            named.contains_key(&op),
            "{op} not derived from src/aws: {:?}",
            named.keys().collect::<Vec<_>>()
        );
    }
    assert!(named.len() > 60, "only {} operations derived", named.len());
    // Every SDK builder call is named in an error mapping, under its own name.
    let unnamed: Vec<String> = calls::builder_operations()
        .into_iter()
        .filter(|(op, _)| !named.contains_key(op))
        .map(|(op, sites)| format!("{op} at {sites:?}"))
        .collect();
    assert!(
        unnamed.is_empty(),
        "SDK calls whose errors are not mapped under their operation:\n{}",
        unnamed.join("\n")
    );
    assert!(calls::builder_operations().len() > 50);
    let cli = calls::analysis_commands();
    assert!(
        cli.iter().any(|c| c.command == "s3 cp") && cli.iter().any(|c| c.command == "s3api head-object"),
        "{cli:?}"
    );
}

#[test]
fn every_call_is_granted_to_the_role_that_makes_it() {
    let need = required();
    let mut missing = Vec::new();
    for (role, actions) in &need {
        let (file, logical) = role_of(*role);
        let have = granted(&template(file), logical);
        for (action, why) in actions {
            if !have.contains_key(action) {
                missing.push(format!("{logical} ({file}) lacks {action}, needed by {why:?}"));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn nothing_is_granted_that_no_call_needs() {
    let need = required();
    let mut extra = Vec::new();
    for role in [Role::Member, Role::Forensics, Role::Analysis] {
        let (file, logical) = role_of(role);
        let empty = BTreeMap::new();
        let needed = need.get(&role).unwrap_or(&empty);
        for (action, sids) in granted(&template(file), logical) {
            let ahead = role == Role::Forensics && CLEAN_ROOM_AHEAD.contains(&action.as_str());
            if !needed.contains_key(&action) && !ahead {
                extra.push(format!(
                    "{logical} ({file}) grants {action} in {sids:?}, but no call of that role needs it"
                ));
            }
        }
    }
    assert!(extra.is_empty(), "{}", extra.join("\n"));
    // The clean-room grants ahead of its code are granted (the issue asks for them now).
    let forensics = granted(&template("cloudformation/forensics-account.yaml"), "ForensicsRole");
    for action in CLEAN_ROOM_AHEAD {
        assert!(
            forensics.contains_key(action),
            "ForensicsRole lacks {action}, which the clean room will call"
        );
    }
}

#[test]
fn no_wildcard_action_is_granted() {
    for (file, role) in [
        ("cloudformation/member-account.yaml", "ResponderRole"),
        ("cloudformation/forensics-account.yaml", "ForensicsRole"),
        ("cloudformation/forensics-account.yaml", "AnalysisRole"),
    ] {
        for (action, sids) in granted(&template(file), role) {
            assert!(
                !action.contains('*') && !action.contains('?'),
                "{role} grants the wildcard {action} in {sids:?}"
            );
        }
    }
}

#[test]
fn what_no_stage_may_do_is_denied_to_both_roles() {
    let member = denied_everywhere(&template("cloudformation/member-account.yaml"), "ResponderRole");
    let forensics = denied_everywhere(&template("cloudformation/forensics-account.yaml"), "ForensicsRole");
    for op in calls::sdk_operations().keys() {
        if callers(op).is_ok_and(|r| r.is_empty()) {
            for a in actions(op) {
                assert!(
                    member.contains(&a) && forensics.contains(&a),
                    "{a} ({op}) is called by no stage: both roles must deny it"
                );
            }
        }
    }
    for a in ["ec2:TerminateInstances", "ec2:DeleteVolume", "ec2:DeleteSnapshot", "ec2:StopInstances"] {
        assert!(member.contains(a), "the member role must deny {a}");
    }
    // Nothing a role needs is denied outright.
    let need = required();
    for (role, denied) in [(Role::Member, &member), (Role::Forensics, &forensics)] {
        for action in need[&role].keys() {
            assert!(!denied.contains(action), "{role:?} needs {action} but denies it everywhere");
        }
    }
}

/// The Deny statements of `role` that cover `action` on `arn`.
fn denies(template: &Value, role: &str, action: &str, arn: &str) -> bool {
    statements(template, role).into_iter().any(|(_, s)| {
        s["Effect"] == "Deny"
            && as_list(&s["Action"]).iter().any(|a| a.as_str() == Some(action))
            && as_list(&s["Resource"]).iter().any(|r| r.as_str() == Some(arn))
    })
}

// Issue "Trust" 8: the member role could put and delete policies on any role, itself
// included, so it could remove its own never-destroy deny, and pass any role.
#[test]
fn no_role_can_change_its_own_permissions() {
    let member = template("cloudformation/member-account.yaml");
    let own = "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${RoleName}";
    for action in [
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:AttachRolePolicy",
        "iam:PassRole",
        "iam:UpdateAssumeRolePolicy",
    ] {
        assert!(
            denies_sub(&member, "ResponderRole", action, own),
            "ResponderRole does not deny {action} on itself"
        );
    }
    let forensics = template("cloudformation/forensics-account.yaml");
    for role in ["CleanroomForensics", "CleanroomAnalysis"] {
        let arn = format!("arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/{role}");
        for action in ["iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:DeleteRolePolicy"] {
            assert!(
                denies_sub(&forensics, "ForensicsRole", action, &arn),
                "ForensicsRole does not deny {action} on {role}"
            );
        }
    }
    // PassRole: the member role only to EC2; the forensics role only the analysis role.
    let pass = statements(&member, "ResponderRole")
        .into_iter()
        .filter(|(_, s)| s["Effect"] == "Allow" && as_list(&s["Action"]).iter().any(|a| a == &"iam:PassRole"))
        .collect::<Vec<_>>();
    assert!(!pass.is_empty());
    for (_, s) in pass {
        assert_eq!(s["Condition"]["StringEquals"]["iam:PassedToService"], "ec2.amazonaws.com", "{s:#}");
    }
    for (_, s) in statements(&forensics, "ForensicsRole") {
        if s["Effect"] == "Allow" && as_list(&s["Action"]).iter().any(|a| a == &"iam:PassRole") {
            assert_eq!(s["Resource"], serde_json::json!({"Fn::GetAtt": ["AnalysisRole", "Arn"]}), "{s:#}");
        }
    }
}

fn denies_sub(template: &Value, role: &str, action: &str, arn: &str) -> bool {
    statements(template, role).into_iter().any(|(_, s)| {
        s["Effect"] == "Deny"
            && as_list(&s["Action"]).iter().any(|a| a.as_str() == Some(action))
            && as_list(&s["Resource"]).iter().any(|r| r["Fn::Sub"] == arn || r.as_str() == Some(arn))
    }) || denies(template, role, action, arn)
}

// Issue "Trust" 8: the forensics role could tag anything (so anything could be made to
// look like an analysis resource and torn down), send commands anywhere and run any AMI.
#[test]
fn the_forensics_role_tags_only_what_it_creates_and_runs_only_its_documents_and_image() {
    let t = template("cloudformation/forensics-account.yaml");
    let all = statements(&t, "ForensicsRole");
    let with = |action: &str| {
        all.iter()
            .filter(|(_, s)| s["Effect"] == "Allow" && as_list(&s["Action"]).iter().any(|a| a == &action))
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
    };
    for s in with("ec2:CreateTags") {
        assert!(
            s["Condition"]["StringEquals"]["ec2:CreateAction"].is_array(),
            "CreateTags without ec2:CreateAction: {s:#}"
        );
        assert_eq!(
            s["Condition"]["StringEqualsIfExists"]["aws:RequestTag/cleanroom:role"], "analysis",
            "{s:#}"
        );
    }
    for action in ["ec2:TerminateInstances", "ec2:DeleteVolume", "ec2:DetachVolume", "ec2:AttachVolume"] {
        for s in with(action) {
            assert_eq!(
                s["Condition"]["StringEquals"]["aws:ResourceTag/cleanroom:role"], "analysis",
                "{action}: {s:#}"
            );
        }
    }
    for s in with("ssm:SendCommand") {
        let resource = serde_json::to_string(&s["Resource"]).unwrap();
        let document = resource.contains("document/Cleanroom-*");
        let analysis = s["Condition"]["StringEquals"]["aws:ResourceTag/cleanroom:role"] == "analysis";
        assert!(
            document != analysis,
            "SendCommand must name cleanroom's documents or analysis instances: {s:#}"
        );
        assert!(!resource.contains("\"*\""), "{s:#}");
    }
    let images: Vec<_> = with("ec2:RunInstances")
        .into_iter()
        .filter(|s| serde_json::to_string(&s["Resource"]).unwrap().contains("image/"))
        .collect();
    assert_eq!(images.len(), 1, "one statement names the images RunInstances may use");
    assert_eq!(images[0]["Condition"]["StringEquals"]["aws:ResourceTag/cleanroom:role"], "forensic-tooling");
    for s in with("ssm:CreateDocument").into_iter().chain(with("ssm:UpdateDocument")) {
        assert!(serde_json::to_string(&s["Resource"]).unwrap().contains("document/Cleanroom-*"), "{s:#}");
    }
}

// Issue "Trust" 8: the evidence key doubled as the hand-off key, with grants to the
// member accounts' roots. Now the evidence key is the forensics account's alone and each
// member account has its own hand-off key, usable by the forensics account through EC2.
#[test]
fn the_evidence_key_is_not_the_hand_off_key() {
    let forensics = template("cloudformation/forensics-account.yaml");
    let policy = &forensics["Resources"]["EvidenceKey"]["Properties"]["KeyPolicy"];
    for s in as_list(&policy["Statement"]) {
        assert_eq!(
            s["Principal"]["AWS"],
            serde_json::json!({"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}),
            "the evidence key admits someone outside the forensics account: {s:#}"
        );
    }
    let member = template("cloudformation/member-account.yaml");
    let key = &member["Resources"]["HandOffKey"];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(member["Resources"]["HandOffKeyAlias"]["Properties"]["AliasName"], "alias/cleanroom-handoff");
    let member_config: cleanroom::config::Member =
        toml::from_str("role_name = \"CleanroomResponder\"").unwrap();
    assert_eq!(
        member_config.handoff_key, "alias/cleanroom-handoff",
        "member.handoff_key defaults to the stack's alias"
    );
    let forensics_use: Vec<_> = as_list(&key["Properties"]["KeyPolicy"]["Statement"])
        .into_iter()
        .filter(|s| {
            s["Principal"]["AWS"]["Fn::Sub"] == "arn:${AWS::Partition}:iam::${ForensicsAccountId}:root"
        })
        .collect();
    assert_eq!(forensics_use.len(), 1);
    let actions: BTreeSet<&str> =
        as_list(&forensics_use[0]["Action"]).iter().filter_map(|a| a.as_str()).collect();
    let expected: BTreeSet<&str> = [
        "kms:DescribeKey",
        "kms:CreateGrant",
        "kms:Decrypt",
        "kms:ReEncrypt*",
        "kms:GenerateDataKeyWithoutPlaintext",
    ]
    .into();
    assert_eq!(actions, expected);
    assert!(forensics_use[0]["Condition"]["StringEquals"]["kms:ViaService"].is_object(), "through EC2 only");
}

// Issue "Trust" 2: whoever may write the bucket could plant custody records, a manifest,
// a key or case.json; the analysis instance's role could write anywhere under cases/*.
#[test]
fn only_the_forensics_role_writes_the_case_record_and_analysis_writes_evidence_only() {
    let t = template("cloudformation/forensics-account.yaml");
    let policy = &t["Resources"]["EvidenceBucketPolicy"]["Properties"]["PolicyDocument"];
    let by_sid = |sid: &str| {
        as_list(&policy["Statement"])
            .into_iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no {sid}"))
    };
    let record = by_sid("OnlyTheForensicsRoleWritesTheCaseRecord");
    assert_eq!(record["Effect"], "Deny");
    assert_eq!(record["Principal"], "*");
    let resources = serde_json::to_string(&record["Resource"]).unwrap();
    for part in ["cases/*/custody/*", "cases/*/manifest.json", "cases/*/keys/*", "cases/*/case.json"] {
        assert!(resources.contains(part), "{part} not protected: {resources}");
    }
    let actions = serde_json::to_string(&record["Action"]).unwrap();
    for a in ["s3:PutObject", "s3:PutObjectRetention", "s3:PutObjectLegalHold"] {
        assert!(actions.contains(a), "{a} not denied: {actions}");
    }
    assert_eq!(
        record["Condition"]["ArnNotEquals"]["aws:PrincipalArn"],
        serde_json::json!({"Fn::GetAtt": ["ForensicsRole", "Arn"]})
    );
    let analysis = by_sid("AnalysisWritesEvidenceOnly");
    assert_eq!(analysis["Effect"], "Deny");
    assert!(serde_json::to_string(&analysis["NotResource"]).unwrap().contains("/cases/*/evidence/*"));
    assert_eq!(
        analysis["Condition"]["ArnEquals"]["aws:PrincipalArn"],
        serde_json::json!({"Fn::GetAtt": ["AnalysisRole", "Arn"]})
    );
    // And the analysis role's own grants reach evidence prefixes only.
    for (policy, s) in statements(&t, "AnalysisRole") {
        let actions = serde_json::to_string(&s["Action"]).unwrap();
        if actions.contains("s3:PutObject") || actions.contains("s3:GetObject") {
            let resource = serde_json::to_string(&s["Resource"]).unwrap();
            assert!(resource.ends_with("/cases/*/evidence/*\"}"), "{policy}/{}: {resource}", s["Sid"]);
        }
    }
}

/// Every string of a template.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings(v, out)
        }),
        _ => {}
    }
}

// A lab helper found the member template naming snapshots as
// `arn:...:ec2:*:${AWS::AccountId}:snapshot/*`: EC2 snapshot ARNs have no account field,
// so ModifySnapshotAttribute and tagging snapshots were refused on AWS. And `arn:aws:`
// written out would not match in aws-cn or aws-us-gov.
#[test]
fn snapshot_and_image_arns_have_no_account_and_every_arn_has_the_partition() {
    for file in ["cloudformation/member-account.yaml", "cloudformation/forensics-account.yaml"] {
        let mut all = Vec::new();
        strings(&template(file), &mut all);
        for s in all.iter().filter(|s| s.starts_with("arn:")) {
            assert!(s.starts_with("arn:${AWS::Partition}:"), "{file}: {s} names a partition");
            for kind in [":snapshot/", ":image/"] {
                if let Some(at) = s.find(kind) {
                    assert!(s[..at].ends_with(':'), "{file}: {s}: EC2 {kind} ARNs have no account");
                }
            }
        }
        assert!(all.iter().any(|s| s.contains("::snapshot/*")), "{file} names no snapshot");
    }
}
