//! The containment workflow for a fleet: prepare every instance (read, check
//! permissions with DryRun, decide), refuse the whole run before any change if one is
//! bad input, then contain each with bounded concurrency and report every instance.
//!
//! Sequential round trips from start to the isolation group on every ENI (calls in one
//! step run in parallel): 1 describe instance, attributes, profile, Auto Scaling
//! membership, case groups, stored prior state, target-group listing; 2 target health,
//! Auto Scaling capacity, profile roles, DryRun checks; 3 store the prior state, create
//! missing groups; 4 group rules (and, in parallel, protect, detach, deregister,
//! disassociate, deny); 5 step 1 of the swap on every ENI; 6 step 2. With the case's
//! groups already in place (a second instance in the VPC, a rerun) steps 3-4 shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::cloud::CloudError;
use crate::cloud::ErrorKind;
use crate::cloud::retry;
use crate::cloud::{Call, Cloud, DryRun, Purpose};
use crate::ids::{AccountId, CaseId, InstanceId, Region, SecurityGroupId, VpcId};
use crate::isolate::network::{GroupRegistry, SwapResult, step1, step2};
use crate::isolate::observe::{
    LbIndex, ObserveError, Observed, PriorState, instance_arn, lb_index, observe, observe_details,
    observe_instance, prior_state_item, prior_state_new_item,
};
use crate::isolate::plan::{CaseGroups, Plan, api_calls, decide, deny_policy, deny_policy_name};
use crate::isolate::verify::{Check, all_ok, containment_checks};
use crate::pipeline::custody::{Action, CustodySink, Event, EvidenceRef};
use crate::progress::Reporter;

/// One account and region the fleet touches, with what is read once for all its
/// instances: the load-balancer index and the case's groups.
pub struct Scope {
    pub account: AccountId,
    pub region: Region,
    pub cloud: Arc<dyn Cloud>,
    lb: OnceCell<LbIndex>,
    registry: OnceCell<Arc<GroupRegistry>>,
    /// VPCs whose CreateSecurityGroup permission one instance already checks.
    group_checks: std::sync::Mutex<BTreeSet<VpcId>>,
}

impl Scope {
    pub fn new(account: AccountId, region: Region, cloud: Arc<dyn Cloud>) -> Arc<Self> {
        Arc::new(Self {
            account,
            region,
            cloud,
            lb: OnceCell::new(),
            registry: OnceCell::new(),
            group_checks: Default::default(),
        })
    }

    async fn lb(&self) -> Result<&LbIndex, CloudError> {
        self.lb.get_or_try_init(|| lb_index(self.cloud.as_ref(), None, true)).await
    }

    async fn registry(&self, case: &CaseId, role: &str) -> Result<Arc<GroupRegistry>, Prep> {
        self.registry
            .get_or_try_init(|| async {
                let found = retry(|| self.cloud.case_groups(case))
                    .await
                    .map_err(|e| classify(&self.account, role, e))?;
                let groups = CaseGroups::index(case, &found).map_err(|e| Prep::Refused(e.to_string()))?;
                Ok(Arc::new(GroupRegistry::new(case.clone(), groups)))
            })
            .await
            .cloned()
    }
}

pub struct Settings {
    pub case: CaseId,
    pub concurrency: usize,
    pub plan_only: bool,
    /// The time of isolation (UTC, RFC 3339, seconds): the deny covers sessions issued
    /// before it.
    pub now: String,
    /// The role assumed in member accounts, for error messages.
    pub member_role: String,
    /// When the command started (for `isolated_after_ms`); default: when the workflow starts.
    pub started: Option<Instant>,
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

/// Why preparation stopped: the input (exit 2) or the run (exit 1). Either way nothing
/// was changed.
#[derive(Debug, Clone)]
enum Prep {
    Refused(String),
    Failed(String),
}

fn classify(account: &AccountId, role: &str, e: CloudError) -> Prep {
    match e.kind {
        ErrorKind::Credentials => Prep::Refused(format!(
            "cannot act in account {account}: {e}\nfix: check that role {role} exists there and trusts the caller"
        )),
        ErrorKind::AccessDenied => Prep::Refused(format!("not permitted in account {account}: {e}")),
        _ => Prep::Failed(e.to_string()),
    }
}

struct Prepared {
    scope: Arc<Scope>,
    id: InstanceId,
    obs: Observed,
    prior: PriorState,
    stored: Option<EvidenceRef>,
    plan: Plan,
    registry: Arc<GroupRegistry>,
    roles_denied: BTreeSet<String>,
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
        return prepared
            .into_iter()
            .map(|(scope, id, r)| match r {
                Err(Prep::Refused(m)) => Outcome::new(&scope, &id, Status::Refused, m),
                Err(Prep::Failed(m)) => Outcome::new(&scope, &id, Status::Failed, m),
                Ok(p) if settings.plan_only => {
                    let mut o = Outcome::new(
                        &scope,
                        &id,
                        Status::Planned,
                        if p.plan.is_empty() { "already isolated: nothing to do" } else { "would change" },
                    );
                    o.plan = api_calls(
                        &settings.case,
                        id.as_str(),
                        &p.plan,
                        p.registry.found(),
                        p.stored.is_some(),
                    );
                    o
                }
                Ok(_) => Outcome::new(
                    &scope,
                    &id,
                    Status::NotStarted,
                    "another instance of this run was refused, so nothing was changed",
                ),
            })
            .collect();
    }

    // Every prior state is stored before any instance changes (each store appends to
    // the custody chain, so they are done together, not behind the change records),
    // while the case's groups are readied.
    let stored: Vec<Staged> = futures::stream::iter(prepared)
        .map(|(scope, id, r)| {
            let custody = custody.clone();
            async move {
                let r = match r {
                    Err(Prep::Refused(m) | Prep::Failed(m)) => Err(m),
                    Ok(mut p) => {
                        if p.plan.is_empty() && p.stored.is_some() {
                            Ok((p, Ready::default()))
                        } else {
                            let registry = p.registry.clone();
                            let plan = p.plan.clone();
                            let cloud = p.scope.cloud.clone();
                            let (stored, ready) = futures::join!(
                                store_prior(settings, &mut p, custody.as_ref()),
                                ready_groups(cloud.as_ref(), &registry, &plan)
                            );
                            match stored {
                                Ok(()) => Ok((p, ready)),
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
    let ((), outcomes) = futures::join!(acting, finishing);
    outcomes
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
        // Round 1.
        let (first, registry, loaded) = futures::join!(
            observe_instance(cloud, account, &scope.region, &id),
            scope.registry(&settings.case, &settings.member_role),
            custody.load_json(&item)
        );
        let (instance, attributes, profile, asg_name) = first.map_err(|e| match e {
            ObserveError::Aws(e) => classify(account, &settings.member_role, e),
            other => Prep::Refused(other.to_string()),
        })?;
        let registry = registry?;
        let loaded = loaded.map_err(|e| Prep::Failed(e.to_string()))?;
        let loaded: Option<(EvidenceRef, PriorState)> = match loaded {
            None => None,
            Some((r, v)) => Some((
                r,
                serde_json::from_value(v)
                    .map_err(|e| Prep::Failed(format!("stored prior state of {id} is unreadable: {e}")))?,
            )),
        };
        // Round 2: details, permission checks, and (on a rerun) the deny policies.
        let mut checks = vec![DryRun::ModifyInstanceAttribute(id.clone()), DryRun::CreateTags(id.clone())];
        for eni in &instance.enis {
            checks.push(DryRun::ModifyNetworkInterfaceAttribute(eni.id.clone(), eni.groups.clone()));
        }
        let vpcs: BTreeSet<VpcId> = instance.enis.iter().map(|e| e.vpc.clone()).collect();
        for vpc in &vpcs {
            let missing = registry.found().get(vpc, Purpose::Isolation).is_none()
                || registry.found().get(vpc, Purpose::AllowAll).is_none();
            // Once per VPC and run: the permission does not depend on the instance.
            if missing && scope.group_checks.lock().expect("checks lock").insert(vpc.clone()) {
                checks.push(DryRun::CreateSecurityGroup(vpc.clone()));
            }
        }
        let known_roles: Vec<String> =
            loaded.as_ref().map(|(_, p)| p.profile_roles.clone()).unwrap_or_default();
        let (details, dry, denied) = futures::join!(
            observe_details(cloud, profile.as_ref(), asg_name.as_deref()),
            futures::future::join_all(checks.iter().map(|c| retry(|| cloud.dry_run(c)))),
            roles_denied(cloud, &settings.case, &known_roles)
        );
        let (profile_roles, asg) = details.map_err(|e| classify(account, &settings.member_role, e))?;
        for (c, r) in checks.iter().zip(dry) {
            if let Err(e) = r {
                return Err(match e.kind {
                    ErrorKind::AccessDenied => Prep::Refused(format!(
                        "DryRun permission check of {} refused: {e}\nfix: grant {} to the role used in account {account}",
                        c.operation(),
                        c.operation()
                    )),
                    _ => classify(account, &settings.member_role, e),
                });
            }
        }
        let denied = denied.map_err(|e| classify(account, &settings.member_role, e))?;
        Ok((instance, attributes, profile, profile_roles, asg, registry, loaded, denied))
    };
    let (reads, lb) = futures::join!(reads, scope.lb());
    let (instance, attributes, profile, profile_roles, asg, registry, loaded, denied) = reads?;
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
    let plan = decide(&settings.case, &obs, &prior, registry.found(), &denied);
    Ok(Prepared { scope, id, obs, prior, stored, plan, registry, roles_denied: denied })
}

/// Roles among `roles` that already carry the case's deny.
async fn roles_denied(
    cloud: &dyn Cloud,
    case: &CaseId,
    roles: &[String],
) -> Result<BTreeSet<String>, CloudError> {
    let name = deny_policy_name(case);
    let found = futures::future::join_all(roles.iter().map(|r| retry(|| cloud.role_policy(r, &name)))).await;
    let mut denied = BTreeSet::new();
    for (role, f) in roles.iter().zip(found) {
        if f?.is_some() {
            denied.insert(role.clone());
        }
    }
    Ok(denied)
}

fn ids(calls: &[Call]) -> Vec<String> {
    calls.iter().filter_map(|c| c.request_id.clone()).collect()
}

/// The prior state of `p` stored as evidence (recording EvidenceStored), unless a
/// previous run stored it or nothing is to change.
async fn store_prior(settings: &Settings, p: &mut Prepared, custody: &dyn CustodySink) -> Result<(), String> {
    if p.stored.is_none() {
        let item = prior_state_new_item(&p.scope.account, &p.id);
        let value = serde_json::to_value(&p.prior).expect("prior state serialises");
        // Storing the item records its own EvidenceStored custody event.
        let r = custody.store_json(item, &value).await.map_err(|e| e.to_string())?;
        tracing::info!("{}: prior state stored", p.id);
        p.stored = Some(r);
    }
    if !p.plan.is_empty() {
        // Write-ahead: the intended changes are in the chain before any is made, so a
        // crash between the changes and their records leaves the intent on record.
        custody
            .record(Event {
                action: Action::ContainmentPlanned,
                subject: instance_arn(&p.scope.region, &p.scope.account, &p.id),
                evidence: p.stored.iter().cloned().collect(),
                aws_request_ids: vec![],
                details: serde_json::json!({"case": settings.case, "plan": p.plan}),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The case's groups one instance needs, ready before its changes start.
#[derive(Default)]
struct Ready {
    groups: BTreeMap<(VpcId, Purpose), SecurityGroupId>,
    calls: Vec<Call>,
    errors: Vec<String>,
}

/// Finds or creates (once per VPC) the groups `plan` needs and makes them serve their
/// purpose. Changes no instance, so it runs while the prior state is being stored.
async fn ready_groups(cloud: &dyn Cloud, registry: &GroupRegistry, plan: &Plan) -> Ready {
    let mut want = Vec::new();
    for vpc in &plan.vpcs {
        want.push((vpc.clone(), Purpose::Isolation));
        if plan.needs_allow_all(vpc) {
            want.push((vpc.clone(), Purpose::AllowAll));
        }
    }
    let got = futures::future::join_all(want.iter().map(|(vpc, p)| registry.ensure(cloud, vpc, *p))).await;
    let mut ready = Ready::default();
    for ((vpc, p), r) in want.into_iter().zip(got) {
        match r {
            Ok((g, c)) => {
                ready.groups.insert((vpc, p), g);
                ready.calls.extend(c);
            }
            Err(e) => ready.errors.push(format!("{} group in {vpc}: {e}", p.tag())),
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
    prior: PriorState,
    out: Outcome,
    /// Nothing needed changing.
    was_isolated: bool,
    events: Vec<Event>,
}

/// Makes the changes of one instance whose prior state is stored: the case's groups,
/// then protect, service and credentials beside the two-step swap. Records nothing.
async fn act(settings: &Settings, p: Prepared, ready: Ready, start: Instant) -> Acted {
    let Prepared { scope, id, obs, prior, stored, plan, registry: _, roles_denied: denied } = p;
    let out = Outcome::new(&scope, &id, Status::Isolated, "");
    let Some(evidence) = stored else {
        let mut out = out;
        out.status = Status::Failed;
        out.message = "the prior state is not stored, so nothing was changed on the instance".into();
        return Acted { scope, id, prior, out, was_isolated: false, events: vec![] };
    };
    if plan.is_empty() {
        return Acted { scope, id, prior, out, was_isolated: true, events: vec![] };
    }
    let mut out = out;
    let cloud = scope.cloud.as_ref();
    let subject = instance_arn(&scope.region, &scope.account, &id);

    let Ready { groups, calls: group_calls, errors: group_errors } = ready;
    out.errors.extend(group_errors);

    // Protect, service and credentials beside the two-step swap.
    let changes = async {
        futures::join!(
            crate::protect::apply(cloud, &id, &plan.protect),
            detach_service(cloud, &id, &plan),
            revoke_credentials(cloud, &settings.case, &settings.now, &id, &plan, &denied)
        )
    };
    let network = swap_all(cloud, &plan, &groups, &obs);
    let (
        (
            (protect_calls, protect_errors),
            (service_calls, service_errors),
            (cred_calls, cred_errors, _newly_denied),
        ),
        (net_calls, swaps),
    ) = futures::join!(changes, network);
    tracing::info!("{id}: changes done");
    if swaps.iter().all(|(_, r)| *r == SwapResult::Isolated) && out.errors.is_empty() {
        out.isolated_after_ms = Some(start.elapsed().as_millis() as u64);
    }
    let swap_failures: Vec<String> = swaps
        .iter()
        .filter(|(_, r)| *r != SwapResult::Isolated)
        .map(|(eni, r)| format!("{eni}: {}", serde_json::to_string(r).unwrap_or_default()))
        .collect();

    // Custody events, in pipeline order, each with its request ids.
    let mut network_calls = group_calls;
    network_calls.extend(net_calls.iter().cloned());
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
            &swap_failures,
            serde_json::json!({
            "groups": groups.iter().map(|((vpc, p), g)| serde_json::json!({"vpc": vpc, "purpose": p, "group": g})).collect::<Vec<_>>(),
            "swaps": swaps.iter().map(|(eni, r)| serde_json::json!({"eni": eni, "result": r})).collect::<Vec<_>>() }),
        ),
        (
            Action::CredentialsRevoked,
            &cred_calls,
            &cred_errors,
            serde_json::json!({
            "disassociated": plan.disassociate, "deny_policy": deny_policy_name(&settings.case),
            "roles": plan.deny_roles, "sessions_issued_before": settings.now }),
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
            subject: subject.clone(),
            evidence: vec![evidence.clone()],
            aws_request_ids: ids(calls),
            details,
        });
        out.aws_request_ids.extend(ids(calls));
    }
    out.errors.extend(protect_errors);
    out.errors.extend(service_errors);
    out.errors.extend(swap_failures);
    out.errors.extend(cred_errors);
    Acted { scope, id, prior, out, was_isolated: false, events }
}

/// Records what `act` did, proves it with a fresh read, records the proof, and says
/// who else the deny hits.
async fn finish(settings: &Settings, acted: Acted, custody: &dyn CustodySink) -> Outcome {
    let Acted { scope, id, prior, mut out, was_isolated, events } = acted;
    if out.status == Status::Failed {
        return out;
    }
    let cloud = scope.cloud.as_ref();
    let subject = instance_arn(&scope.region, &scope.account, &id);
    for e in events {
        if let Err(e) = custody.record(e).await {
            out.errors.push(format!("custody record: {e}"));
        }
    }
    let (checks, shared) = futures::join!(verify(settings, &scope, &id, &prior), async {
        if was_isolated { Ok(vec![]) } else { shared_role_users(cloud, &id, &prior.profile_roles).await }
    });
    match shared {
        Ok(others) if !others.is_empty() => out.warnings.push(format!(
            "the deny on role(s) {} also cuts the older sessions of other instances using them: {}",
            prior.profile_roles.join(", "),
            others.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        )),
        Ok(_) => {}
        Err(e) => out.warnings.push(format!("could not list other instances sharing the role: {e}")),
    }
    finish_verified(out, checks, custody, &subject, was_isolated, &settings.case).await
}

async fn finish_verified(
    mut out: Outcome,
    checks: Result<Vec<Check>, String>,
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
            out.errors.push(e);
            return out;
        }
    };
    let ok = all_ok(&checks) && out.errors.is_empty();
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
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
    out.status = match (ok, was_isolated) {
        (true, true) => Status::AlreadyIsolated,
        (true, false) => Status::Isolated,
        (false, _) => Status::Failed,
    };
    out.message = match out.status {
        Status::AlreadyIsolated => {
            format!("already isolated: nothing changed; {} controls in force", checks.len())
        }
        Status::Isolated => format!("isolated; {} controls verified", checks.len()),
        _ => format!(
            "{} of {} controls not in force ({}){}; rerun to resume",
            failed.len(),
            checks.len(),
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

async fn revoke_credentials(
    cloud: &dyn Cloud,
    case: &CaseId,
    now: &str,
    id: &InstanceId,
    plan: &Plan,
    denied: &BTreeSet<String>,
) -> (Vec<Call>, Vec<String>, BTreeSet<String>) {
    let _ = id;
    let name = deny_policy_name(case);
    let document = deny_policy(now);
    let disassociate = async {
        match &plan.disassociate {
            Some(a) => vec![
                retry(|| cloud.disassociate_profile(a)).await.map_err(|e| format!("instance profile: {e}")),
            ],
            None => vec![],
        }
    };
    let deny =
        futures::future::join_all(plan.deny_roles.iter().filter(|r| !denied.contains(*r)).map(|role| {
            let (name, document) = (&name, &document);
            async move {
                // Keep an existing deny as it is: its time is the first isolation's.
                match retry(|| cloud.role_policy(role, name)).await {
                    Ok(Some(_)) => (role.clone(), Ok(None)),
                    Ok(None) => {
                        (role.clone(), retry(|| cloud.put_role_policy(role, name, document)).await.map(Some))
                    }
                    Err(e) => (role.clone(), Err(e)),
                }
            }
        }));
    let (d, deny) = futures::join!(disassociate, deny);
    let (mut calls, mut errors) = split(d.into_iter());
    let mut now_denied = BTreeSet::new();
    for (role, r) in deny {
        match r {
            Ok(c) => {
                calls.extend(c);
                now_denied.insert(role);
            }
            Err(e) => errors.push(format!("deny on role {role}: {e}")),
        }
    }
    (calls, errors, now_denied)
}

async fn swap_all(
    cloud: &dyn Cloud,
    plan: &Plan,
    groups: &BTreeMap<(VpcId, Purpose), SecurityGroupId>,
    obs: &Observed,
) -> (Vec<Call>, Vec<(String, SwapResult)>) {
    let prior_groups = |eni: &crate::ids::NetworkInterfaceId| {
        obs.instance.enis.iter().find(|e| &e.id == eni).map(|e| e.groups.clone()).unwrap_or_default()
    };
    // Step 1 on every ENI at once; an ENI whose step 1 failed is left as it was.
    let step1s = futures::future::join_all(plan.swaps.iter().map(|s| async move {
        let Some(iso) = groups.get(&(s.vpc.clone(), Purpose::Isolation)) else {
            return Err(SwapResult::Unchanged { error: format!("no isolation group in {}", s.vpc) });
        };
        if !s.via_allow_all {
            return Ok((iso.clone(), groups.get(&(s.vpc.clone(), Purpose::AllowAll)).cloned(), None));
        }
        let Some(allow) = groups.get(&(s.vpc.clone(), Purpose::AllowAll)) else {
            return Err(SwapResult::Unchanged { error: format!("no allow-all group in {}", s.vpc) });
        };
        match step1(cloud, &s.eni, allow).await {
            Ok(c) => Ok((iso.clone(), Some(allow.clone()), Some(c))),
            Err(e) => Err(SwapResult::Unchanged { error: format!("step 1 (allow-all): {e}") }),
        }
    }))
    .await;
    let mut calls = Vec::new();
    let step2s = futures::future::join_all(plan.swaps.iter().zip(step1s).map(|(s, r)| {
        let prior = prior_groups(&s.eni);
        async move {
            match r {
                Err(result) => (s.eni.to_string(), result, vec![]),
                Ok((iso, allow, c1)) => {
                    let (result, mut c2) = step2(cloud, &s.eni, &iso, allow.as_ref(), &prior).await;
                    if let Some(c1) = c1 {
                        c2.insert(0, c1);
                    }
                    (s.eni.to_string(), result, c2)
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

/// Other instances whose profile holds one of `roles` (they lose their older sessions too).
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

/// Re-reads everything containment controls and checks each control.
pub async fn verify(
    settings: &Settings,
    scope: &Scope,
    id: &InstanceId,
    prior: &PriorState,
) -> Result<Vec<Check>, String> {
    let cloud = scope.cloud.as_ref();
    let tgs: Vec<String> = {
        let mut t: Vec<String> = prior.target_groups.iter().map(|t| t.target_group_arn.clone()).collect();
        t.dedup();
        t
    };
    let (obs, groups, denied, asg) = futures::join!(
        observe(cloud, &scope.account, &scope.region, id, &tgs, !prior.classic_load_balancers.is_empty()),
        retry(|| cloud.case_groups(&settings.case)),
        roles_denied(cloud, &settings.case, &prior.profile_roles),
        async {
            match &prior.auto_scaling_group {
                Some(g) => retry(|| cloud.group(&g.name)).await,
                None => Ok(None),
            }
        }
    );
    let obs = obs.map_err(|e| e.to_string())?;
    let groups =
        CaseGroups::index(&settings.case, &groups.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let denied = denied.map_err(|e| e.to_string())?;
    let asg = asg.map_err(|e| e.to_string())?;
    Ok(containment_checks(&settings.case, prior, &obs, &groups, &denied, asg.as_ref()))
}
