//! The cross-account seam: one object that hands out the suspect's side (a member
//! account and region) and the forensics side of a case. Sharing and analysis act in
//! both within one step, so they take an [`Accounts`] rather than one cloud.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Cloud, CloudResult};
use crate::ids::{AccountId, Region};

/// One account and region, and the cloud that acts there.
#[derive(Clone)]
pub struct Side {
    pub account: AccountId,
    pub region: Region,
    pub cloud: Arc<dyn Cloud>,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.account, self.region)
    }
}

#[async_trait]
pub trait Accounts: Send + Sync {
    /// The account of the caller's own credentials.
    async fn caller_account(&self) -> CloudResult<AccountId>;
    /// A member account in `region`: the caller's own credentials when it is the
    /// caller's account, else the member role assumed there.
    async fn member(&self, account: &AccountId, region: &Region) -> CloudResult<Side>;
    /// The forensics account in its configured region.
    async fn forensics(&self) -> CloudResult<Side>;
}
