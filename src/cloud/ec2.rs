//! EC2: instances, their network and attributes, security groups, console output.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Call, Captured, CloudResult, Raw};
use crate::ids::{
    CaseId, InstanceId, NetworkInterfaceId, Region, SecurityGroupId, SubnetId, VolumeId, VpcId,
};

/// One network interface of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub id: NetworkInterfaceId,
    pub device_index: i32,
    pub vpc: VpcId,
    /// In the order AWS reports them.
    pub groups: Vec<SecurityGroupId>,
    pub ipv6_addresses: Vec<String>,
    /// The subnet it is in: its route table says which paths stay tracked.
    #[serde(default)]
    pub subnet: Option<SubnetId>,
    /// `interface`, `efa`, `trunk`, ... A `trunk` carries branch ENIs (ECS `awsvpc`
    /// tasks) that are not among the instance's interfaces.
    #[serde(default)]
    pub interface_type: Option<String>,
    /// Connection tracking idle timeouts, when the API reports them.
    #[serde(default)]
    pub conntrack: Option<ConnTrack>,
}

/// Connection tracking idle timeouts of an ENI, in seconds (`None`: not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnTrack {
    pub tcp_established: Option<i32>,
    pub udp_stream: Option<i32>,
    pub udp: Option<i32>,
}

impl ConnTrack {
    /// The shortest timeouts EC2 accepts (ConnectionTrackingSpecificationRequest: TCP
    /// established 60 to 432000 s, UDP stream 60 to 180 s, UDP 30 to 60 s): a flow
    /// that stays tracked after the swap (NAT gateway, NLB, PrivateLink...) dies a
    /// minute after it goes idle instead of five days.
    pub const MINIMAL: ConnTrack =
        ConnTrack { tcp_established: Some(60), udp_stream: Some(60), udp: Some(30) };
    /// EC2's defaults, restored on release when the prior value was not reported.
    pub const AWS_DEFAULT: ConnTrack =
        ConnTrack { tcp_established: Some(432_000), udp_stream: Some(180), udp: Some(30) };

    /// Every timeout is reported and no longer than [`ConnTrack::MINIMAL`].
    pub fn is_minimal(&self) -> bool {
        let at_most = |v: Option<i32>, max: Option<i32>| matches!((v, max), (Some(v), Some(m)) if v <= m);
        at_most(self.tcp_established, Self::MINIMAL.tcp_established)
            && at_most(self.udp_stream, Self::MINIMAL.udp_stream)
            && at_most(self.udp, Self::MINIMAL.udp)
    }

    /// The TCP established idle timeout in force (EC2's default when not reported).
    pub fn tcp_established_or_default(conntrack: Option<&ConnTrack>) -> i32 {
        conntrack.and_then(|c| c.tcp_established).or(Self::AWS_DEFAULT.tcp_established).unwrap_or(432_000)
    }
}

/// One route of a route table, reduced to where it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// A CIDR or a prefix list id.
    pub destination: String,
    /// The target's id: `nat-`, `eigw-`, `tgw-`, `igw-`, `vpce-`, `pcx-`, `eni-`, `local`...
    pub target: String,
}

/// A route table of a VPC and the subnets explicitly associated with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    pub id: String,
    /// The VPC's main table: it serves every subnet without an explicit association.
    pub main: bool,
    pub subnets: Vec<SubnetId>,
    pub routes: Vec<Route>,
}

/// A network interface of the VPC that is not an instance's: the interface type says
/// which service owns it (`nat_gateway`, `network_load_balancer`, `vpc_endpoint`,
/// `gateway_load_balancer_endpoint`, `transit_gateway`, `lambda`, `branch`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VpcInterface {
    pub id: String,
    pub interface_type: String,
}

/// What the API shows about a VPC's paths that security groups cannot cut: its route
/// tables and the service-owned interfaces in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPaths {
    pub route_tables: Vec<RouteTable>,
    pub interfaces: Vec<VpcInterface>,
}

impl NetworkPaths {
    /// The route table a subnet's traffic follows: its explicit association, else the
    /// VPC's main table.
    pub fn table_of(&self, subnet: &SubnetId) -> Option<&RouteTable> {
        self.route_tables
            .iter()
            .find(|t| t.subnets.contains(subnet))
            .or_else(|| self.route_tables.iter().find(|t| t.main))
    }
}

/// One EBS volume attached to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    pub device: String,
    pub volume: VolumeId,
    pub delete_on_termination: bool,
}

/// What DescribeInstances says about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    pub vpc: Option<VpcId>,
    pub enis: Vec<Eni>,
    pub volumes: Vec<VolumeAttachment>,
    pub tags: BTreeMap<String, String>,
    /// What the record of the case shows about the instance besides what containment uses.
    #[serde(default)]
    pub details: InstanceDetails,
}

/// Facts of DescribeInstances the report and later stages show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDetails {
    pub instance_type: Option<String>,
    pub image_id: Option<String>,
    pub launch_time: Option<String>,
    pub availability_zone: Option<String>,
    pub key_name: Option<String>,
    pub instance_profile_arn: Option<String>,
    pub private_ips: Vec<String>,
    pub public_ips: Vec<String>,
    /// IMDS: `required` (IMDSv2 only) or `optional`.
    pub imds_http_tokens: Option<String>,
    pub imds_endpoint: Option<String>,
    pub root_device_name: Option<String>,
}

impl Instance {
    pub fn is_gone(&self) -> bool {
        matches!(self.state.as_str(), "terminated" | "shutting-down")
    }
}

/// The two instance attributes containment sets (DescribeInstanceAttribute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    pub termination_protection: bool,
    /// `stop` or `terminate`.
    pub shutdown_behavior: String,
}

/// An IAM instance profile association of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAssociation {
    pub association_id: String,
    pub instance: InstanceId,
    pub profile_arn: String,
    /// `associating`, `associated`, `disassociating`, `disassociated`.
    pub state: String,
}

/// Why a security group exists, in its `cleanroom:purpose` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// No rules at all: the final state of every contained ENI.
    Isolation,
    /// All traffic, IPv4 and IPv6, both directions: the first step of the swap, which
    /// turns tracked connections untracked so the isolation group cuts them.
    AllowAll,
}

impl Purpose {
    pub fn tag(self) -> &'static str {
        match self {
            Purpose::Isolation => "isolation",
            Purpose::AllowAll => "allow-all",
        }
    }

    pub fn from_tag(s: &str) -> Option<Self> {
        match s {
            "isolation" => Some(Purpose::Isolation),
            "allow-all" => Some(Purpose::AllowAll),
            _ => None,
        }
    }

    /// The group name (unique per VPC, so a duplicate create fails loudly).
    pub fn group_name(self, case: &CaseId) -> String {
        format!("cleanroom-{}-{case}", self.tag())
    }
}

/// Tag keys the tool writes.
pub const TAG_CASE: &str = "cleanroom:case";
pub const TAG_PURPOSE: &str = "cleanroom:purpose";
pub const TAG_CONTAINED: &str = "cleanroom:contained";
/// What the forensics role may manage: `analysis` on what the clean room creates,
/// `forensic-tooling` on the image it may launch (the shipped policy keys on it).
pub const TAG_ROLE: &str = "cleanroom:role";

/// A security group rule, reduced to what containment decides on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    pub egress: bool,
    /// `-1` is all protocols.
    pub protocol: String,
    /// From and to port (ICMP type and code), when the protocol has them.
    pub ports: Option<(i32, i32)>,
    /// A CIDR (`0.0.0.0/0`, `::/0`, ...), a group id (`sg-`), or a prefix list id (`pl-`).
    pub peer: String,
}

impl Rule {
    pub fn all(egress: bool, peer: &str) -> Self {
        Self { egress, protocol: "-1".into(), ports: None, peer: peer.into() }
    }

    /// The four rules of the allow-all group.
    pub fn allow_all() -> Vec<Rule> {
        vec![
            Rule::all(false, V4_ANY),
            Rule::all(false, V6_ANY),
            Rule::all(true, V4_ANY),
            Rule::all(true, V6_ANY),
        ]
    }
}

pub const V4_ANY: &str = "0.0.0.0/0";
pub const V6_ANY: &str = "::/0";

/// A security group found by the case tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: SecurityGroupId,
    pub vpc: VpcId,
    pub name: String,
    pub purpose: Option<Purpose>,
    pub rules: Vec<Rule>,
}

/// A DryRun permission check of one mutating call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DryRun {
    ModifyInstanceAttribute(InstanceId),
    ModifyNetworkInterfaceAttribute(NetworkInterfaceId, Vec<SecurityGroupId>),
    CreateSecurityGroup(VpcId),
    CreateTags(InstanceId),
}

impl DryRun {
    pub fn operation(&self) -> &'static str {
        match self {
            DryRun::ModifyInstanceAttribute(_) => "ModifyInstanceAttribute",
            DryRun::ModifyNetworkInterfaceAttribute(..) => "ModifyNetworkInterfaceAttribute",
            DryRun::CreateSecurityGroup(_) => "CreateSecurityGroup",
            DryRun::CreateTags(_) => "CreateTags",
        }
    }
}

/// A new security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    pub vpc: VpcId,
    pub name: String,
    pub description: String,
    /// Set in the same call (TagSpecifications): a crash after the create cannot leave
    /// an untagged group that a rerun would not find and would duplicate.
    pub tags: BTreeMap<String, String>,
}

/// The instance attributes capture reads one by one (DescribeInstanceAttribute takes
/// one attribute a call). `userData` is often the only copy of the attacker's launch
/// script: CloudTrail redacts it from RunInstances.
pub const CAPTURED_ATTRIBUTES: &[&str] = &[
    "instanceType",
    "kernel",
    "ramdisk",
    "userData",
    "disableApiTermination",
    "disableApiStop",
    "instanceInitiatedShutdownBehavior",
    "rootDeviceName",
    "blockDeviceMapping",
    "productCodes",
    "sourceDestCheck",
    "groupSet",
    "ebsOptimized",
    "sriovNetSupport",
    "enaSupport",
    "enclaveOptions",
];

/// Instance-store volumes of an instance type (they cannot be snapshotted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStorage {
    pub disks: i32,
    pub total_gib: i64,
}

#[async_trait]
pub trait Ec2: Send + Sync {
    /// `None` when EC2 does not know the id in this account and region.
    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Option<Instance>>;
    /// Instances (not terminated) matching `tag:K` = `V` filters.
    async fn find_instances(&self, tag_filters: &[(String, String)]) -> CloudResult<Vec<InstanceId>>;
    async fn attributes(&self, id: &InstanceId) -> CloudResult<Attributes>;
    async fn profile_association(&self, id: &InstanceId) -> CloudResult<Option<ProfileAssociation>>;
    /// Every association of the account and region (paginated), for "who else uses this role".
    async fn all_profile_associations(&self) -> CloudResult<Vec<ProfileAssociation>>;
    /// Security groups carrying `cleanroom:case` = `case`, in every VPC.
    async fn case_groups(&self, case: &CaseId) -> CloudResult<Vec<Group>>;
    /// Succeeds when the DryRun says the call would have been allowed.
    async fn dry_run(&self, check: &DryRun) -> CloudResult<()>;
    async fn create_group(&self, group: &NewGroup) -> CloudResult<(SecurityGroupId, Call)>;
    async fn authorize(&self, group: &SecurityGroupId, rules: &[Rule]) -> CloudResult<Vec<Call>>;
    async fn revoke(&self, group: &SecurityGroupId, rules: &[Rule]) -> CloudResult<Vec<Call>>;
    async fn set_eni_groups(&self, eni: &NetworkInterfaceId, groups: &[SecurityGroupId])
    -> CloudResult<Call>;
    async fn set_termination_protection(&self, id: &InstanceId, on: bool) -> CloudResult<Call>;
    async fn set_shutdown_behavior(&self, id: &InstanceId, behavior: &str) -> CloudResult<Call>;
    /// One call for every (device, DeleteOnTermination) given.
    async fn set_delete_on_termination(
        &self,
        id: &InstanceId,
        devices: &[(String, bool)],
    ) -> CloudResult<Call>;
    async fn create_tags(&self, id: &InstanceId, tags: &BTreeMap<String, String>) -> CloudResult<Call>;
    async fn disassociate_profile(&self, association_id: &str) -> CloudResult<Call>;
    async fn associate_profile(&self, id: &InstanceId, profile_arn: &str) -> CloudResult<Call>;
    /// Security groups by id, whatever their tags (the groups the case trusts, re-read).
    async fn groups_by_id(&self, ids: &[SecurityGroupId]) -> CloudResult<Vec<Group>>;
    /// Route tables and service-owned interfaces of a VPC (every page).
    async fn network_paths(&self, vpc: &VpcId) -> CloudResult<NetworkPaths>;
    /// Sets an ENI's connection tracking idle timeouts.
    async fn set_conntrack(&self, eni: &NetworkInterfaceId, timeouts: &ConnTrack) -> CloudResult<Call>;

    /// Many instances in one call (found ones only; unknown ids are left out).
    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>>;

    // Capture: reads kept as evidence, each with the raw response.
    async fn capture_instance(&self, id: &InstanceId) -> CloudResult<Raw>;
    /// One attribute; the value as text (`userData`: base64 as the API gives it; `None`
    /// when the instance has none).
    async fn capture_attribute(
        &self,
        id: &InstanceId,
        attribute: &str,
    ) -> CloudResult<Captured<Option<String>>>;
    async fn capture_network_interfaces(&self, ids: &[NetworkInterfaceId]) -> CloudResult<Raw>;
    async fn capture_security_groups(&self, ids: &[SecurityGroupId]) -> CloudResult<Raw>;
    async fn capture_profile_associations(&self, id: &InstanceId) -> CloudResult<Raw>;
    /// Console output, base64 as the API gives it (`None`: nothing yet).
    async fn console_output(&self, id: &InstanceId, latest: bool) -> CloudResult<Captured<Option<String>>>;
    /// A screenshot, base64 JPEG.
    async fn console_screenshot(&self, id: &InstanceId) -> CloudResult<Captured<Option<String>>>;
    /// Instance-store volumes of an instance type (`None`: the type has none).
    async fn instance_storage(&self, instance_type: &str) -> CloudResult<Option<InstanceStorage>>;
    /// Regions enabled for the account (opted in or not requiring opt-in).
    async fn enabled_regions(&self) -> CloudResult<Vec<Region>>;

    // The clean room's instances.
    /// The availability zone of a subnet.
    async fn subnet_zone(&self, subnet: &crate::ids::SubnetId) -> CloudResult<Option<String>>;
    /// RunInstances of one instance; `client_token` makes a retried or rerun launch
    /// return the same instance instead of a second one.
    async fn run_instance(&self, request: &NewInstance) -> CloudResult<(InstanceId, Call)>;
    async fn terminate_instance(&self, id: &InstanceId) -> CloudResult<Call>;
}

/// An analysis instance to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    pub image: crate::ids::AmiId,
    pub instance_type: String,
    pub subnet: crate::ids::SubnetId,
    pub security_group: SecurityGroupId,
    pub instance_profile: String,
    /// IMDSv2 only, no public address: set by the adapter whatever the caller says.
    pub tags: BTreeMap<String, String>,
    pub client_token: String,
}
