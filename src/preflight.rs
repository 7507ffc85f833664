//! Preflight: proves, before an incident, that every account, permission, bucket, key
//! and clean-room resource the pipeline needs is there and usable. Nothing here changes
//! anything: probes are reads and EC2 `DryRun` calls.
//!
//! Probes gather facts through the [`Probes`] trait; pure `judge_*` functions turn facts
//! into checks, so every decision is tested with plain data.

use std::fmt;

use serde::Serialize;

use crate::cloud::{CloudError, ErrorKind};
use crate::config::{AmiSource, Config};
use crate::ids::{AccountId, AmiId, RoleArn};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Could not be proven either way; the pipeline may still work.
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "pass",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the preflight table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    /// The account the check ran in ("caller" for the caller's own credentials).
    pub account: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a failure or warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(
        name: impl Into<String>,
        account: &str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self { name: name.into(), account: account.into(), status, detail: detail.into(), fix }
    }
    fn pass(name: impl Into<String>, account: &str, detail: impl Into<String>) -> Self {
        Self::new(name, account, Status::Pass, detail, None)
    }
    fn fail(
        name: impl Into<String>,
        account: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, account, Status::Fail, detail, Some(fix.into()))
    }
    fn warn(
        name: impl Into<String>,
        account: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, account, Status::Warn, detail, Some(fix.into()))
    }
}

/// The whole preflight result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(checks: Vec<Check>) -> Self {
        Self { ok: checks.iter().all(|c| c.status != Status::Fail), checks }
    }
}

/// What the evidence bucket is like.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BucketFacts {
    pub versioning: Option<String>,
    pub object_lock_enabled: bool,
    /// Default retention mode and period in days (years converted).
    pub default_retention: Option<(String, u32)>,
}

/// What a KMS key is like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    pub state: String,
    pub usage: String,
    pub spec: String,
}

/// An EC2 permission proved with `DryRun`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DryRunOp {
    DescribeInstances,
    CreateSnapshots,
    CreateSecurityGroup,
    ModifyNetworkInterfaceAttribute,
    ModifyInstanceAttribute,
    DisassociateIamInstanceProfile,
    CreateTags,
    /// The analysis instance, with the configured AMI, subnet, group and profile.
    RunAnalysisInstance,
    CreateVolume,
}

impl DryRunOp {
    pub fn action(self) -> &'static str {
        match self {
            DryRunOp::DescribeInstances => "ec2:DescribeInstances",
            DryRunOp::CreateSnapshots => "ec2:CreateSnapshots",
            DryRunOp::CreateSecurityGroup => "ec2:CreateSecurityGroup",
            DryRunOp::ModifyNetworkInterfaceAttribute => "ec2:ModifyNetworkInterfaceAttribute",
            DryRunOp::ModifyInstanceAttribute => "ec2:ModifyInstanceAttribute",
            DryRunOp::DisassociateIamInstanceProfile => "ec2:DisassociateIamInstanceProfile",
            DryRunOp::CreateTags => "ec2:CreateTags",
            DryRunOp::RunAnalysisInstance => "ec2:RunInstances",
            DryRunOp::CreateVolume => "ec2:CreateVolume",
        }
    }

    /// What the suspect's account must allow: capture, snapshot, protect, isolate.
    pub const MEMBER: [DryRunOp; 7] = [
        DryRunOp::DescribeInstances,
        DryRunOp::CreateSnapshots,
        DryRunOp::CreateSecurityGroup,
        DryRunOp::ModifyNetworkInterfaceAttribute,
        DryRunOp::ModifyInstanceAttribute,
        DryRunOp::DisassociateIamInstanceProfile,
        DryRunOp::CreateTags,
    ];
    /// What the forensics account must allow: the clean room.
    pub const FORENSICS: [DryRunOp; 2] = [DryRunOp::RunAnalysisInstance, DryRunOp::CreateVolume];
}

/// Who the credentials of one account context are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub arn: String,
    pub account: AccountId,
}

/// Read-only and DryRun probes of one account context. `Err` carries the AWS error,
/// which the judges turn into a check with a fix.
#[async_trait::async_trait]
pub trait Probes: Send + Sync {
    async fn identity(&self) -> Result<Identity, CloudError>;
    async fn dry_run(&self, op: DryRunOp, config: &Config) -> Result<(), CloudError>;
    async fn bucket(&self, bucket: &str) -> Result<BucketFacts, CloudError>;
    async fn key(&self, key_arn: &str) -> Result<KeyFacts, CloudError>;
    async fn subnet_exists(&self, id: &str) -> Result<bool, CloudError>;
    async fn security_group_exists(&self, id: &str) -> Result<bool, CloudError>;
    async fn ami_exists(&self, id: &AmiId) -> Result<bool, CloudError>;
    async fn ami_parameter(&self, name: &str) -> Result<String, CloudError>;
    async fn instance_profile_exists(&self, name: &str) -> Result<bool, CloudError>;
    async fn document_exists(&self, name: &str) -> Result<bool, CloudError>;
}

/// The account contexts to check.
pub struct Targets<'a> {
    pub caller: &'a dyn Probes,
    /// The forensics account through its role (or the caller, with no role).
    pub forensics: &'a dyn Probes,
    /// Member accounts named with `--account`, through the member role.
    pub members: Vec<(RoleArn, &'a dyn Probes)>,
}

/// Runs every check, the account contexts in parallel.
pub async fn run(config: &Config, targets: Targets<'_>) -> Report {
    let caller = async {
        let mut checks =
            vec![judge_identity("caller identity", "caller", None, targets.caller.identity().await)];
        if checks[0].status == Status::Pass {
            checks.extend(dry_runs(targets.caller, "caller", &DryRunOp::MEMBER, config).await);
        }
        checks
    };
    let members = futures::future::join_all(targets.members.iter().map(|(role, probes)| async move {
        let account = role.account().to_string();
        let mut checks = vec![judge_identity("member role", &account, Some(role), probes.identity().await)];
        if checks[0].status == Status::Pass {
            checks.extend(dry_runs(*probes, &account, &DryRunOp::MEMBER, config).await);
        }
        checks
    }));
    let forensics = forensics_checks(config, targets.forensics);
    let (caller, members, forensics) = futures::join!(caller, members, forensics);
    Report::new(caller.into_iter().chain(forensics).chain(members.into_iter().flatten()).collect())
}

async fn forensics_checks(config: &Config, probes: &dyn Probes) -> Vec<Check> {
    let f = &config.forensics;
    let account = f.account_id.to_string();
    let acct = account.as_str();
    let identity = probes.identity().await;
    let mut checks = vec![judge_identity("forensics role", acct, f.role_arn.as_ref(), identity.clone())];
    if let Ok(who) = &identity
        && who.account != f.account_id
    {
        checks.push(Check::fail(
            "forensics account",
            acct,
            format!("credentials are in account {}, not {}", who.account, f.account_id),
            "set forensics.role_arn to a role in the forensics account, or correct forensics.account_id",
        ));
    }
    if checks.iter().any(|c| c.status == Status::Fail) {
        // Without credentials in the account every further probe fails the same way.
        return checks;
    }
    let a = &config.analysis;
    let (bucket, key, signing, subnet, sg, ami, profile, documents, dry) = futures::join!(
        probes.bucket(f.evidence_bucket.as_str()),
        probes.key(f.kms_key_arn.as_str()),
        async {
            match &f.signing_key_arn {
                Some(k) => Some(probes.key(k.as_str()).await),
                None => None,
            }
        },
        probes.subnet_exists(a.subnet_id.as_str()),
        probes.security_group_exists(a.security_group_id.as_str()),
        ami_check(&a.ami, probes, acct),
        probes.instance_profile_exists(&a.instance_profile),
        futures::future::join_all(
            config.ssm.names().map(|n| async move { (n, probes.document_exists(n).await) })
        ),
        dry_runs(probes, acct, &DryRunOp::FORENSICS, config),
    );
    checks.push(judge_bucket(f.evidence_bucket.as_str(), acct, f.retention_days, bucket));
    checks.push(judge_key("evidence key", f.kms_key_arn.as_str(), acct, KeyUse::Encrypt, key));
    if let (Some(arn), Some(result)) = (&f.signing_key_arn, signing) {
        checks.push(judge_key("signing key", arn.as_str(), acct, KeyUse::SignP256, result));
    }
    checks.push(judge_exists("analysis subnet", a.subnet_id.as_str(), acct, subnet, "analysis.subnet_id"));
    checks.push(judge_exists(
        "analysis security group",
        a.security_group_id.as_str(),
        acct,
        sg,
        "analysis.security_group_id",
    ));
    checks.push(ami);
    checks.push(judge_exists(
        "analysis instance profile",
        &a.instance_profile,
        acct,
        profile,
        "analysis.instance_profile",
    ));
    for (name, found) in documents {
        checks.push(judge_exists("SSM document", name, acct, found, "ssm.* (register ssm-documents/)"));
    }
    checks.extend(dry);
    checks
}

async fn ami_check(source: &AmiSource, probes: &dyn Probes, account: &str) -> Check {
    match source {
        AmiSource::Id(id) => {
            judge_exists("analysis AMI", id.as_str(), account, probes.ami_exists(id).await, "analysis.ami")
        }
        AmiSource::SsmParameter(name) => match probes.ami_parameter(name).await {
            Ok(value) => match value.parse::<AmiId>() {
                Ok(id) => judge_exists(
                    "analysis AMI",
                    &format!("{id} (from {name})"),
                    account,
                    probes.ami_exists(&id).await,
                    "analysis.ami",
                ),
                Err(e) => Check::fail(
                    "analysis AMI",
                    account,
                    format!("parameter {name} holds {value:?}: {e}"),
                    "put the tooling AMI id in the parameter (see amis/)",
                ),
            },
            Err(e) => judge_exists("analysis AMI", name, account, Err(e), "analysis.ami"),
        },
    }
}

async fn dry_runs(probes: &dyn Probes, account: &str, ops: &[DryRunOp], config: &Config) -> Vec<Check> {
    let results = futures::future::join_all(
        ops.iter().map(|op| async move { (*op, probes.dry_run(*op, config).await) }),
    )
    .await;
    results.into_iter().map(|(op, r)| judge_dry_run(op, account, r)).collect()
}

pub fn judge_identity(
    name: &str,
    account: &str,
    role: Option<&RoleArn>,
    result: Result<Identity, CloudError>,
) -> Check {
    match (result, role) {
        (Ok(who), _) => Check::pass(name, account, who.arn),
        (Err(e), Some(role)) => Check::fail(
            name,
            account,
            format!("cannot assume {role}: {e}"),
            format!(
                "create {role} (cloudformation/) with a trust policy that allows your principal, \
                 or correct the role in the configuration"
            ),
        ),
        (Err(e), None) => Check::fail(
            name,
            account,
            e.to_string(),
            "provide credentials the AWS way: AWS_PROFILE / --profile, SSO login, or environment variables",
        ),
    }
}

pub fn judge_dry_run(op: DryRunOp, account: &str, result: Result<(), CloudError>) -> Check {
    let name = format!("permission {}", op.action());
    match result {
        Ok(()) => Check::pass(name, account, "DryRun succeeded"),
        Err(e) if e.is(ErrorKind::DryRunAllowed) => Check::pass(name, account, "allowed (DryRun)"),
        Err(e) if e.is(ErrorKind::AccessDenied) => Check::fail(
            name,
            account,
            format!("denied: {e}"),
            format!("allow {} in the role's policy (see cloudformation/)", op.action()),
        ),
        Err(e) => Check::warn(
            name,
            account,
            format!("not proven: {e}"),
            "DryRun could not prove the permission; check the role's policy",
        ),
    }
}

pub fn judge_bucket(
    bucket: &str,
    account: &str,
    retention_days: u32,
    result: Result<BucketFacts, CloudError>,
) -> Check {
    let name = "evidence bucket";
    let detail_name = format!("s3://{bucket}");
    match result {
        Err(e) if e.is(ErrorKind::NotFound) => Check::fail(
            name,
            account,
            format!("{detail_name} does not exist"),
            "deploy the forensics stack (cloudformation/) or correct forensics.evidence_bucket",
        ),
        Err(e) => Check::fail(
            name,
            account,
            format!("{detail_name}: {e}"),
            "allow s3:GetBucket* to the forensics role",
        ),
        Ok(facts) if facts.versioning.as_deref() != Some("Enabled") => Check::fail(
            name,
            account,
            format!("{detail_name} versioning is {}", facts.versioning.as_deref().unwrap_or("off")),
            "evidence needs a bucket created with Object Lock (which enables versioning); create a new bucket with the forensics stack",
        ),
        Ok(facts) if !facts.object_lock_enabled => Check::fail(
            name,
            account,
            format!("{detail_name} has no Object Lock"),
            "Object Lock is set when a bucket is created: create a new bucket with the forensics stack and point forensics.evidence_bucket at it",
        ),
        Ok(BucketFacts { default_retention: Some((mode, days)), .. }) if mode == "COMPLIANCE" => {
            if days < retention_days {
                Check::warn(
                    name,
                    account,
                    format!(
                        "{detail_name}: COMPLIANCE default {days} days, shorter than retention_days {retention_days}"
                    ),
                    "cleanroom sets retain-until per object; raise the bucket default to match",
                )
            } else {
                Check::pass(
                    name,
                    account,
                    format!("{detail_name}: versioned, Object Lock COMPLIANCE {days} days"),
                )
            }
        }
        Ok(BucketFacts { default_retention: Some((mode, days)), .. }) => Check::fail(
            name,
            account,
            format!("{detail_name}: default retention is {mode} {days} days, not COMPLIANCE"),
            "set the default retention to COMPLIANCE mode (GOVERNANCE can be bypassed by an admin)",
        ),
        Ok(_) => Check::fail(
            name,
            account,
            format!("{detail_name}: Object Lock has no default retention"),
            "set a default retention rule in COMPLIANCE mode (put-object-lock-configuration)",
        ),
    }
}

/// What a key must be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Encrypt,
    SignP256,
}

pub fn judge_key(
    name: &str,
    arn: &str,
    account: &str,
    want: KeyUse,
    result: Result<KeyFacts, CloudError>,
) -> Check {
    let (usage, spec, what) = match want {
        KeyUse::Encrypt => ("ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT", "a symmetric encryption key"),
        KeyUse::SignP256 => ("SIGN_VERIFY", "ECC_NIST_P256", "an ECC_NIST_P256 signing key"),
    };
    match result {
        Err(e) if e.is(ErrorKind::NotFound) => Check::fail(
            name,
            account,
            format!("{arn} does not exist"),
            "deploy the forensics stack or correct the key ARN in the configuration",
        ),
        Err(e) => {
            Check::fail(name, account, format!("{arn}: {e}"), "allow kms:DescribeKey to the forensics role")
        }
        Ok(k) if k.state != "Enabled" => Check::fail(
            name,
            account,
            format!("{arn} is {}", k.state),
            "enable the key (kms enable-key) or cancel its deletion",
        ),
        Ok(k) if k.usage != usage || k.spec != spec => Check::fail(
            name,
            account,
            format!("{arn} is {} {}, not {what}", k.spec, k.usage),
            format!("use {what}"),
        ),
        Ok(_) => Check::pass(name, account, format!("{arn} enabled")),
    }
}

pub fn judge_exists(
    name: &str,
    what: &str,
    account: &str,
    result: Result<bool, CloudError>,
    key: &str,
) -> Check {
    match result {
        Ok(true) => Check::pass(name, account, what),
        Ok(false) => Check::fail(
            name,
            account,
            format!("{what} does not exist"),
            format!("deploy the forensics stack or correct {key}"),
        ),
        Err(e) if e.is(ErrorKind::NotFound) => Check::fail(
            name,
            account,
            format!("{what} does not exist"),
            format!("deploy the forensics stack or correct {key}"),
        ),
        Err(e) => Check::fail(
            name,
            account,
            format!("{what}: {e}"),
            "allow the describe call to the forensics role",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws_err(code: &str) -> CloudError {
        CloudError {
            service: "ec2",
            operation: "Op",
            kind: crate::cloud::error::classify_code(code),
            code: Some(code.into()),
            message: "m".into(),
            request_id: None,
        }
    }

    fn lock(mode: &str, days: u32) -> BucketFacts {
        BucketFacts {
            versioning: Some("Enabled".into()),
            object_lock_enabled: true,
            default_retention: Some((mode.into(), days)),
        }
    }

    #[test]
    fn a_compliance_bucket_passes_and_governance_fails() {
        assert_eq!(judge_bucket("b", "1", 30, Ok(lock("COMPLIANCE", 30))).status, Status::Pass);
        let c = judge_bucket("b", "1", 30, Ok(lock("GOVERNANCE", 30)));
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("COMPLIANCE"));
    }

    #[test]
    fn a_bucket_without_lock_names_the_fix() {
        let facts = BucketFacts { versioning: Some("Enabled".into()), ..Default::default() };
        let c = judge_bucket("b", "1", 30, Ok(facts));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("no Object Lock"));
        assert!(c.fix.unwrap().contains("create a new bucket"));
        let c = judge_bucket("b", "1", 30, Err(aws_err("NoSuchBucket")));
        assert!(c.detail.contains("does not exist"));
    }

    #[test]
    fn a_shorter_default_retention_warns() {
        assert_eq!(judge_bucket("b", "1", 365, Ok(lock("COMPLIANCE", 30))).status, Status::Warn);
    }

    #[test]
    fn keys_must_be_enabled_and_of_the_right_kind() {
        let key = |state: &str, usage: &str, spec: &str| {
            Ok(KeyFacts { state: state.into(), usage: usage.into(), spec: spec.into() })
        };
        let ok = judge_key(
            "k",
            "arn",
            "1",
            KeyUse::Encrypt,
            key("Enabled", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"),
        );
        assert_eq!(ok.status, Status::Pass);
        let off = judge_key(
            "k",
            "arn",
            "1",
            KeyUse::Encrypt,
            key("Disabled", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"),
        );
        assert_eq!(off.status, Status::Fail);
        assert!(off.fix.unwrap().contains("enable-key"));
        let wrong = judge_key(
            "k",
            "arn",
            "1",
            KeyUse::SignP256,
            key("Enabled", "ENCRYPT_DECRYPT", "SYMMETRIC_DEFAULT"),
        );
        assert_eq!(wrong.status, Status::Fail);
    }

    #[test]
    fn dry_run_outcomes() {
        let op = DryRunOp::CreateSnapshots;
        assert_eq!(judge_dry_run(op, "1", Err(aws_err("DryRunOperation"))).status, Status::Pass);
        let denied = judge_dry_run(op, "1", Err(aws_err("UnauthorizedOperation")));
        assert_eq!(denied.status, Status::Fail);
        assert!(denied.fix.unwrap().contains("ec2:CreateSnapshots"));
        assert_eq!(judge_dry_run(op, "1", Err(aws_err("InvalidParameterValue"))).status, Status::Warn);
    }

    #[test]
    fn a_role_that_cannot_be_assumed_fails_with_the_role_named() {
        let role: RoleArn = "arn:aws:iam::111122223333:role/X".parse().unwrap();
        let c = judge_identity("forensics role", "111122223333", Some(&role), Err(aws_err("AccessDenied")));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("cannot assume arn:aws:iam::111122223333:role/X"));
    }

    #[test]
    fn the_report_fails_on_any_failure_but_not_on_warnings() {
        let pass = Check::pass("a", "1", "");
        let warn = Check::warn("b", "1", "", "");
        assert!(Report::new(vec![pass.clone(), warn]).ok);
        assert!(!Report::new(vec![pass, Check::fail("c", "1", "", "")]).ok);
    }
}
