//! Auto Scaling: the group an instance belongs to, detached without lowering capacity.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Call, CloudResult};
use crate::ids::InstanceId;

/// An Auto Scaling group and its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsgGroup {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub instances: Vec<InstanceId>,
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
