//! Network containment: the case's groups per VPC (only groups recorded in the case
//! are trusted; found, adopted or created, never duplicated, made to serve their
//! purpose) and the two-step swap on each ENI, which fails closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::cloud::CloudError;
use crate::cloud::{
    Call, Cloud, CloudResult, NewGroup, Purpose, Rule, TAG_CASE, TAG_PURPOSE, V4_ANY, V6_ANY,
};
use crate::cloud::{ErrorKind, retry};
use crate::ids::{AccountId, CaseId, NetworkInterfaceId, SecurityGroupId, VpcId};
use crate::isolate::plan::{CaseGroups, GROUP_RECORD_SCHEMA, GroupRecord, group_fix, group_item};
use crate::pipeline::custody::{CustodySink, Item};

/// Attempts at step 2 of the swap (the isolation group) before failing closed. Each is
/// itself retried as above.
pub const SWAP_ATTEMPTS: u32 = 3;

/// One group, created (or made to serve its purpose) by the first caller only.
type GroupCell = Arc<OnceCell<SecurityGroupId>>;

/// Why a group the case needs is not ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    #[error("creating the {purpose} group in {vpc}: {source}")]
    Create { vpc: VpcId, purpose: &'static str, source: CloudError },
    #[error("making {group} serve its purpose ({purpose}): {source}")]
    Fix { group: SecurityGroupId, purpose: &'static str, source: CloudError },
}

/// Something a run should know about a group it readied, beside its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupNote {
    /// Tagged and named as the case's group, not recorded: recorded now and used.
    Adopted { group: SecurityGroupId, vpc: VpcId, purpose: &'static str },
    /// The case's group name was taken in the VPC by a group the case does not trust.
    NameTaken { vpc: VpcId, name: String, used: String },
    /// In use, but its record could not be written: a rerun adopts it.
    NotRecorded { group: SecurityGroupId, reason: String },
}

impl GroupNote {
    /// A note that leaves the run unfinished (a rerun must resume it).
    pub fn is_error(&self) -> bool {
        matches!(self, GroupNote::NotRecorded { .. })
    }
}

impl std::fmt::Display for GroupNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupNote::Adopted { group, vpc, purpose } => write!(
                f,
                "{group} in {vpc} carries the case's tags and {purpose} group name but was not recorded in the case (a run stopped between creating and recording it, or someone else made it): adopted, recorded, and its rules made to serve its purpose"
            ),
            GroupNote::NameTaken { vpc, name, used } => write!(
                f,
                "the group name {name} is taken in {vpc} by a group the case does not trust: created {used} instead"
            ),
            GroupNote::NotRecorded { group, reason } => {
                write!(
                    f,
                    "{group} is in use but its record could not be written (a rerun adopts it): {reason}"
                )
            }
        }
    }
}

/// A group ready for use, and what the caller that readied it did.
#[derive(Debug, Clone, Default)]
pub struct Readied {
    pub calls: Vec<Call>,
    pub notes: Vec<GroupNote>,
}

/// Whether an allow-all group is known to allow everything.
#[derive(Debug, Clone, Copy, Default)]
struct AllowAllState {
    /// A fail-closed fallback revoked its rules since it was last filled.
    emptied: bool,
    /// Counts emptyings: a swap that sees it change knows the group was emptied under it.
    generation: u64,
}

/// The case's groups in one account and region, each created at most once per run even
/// when many instances of one VPC are contained at the same time.
pub struct GroupRegistry {
    case: CaseId,
    account: AccountId,
    /// The run's time (compact), for a replacement name when the case's name is taken.
    now: String,
    found: CaseGroups,
    cells: std::sync::Mutex<HashMap<(VpcId, Purpose), GroupCell>>,
    /// The groups the case trusts now: found recorded, or recorded by this run.
    trusted: std::sync::Mutex<BTreeMap<(VpcId, Purpose), SecurityGroupId>>,
    allow_all: std::sync::Mutex<HashMap<SecurityGroupId, AllowAllState>>,
    /// One refill of an emptied allow-all group at a time.
    refill: tokio::sync::Mutex<()>,
}

impl GroupRegistry {
    pub fn new(case: CaseId, account: AccountId, now: &str, found: CaseGroups) -> Self {
        let trusted = found.by_vpc.iter().map(|(k, g)| (k.clone(), g.id.clone())).collect();
        Self {
            case,
            account,
            now: now.chars().filter(|c| c.is_ascii_alphanumeric()).collect(),
            found,
            cells: Default::default(),
            trusted: std::sync::Mutex::new(trusted),
            allow_all: Default::default(),
            refill: Default::default(),
        }
    }

    pub fn found(&self) -> &CaseGroups {
        &self.found
    }

    /// The trusted group of (`vpc`, `purpose`), found or readied by this run.
    pub fn trusted(&self, vpc: &VpcId, purpose: Purpose) -> Option<SecurityGroupId> {
        self.trusted.lock().expect("trusted lock").get(&(vpc.clone(), purpose)).cloned()
    }

    /// The group of `purpose` in `vpc`, ready for use; what this caller did.
    pub async fn ensure(
        &self,
        cloud: &dyn Cloud,
        custody: &dyn CustodySink,
        vpc: &VpcId,
        purpose: Purpose,
    ) -> Result<(SecurityGroupId, Readied), GroupError> {
        let key = (vpc.clone(), purpose);
        let cell = self.cells.lock().expect("registry lock").entry(key.clone()).or_default().clone();
        // Only the caller whose closure runs readies the group: it alone takes what was
        // done (the calls go in its own custody record).
        let mine = std::sync::Mutex::new(Readied::default());
        let id = cell
            .get_or_try_init(|| async {
                let (id, readied) = self.prepare(cloud, custody, vpc, purpose).await?;
                self.trusted.lock().expect("trusted lock").insert(key.clone(), id.clone());
                if purpose == Purpose::AllowAll {
                    self.allow_all.lock().expect("allow-all lock").entry(id.clone()).or_default().emptied =
                        false;
                }
                *mine.lock().expect("readied lock") = readied;
                Ok::<_, GroupError>(id)
            })
            .await?
            .clone();
        Ok((id, mine.into_inner().expect("readied lock")))
    }

    async fn prepare(
        &self,
        cloud: &dyn Cloud,
        custody: &dyn CustodySink,
        vpc: &VpcId,
        purpose: Purpose,
    ) -> Result<(SecurityGroupId, Readied), GroupError> {
        let mut readied = Readied::default();
        let (id, revoke, add) = match self.found.get(vpc, purpose) {
            Some(g) => {
                let (revoke, add) = group_fix(purpose, &g.rules);
                (g.id.clone(), revoke, add)
            }
            None => match self.found.adoptable(&self.case, vpc, purpose) {
                Some(g) => {
                    let g = g.clone();
                    if let Err(e) = self.record(custody, &g.id, vpc, purpose, &g.name, true).await {
                        readied.notes.push(GroupNote::NotRecorded { group: g.id.clone(), reason: e });
                    }
                    readied.notes.push(GroupNote::Adopted {
                        group: g.id.clone(),
                        vpc: vpc.clone(),
                        purpose: purpose.tag(),
                    });
                    let (revoke, add) = group_fix(purpose, &g.rules);
                    (g.id, revoke, add)
                }
                None => {
                    let (id, name, call) = self.create(cloud, vpc, purpose, &mut readied).await?;
                    readied.calls.push(call);
                    // A new group has egress to 0.0.0.0/0, and to ::/0 when the VPC has IPv6.
                    let (revoke, add) = match purpose {
                        Purpose::Isolation => {
                            (vec![Rule::all(true, V4_ANY), Rule::all(true, V6_ANY)], vec![])
                        }
                        Purpose::AllowAll => (
                            vec![],
                            vec![Rule::all(false, V4_ANY), Rule::all(false, V6_ANY), Rule::all(true, V6_ANY)],
                        ),
                    };
                    // Stored while its rules are fixed, so before any ENI goes onto it (only
                    // recorded groups are trusted); its record follows behind, and a rerun
                    // that finds the group unrecorded adopts it by its exact name.
                    let (recorded, fixed) = futures::join!(
                        self.record(custody, &id, vpc, purpose, &name, false),
                        fix_rules(cloud, &id, &revoke, &add)
                    );
                    if let Err(e) = recorded {
                        readied.notes.push(GroupNote::NotRecorded { group: id.clone(), reason: e });
                    }
                    let calls = fixed.map_err(|source| GroupError::Fix {
                        group: id.clone(),
                        purpose: purpose.tag(),
                        source,
                    })?;
                    readied.calls.extend(calls);
                    return Ok((id, readied));
                }
            },
        };
        let calls = fix_rules(cloud, &id, &revoke, &add).await.map_err(|source| GroupError::Fix {
            group: id.clone(),
            purpose: purpose.tag(),
            source,
        })?;
        readied.calls.extend(calls);
        Ok((id, readied))
    }

    /// CreateSecurityGroup with the case's tags; when the case's name is taken in the
    /// VPC (by a group the case does not trust), once more under a name with the run's time.
    async fn create(
        &self,
        cloud: &dyn Cloud,
        vpc: &VpcId,
        purpose: Purpose,
        readied: &mut Readied,
    ) -> Result<(SecurityGroupId, String, Call), GroupError> {
        let canonical = purpose.group_name(&self.case);
        let new = |name: &str| NewGroup {
            vpc: vpc.clone(),
            name: name.to_owned(),
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
                ("Name".to_owned(), name.to_owned()),
            ]
            .into(),
        };
        let err = |source| GroupError::Create { vpc: vpc.clone(), purpose: purpose.tag(), source };
        let first = new(&canonical);
        match retry(|| cloud.create_group(&first)).await {
            Ok((id, call)) => Ok((id, canonical, call)),
            Err(e) if e.code.as_deref() == Some("InvalidGroup.Duplicate") => {
                let other = format!("{canonical}-{}", self.now);
                let second = new(&other);
                let (id, call) = retry(|| cloud.create_group(&second)).await.map_err(err)?;
                readied.notes.push(GroupNote::NameTaken {
                    vpc: vpc.clone(),
                    name: canonical,
                    used: other.clone(),
                });
                Ok((id, other, call))
            }
            Err(e) => Err(err(e)),
        }
    }

    async fn record(
        &self,
        custody: &dyn CustodySink,
        group: &SecurityGroupId,
        vpc: &VpcId,
        purpose: Purpose,
        name: &str,
        adopted: bool,
    ) -> Result<(), String> {
        let id = group_item(&self.account, vpc, purpose, group);
        let item = Item {
            name: format!("containment-{}-group-{group}.json", purpose.tag()),
            id,
            account: self.account.clone(),
            subject: vpc.to_string(),
            source: if adopted {
                "ec2:DescribeSecurityGroups (tagged with the case, adopted)".into()
            } else {
                "ec2:CreateSecurityGroup".into()
            },
            method: "cleanroom: the case's own security group, recorded so that only it is trusted".into(),
            derived_from: vec![],
        };
        let record = GroupRecord {
            schema: GROUP_RECORD_SCHEMA,
            case: self.case.clone(),
            account: self.account.clone(),
            vpc: vpc.clone(),
            group: group.clone(),
            purpose,
            name: name.to_owned(),
            adopted,
            recorded_at: crate::cli::isolate::now_rfc3339(),
        };
        let value = serde_json::to_value(&record).expect("group record serialises");
        custody.store_json_early(item, &value).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// Before a step 1: if a fail-closed fallback emptied the allow-all group since it
    /// was filled, fill it again. Returns its generation (compare after step 2) and the
    /// calls made.
    pub async fn allow_all_ready(
        &self,
        cloud: &dyn Cloud,
        group: &SecurityGroupId,
    ) -> (u64, Result<Vec<Call>, CloudError>) {
        let state = || *self.allow_all.lock().expect("allow-all lock").entry(group.clone()).or_default();
        if !state().emptied {
            return (state().generation, Ok(vec![]));
        }
        let _one = self.refill.lock().await;
        if !state().emptied {
            return (state().generation, Ok(vec![]));
        }
        let result = fix_rules(cloud, group, &[], &Rule::allow_all()).await;
        if result.is_ok() {
            self.allow_all.lock().expect("allow-all lock").entry(group.clone()).or_default().emptied = false;
        }
        (state().generation, result)
    }

    /// A fail-closed fallback revoked the allow-all group's rules.
    pub fn allow_all_emptied(&self, group: &SecurityGroupId) {
        let mut map = self.allow_all.lock().expect("allow-all lock");
        let s = map.entry(group.clone()).or_default();
        s.emptied = true;
        s.generation += 1;
    }

    /// Times the allow-all group was emptied.
    pub fn allow_all_generation(&self, group: &SecurityGroupId) -> u64 {
        self.allow_all.lock().expect("allow-all lock").get(group).map(|s| s.generation).unwrap_or(0)
    }
}

/// One call per rule, all at once: a rule that is already gone (or already there)
/// does not stop the others.
async fn fix_rules(
    cloud: &dyn Cloud,
    id: &SecurityGroupId,
    revoke: &[Rule],
    add: &[Rule],
) -> CloudResult<Vec<Call>> {
    let revokes = futures::future::join_all(revoke.iter().map(|r| async move {
        match retry(|| cloud.revoke(id, std::slice::from_ref(r))).await {
            Err(e) if e.is(ErrorKind::NotFound) => Ok(vec![]),
            other => other,
        }
    }));
    let adds = futures::future::join_all(add.iter().map(|r| async move {
        match retry(|| cloud.authorize(id, std::slice::from_ref(r))).await {
            Err(e) if e.code.as_deref() == Some("InvalidPermission.Duplicate") => Ok(vec![]),
            other => other,
        }
    }));
    let (revokes, adds) = futures::join!(revokes, adds);
    let mut calls = Vec::new();
    for r in revokes.into_iter().chain(adds) {
        calls.extend(r?);
    }
    Ok(calls)
}

/// Where an ENI ended up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapResult {
    /// On the isolation group alone, after the allow-all step.
    Isolated,
    /// On the isolation group alone, but the allow-all step is not known to have
    /// untracked its connections first (it failed, timed out, was skipped, or the
    /// group was emptied under it): connections tracked before may survive.
    IsolatedTrackedMaySurvive { step1: String },
    /// No isolation group: still on its own groups, nothing opened.
    Unchanged { error: String },
    /// Step 2 failed; put back on its prior groups: no more open than before.
    Reverted { error: String },
    /// Step 2 and the revert failed; the allow-all group's rules were revoked so the
    /// group it is on allows nothing.
    AllowAllEmptied { error: String },
    /// Everything failed: the ENI may be on the allow-all group. Loudest failure.
    Open { error: String },
}

impl SwapResult {
    /// On the isolation group alone.
    pub fn is_isolated(&self) -> bool {
        matches!(self, SwapResult::Isolated | SwapResult::IsolatedTrackedMaySurvive { .. })
    }
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
/// Runs after every step 1 that was tried, failed or not: a step 1 that timed out may
/// have been applied.
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
    let mut calls = vec![];
    match retry(|| cloud.set_eni_groups(eni, prior_groups)).await {
        Ok(call) => return (SwapResult::Reverted { error: last }, vec![call]),
        Err(e) => last = format!("{last}; revert to prior groups failed too: {e}"),
    }
    let Some(allow_all) = allow_all else {
        // Never sent to the allow-all group, and the revert failed: on its own groups.
        return (SwapResult::Unchanged { error: last }, calls);
    };
    // Per rule, so a rule already gone does not stop the others.
    match fix_rules(cloud, allow_all, &Rule::allow_all(), &[]).await {
        Ok(c) => {
            calls.extend(c);
            (SwapResult::AllowAllEmptied { error: last }, calls)
        }
        Err(e) => (
            SwapResult::Open { error: format!("{last}; emptying the allow-all group failed too: {e}") },
            calls,
        ),
    }
}
