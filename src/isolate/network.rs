//! Network containment: the case's groups per VPC (found by tag or created, never
//! duplicated, made to serve their purpose) and the two-step swap on each ENI, which
//! fails closed.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::cloud::CloudError;
use crate::cloud::{
    Call, Cloud, CloudResult, NewGroup, Purpose, Rule, TAG_CASE, TAG_PURPOSE, V4_ANY, V6_ANY,
};
use crate::cloud::{ErrorKind, retry};
use crate::ids::{CaseId, NetworkInterfaceId, SecurityGroupId, VpcId};
use crate::isolate::plan::{CaseGroups, group_fix};

/// Attempts at step 2 of the swap (the isolation group) before failing closed. Each is
/// itself retried as above.
pub const SWAP_ATTEMPTS: u32 = 3;

/// One group, created (or made to serve its purpose) by the first caller only.
type GroupCell = Arc<OnceCell<SecurityGroupId>>;

/// The case's groups in one account and region, each created at most once per run even
/// when many instances of one VPC are contained at the same time.
pub struct GroupRegistry {
    case: CaseId,
    found: CaseGroups,
    cells: std::sync::Mutex<HashMap<(VpcId, Purpose), GroupCell>>,
}

impl GroupRegistry {
    pub fn new(case: CaseId, found: CaseGroups) -> Self {
        Self { case, found, cells: Default::default() }
    }

    pub fn found(&self) -> &CaseGroups {
        &self.found
    }

    /// The group of `purpose` in `vpc`, ready for use; the calls this caller made.
    pub async fn ensure(
        &self,
        cloud: &dyn Cloud,
        vpc: &VpcId,
        purpose: Purpose,
    ) -> CloudResult<(SecurityGroupId, Vec<Call>)> {
        let cell =
            self.cells.lock().expect("registry lock").entry((vpc.clone(), purpose)).or_default().clone();
        let calls = std::sync::Mutex::new(Vec::new());
        let id = cell
            .get_or_try_init(|| async {
                let (id, made) = self.prepare(cloud, vpc, purpose).await?;
                calls.lock().expect("calls lock").extend(made);
                Ok::<_, CloudError>(id)
            })
            .await?
            .clone();
        Ok((id, calls.into_inner().expect("calls lock")))
    }

    async fn prepare(
        &self,
        cloud: &dyn Cloud,
        vpc: &VpcId,
        purpose: Purpose,
    ) -> CloudResult<(SecurityGroupId, Vec<Call>)> {
        let mut calls = Vec::new();
        let (id, revoke, add) = match self.found.get(vpc, purpose) {
            Some(g) => {
                let (revoke, add) = group_fix(purpose, &g.rules);
                (g.id.clone(), revoke, add)
            }
            None => {
                let new = NewGroup {
                    vpc: vpc.clone(),
                    name: purpose.group_name(&self.case),
                    description: match purpose {
                        Purpose::Isolation => {
                            format!("cleanroom case {}: isolation, no inbound, no outbound", self.case)
                        }
                        Purpose::AllowAll => format!(
                            "cleanroom case {}: allow-all step of the isolation swap (untracks connections)",
                            self.case
                        ),
                    },
                    tags: [
                        (TAG_CASE.to_owned(), self.case.to_string()),
                        (TAG_PURPOSE.to_owned(), purpose.tag().to_owned()),
                        ("Name".to_owned(), purpose.group_name(&self.case)),
                    ]
                    .into(),
                };
                let (id, call) = retry(|| cloud.create_group(&new)).await?;
                calls.push(call);
                // A new group has egress to 0.0.0.0/0, and to ::/0 when the VPC has IPv6.
                match purpose {
                    Purpose::Isolation => {
                        (id, vec![Rule::all(true, V4_ANY), Rule::all(true, V6_ANY)], vec![])
                    }
                    Purpose::AllowAll => (
                        id,
                        vec![],
                        vec![Rule::all(false, V4_ANY), Rule::all(false, V6_ANY), Rule::all(true, V6_ANY)],
                    ),
                }
            }
        };
        // One call per rule, all at once: a rule that is already gone (or already there)
        // does not stop the others.
        let revokes = futures::future::join_all(revoke.iter().map(|r| {
            let id = &id;
            async move {
                match retry(|| cloud.revoke(id, std::slice::from_ref(r))).await {
                    Err(e) if e.is(ErrorKind::NotFound) => Ok(vec![]),
                    other => other,
                }
            }
        }));
        let adds = futures::future::join_all(add.iter().map(|r| {
            let id = &id;
            async move {
                match retry(|| cloud.authorize(id, std::slice::from_ref(r))).await {
                    Err(e) if e.code.as_deref() == Some("InvalidPermission.Duplicate") => Ok(vec![]),
                    other => other,
                }
            }
        }));
        let (revokes, adds) = futures::join!(revokes, adds);
        for r in revokes.into_iter().chain(adds) {
            calls.extend(r?);
        }
        Ok((id, calls))
    }
}

/// Where an ENI ended up when step 2 could not be done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapResult {
    /// On the isolation group alone.
    Isolated,
    /// Step 1 failed: still on its own groups, nothing opened.
    Unchanged { error: String },
    /// Step 2 failed; put back on its prior groups: no more open than before.
    Reverted { error: String },
    /// Step 2 and the revert failed; the allow-all group's rules were revoked so the
    /// group it is on allows nothing.
    AllowAllEmptied { error: String },
    /// Everything failed: the ENI may be on the allow-all group. Loudest failure.
    Open { error: String },
}

/// Step 1: the allow-all group, so tracked connections become untracked.
pub async fn step1(
    cloud: &dyn Cloud,
    eni: &NetworkInterfaceId,
    allow_all: &SecurityGroupId,
) -> CloudResult<Call> {
    retry(|| cloud.set_eni_groups(eni, std::slice::from_ref(allow_all))).await
}

/// Step 2: the isolation group, retried; if it cannot be applied, fail closed: back to
/// the prior groups, else empty the allow-all group. Never leaves the ENI on allow-all.
pub async fn step2(
    cloud: &dyn Cloud,
    eni: &NetworkInterfaceId,
    isolation: &SecurityGroupId,
    allow_all: Option<&SecurityGroupId>,
    prior_groups: &[SecurityGroupId],
) -> (SwapResult, Vec<Call>) {
    let mut last = String::new();
    for attempt in 1..=SWAP_ATTEMPTS {
        match retry(|| cloud.set_eni_groups(eni, std::slice::from_ref(isolation))).await {
            Ok(call) => return (SwapResult::Isolated, vec![call]),
            Err(e) => {
                tracing::warn!("{eni}: isolation group not applied (attempt {attempt}/{SWAP_ATTEMPTS}): {e}");
                last = e.to_string();
            }
        }
    }
    let Some(allow_all) = allow_all else {
        return (SwapResult::Unchanged { error: last }, vec![]);
    };
    match retry(|| cloud.set_eni_groups(eni, prior_groups)).await {
        Ok(call) => return (SwapResult::Reverted { error: last }, vec![call]),
        Err(e) => last = format!("{last}; revert to prior groups failed too: {e}"),
    }
    let rules = Rule::allow_all();
    match retry(|| cloud.revoke(allow_all, &rules)).await {
        Ok(calls) => (SwapResult::AllowAllEmptied { error: last }, calls),
        Err(e) => (
            SwapResult::Open { error: format!("{last}; emptying the allow-all group failed too: {e}") },
            vec![],
        ),
    }
}
