//! IAM: instance profiles, roles and their policies.

use async_trait::async_trait;

use super::{Call, Captured, CloudResult, Raw};

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

    // Capture.
    /// GetInstanceProfile by ARN: its role names, and the raw answer.
    async fn capture_profile(&self, profile_arn: &str) -> CloudResult<Captured<Vec<String>>>;
    async fn capture_role(&self, role: &str) -> CloudResult<Raw>;
    /// ListAttachedRolePolicies: managed policy ARNs.
    async fn capture_attached_policies(&self, role: &str) -> CloudResult<Captured<Vec<String>>>;
    /// ListRolePolicies: inline policy names.
    async fn capture_inline_policy_names(&self, role: &str) -> CloudResult<Captured<Vec<String>>>;
    async fn capture_inline_policy(&self, role: &str, policy: &str) -> CloudResult<Raw>;
    /// GetPolicy then GetPolicyVersion of its default version.
    async fn capture_managed_policy(&self, policy_arn: &str) -> CloudResult<Vec<Raw>>;
}
