//! Load balancing (ELBv2 target groups and classic load balancers).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Call, CloudResult};
use crate::ids::InstanceId;

/// One registration of an instance in an ELBv2 target group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    pub target_group_arn: String,
    pub port: Option<i32>,
    pub availability_zone: Option<String>,
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
