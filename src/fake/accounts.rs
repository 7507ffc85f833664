//! The cross-account seam over one fake world: member accounts and the forensics
//! account are views of the same world, so a snapshot shared in one is seen in the other.

use std::sync::Arc;

use async_trait::async_trait;

use super::cloud::FakeCloud;
use crate::cloud::{Accounts, CloudResult, Side};
use crate::ids::{AccountId, Region};

pub struct FakeAccounts {
    /// The caller's own account (where bare instance ids live).
    pub home: Arc<FakeCloud>,
    pub forensics_account: AccountId,
    pub forensics_region: Region,
}

impl FakeAccounts {
    pub fn new(home: Arc<FakeCloud>, forensics_account: &str) -> Self {
        let region = home.region.clone();
        Self {
            home,
            forensics_account: forensics_account.parse().expect("account id"),
            forensics_region: region,
        }
    }

    pub fn forensics_cloud(&self) -> Arc<FakeCloud> {
        self.home.view(&self.forensics_account, &self.forensics_region)
    }
}

#[async_trait]
impl Accounts for FakeAccounts {
    async fn caller_account(&self) -> CloudResult<AccountId> {
        Ok(self.home.account.clone())
    }

    async fn member(&self, account: &AccountId, region: &Region) -> CloudResult<Side> {
        Ok(Side { account: account.clone(), region: region.clone(), cloud: self.home.view(account, region) })
    }

    async fn forensics(&self) -> CloudResult<Side> {
        Ok(Side {
            account: self.forensics_account.clone(),
            region: self.forensics_region.clone(),
            cloud: self.forensics_cloud(),
        })
    }
}
