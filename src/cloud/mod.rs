//! The narrow interfaces every stage needs from a cloud, in domain types.
//!
//! One trait per service, so an adapter or a fake can be read service by service:
//! [`Ec2`] (instances, network, console), [`Ebs`] (snapshots and volumes), [`Iam`],
//! [`AutoScaling`], [`LoadBalancing`], [`Kms`], [`CloudTrail`], [`Ssm`], [`Sts`]. [`Cloud`] is
//! all of them for one account and region; [`Accounts`] hands out the member side and
//! the forensics side of a case. The AWS adapters (`src/aws/`) implement them with the
//! SDK; `src/fake/` implements them in memory with fault injection. No SDK type crosses
//! these traits.

use serde::{Deserialize, Serialize};

pub mod accounts;
pub mod autoscaling;
pub mod cloudtrail;
pub mod ebs;
pub mod ec2;
pub mod elb;
pub mod error;
pub mod iam;
pub mod kms;
pub mod retry;
pub mod ssm;
pub mod sts;

pub use accounts::{Accounts, Side};
pub use autoscaling::{AsgGroup, AutoScaling};
pub use cloudtrail::{CloudTrail, Found, Lookup, TrailEvent, TrailResource};
pub use ebs::{CopyRequest, Ebs, NewVolume, Snapshot, SnapshotState, Volume};
pub use ec2::{
    Attributes, DryRun, Ec2, Eni, Group, Instance, NewGroup, NewInstance, ProfileAssociation, Purpose, Rule,
    TAG_CASE, TAG_CONTAINED, TAG_PURPOSE, TAG_ROLE, V4_ANY, V6_ANY, VolumeAttachment,
};
pub use elb::{LoadBalancing, Target};
pub use error::{CloudError, ErrorKind};
pub use iam::Iam;
pub use kms::{KeyInfo, Kms};
pub use retry::retry;
pub use ssm::{CommandRequest, DocumentVersion, Invocation, Ssm};
pub use sts::{Identity, Sts};

pub type CloudResult<T> = Result<T, CloudError>;

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

/// A read kept as evidence: the response exactly as the service sent it (XML or JSON
/// bytes), with the operation and request id. What a court sees is what AWS said, not
/// our reading of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// `service:Operation`, e.g. `ec2:DescribeInstances`.
    pub operation: String,
    /// The request's parameters, as sent (for the record).
    pub request: serde_json::Value,
    pub request_id: Option<String>,
    /// `application/xml` or `application/json` (the fake: `application/json`).
    pub content_type: String,
    pub body: bytes::Bytes,
}

/// A domain value with the raw response it was read from.
#[derive(Debug, Clone)]
pub struct Captured<T> {
    pub value: T,
    pub raw: Raw,
}

/// Everything the stages use in one account and region.
pub trait Cloud: Ec2 + Ebs + Iam + AutoScaling + LoadBalancing + Kms + CloudTrail + Ssm + Sts {}
impl<T: Ec2 + Ebs + Iam + AutoScaling + LoadBalancing + Kms + CloudTrail + Ssm + Sts> Cloud for T {}

/// A missing response field, as a named error at the boundary (never an unwrap).
pub fn missing(service: &'static str, operation: &'static str, field: &str) -> CloudError {
    CloudError::missing(service, operation, field)
}
