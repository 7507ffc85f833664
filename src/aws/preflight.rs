//! The preflight probes against AWS: reads and `DryRun` calls only, across the
//! services one account context uses. Kept apart from the service adapters because
//! each probe exists only to prove a permission or a resource, never to act.

use aws_sdk_ec2::types::{InstanceSpecification, InstanceType, VolumeType};

use super::{AccountClients, identity};
use crate::cloud::{CloudError, ErrorKind};
use crate::config::Config;
use crate::ids::AmiId;
use crate::preflight::{BucketFacts, DryRunOp, Identity, KeyFacts, Probes};

/// Placeholder ids for DryRun calls that need one: AWS checks the permission before
/// the resource, and a DryRun changes nothing whatever the id.
const PROBE_INSTANCE: &str = "i-00000000000000000";
const PROBE_ENI: &str = "eni-00000000000000000";
const PROBE_ASSOCIATION: &str = "iip-assoc-00000000000000000";

pub struct AwsProbes<'a> {
    pub clients: &'a AccountClients,
}

#[async_trait::async_trait]
impl Probes for AwsProbes<'_> {
    async fn identity(&self) -> Result<Identity, CloudError> {
        let who = identity::caller_identity(&self.clients.sts).await?;
        Ok(Identity { arn: who.arn, account: who.account })
    }

    async fn dry_run(&self, op: DryRunOp, config: &Config) -> Result<(), CloudError> {
        let ec2 = &self.clients.ec2;
        match op {
            DryRunOp::DescribeInstances => {
                ec2.describe_instances()
                    .dry_run(true)
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "DescribeInstances"))?;
            }
            DryRunOp::CreateSnapshots => {
                ec2.create_snapshots()
                    .dry_run(true)
                    .instance_specification(
                        InstanceSpecification::builder().instance_id(PROBE_INSTANCE).build(),
                    )
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "CreateSnapshots"))?;
            }
            DryRunOp::CreateSecurityGroup => {
                ec2.create_security_group()
                    .dry_run(true)
                    .group_name("cleanroom-preflight-probe")
                    .description("cleanroom preflight DryRun")
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "CreateSecurityGroup"))?;
            }
            DryRunOp::ModifyNetworkInterfaceAttribute => {
                ec2.modify_network_interface_attribute()
                    .dry_run(true)
                    .network_interface_id(PROBE_ENI)
                    .groups("sg-00000000000000000")
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "ModifyNetworkInterfaceAttribute"))?;
            }
            DryRunOp::ModifyInstanceAttribute => {
                ec2.modify_instance_attribute()
                    .dry_run(true)
                    .instance_id(PROBE_INSTANCE)
                    .disable_api_termination(
                        aws_sdk_ec2::types::AttributeBooleanValue::builder().value(true).build(),
                    )
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "ModifyInstanceAttribute"))?;
            }
            DryRunOp::DisassociateIamInstanceProfile => {
                ec2.disassociate_iam_instance_profile()
                    .association_id(PROBE_ASSOCIATION)
                    .send()
                    .await
                    .map(|_| ())
                    .or_else(|e| {
                        // This call has no DryRun in the EC2 API: a NotFound for the
                        // probe association proves the caller got past authorization.
                        let e = CloudError::from_sdk("ec2", "DisassociateIamInstanceProfile", e);
                        if e.is(ErrorKind::NotFound)
                            || e.code.as_deref() == Some("InvalidAssociationID.NotFound")
                        {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
            }
            DryRunOp::CreateTags => {
                ec2.create_tags()
                    .dry_run(true)
                    .resources(PROBE_INSTANCE)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder().key("cleanroom:preflight").value("probe").build(),
                    )
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "CreateTags"))?;
            }
            DryRunOp::RunAnalysisInstance => {
                let a = &config.analysis;
                let mut run = ec2
                    .run_instances()
                    .dry_run(true)
                    .min_count(1)
                    .max_count(1)
                    .instance_type(InstanceType::from(a.instance_type.as_str()))
                    .subnet_id(a.subnet_id.as_str())
                    .security_group_ids(a.security_group_id.as_str())
                    .iam_instance_profile(
                        aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                            .name(&a.instance_profile)
                            .build(),
                    );
                if let crate::config::AmiSource::Id(id) = &a.ami {
                    run = run.image_id(id.as_str());
                }
                run.send().await.map_err(CloudError::of("ec2", "RunInstances"))?;
            }
            DryRunOp::CreateVolume => {
                ec2.create_volume()
                    .dry_run(true)
                    .availability_zone(format!("{}a", config.forensics.region))
                    .size(1)
                    .volume_type(VolumeType::Gp3)
                    .send()
                    .await
                    .map_err(CloudError::of("ec2", "CreateVolume"))?;
            }
        }
        Ok(())
    }

    async fn bucket(&self, bucket: &str) -> Result<BucketFacts, CloudError> {
        let s3 = &self.clients.s3;
        let versioning = s3
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("s3", "GetBucketVersioning", e))?;
        let mut facts = BucketFacts {
            versioning: versioning.status().map(|s| s.as_str().to_owned()),
            ..Default::default()
        };
        let lock = match s3.get_object_lock_configuration().bucket(bucket).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = CloudError::from_sdk("s3", "GetObjectLockConfiguration", e);
                // S3 answers ObjectLockConfigurationNotFoundError for a bucket without lock.
                if e.code.as_deref() == Some("ObjectLockConfigurationNotFoundError") {
                    return Ok(facts);
                }
                return Err(e);
            }
        };
        let Some(config) = lock.object_lock_configuration() else { return Ok(facts) };
        facts.object_lock_enabled = config.object_lock_enabled().is_some_and(|e| e.as_str() == "Enabled");
        if let Some(retention) = config.rule().and_then(|r| r.default_retention()) {
            let days = match (retention.days(), retention.years()) {
                (Some(d), _) => d.max(0) as u32,
                (None, Some(y)) => (y.max(0) as u32).saturating_mul(365),
                (None, None) => 0,
            };
            let mode = retention.mode().map(|m| m.as_str().to_owned()).unwrap_or_default();
            facts.default_retention = Some((mode, days));
        }
        Ok(facts)
    }

    async fn key(&self, key_arn: &str) -> Result<KeyFacts, CloudError> {
        let out = self
            .clients
            .kms
            .describe_key()
            .key_id(key_arn)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("kms", "DescribeKey", e))?;
        let meta = out.key_metadata().ok_or_else(|| CloudError {
            service: "kms",
            operation: "DescribeKey",
            kind: ErrorKind::Other,
            code: None,
            message: "response has no KeyMetadata".into(),
            request_id: None,
        })?;
        Ok(KeyFacts {
            state: meta.key_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            // KeyUsage defaults to ENCRYPT_DECRYPT at creation; AWS always returns it,
            // moto omits it for keys created without it.
            usage: meta.key_usage().map_or("ENCRYPT_DECRYPT", |s| s.as_str()).to_owned(),
            spec: meta.key_spec().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        })
    }

    async fn subnet_exists(&self, id: &str) -> Result<bool, CloudError> {
        let out = self.clients.ec2.describe_subnets().subnet_ids(id).send().await;
        found(
            out.map(|o| !o.subnets().is_empty())
                .map_err(|e| CloudError::from_sdk("ec2", "DescribeSubnets", e)),
        )
    }

    async fn security_group_exists(&self, id: &str) -> Result<bool, CloudError> {
        let out = self.clients.ec2.describe_security_groups().group_ids(id).send().await;
        found(
            out.map(|o| !o.security_groups().is_empty())
                .map_err(|e| CloudError::from_sdk("ec2", "DescribeSecurityGroups", e)),
        )
    }

    async fn ami_exists(&self, id: &AmiId) -> Result<bool, CloudError> {
        let out = self.clients.ec2.describe_images().image_ids(id.as_str()).send().await;
        found(
            out.map(|o| !o.images().is_empty()).map_err(|e| CloudError::from_sdk("ec2", "DescribeImages", e)),
        )
    }

    async fn ami_parameter(&self, name: &str) -> Result<String, CloudError> {
        let out = self
            .clients
            .ssm
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| CloudError::from_sdk("ssm", "GetParameter", e))?;
        Ok(out.parameter().and_then(|p| p.value()).unwrap_or_default().to_owned())
    }

    async fn instance_profile_exists(&self, name: &str) -> Result<bool, CloudError> {
        let out = self.clients.iam.get_instance_profile().instance_profile_name(name).send().await;
        found(out.map(|_| true).map_err(|e| CloudError::from_sdk("iam", "GetInstanceProfile", e)))
    }

    async fn document_exists(&self, name: &str) -> Result<bool, CloudError> {
        let out = self.clients.ssm.describe_document().name(name).send().await;
        found(out.map(|_| true).map_err(|e| CloudError::from_sdk("ssm", "DescribeDocument", e)))
    }
}

/// A NotFound answer means "does not exist", not a failed probe.
fn found(result: Result<bool, CloudError>) -> Result<bool, CloudError> {
    match result {
        Err(e) if e.is(ErrorKind::NotFound) => Ok(false),
        other => other,
    }
}
