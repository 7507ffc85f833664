//! KMS: what a key is, and whether it is the default EBS key.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::CloudResult;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub arn: String,
    /// `AWS` (an AWS managed key such as aws/ebs) or `CUSTOMER`.
    pub manager: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub state: String,
}

impl KeyInfo {
    pub fn is_aws_managed(&self) -> bool {
        self.manager == "AWS"
    }
}

#[async_trait]
pub trait Kms: Send + Sync {
    /// DescribeKey of a key id, ARN or alias (`alias/name`); `None` when unknown.
    async fn describe_key(&self, key: &str) -> CloudResult<Option<KeyInfo>>;
}
