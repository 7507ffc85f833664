//! STS: who the caller is.

use async_trait::async_trait;

use super::CloudResult;
use crate::ids::AccountId;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub account: AccountId,
    pub arn: String,
    pub user_id: String,
}

#[async_trait]
pub trait Sts: Send + Sync {
    async fn caller_identity(&self) -> CloudResult<Identity>;
}
