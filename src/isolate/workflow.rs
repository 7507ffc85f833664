//! The containment workflow for a fleet: prepare every instance (read, check
//! permissions with DryRun, decide), refuse the whole run before any change if one is
//! bad input, then contain each with bounded concurrency and report every instance.
//!
//! Sequential round trips from start to the isolation group on every ENI (calls in one
//! step run in parallel): 1 describe instance, attributes, profile, Auto Scaling
//! membership, case groups, stored prior state, target-group listing; 2 target health,
//! Auto Scaling capacity, profile roles, DryRun checks, deny policies; 3 store the
//! prior state, create missing groups (and record them), list who else uses the
//! instance's roles; 4 group rules (and, in parallel, protect, detach, deregister,
//! disassociate, deny); 5 step 1 of the swap on every ENI; 6 step 2. With the case's
//! groups already in place (a second instance in the VPC, a rerun) steps 3-4 shrink.
//! The time-based deny (opt-in) waits for the disassociation to show, beside the swap.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cloud::CloudError;
use crate::cloud::ErrorKind;
use crate::cloud::ec2::{ConnTrack, NetworkPaths};
use crate::cloud::retry;
use crate::cloud::{Call, Cloud, DryRun, Purpose};
use crate::ids::{AccountId, CaseId, InstanceId, NetworkInterfaceId, Region, SecurityGroupId, VpcId};
use crate::isolate::network::{GroupRegistry, SwapResult, step1, step2};
use crate::isolate::observe::{
    LbIndex, ObserveError, Observed, PriorState, instance_arn, lb_index, observe, observe_details,
    observe_instance, prior_state_item, prior_state_new_item,
};
use crate::isolate::plan::{
    CaseGroups, Controls, Plan, Recorded, api_calls, decide, deny_policy_name, group_item, intended_deny,
};
use crate::isolate::verify::{Check, Reread, all_ok, containment_checks};
use crate::pipeline::custody::{Action, CustodyError, CustodySink, Event, EvidenceRef};
use crate::progress::Reporter;

/// Longest wait for a disassociated instance profile to show as gone before the
/// time-based deny is set (AWS completes a disassociation within seconds).
pub const DISASSOCIATION_WAIT: Duration = Duration::from_secs(60);
/// First wait between reads of the association (doubles up to [`DISASSOCIATION_MAX_POLL`]).
const DISASSOCIATION_FIRST_POLL: Duration = Duration::from_millis(500);
const DISASSOCIATION_MAX_POLL: Duration = Duration::from_secs(5);
/// Added to the clock when the time-based deny's time is taken: STS gives
/// `aws:TokenIssueTime` in whole seconds, so one second rounds past any credential
/// issued in the current second; one more allows for the skew of an NTP-synchronised
/// host. Other principals' sessions issued in those seconds are denied too.
pub const DENY_TIME_MARGIN: Duration = Duration::from_secs(2);

/// The time-based deny's time: now, past the current whole second and the margin.
fn deny_time() -> String {
    let t = time::OffsetDateTime::now_utc() + DENY_TIME_MARGIN;
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// One account and region the fleet touches, with what is read once for all its
/// instances: the load-balancer index, the case's groups, the network paths of a VPC.
pub struct Scope {
    pub account: AccountId,
    pub region: Region,
    pub cloud: Arc<dyn Cloud>,
    lb: OnceCell<LbIndex>,
    registry: OnceCell<Arc<GroupRegistry>>,
    /// The groups carrying the case's tag (trusted or not: the case says which).
    tagged: OnceCell<Vec<crate::cloud::Group>>,
    /// VPCs whose CreateSecurityGroup permission one instance already checks.
    group_checks: std::sync::Mutex<BTreeSet<VpcId>>,
    paths: std::sync::Mutex<HashMap<VpcId, PathsCell>>,
}

/// A VPC's paths, read once by the first instance that needs them.
type PathsCell = Arc<OnceCell<Result<NetworkPaths, String>>>;

impl Scope {
    pub fn new(account: AccountId, region: Region, cloud: Arc<dyn Cloud>) -> Arc<Self> {
        Arc::new(Self {
            account,
            region,
            cloud,
            lb: OnceCell::new(),
            registry: OnceCell::new(),
            tagged: OnceCell::new(),
            group_checks: Default::default(),
            paths: Default::default(),
        })
    }

    async fn lb(&self) -> Result<&LbIndex, CloudError> {
        self.lb.get_or_try_init(|| lb_index(self.cloud.as_ref(), None, true)).await
    }

    /// The groups carrying the case's tag, read once (no case needed).
    async fn tagged(&self, settings: &Settings) -> Result<&[crate::cloud::Group], Prep> {
        self.tagged
            .get_or_try_init(|| async {
                retry(|| self.cloud.case_groups(&settings.case))
                    .await
                    .map_err(|e| classify(&self.account, &settings.member_role, e))
            })
            .await
            .map(Vec::as_slice)
    }

    /// The case's groups, trusted when the case recorded them.
    async fn registry(
        &self,
        settings: &Settings,
        custody: &dyn CustodySink,
    ) -> Result<Arc<GroupRegistry>, Prep> {
        self.registry
            .get_or_try_init(|| async {
                let found = self.tagged(settings).await?;
                let recorded = recorded_groups(custody, &self.account, found).await.map_err(Prep::Failed)?;
                let groups = CaseGroups::trust(found, &recorded);
                Ok(Arc::new(GroupRegistry::new(
                    settings.case.clone(),
                    self.account.clone(),
                    &settings.now,
                    groups,
                )))
            })
            .await
            .cloned()
    }

    /// What a VPC's route tables and service interfaces show, read once per run.
    async fn paths(&self, vpc: &VpcId) -> Result<NetworkPaths, String> {
        let cell = self.paths.lock().expect("paths lock").entry(vpc.clone()).or_default().clone();
        cell.get_or_init(|| async {
            retry(|| self.cloud.network_paths(vpc)).await.map_err(|e| e.to_string())
        })
        .await
        .clone()
    }
}

/// Which of `found` the case recorded, with the purpose it recorded (never the tag's).
async fn recorded_groups(
    custody: &dyn CustodySink,
    account: &AccountId,
    found: &[crate::cloud::Group],
) -> Result<BTreeMap<SecurityGroupId, Recorded>, PrepFailure> {
    let lookups = found.iter().flat_map(|g| {
        [Purpose::Isolation, Purpose::AllowAll].map(|p| {
            let id = group_item(account, &g.vpc, p, &g.id);
            async move { (g, p, id.clone(), custody.find(&id).await) }
        })
    });
    let mut recorded: BTreeMap<SecurityGroupId, (Recorded, String)> = BTreeMap::new();
    for (g, purpose, item, r) in futures::future::join_all(lookups).await {
        if r.map_err(|e| PrepFailure::Custody { reason: e.to_string() })?.is_some() {
            recorded.insert(g.id.clone(), (Recorded { purpose, recorded_at: String::new() }, item));
        }
    }
    // Two recorded groups for one VPC and purpose (one replaced after its tag was
    // removed, then tagged again): read when each was recorded, the latest wins.
    let mut per_key: BTreeMap<(VpcId, Purpose), usize> = BTreeMap::new();
    for g in found {
        if let Some((r, _)) = recorded.get(&g.id) {
            *per_key.entry((g.vpc.clone(), r.purpose)).or_default() += 1;
        }
    }
    for g in found {
        let Some((r, item)) = recorded.get(&g.id).cloned() else { continue };
        if per_key.get(&(g.vpc.clone(), r.purpose)).copied().unwrap_or(0) < 2 {
            continue;
        }
        if let Ok(Some((_, v))) = custody.load_json(&item).await {
            let at = v["recorded_at"].as_str().unwrap_or_default().to_owned();
            recorded.insert(g.id.clone(), (Recorded { recorded_at: at, ..r }, item));
        }
    }
    Ok(recorded.into_iter().map(|(k, (r, _))| (k, r)).collect())
}

pub struct Settings {
    pub case: CaseId,
    pub concurrency: usize,
    pub plan_only: bool,
    /// When the command started (UTC, RFC 3339, seconds): the time of the prior state.
    /// The time-based deny takes its own time, after the disassociation is confirmed.
    pub now: String,
    /// The role assumed in member accounts, for error messages.
    pub member_role: String,
    /// When the command started (for `isolated_after_ms`); default: when the workflow starts.
    pub started: Option<Instant>,
    /// Controls the user opted into.
    pub controls: Controls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Isolated,
    AlreadyIsolated,
    Planned,
    Failed,
    Refused,
    NotStarted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Isolated => "isolated",
            Status::AlreadyIsolated => "already isolated (nothing changed)",
            Status::Planned => "planned (nothing changed)",
            Status::Failed => "FAILED",
            Status::Refused => "refused (nothing changed)",
            Status::NotStarted => "not started (nothing changed)",
        }
    }
}

/// The result row of one instance.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub instance: String,
    pub account: String,
    pub region: String,
    pub status: Status,
    pub message: String,
    pub checks: Vec<Check>,
    /// For `--plan`: every API call, in order.
    pub plan: Vec<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub aws_request_ids: Vec<String>,
    /// Milliseconds from the start of the command until the isolation group was on every ENI.
    pub isolated_after_ms: Option<u64>,
}

impl Outcome {
    fn new(scope: &Scope, id: &InstanceId, status: Status, message: impl Into<String>) -> Self {
        Self {
            instance: id.to_string(),
            account: scope.account.to_string(),
            region: scope.region.to_string(),
            status,
            message: message.into(),
            checks: vec![],
            plan: vec![],
            errors: vec![],
            warnings: vec![],
            aws_request_ids: vec![],
            isolated_after_ms: None,
        }
    }
}

/// Why an instance is refused before any change: the input or a permission (exit 2).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    #[error(
        "cannot act in account {account}: {source}\nfix: check that role {role} exists there and trusts the caller"
    )]
    CannotAct { account: AccountId, role: String, source: CloudError },
    #[error("not permitted in account {account}: {source}")]
    NotPermitted { account: AccountId, source: CloudError },
    #[error(
        "DryRun permission check of {operation} refused: {source}\nfix: grant {operation} to the role used in account {account}"
    )]
    DryRun { operation: &'static str, account: AccountId, source: CloudError },
    #[error(transparent)]
    Instance(ObserveError),
}

/// Why preparing an instance failed (exit 1): nothing was changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PrepFailure {
    #[error(transparent)]
    Read(CloudError),
    #[error("reading the case: {reason}")]
    Custody { reason: String },
    #[error("stored prior state of {instance} is unreadable: {reason}")]
    PriorUnreadable { instance: InstanceId, reason: String },
}

/// Why preparation stopped: the input (exit 2) or the run (exit 1). Either way nothing
/// was changed.
#[derive(Debug, Clone)]
enum Prep {
    Refused(Refusal),
    Failed(PrepFailure),
}

fn classify(account: &AccountId, role: &str, e: CloudError) -> Prep {
    match e.kind {
        ErrorKind::Credentials => {
            Prep::Refused(Refusal::CannotAct { account: account.clone(), role: role.to_owned(), source: e })
        }
        ErrorKind::AccessDenied => {
            Prep::Refused(Refusal::NotPermitted { account: account.clone(), source: e })
        }
        _ => Prep::Failed(PrepFailure::Read(e)),
    }
}

struct Prepared {
    scope: Arc<Scope>,
    id: InstanceId,
    arn: String,
    obs: Observed,
    prior: PriorState,
    stored: Option<EvidenceRef>,
    plan: Plan,
    registry: Arc<GroupRegistry>,
}

/// Contains every instance in `targets`. Returns one outcome per instance, in order.
pub async fn isolate(
    settings: &Settings,
    targets: Vec<(Arc<Scope>, InstanceId)>,
    custody: Arc<dyn CustodySink>,
    reporter: Arc<dyn Reporter>,
) -> Vec<Outcome> {
    let start = settings.started.unwrap_or_else(Instant::now);
    let concurrency = settings.concurrency.max(1);
    let prepared: Vec<(Arc<Scope>, InstanceId, Result<Prepared, Prep>)> = futures::stream::iter(targets)
        .map(|(scope, id)| {
            let custody = custody.clone();
            let reporter = reporter.clone();
            async move {
                reporter.step(id.as_str(), "reading state");
                let r = prepare(settings, scope.clone(), id.clone(), custody.as_ref()).await;
                (scope, id, r)
            }
        })
        .buffered(concurrency)
        .collect()
        .await;

    let refused = prepared.iter().any(|(_, _, r)| matches!(r, Err(Prep::Refused(_))));
    if settings.plan_only || refused {
        return futures::stream::iter(prepared)
            .map(|(scope, id, r)| async move {
                match r {
                    Err(Prep::Refused(m)) => Outcome::new(&scope, &id, Status::Refused, m.to_string()),
                    Err(Prep::Failed(m)) => Outcome::new(&scope, &id, Status::Failed, m.to_string()),
                    Ok(p) if settings.plan_only => {
                        let mut o = Outcome::new(
                            &scope,
                            &id,
                            Status::Planned,
                            if p.plan.is_empty() {
                                "already isolated: nothing to do"
                            } else {
                                "would change"
                            },
                        );
                        o.plan = api_calls(
                            &settings.case,
                            id.as_str(),
                            &p.plan,
                            p.registry.found(),
                            p.stored.is_some(),
                        );
                        o.warnings.extend(tamper_warnings(&settings.case, &p));
                        // Who else the deny touches is said before any change.
                        if !p.plan.is_empty() {
                            let roles = roles_of(&p);
                            let others = shared_role_users(p.scope.cloud.as_ref(), &id, &roles).await;
                            o.warnings.extend(sharing_warning(&roles, &others, settings.controls));
                        }
                        o
                    }
                    Ok(_) => Outcome::new(
                        &scope,
                        &id,
                        Status::NotStarted,
                        "another instance of this run was refused, so nothing was changed",
                    ),
                }
            })
            .buffered(concurrency)
            .collect()
            .await;
    }

    // Every prior state is stored before any instance changes (each store appends to
    // the custody chain, so they are done together, not behind the change records),
    // while the case's groups are readied and the users of the roles listed.
    let stored: Vec<Staged> = futures::stream::iter(prepared)
        .map(|(scope, id, r)| {
            let custody = custody.clone();
            async move {
                let r = match r {
                    Err(Prep::Refused(m)) => Err(m.to_string()),
                    Err(Prep::Failed(m)) => Err(m.to_string()),
                    Ok(mut p) => {
                        if p.plan.is_empty() && p.stored.is_some() {
                            Ok((p, Ready::default()))
                        } else {
                            let registry = p.registry.clone();
                            let plan = p.plan.clone();
                            let cloud = p.scope.cloud.clone();
                            let roles = roles_of(&p);
                            let tampered = tamper_warnings(&settings.case, &p);
                            let (stored, mut ready, others) = futures::join!(
                                store_prior(settings, &mut p, custody.as_ref()),
                                ready_groups(cloud.as_ref(), custody.as_ref(), &registry, &plan),
                                shared_role_users(cloud.as_ref(), &id, &roles)
                            );
                            ready.warnings.extend(tampered);
                            ready.warnings.extend(sharing_warning(&roles, &others, settings.controls));
                            ready.others = others.ok();
                            if let Ok(true) = stored {
                                // Planned again from a recovered prior state: its groups too.
                                let again = ready_groups(cloud.as_ref(), custody.as_ref(), &registry, &p.plan).await;
                                ready.groups.extend(again.groups);
                                ready.calls.extend(again.calls);
                                ready.errors.extend(again.errors);
                                ready.warnings.extend(again.warnings);
                            }
                            match stored {
                                Ok(_) => Ok((p, ready)),
                                Err(e) => Err(format!(
                                    "the prior state could not be stored, so nothing was changed on the instance: {e}"
                                )),
                            }
                        }
                    }
                };
                (scope, id, r)
            }
        })
        .buffered(concurrency)
        .collect()
        .await;

    // Changes run with bounded concurrency; as each instance is done its custody records
    // are written and its containment proved, while the next instances change.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Acted, Outcome>>();
    let acting = futures::stream::iter(stored)
        .map(|(scope, id, r)| {
            let reporter = reporter.clone();
            async move {
                match r {
                    Err(m) => Err(Outcome::new(&scope, &id, Status::Failed, m)),
                    Ok((p, ready)) => {
                        reporter.step(id.as_str(), "containing");
                        Ok(act(settings, p, ready, start).await)
                    }
                }
            }
        })
        .buffered(concurrency)
        .for_each(move |a| {
            let _ = tx.unbounded_send(a);
            futures::future::ready(())
        });
    let finishing = rx
        .map(|a| {
            let custody = custody.clone();
            let reporter = reporter.clone();
            async move {
                match a {
                    Err(o) => o,
                    Ok(acted) => {
                        let id = acted.id.clone();
                        let o = finish(settings, acted, custody.as_ref()).await;
                        match o.status {
                            Status::Failed => reporter.warn(id.as_str(), &o.message),
                            _ => reporter.done(id.as_str(), &o.message),
                        }
                        o
                    }
                }
            }
        })
        .buffered(concurrency)
        .collect::<Vec<Outcome>>();
    let ((), mut outcomes) = futures::join!(acting, finishing);
    // Records written behind (prior states, plans, groups) must be in the chain before
    // the command reports: one that is not makes every change of the run unproven.
    if let Err(e) = custody.flush().await {
        for o in
            outcomes.iter_mut().filter(|o| matches!(o.status, Status::Isolated | Status::AlreadyIsolated))
        {
            o.status = Status::Failed;
            o.message = format!("contained, but the custody chain is incomplete; rerun to record it: {e}");
            o.errors.push(e.to_string());
        }
    }
    outcomes
}

/// The roles the deny goes on: of the prior state and of the profile now.
fn roles_of(p: &Prepared) -> Vec<String> {
    let roles: BTreeSet<&String> = p.prior.profile_roles.iter().chain(p.obs.profile_roles.iter()).collect();
    roles.into_iter().cloned().collect()
}

/// Groups carrying the case tag in the instance's VPCs that the case did not record
/// (and that a run would not adopt as its own).
fn tamper_warnings(case: &CaseId, p: &Prepared) -> Vec<String> {
    let vpcs: BTreeSet<&VpcId> = p.obs.instance.enis.iter().map(|e| &e.vpc).collect();
    let found = p.registry.found();
    found
        .untrusted
        .iter()
        .filter(|g| vpcs.contains(&g.vpc))
        .filter(|g| {
            g.purpose.is_none_or(|purpose| found.adoptable(case, &g.vpc, purpose).is_none_or(|a| a.id != g.id))
        })
        .map(|g| {
            format!(
                "security group {} ({}) in {} carries the case tag but is not recorded in the case: possible tampering; it is not used",
                g.id, g.name, g.vpc
            )
        })
        .collect()
}

/// The warning about other instances on the instance's roles, said before any change.
fn sharing_warning(
    roles: &[String],
    others: &Result<Vec<InstanceId>, CloudError>,
    controls: Controls,
) -> Option<String> {
    if roles.is_empty() {
        return None;
    }
    let list = |v: &[InstanceId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let roles = roles.join(", ");
    match others {
        Ok(o) if o.is_empty() => None,
        Ok(o) if controls.revoke_all_role_sessions => Some(format!(
            "--revoke-all-role-sessions: the deny on role(s) {roles} also cuts the sessions issued before isolation of other instances using them: {}",
            list(o)
        )),
        Ok(o) => Some(format!(
            "other instances use role(s) {roles}: {}. The deny is scoped to this instance's credentials (ec2:SourceInstanceARN), so they keep working; --revoke-all-role-sessions would also cut every session of the role issued before isolation, theirs included",
            list(o)
        )),
        Err(e) => Some(format!(
            "could not list other instances using role(s) {roles} (needs iam:ListInstanceProfilesForRole and ec2:DescribeIamInstanceProfileAssociations): {e}"
        )),
    }
}

async fn prepare(
    settings: &Settings,
    scope: Arc<Scope>,
    id: InstanceId,
    custody: &dyn CustodySink,
) -> Result<Prepared, Prep> {
    let cloud = scope.cloud.as_ref();
    let account = &scope.account;
    let item = prior_state_item(account, &id);
    let reads = async {
        // Round 1: the instance and the case's tagged groups (no case needed: it may
        // still be opening).
        let (first, tagged) =
            futures::join!(observe_instance(cloud, account, &scope.region, &id), scope.tagged(settings));
        let (instance, attributes, profile, asg_name) = first.map_err(|e| match e {
            ObserveError::Aws(e) => classify(account, &settings.member_role, e),
            other => Prep::Refused(Refusal::Instance(other)),
        })?;
        let tagged = tagged?;
        // Round 2: details and permission checks, beside what the case holds (its
        // groups, a stored prior state, and then the deny policies of its roles).
        let mut checks = vec![DryRun::ModifyInstanceAttribute(id.clone()), DryRun::CreateTags(id.clone())];
        for eni in &instance.enis {
            checks.push(DryRun::ModifyNetworkInterfaceAttribute(eni.id.clone(), eni.groups.clone()));
        }
        let vpcs: BTreeSet<VpcId> = instance.enis.iter().map(|e| e.vpc.clone()).collect();
        // A VPC without a tagged group of some purpose needs one created; whether a
        // tagged group can serve is for the case to say (after it, below).
        let untagged = |vpc: &VpcId| {
            [Purpose::Isolation, Purpose::AllowAll]
                .into_iter()
                .any(|p| !tagged.iter().any(|g| &g.vpc == vpc && g.purpose == Some(p)))
        };
        for vpc in vpcs.iter().filter(|v| untagged(v)) {
            // Once per VPC and run: the permission does not depend on the instance.
            if scope.group_checks.lock().expect("checks lock").insert(vpc.clone()) {
                checks.push(DryRun::CreateSecurityGroup(vpc.clone()));
            }
        }
        let held = async {
            let (registry, loaded) =
                futures::join!(scope.registry(settings, custody), custody.load_json(&item));
            let registry = registry?;
            let loaded = loaded.map_err(|e| Prep::Failed(PrepFailure::Custody { reason: e.to_string() }))?;
            let loaded: Option<(EvidenceRef, PriorState)> = match loaded {
                None => None,
                Some((r, v)) => Some((
                    r,
                    serde_json::from_value(v).map_err(|e| {
                        Prep::Failed(PrepFailure::PriorUnreadable {
                            instance: id.clone(),
                            reason: e.to_string(),
                        })
                    })?,
                )),
            };
            let known_roles: Vec<String> =
                loaded.as_ref().map(|(_, p)| p.profile_roles.clone()).unwrap_or_default();
            let docs = deny_docs(cloud, &settings.case, &known_roles)
                .await
                .map_err(|e| classify(account, &settings.member_role, e))?;
            Ok::<_, Prep>((registry, loaded, docs))
        };
        let (details, dry, held) = futures::join!(
            observe_details(cloud, profile.as_ref(), asg_name.as_deref()),
            futures::future::join_all(checks.iter().map(|c| retry(|| cloud.dry_run(c)))),
            held
        );
        let (profile_roles, asg) = details.map_err(|e| classify(account, &settings.member_role, e))?;
        let (registry, loaded, docs) = held?;
        // Tagged groups the case neither trusts nor may adopt: one is created after all.
        let mut late = Vec::new();
        for vpc in vpcs.iter().filter(|v| !untagged(v)) {
            let missing = [Purpose::Isolation, Purpose::AllowAll].into_iter().any(|p| {
                registry.found().get(vpc, p).is_none()
                    && registry.found().adoptable(&settings.case, vpc, p).is_none()
            });
            if missing && scope.group_checks.lock().expect("checks lock").insert(vpc.clone()) {
                late.push(DryRun::CreateSecurityGroup(vpc.clone()));
            }
        }
        let late_dry = futures::future::join_all(late.iter().map(|c| retry(|| cloud.dry_run(c)))).await;
        for (c, r) in checks.iter().zip(dry).chain(late.iter().zip(late_dry)) {
            if let Err(e) = r {
                return Err(match e.kind {
                    ErrorKind::AccessDenied => Prep::Refused(Refusal::DryRun {
                        operation: c.operation(),
                        account: account.clone(),
                        source: e,
                    }),
                    _ => classify(account, &settings.member_role, e),
                });
            }
        }
        Ok((instance, attributes, profile, profile_roles, asg, registry, loaded, docs))
    };
    let (reads, lb) = futures::join!(reads, scope.lb());
    let (instance, attributes, profile, profile_roles, asg, registry, loaded, docs) = reads?;
    let lb = lb.map_err(|e| classify(account, &settings.member_role, e))?;
    let obs = Observed {
        targets: lb.targets_of(&id),
        classic: lb.classic_of(&id),
        instance,
        attributes,
        profile,
        profile_roles,
        asg,
    };
    let (stored, prior) = match loaded {
        Some((r, p)) => (Some(r), p),
        None => (None, obs.prior_state(account, &scope.region, &settings.now)),
    };
    let arn = instance_arn(&scope.region, account, &id);
    let plan = decide(&settings.case, &arn, &obs, &prior, registry.found(), &docs, settings.controls);
    Ok(Prepared { scope, id, arn, obs, prior, stored, plan, registry })
}

/// The case's deny policy on each of `roles` (`None`: the role has none).
pub(crate) async fn deny_docs(
    cloud: &dyn Cloud,
    case: &CaseId,
    roles: &[String],
) -> Result<BTreeMap<String, Option<serde_json::Value>>, CloudError> {
    let name = deny_policy_name(case);
    let found = futures::future::join_all(roles.iter().map(|r| retry(|| cloud.role_policy(r, &name)))).await;
    let mut docs = BTreeMap::new();
    for (role, f) in roles.iter().zip(found) {
        docs.insert(role.clone(), f?);
    }
    Ok(docs)
}

fn ids(calls: &[Call]) -> Vec<String> {
    calls.iter().filter_map(|c| c.request_id.clone()).collect()
}

/// The prior state of `p` stored as evidence, unless a previous run stored it or
/// nothing is to change; then the intended changes queued in the chain. Returns once
/// the store holds the prior state: its read-back and both records are written behind
/// (in that order, before every later record), so the first change waits on the
/// evidence only. True when a run that stopped before recording it had stored one:
/// that one is the state before any change, and the plan is made again from it.
async fn store_prior(
    settings: &Settings,
    p: &mut Prepared,
    custody: &dyn CustodySink,
) -> Result<bool, CustodyError> {
    let mut recovered = false;
    if p.stored.is_none() {
        let item = prior_state_new_item(&p.scope.account, &p.id);
        let value = serde_json::to_value(&p.prior).expect("prior state serialises");
        let early = custody.store_json_early(item, &value).await?;
        if let Some(found) = early.recovered {
            p.prior = serde_json::from_value(found)
                .map_err(|e| CustodyError(format!("the prior state found in the case is unreadable: {e}")))?;
            let docs = deny_docs(p.scope.cloud.as_ref(), &settings.case, &p.prior.profile_roles)
                .await
                .map_err(|e| CustodyError(format!("reading the deny policies again: {e}")))?;
            p.plan = decide(
                &settings.case,
                &p.arn,
                &p.obs,
                &p.prior,
                p.registry.found(),
                &docs,
                settings.controls,
            );
            recovered = true;
        }
        tracing::info!("{}: prior state stored", p.id);
        p.stored = Some(early.evidence);
    }
    if !p.plan.is_empty() {
        // Write-ahead: the intended changes take their place in the chain before any
        // is made (a crash before they are written leaves the prior state, which a
        // rerun adopts and plans from again).
        custody
            .record_behind(Event {
                action: Action::ContainmentPlanned,
                subject: p.arn.clone(),
                evidence: p.stored.iter().cloned().collect(),
                aws_request_ids: vec![],
                details: serde_json::json!({"case": settings.case, "plan": p.plan, "controls": settings.controls}),
            })
            .await?;
    }
    Ok(recovered)
}

/// The case's groups one instance needs, ready before its changes start, and what was
/// learnt beside them.
#[derive(Default)]
struct Ready {
    groups: BTreeMap<(VpcId, Purpose), SecurityGroupId>,
    calls: Vec<Call>,
    errors: Vec<String>,
    warnings: Vec<String>,
    /// Other instances using the instance's roles (`None`: not known).
    others: Option<Vec<InstanceId>>,
}

/// Finds, adopts or creates (once per VPC) the groups `plan` needs, records new ones
/// in the case, and makes them serve their purpose. Changes no instance, so it runs
/// while the prior state is being stored.
async fn ready_groups(
    cloud: &dyn Cloud,
    custody: &dyn CustodySink,
    registry: &GroupRegistry,
    plan: &Plan,
) -> Ready {
    let mut want = Vec::new();
    for vpc in &plan.vpcs {
        want.push((vpc.clone(), Purpose::Isolation));
        if plan.needs_allow_all(vpc) {
            want.push((vpc.clone(), Purpose::AllowAll));
        }
    }
    let got =
        futures::future::join_all(want.iter().map(|(vpc, p)| registry.ensure(cloud, custody, vpc, *p))).await;
    let mut ready = Ready::default();
    for ((vpc, p), r) in want.into_iter().zip(got) {
        match r {
            Ok((g, done)) => {
                ready.groups.insert((vpc, p), g);
                ready.calls.extend(done.calls);
                for n in done.notes {
                    if n.is_error() {
                        ready.errors.push(n.to_string());
                    } else {
                        ready.warnings.push(n.to_string());
                    }
                }
            }
            Err(e) => ready.errors.push(e.to_string()),
        }
    }
    ready
}

/// An instance after the store stage: ready to change, or why not.
type Staged = (Arc<Scope>, InstanceId, Result<(Prepared, Ready), String>);

/// What one instance's changes did, waiting to be recorded and verified.
struct Acted {
    scope: Arc<Scope>,
    id: InstanceId,
    arn: String,
    prior: PriorState,
    registry: Arc<GroupRegistry>,
    out: Outcome,
    /// Nothing needed changing.
    was_isolated: bool,
    events: Vec<Event>,
}

/// Makes the changes of one instance whose prior state is stored: the case's groups,
/// then protect, service and credentials beside the two-step swap. Records nothing.
async fn act(settings: &Settings, p: Prepared, ready: Ready, start: Instant) -> Acted {
    let Prepared { scope, id, arn, obs, prior, stored, plan, registry } = p;
    let mut out = Outcome::new(&scope, &id, Status::Isolated, "");
    let Some(evidence) = stored else {
        out.status = Status::Failed;
        out.message = "the prior state is not stored, so nothing was changed on the instance".into();
        return Acted { scope, id, arn, prior, registry, out, was_isolated: false, events: vec![] };
    };
    if plan.is_empty() {
        return Acted { scope, id, arn, prior, registry, out, was_isolated: true, events: vec![] };
    }
    let cloud = scope.cloud.as_ref();

    let Ready { groups, calls: group_calls, errors: group_errors, warnings, others } = ready;
    out.errors.extend(group_errors);
    out.warnings.extend(warnings);

    // Protect, service and credentials beside the two-step swap.
    let changes = async {
        futures::join!(
            crate::protect::apply(cloud, &id, &plan.protect),
            detach_service(cloud, &id, &plan),
            revoke_credentials(cloud, &scope.account, &settings.case, &arn, &id, &prior, &plan),
            shorten_conntrack(cloud, &plan)
        )
    };
    let network = swap_all(cloud, &registry, &plan, &groups, &obs);
    let (
        (
            (protect_calls, protect_errors),
            (service_calls, service_errors),
            creds,
            (conntrack_calls, conntrack_errors),
        ),
        (net_calls, swaps),
    ) = futures::join!(changes, network);
    tracing::info!("{id}: changes done");
    if swaps.iter().all(|(_, r)| r.is_isolated()) && out.errors.is_empty() {
        out.isolated_after_ms = Some(start.elapsed().as_millis() as u64);
    }
    for (eni, r) in &swaps {
        if let SwapResult::IsolatedTrackedMaySurvive { step1 } = r {
            out.warnings.push(format!(
                "{eni}: on the isolation group, but the allow-all step is not known to have untracked its connections first ({step1}): connections open before isolation may survive until idle; --minimal-conntrack-timeouts shortens that to a minute"
            ));
        }
    }
    let swap_failures: Vec<String> = swaps
        .iter()
        .filter(|(_, r)| !r.is_isolated())
        .map(|(eni, r)| format!("{eni}: {}", serde_json::to_string(r).unwrap_or_default()))
        .collect();

    // Custody events, in pipeline order, each with its request ids.
    let mut network_calls = group_calls;
    network_calls.extend(net_calls.iter().cloned());
    network_calls.extend(conntrack_calls);
    let mut network_errors = swap_failures;
    network_errors.extend(conntrack_errors);
    let steps = [
        (
            Action::InstanceProtected,
            &protect_calls,
            &protect_errors,
            serde_json::json!({
            "termination_protection": plan.protect.termination_protection, "shutdown_behavior_stop": plan.protect.shutdown_stop,
            "delete_on_termination_false": plan.protect.keep_volumes, "tags": plan.protect.tags }),
        ),
        (
            Action::ServiceDetached,
            &service_calls,
            &service_errors,
            serde_json::json!({
            "auto_scaling_group": plan.detach_asg, "should_decrement_desired_capacity": false,
            "target_groups": plan.deregister, "classic_load_balancers": plan.classic }),
        ),
        (
            Action::NetworkIsolated,
            &network_calls,
            &network_errors,
            serde_json::json!({
            "groups": groups.iter().map(|((vpc, p), g)| serde_json::json!({"vpc": vpc, "purpose": p, "group": g})).collect::<Vec<_>>(),
            "swaps": swaps.iter().map(|(eni, r)| serde_json::json!({"eni": eni, "result": r})).collect::<Vec<_>>(),
            "connection_tracking_minimal": plan.conntrack }),
        ),
        (
            Action::CredentialsRevoked,
            &creds.calls,
            &creds.errors,
            serde_json::json!({
            "disassociated": plan.disassociate, "deny_policy": deny_policy_name(&settings.case),
            "roles": plan.deny_roles, "instance_arn": arn,
            "sessions_issued_before": creds.issued_before,
            "disassociation_confirmed": creds.disassociation_confirmed,
            "other_instances_on_roles": others }),
        ),
    ];
    let mut events = Vec::new();
    for (action, calls, errors, mut details) in steps {
        if calls.is_empty() && errors.is_empty() {
            continue;
        }
        details["calls"] = serde_json::json!(calls.iter().map(|c| c.operation.clone()).collect::<Vec<_>>());
        details["errors"] = serde_json::json!(errors);
        let action = if errors.is_empty() {
            action
        } else {
            details["step"] = serde_json::json!(format!("{action:?}"));
            Action::ContainmentFailed
        };
        events.push(Event {
            action,
            subject: arn.clone(),
            evidence: vec![evidence.clone()],
            aws_request_ids: ids(calls),
            details,
        });
        out.aws_request_ids.extend(ids(calls));
    }
    out.errors.extend(protect_errors);
    out.errors.extend(service_errors);
    out.errors.extend(network_errors);
    out.errors.extend(creds.errors);
    Acted { scope, id, arn, prior, registry, out, was_isolated: false, events }
}

/// Records what `act` did, proves it with a fresh read, records the proof.
async fn finish(settings: &Settings, acted: Acted, custody: &dyn CustodySink) -> Outcome {
    let Acted { scope, id, arn, prior, registry, mut out, was_isolated, events } = acted;
    if out.status == Status::Failed {
        return out;
    }
    for e in events {
        if let Err(e) = custody.record(e).await {
            out.errors.push(format!("custody record: {e}"));
        }
    }
    let checks = verify(settings, &scope, &registry, &id, &prior).await;
    finish_verified(out, checks, custody, &arn, was_isolated, &settings.case).await
}

async fn finish_verified(
    mut out: Outcome,
    checks: Result<Vec<Check>, VerifyError>,
    custody: &dyn CustodySink,
    subject: &str,
    was_isolated: bool,
    case: &CaseId,
) -> Outcome {
    let checks = match checks {
        Ok(c) => c,
        Err(e) => {
            out.status = Status::Failed;
            out.message = format!("could not re-read the instance to prove containment: {e}");
            out.errors.push(e.to_string());
            return out;
        }
    };
    let ok = all_ok(&checks) && out.errors.is_empty();
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    let controls = checks.iter().filter(|c| !c.warning).count();
    let action = if ok { Action::ContainmentVerified } else { Action::ContainmentFailed };
    if let Err(e) = custody
        .record(Event {
            action,
            subject: subject.to_owned(),
            evidence: vec![],
            aws_request_ids: vec![],
            details: serde_json::json!({"case": case, "checks": checks, "errors": out.errors}),
        })
        .await
    {
        out.errors.push(format!("custody record: {e}"));
    }
    let ok = ok && out.errors.is_empty();
    out.status = match (ok, was_isolated) {
        (true, true) => Status::AlreadyIsolated,
        (true, false) => Status::Isolated,
        (false, _) => Status::Failed,
    };
    out.message = match out.status {
        Status::AlreadyIsolated => {
            format!("already isolated: nothing changed; {controls} controls in force")
        }
        Status::Isolated => format!("isolated; {controls} controls verified"),
        _ => format!(
            "{} of {controls} controls not in force ({}){}; rerun to resume",
            failed.len(),
            failed.iter().map(|c| c.control.as_str()).collect::<Vec<_>>().join(", "),
            if out.errors.is_empty() { String::new() } else { format!("; {} error(s)", out.errors.len()) }
        ),
    };
    out.checks = checks;
    out
}

async fn detach_service(cloud: &dyn Cloud, id: &InstanceId, plan: &Plan) -> (Vec<Call>, Vec<String>) {
    let asg = async {
        match &plan.detach_asg {
            Some(g) => {
                vec![retry(|| cloud.detach(g, id)).await.map_err(|e| format!("Auto Scaling group {g}: {e}"))]
            }
            None => vec![],
        }
    };
    let targets = futures::future::join_all(plan.deregister.iter().map(|t| async move {
        retry(|| cloud.deregister(t, id))
            .await
            .map_err(|e| format!("target group {}: {e}", t.target_group_arn))
    }));
    let classic = futures::future::join_all(plan.classic.iter().map(|lb| async move {
        retry(|| cloud.classic_deregister(lb, id))
            .await
            .map_err(|e| format!("classic load balancer {lb}: {e}"))
    }));
    let (a, t, c) = futures::join!(asg, targets, classic);
    split(a.into_iter().chain(t).chain(c))
}

fn split(results: impl Iterator<Item = Result<Call, String>>) -> (Vec<Call>, Vec<String>) {
    let mut calls = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(c) => calls.push(c),
            Err(e) => errors.push(e),
        }
    }
    (calls, errors)
}

/// What cutting the credentials did.
struct Revoked {
    calls: Vec<Call>,
    errors: Vec<String>,
    /// The time-based deny's time, when one is in force.
    issued_before: Option<String>,
    disassociation_confirmed: bool,
}

/// One read-modify-write of a role's deny at a time, across every scope of the process
/// (a role is global to its account: two regions of one fleet share it).
pub(crate) fn role_lock(account: &AccountId, role: &str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = std::sync::Mutex<HashMap<(AccountId, String), Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: LazyLock<Locks> = LazyLock::new(Default::default);
    LOCKS.lock().expect("role locks").entry((account.clone(), role.to_owned())).or_default().clone()
}

/// Makes the role's deny hold for `arn`: reads the stored document, builds the
/// intended one (ours already there, plus this instance; the time-based deny when
/// `time` is given or one of ours is in force) and replaces the stored one if it differs.
async fn update_deny(
    cloud: &dyn Cloud,
    account: &AccountId,
    role: &str,
    name: &str,
    arn: &str,
    not_before: &str,
    time: Option<&str>,
) -> Result<(Option<Call>, Option<String>), CloudError> {
    let lock = role_lock(account, role);
    let _one = lock.lock().await;
    let stored = retry(|| cloud.role_policy(role, name)).await?;
    let intended = intended_deny(stored.as_ref(), arn, not_before, time);
    let document = intended.document();
    if stored.as_ref() == Some(&document) {
        return Ok((None, intended.issued_before));
    }
    let call = retry(|| cloud.put_role_policy(role, name, &document)).await?;
    Ok((Some(call), intended.issued_before))
}

/// Why the disassociation did not show as done.
#[derive(Debug, thiserror::Error)]
enum NotDisassociated {
    #[error("the instance profile association still reads {state} after {waited:?}")]
    Still { state: String, waited: Duration },
    #[error("reading the profile association: {0}")]
    Read(CloudError),
}

/// Waits until the instance has no profile association (bounded, backing off).
async fn wait_disassociated(cloud: &dyn Cloud, id: &InstanceId) -> Result<(), NotDisassociated> {
    let start = Instant::now();
    let mut delay = DISASSOCIATION_FIRST_POLL;
    loop {
        match retry(|| cloud.profile_association(id)).await {
            Ok(None) => return Ok(()),
            Ok(Some(a)) if a.state == "disassociated" => return Ok(()),
            Ok(Some(a)) if start.elapsed() >= DISASSOCIATION_WAIT => {
                return Err(NotDisassociated::Still { state: a.state, waited: DISASSOCIATION_WAIT });
            }
            Err(e) if start.elapsed() >= DISASSOCIATION_WAIT => return Err(NotDisassociated::Read(e)),
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(DISASSOCIATION_MAX_POLL);
    }
}

/// Disassociates the profile and puts the deny on the roles at once (this instance's
/// credentials stop working wherever they are); with `--revoke-all-role-sessions`,
/// waits for the disassociation to show, then sets the time-based deny at a time
/// after it: no credential issued to the instance can postdate it.
async fn revoke_credentials(
    cloud: &dyn Cloud,
    account: &AccountId,
    case: &CaseId,
    arn: &str,
    id: &InstanceId,
    prior: &PriorState,
    plan: &Plan,
) -> Revoked {
    let name = deny_policy_name(case);
    let disassociate = async {
        match &plan.disassociate {
            Some(a) => vec![
                retry(|| cloud.disassociate_profile(a)).await.map_err(|e| format!("instance profile: {e}")),
            ],
            None => vec![],
        }
    };
    let deny = futures::future::join_all(plan.deny_roles.iter().map(|role| {
        let name = &name;
        async move { (role, update_deny(cloud, account, role, name, arn, &prior.captured_at, None).await) }
    }));
    let (d, deny) = futures::join!(disassociate, deny);
    let (mut calls, mut errors) = split(d.into_iter());
    let mut issued_before = None;
    for (role, r) in deny {
        match r {
            Ok((c, t)) => {
                calls.extend(c);
                issued_before = issued_before.or(t);
            }
            Err(e) => errors.push(format!("deny on role {role}: {e}")),
        }
    }
    let mut confirmed = plan.disassociate.is_none();
    if plan.deny_older_sessions && !plan.deny_roles.is_empty() {
        if plan.disassociate.is_some() {
            match wait_disassociated(cloud, id).await {
                Ok(()) => confirmed = true,
                Err(e) => errors.push(format!(
                    "the time-based deny was not set, so sessions of the role issued from now on are not covered by it: {e}"
                )),
            }
        }
        if confirmed {
            // Taken after the profile is gone: every credential EC2 issued to the
            // instance predates it.
            let time = deny_time();
            let timed = futures::future::join_all(plan.deny_roles.iter().map(|role| {
                let (name, time) = (&name, &time);
                async move {
                    (role, update_deny(cloud, account, role, name, arn, &prior.captured_at, Some(time)).await)
                }
            }))
            .await;
            for (role, r) in timed {
                match r {
                    Ok((c, t)) => {
                        calls.extend(c);
                        issued_before = t.or(issued_before);
                    }
                    Err(e) => errors.push(format!("time-based deny on role {role}: {e}")),
                }
            }
        }
    }
    Revoked { calls, errors, issued_before, disassociation_confirmed: confirmed }
}

/// The minimal connection tracking timeouts on every ENI the plan names.
async fn shorten_conntrack(cloud: &dyn Cloud, plan: &Plan) -> (Vec<Call>, Vec<String>) {
    let r = futures::future::join_all(plan.conntrack.iter().map(|eni| async move {
        retry(|| cloud.set_conntrack(eni, &ConnTrack::MINIMAL))
            .await
            .map_err(|e| format!("{eni} connection tracking: {e}"))
    }))
    .await;
    split(r.into_iter())
}

async fn swap_all(
    cloud: &dyn Cloud,
    registry: &GroupRegistry,
    plan: &Plan,
    groups: &BTreeMap<(VpcId, Purpose), SecurityGroupId>,
    obs: &Observed,
) -> (Vec<Call>, Vec<(String, SwapResult)>) {
    let prior_groups = |eni: &NetworkInterfaceId| {
        obs.instance.enis.iter().find(|e| &e.id == eni).map(|e| e.groups.clone()).unwrap_or_default()
    };
    // Step 1 on every ENI at once. An ENI whose step 1 failed or timed out still goes
    // through step 2 (or its fail-closed fallback): AWS may have applied it.
    let step1s = futures::future::join_all(plan.swaps.iter().map(|s| async move {
        let Some(iso) = groups.get(&(s.vpc.clone(), Purpose::Isolation)) else {
            return Err(SwapResult::Unchanged { error: format!("no isolation group in {}", s.vpc) });
        };
        let allow = groups.get(&(s.vpc.clone(), Purpose::AllowAll)).cloned();
        if !s.via_allow_all {
            return Ok((iso.clone(), allow, vec![], None));
        }
        let Some(allow) = allow else {
            return Ok((iso.clone(), None, vec![], Some("no allow-all group".to_owned())));
        };
        // The group is refilled first if a fail-closed fallback emptied it in this run.
        let (generation, refill) = registry.allow_all_ready(cloud, &allow).await;
        let mut calls = match refill {
            Ok(c) => c,
            Err(e) => {
                return Ok((iso.clone(), Some(allow), vec![], Some(format!("the allow-all group could not be refilled: {e}"))));
            }
        };
        match step1(cloud, &s.eni, &allow).await {
            Ok(c) => {
                calls.push(c);
                // Emptied by another instance's fallback since the check: say so below.
                let emptied_since = registry.allow_all_generation(&allow) != generation;
                Ok((iso.clone(), Some(allow), calls, emptied_since.then(|| "the allow-all group was emptied by another instance's fail-closed fallback during the swap".to_owned())))
            }
            Err(e) => Ok((iso.clone(), Some(allow), calls, Some(format!("step 1 (allow-all): {e}")))),
        }
    }))
    .await;
    let mut calls = Vec::new();
    let step2s = futures::future::join_all(plan.swaps.iter().zip(step1s).map(|(s, r)| {
        let prior = prior_groups(&s.eni);
        async move {
            match r {
                Err(result) => (s.eni.to_string(), result, vec![]),
                Ok((iso, allow, mut c1, doubt)) => {
                    let (result, c2) = step2(cloud, &s.eni, &iso, allow.as_ref(), &prior).await;
                    if let (SwapResult::AllowAllEmptied { .. }, Some(a)) = (&result, &allow) {
                        registry.allow_all_emptied(a);
                    }
                    let result = match (result, doubt) {
                        (SwapResult::Isolated, Some(step1)) => {
                            SwapResult::IsolatedTrackedMaySurvive { step1 }
                        }
                        (r, _) => r,
                    };
                    c1.extend(c2);
                    (s.eni.to_string(), result, c1)
                }
            }
        }
    }))
    .await;
    let mut results = Vec::new();
    for (eni, result, c) in step2s {
        calls.extend(c);
        results.push((eni, result));
    }
    (calls, results)
}

/// Other instances whose profile holds one of `roles`.
async fn shared_role_users(
    cloud: &dyn Cloud,
    id: &InstanceId,
    roles: &[String],
) -> Result<Vec<InstanceId>, CloudError> {
    if roles.is_empty() {
        return Ok(vec![]);
    }
    let (profiles, associations) = futures::join!(
        futures::future::join_all(roles.iter().map(|r| retry(|| cloud.profiles_for_role(r)))),
        retry(|| cloud.all_profile_associations())
    );
    let mut arns = BTreeSet::new();
    for p in profiles {
        arns.extend(p?);
    }
    let mut others: Vec<InstanceId> = associations?
        .into_iter()
        .filter(|a| &a.instance != id && arns.contains(&a.profile_arn) && a.state != "disassociated")
        .map(|a| a.instance)
        .collect();
    others.sort();
    others.dedup();
    Ok(others)
}

/// Why containment could not be proved.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Read(#[from] CloudError),
}

/// Re-reads everything containment controls and checks each control.
async fn verify(
    settings: &Settings,
    scope: &Scope,
    registry: &GroupRegistry,
    id: &InstanceId,
    prior: &PriorState,
) -> Result<Vec<Check>, VerifyError> {
    let cloud = scope.cloud.as_ref();
    let tgs: Vec<String> = {
        let mut t: Vec<String> = prior.target_groups.iter().map(|t| t.target_group_arn.clone()).collect();
        t.dedup();
        t
    };
    let vpcs: BTreeSet<VpcId> = prior.enis.iter().map(|e| e.vpc.clone()).collect();
    let trusted: BTreeMap<SecurityGroupId, (VpcId, Purpose)> = vpcs
        .iter()
        .flat_map(|v| [Purpose::Isolation, Purpose::AllowAll].map(|p| (v.clone(), p)))
        .filter_map(|(v, p)| registry.trusted(&v, p).map(|g| (g, (v, p))))
        .collect();
    let trusted_ids: Vec<SecurityGroupId> = trusted.keys().cloned().collect();
    let (obs, by_id, tagged, docs, asg, paths) = futures::join!(
        observe(cloud, &scope.account, &scope.region, id, &tgs, !prior.classic_load_balancers.is_empty()),
        retry(|| cloud.groups_by_id(&trusted_ids)),
        retry(|| cloud.case_groups(&settings.case)),
        deny_docs(cloud, &settings.case, &prior.profile_roles),
        async {
            match &prior.auto_scaling_group {
                Some(g) => retry(|| cloud.group(&g.name)).await.map(Some),
                None => Ok(None),
            }
        },
        futures::future::join_all(vpcs.iter().map(|v| async move { (v.clone(), scope.paths(v).await) }))
    );
    let obs = obs?;
    let mut groups = CaseGroups::default();
    for g in by_id? {
        if let Some((vpc, p)) = trusted.get(&g.id) {
            groups.by_vpc.insert((vpc.clone(), *p), crate::cloud::Group { purpose: Some(*p), ..g });
        }
    }
    groups.untrusted = tagged?.into_iter().filter(|g| !trusted.contains_key(&g.id)).collect();
    groups.superseded = registry.found().superseded.clone();
    let reread =
        Reread { obs, groups, deny_docs: docs?, asg_after: asg?, paths: paths.into_iter().collect() };
    let arn = instance_arn(&scope.region, &scope.account, id);
    Ok(containment_checks(&settings.case, &arn, prior, &reread, settings.controls))
}
