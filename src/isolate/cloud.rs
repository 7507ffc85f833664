//! The narrow interfaces containment needs from the cloud, in domain types.
//!
//! Four traits, one per service family, so an adapter or a fake can be read service by
//! service: [`Ec2`], [`Iam`], [`AutoScaling`], [`LoadBalancing`]. [`Cloud`] is all four
//! for one account and region. The AWS adapters (`src/aws/{ec2,iam,autoscaling,elb}.rs`)
//! implement them on [`crate::aws::AccountClients`]; `crate::fake::cloud::FakeCloud` implements them
//! in memory with fault injection. No SDK type crosses these traits.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::aws::AwsError;
use crate::aws::error::AwsErrorKind;
use crate::ids::{CaseId, InstanceId, NetworkInterfaceId, SecurityGroupId, VolumeId, VpcId};

/// A change the cloud accepted: which operation, and the request id that ties it to
/// CloudTrail (recorded in custody).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub operation: String,
    pub request_id: Option<String>,
}

impl Call {
    pub fn new(operation: &str, request_id: Option<&str>) -> Self {
        Self { operation: operation.to_owned(), request_id: request_id.map(str::to_owned) }
    }
}

/// One network interface of an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eni {
    pub id: NetworkInterfaceId,
    pub device_index: i32,
    pub vpc: VpcId,
    /// In the order AWS reports them.
    pub groups: Vec<SecurityGroupId>,
    pub ipv6_addresses: Vec<String>,
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

/// An Auto Scaling group and its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgGroup {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub instances: Vec<InstanceId>,
}

/// One registration of an instance in an ELBv2 target group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub target_group_arn: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
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

pub type CloudResult<T> = Result<T, AwsError>;

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
}

#[async_trait]
pub trait Iam: Send + Sync {
    /// Role names of an instance profile, by its ARN.
    async fn profile_roles(&self, profile_arn: &str) -> CloudResult<Vec<String>>;
    /// ARNs of the instance profiles that hold `role`.
    async fn profiles_for_role(&self, role: &str) -> CloudResult<Vec<String>>;
    async fn role_policy(&self, role: &str, policy: &str) -> CloudResult<Option<serde_json::Value>>;
    async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        document: &serde_json::Value,
    ) -> CloudResult<Call>;
    async fn delete_role_policy(&self, role: &str, policy: &str) -> CloudResult<Call>;
}

#[async_trait]
pub trait AutoScaling: Send + Sync {
    /// The Auto Scaling group the instance belongs to, if any.
    async fn group_of(&self, id: &InstanceId) -> CloudResult<Option<String>>;
    async fn group(&self, name: &str) -> CloudResult<Option<AsgGroup>>;
    /// Detach without lowering desired capacity: the group launches a replacement.
    async fn detach(&self, group: &str, id: &InstanceId) -> CloudResult<Call>;
    async fn attach(&self, group: &str, id: &InstanceId) -> CloudResult<Call>;
}

#[async_trait]
pub trait LoadBalancing: Send + Sync {
    /// Every ELBv2 target group of the account and region (paginated).
    async fn target_groups(&self) -> CloudResult<Vec<String>>;
    /// Every registration in one target group: (target id, registration).
    async fn registrations(&self, target_group: &str) -> CloudResult<Vec<(String, Target)>>;
    async fn deregister(&self, target: &Target, id: &InstanceId) -> CloudResult<Call>;
    async fn register(&self, target: &Target, id: &InstanceId) -> CloudResult<Call>;
    /// Every classic load balancer (paginated): (name, registered instance ids).
    async fn classic_balancers(&self) -> CloudResult<Vec<(String, Vec<String>)>>;
    async fn classic_deregister(&self, balancer: &str, id: &InstanceId) -> CloudResult<Call>;
    async fn classic_register(&self, balancer: &str, id: &InstanceId) -> CloudResult<Call>;
}

/// Everything containment uses in one account and region.
pub trait Cloud: Ec2 + Iam + AutoScaling + LoadBalancing {}
impl<T: Ec2 + Iam + AutoScaling + LoadBalancing> Cloud for T {}

/// A missing response field, as a named error at the boundary (never an unwrap).
pub fn missing(service: &'static str, operation: &'static str, field: &str) -> AwsError {
    AwsError {
        service,
        operation,
        kind: AwsErrorKind::Other,
        code: None,
        message: format!("response has no {field}"),
        request_id: None,
    }
}
