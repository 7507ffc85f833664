//! Seeds the lab with what a real deployment of `cloudformation/` would create: the
//! forensics account (evidence bucket with Object Lock, keys, clean-room network,
//! analysis profile and AMI, collection documents, the forensics role) and the member
//! role in suspect accounts. Used by the drill and by the tests.

use std::fmt::Debug;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_s3::types::{
    BucketVersioningStatus, DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
};

use super::{HOME_ACCOUNT, Lab};
use crate::config::{AmiSource, Analysis, Config, Forensics, Limits, Member, SsmDocuments};
use crate::ids::{AccountId, BucketName, Region, RoleArn, RoleName};

/// Name of the forensics role and of the member-account role in the lab.
pub const FORENSICS_ROLE: &str = "CleanroomForensics";
pub const MEMBER_ROLE: &str = "CleanroomResponder";

#[derive(Debug, thiserror::Error)]
#[error("seeding the lab failed at {step}: {detail}")]
pub struct SeedError {
    pub step: &'static str,
    pub detail: String,
}

pub(super) fn fail<E: Debug>(step: &'static str) -> impl FnOnce(E) -> SeedError {
    move |e| SeedError { step, detail: format!("{e:?}") }
}

/// What a seeded forensics account holds, beyond the configuration.
#[derive(Debug, Clone)]
pub struct ForensicsAccount {
    pub config: Config,
    pub vpc_id: String,
}

/// A trust policy letting `trusted` (an account) assume the role.
fn trust_policy(trusted: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{trusted}:root")},
            "Action": "sts:AssumeRole"
        }]
    })
    .to_string()
}

/// Creates `role_name` in `account`, assumable from the lab's home account.
pub async fn role(
    lab: &Lab,
    account: &AccountId,
    region: &Region,
    role_name: &str,
) -> Result<RoleArn, SeedError> {
    let iam = lab.clients(account, region).iam;
    iam.create_role()
        .role_name(role_name)
        .assume_role_policy_document(trust_policy(HOME_ACCOUNT))
        .send()
        .await
        .map_err(fail("create role"))?;
    Ok(RoleArn::in_account(&region.partition(), account, &role_name.parse().map_err(fail("role name"))?))
}

/// The alias of the hand-off key the member stack creates.
pub const HANDOFF_ALIAS: &str = "alias/cleanroom-handoff";

/// The member account's hand-off key (as `cloudformation/member-account.yaml` creates
/// it): customer-managed, its policy letting the forensics account use it to copy
/// snapshots shared under it. Returns its ARN.
pub async fn handoff_key(
    lab: &Lab,
    account: &AccountId,
    region: &Region,
    forensics: &AccountId,
) -> Result<String, SeedError> {
    let kms = lab.clients(account, region).kms;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
             "Action": "kms:*", "Resource": "*"},
            {"Sid": "ForensicsAccountCopiesSharedSnapshots", "Effect": "Allow",
             "Principal": {"AWS": format!("arn:aws:iam::{forensics}:root")},
             "Action": ["kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKeyWithoutPlaintext"],
             "Resource": "*"}
        ]
    });
    let key = kms
        .create_key()
        .description("cleanroom hand-off key (lab)")
        .policy(policy.to_string())
        .send()
        .await
        .map_err(fail("create hand-off key"))?;
    let arn = key
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or_else(|| fail("hand-off key arn")("missing"))?
        .to_owned();
    kms.create_alias()
        .alias_name(HANDOFF_ALIAS)
        .target_key_id(&arn)
        .send()
        .await
        .map_err(fail("hand-off key alias"))?;
    Ok(arn)
}

/// Seeds a complete, correct forensics account and returns the configuration that
/// describes it (the examiner is the lab's drill examiner).
pub async fn forensics_account(
    lab: &Lab,
    account: &AccountId,
    region: &Region,
    bucket: &BucketName,
    retention_days: u32,
) -> Result<ForensicsAccount, SeedError> {
    let c = lab.clients(account, region);
    let role_arn = role(lab, account, region, FORENSICS_ROLE).await?;

    // Evidence bucket: versioned, Object Lock, COMPLIANCE default retention.
    let mut create = c.s3.create_bucket().bucket(bucket.as_str()).object_lock_enabled_for_bucket(true);
    if region.as_str() != "us-east-1" {
        create = create.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(region.as_str().into())
                .build(),
        );
    }
    create.send().await.map_err(fail("create evidence bucket"))?;
    c.s3.put_bucket_versioning()
        .bucket(bucket.as_str())
        .versioning_configuration(
            VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
        )
        .send()
        .await
        .map_err(fail("enable versioning"))?;
    let retention = DefaultRetention::builder()
        .mode(ObjectLockRetentionMode::Compliance)
        .days(retention_days as i32)
        .build();
    c.s3.put_object_lock_configuration()
        .bucket(bucket.as_str())
        .object_lock_configuration(
            ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(ObjectLockRule::builder().default_retention(retention).build())
                .build(),
        )
        .send()
        .await
        .map_err(fail("object lock configuration"))?;

    // Keys: the evidence key and the checkpoint signing key.
    let key = c
        .kms
        .create_key()
        .description("cleanroom forensics evidence key (lab)")
        .send()
        .await
        .map_err(fail("create KMS key"))?;
    let key_arn = key.key_metadata().and_then(|m| m.arn()).ok_or_else(|| fail("KMS key arn")("missing"))?;
    let signing = c
        .kms
        .create_key()
        .description("cleanroom custody checkpoint signing key (lab)")
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .map_err(fail("create signing key"))?;
    let signing_arn =
        signing.key_metadata().and_then(|m| m.arn()).ok_or_else(|| fail("signing key arn")("missing"))?;

    // Clean-room network: a VPC with one private subnet and a no-rule group.
    let vpc = c.ec2.create_vpc().cidr_block("10.99.0.0/16").send().await.map_err(fail("create VPC"))?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).ok_or_else(|| fail("vpc id")("missing"))?.to_owned();
    let subnet = c
        .ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.99.1.0/24")
        .availability_zone(format!("{region}a"))
        .send()
        .await
        .map_err(fail("create subnet"))?;
    let subnet_id =
        subnet.subnet().and_then(|s| s.subnet_id()).ok_or_else(|| fail("subnet id")("missing"))?;
    let sg = c
        .ec2
        .create_security_group()
        .group_name("cleanroom-analysis")
        .description("cleanroom analysis instances: no inbound")
        .vpc_id(&vpc_id)
        .send()
        .await
        .map_err(fail("create analysis security group"))?;
    let sg_id = sg.group_id().ok_or_else(|| fail("sg id")("missing"))?;

    // Analysis instance profile and tooling AMI.
    let analysis_role = role(lab, account, region, "CleanroomAnalysis").await?;
    c.iam
        .create_instance_profile()
        .instance_profile_name("CleanroomAnalysis")
        .send()
        .await
        .map_err(fail("create instance profile"))?;
    c.iam
        .add_role_to_instance_profile()
        .instance_profile_name("CleanroomAnalysis")
        .role_name(analysis_role.name())
        .send()
        .await
        .map_err(fail("add role to instance profile"))?;
    let ami = c
        .ec2
        .register_image()
        .name("cleanroom-forensic-tooling")
        .description("Sleuth Kit, YARA, plaso (lab stand-in)")
        .root_device_name("/dev/xvda")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .tags(Tag::builder().key("cleanroom:role").value("forensic-tooling").build())
                // The lab's SSM agent registers instances of AMIs that say they run it.
                .tags(Tag::builder().key("lab:ssm-agent").value("installed").build())
                .build(),
        )
        .send()
        .await
        .map_err(fail("register AMI"))?;
    let ami_id = ami.image_id().ok_or_else(|| fail("ami id")("missing"))?;
    // moto ignores RegisterImage's TagSpecifications: tag it as AWS would have.
    c.ec2
        .create_tags()
        .resources(ami_id)
        .tags(Tag::builder().key("cleanroom:role").value("forensic-tooling").build())
        .tags(Tag::builder().key("lab:ssm-agent").value("installed").build())
        .send()
        .await
        .map_err(fail("tag AMI"))?;

    // Collection documents, by the configured names.
    let documents = SsmDocuments::default();
    for name in documents.names() {
        c.ssm
            .create_document()
            .name(name)
            .document_type(aws_sdk_ssm::types::DocumentType::Command)
            .document_format(aws_sdk_ssm::types::DocumentFormat::Json)
            .content(lab_document(&documents, name))
            .send()
            .await
            .map_err(fail("create SSM document"))?;
    }

    let config = Config {
        examiner: Some("Drill Examiner, cleanroom lab".into()),
        forensics: Forensics {
            account_id: account.clone(),
            role_arn: Some(role_arn),
            region: region.clone(),
            evidence_bucket: bucket.clone(),
            kms_key_arn: key_arn.parse().map_err(fail("key arn"))?,
            signing_key_arn: Some(signing_arn.parse().map_err(fail("signing key arn"))?),
            retention_days,
        },
        member: Member {
            role_name: MEMBER_ROLE.parse::<RoleName>().map_err(fail("role"))?,
            default_region: None,
            handoff_key: HANDOFF_ALIAS.into(),
        },
        analysis: Analysis {
            subnet_id: subnet_id.parse().map_err(fail("subnet"))?,
            security_group_id: sg_id.parse().map_err(fail("sg"))?,
            instance_profile: "CleanroomAnalysis".into(),
            ami: AmiSource::Id(ami_id.parse().map_err(fail("ami"))?),
            instance_type: "m6i.large".into(),
        },
        ssm: documents,
        // The lab registers a new instance at its first poll: two minutes is ample.
        limits: Limits { ssm_online_timeout_minutes: 2, ..Limits::default() },
    };
    Ok(ForensicsAccount { config, vpc_id })
}

/// A schema 2.2 document registered under a collection document's name. The real
/// documents live in `ssm-documents/`; until a document exists there, the lab holds a
/// stand-in that says so when run.
/// The built-in collection document registered under `name`, rendered as cleanroom
/// registers it (so a fresh forensics account holds the current version, as deploying
/// the forensics stack and `cleanroom preflight` would leave it).
fn lab_document(documents: &SsmDocuments, name: &str) -> String {
    use crate::analyze::documents::{Kind, render};
    let kind = Kind::ALL.into_iter().find(|k| k.name(documents) == name).expect("a configured document name");
    render(kind)
}

/// Writes `config` as TOML (for driving the CLI in tests and the drill).
pub fn config_toml(config: &Config) -> String {
    toml::to_string(config).expect("configuration serialises to TOML")
}
