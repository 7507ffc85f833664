//! The containment workflow against the in-memory fake: fail-closed swap, throttling,
//! crash and rerun, idempotence, fleets, bad input, round trips, release.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cleanroom::cloud::{Cloud, Purpose};
use cleanroom::fake::cloud::FakeCloud;
use cleanroom::fake::custody::MemoryCustody;
use cleanroom::ids::{CaseId, InstanceId};
use cleanroom::isolate::workflow::{Outcome, Scope, Settings, Status, isolate};
use cleanroom::pipeline::custody::Action;
use cleanroom::progress::Silent;

pub(super) const ACCOUNT: &str = "111122223333";
pub(super) const REGION: &str = "eu-west-1";

pub(super) fn case() -> CaseId {
    "IR-2026-0005".parse().unwrap()
}

pub(super) fn settings() -> Settings {
    Settings {
        case: case(),
        concurrency: 8,
        plan_only: false,
        now: "2026-11-22T05:00:00Z".into(),
        member_role: "CleanroomResponder".into(),
        started: None,
        controls: Default::default(),
    }
}

/// The ARN the deny names for an instance of the fake account.
pub(super) fn arn(id: &InstanceId) -> String {
    format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{id}")
}

pub(super) struct World {
    pub(super) cloud: Arc<FakeCloud>,
    pub(super) custody: Arc<MemoryCustody>,
}

impl World {
    pub(super) fn new(cloud: FakeCloud) -> Self {
        Self { cloud: Arc::new(cloud), custody: Arc::new(MemoryCustody::default()) }
    }

    pub(super) async fn isolate_with(&self, settings: &Settings, ids: &[InstanceId]) -> Vec<Outcome> {
        let cloud: Arc<dyn Cloud> = self.cloud.clone();
        let scope = Scope::new(ACCOUNT.parse().unwrap(), REGION.parse().unwrap(), cloud);
        let targets = ids.iter().map(|id| (scope.clone(), id.clone())).collect();
        isolate(settings, targets, self.custody.clone(), Arc::new(Silent)).await
    }

    pub(super) async fn isolate(&self, ids: &[InstanceId]) -> Vec<Outcome> {
        self.isolate_with(&settings(), ids).await
    }

    pub(super) async fn release(&self, id: &InstanceId) -> cleanroom::release::Released {
        let cloud: Arc<dyn Cloud> = self.cloud.clone();
        let scope = Scope::new(ACCOUNT.parse().unwrap(), REGION.parse().unwrap(), cloud);
        let pending = cleanroom::release::prepare(&case(), &scope, id, self.custody.as_ref())
            .await
            .expect("release prepares");
        cleanroom::release::apply(&case(), &scope, id, pending, self.custody.as_ref()).await
    }

    pub(super) fn mutating_calls(&self) -> Vec<String> {
        self.cloud
            .log()
            .into_iter()
            .filter(|l| !l.failed)
            .map(|l| l.operation)
            .filter(|op| {
                !(op.starts_with("Describe")
                    || op.starts_with("Get")
                    || op.starts_with("List")
                    || op.starts_with("DryRun:"))
            })
            .collect()
    }
}

#[track_caller]
pub(super) fn assert_status(outcomes: &[Outcome], status: Status) {
    for o in outcomes {
        assert_eq!(o.status, status, "{o:#?}");
    }
}

/// Every control of the acceptance test, on the fake.
#[track_caller]
pub(super) fn assert_contained(w: &World, id: &InstanceId) {
    let iso = w.cloud.case_groups_of(&case(), Purpose::Isolation);
    assert_eq!(iso.len(), 1, "one isolation group: {iso:?}");
    assert!(iso[0].rules.is_empty(), "isolation group has no rules: {:?}", iso[0].rules);
    for groups in w.cloud.eni_groups(id) {
        assert_eq!(groups, vec![iso[0].id.clone()]);
    }
    let s = w.cloud.snapshot();
    let i = &s.instances[id];
    assert!(i.attributes.termination_protection);
    assert_eq!(i.attributes.shutdown_behavior, "stop");
    assert!(i.volumes.iter().all(|v| !v.delete_on_termination));
    assert_eq!(i.tags.get("cleanroom:case").map(String::as_str), Some(case().as_str()));
    assert!(!s.asgs["web"].instances.contains(id));
    assert_eq!(s.asgs["web"].desired, 2, "desired capacity kept");
    assert!(s.target_groups.values().flatten().all(|(i, _)| i != id.as_str()));
    assert!(s.classic.values().flatten().all(|i| i != id.as_str()));
    assert!(s.associations.iter().all(|a| &a.instance != id));
    assert!(
        s.role_policies
            .contains_key(&("web-role".to_owned(), format!("cleanroom-revoke-sessions-{}", case()))),
        "deny on the role"
    );
    // The instance's credentials are refused, wherever and whenever they were issued.
    assert!(w.cloud.session_denied("web-role", Some(&arn(id)), "2026-11-22T05:00:00Z"));
    assert!(w.cloud.session_denied("web-role", Some(&arn(id)), "2099-01-01T00:00:00Z"));
}

#[tokio::test(start_paused = true)]
async fn isolates_an_instance_with_two_enis_behind_a_service() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Isolated);
    assert_contained(&w, &id);
    let actions = w.custody.actions();
    for a in [
        Action::EvidenceStored,
        Action::InstanceProtected,
        Action::ServiceDetached,
        Action::NetworkIsolated,
        Action::CredentialsRevoked,
        Action::ContainmentVerified,
    ] {
        assert!(actions.contains(&a), "{a:?} recorded: {actions:?}");
    }
    assert_eq!(actions[0], Action::EvidenceStored, "the prior state is stored first");
    assert_eq!(actions[1], Action::ContainmentPlanned, "the intent is recorded before any change");
    for e in w.custody.events().iter().filter(|e| {
        !matches!(e.action, Action::EvidenceStored | Action::ContainmentPlanned | Action::ContainmentVerified)
    }) {
        assert!(!e.aws_request_ids.is_empty(), "{:?} carries request ids", e.action);
        assert!(e.subject.starts_with("arn:aws:ec2:eu-west-1:111122223333:instance/i-"));
    }
    assert!(
        out[0].warnings.iter().any(|w| w.contains("other instances")),
        "shared role warned: {:?}",
        out[0].warnings
    );
    // The swap went through allow-all first on each ENI, then isolation.
    let swaps: Vec<String> =
        w.cloud.calls_of("ModifyNetworkInterfaceAttribute").into_iter().map(|l| l.detail).collect();
    assert_eq!(swaps.len(), 4, "{swaps:?}");
    assert!(swaps[..2].iter().all(|d| d.contains("cleanroom-allow-all")));
    assert!(swaps[2..].iter().all(|d| d.contains("cleanroom-isolation")));
    let allow = w.cloud.case_groups_of(&case(), Purpose::AllowAll);
    assert_eq!(allow.len(), 1);
    assert_eq!(allow[0].rules.len(), 4, "allow-all: IPv4 and IPv6, in and out: {:?}", allow[0].rules);
}

#[tokio::test(start_paused = true)]
async fn the_second_swap_fails_and_the_instance_is_not_left_on_the_allow_all_group() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    let before = w.cloud.eni_groups(&id);
    w.cloud.fail("ModifyNetworkInterfaceAttribute", Some("cleanroom-isolation"), None);
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Failed);
    let allow = w.cloud.case_groups_of(&case(), Purpose::AllowAll)[0].id.clone();
    let after = w.cloud.eni_groups(&id);
    assert!(after.iter().all(|g| !g.contains(&allow)), "no ENI on allow-all: {after:?}");
    assert_eq!(after, before, "back on the prior groups: no more open than before");
    assert!(w.custody.actions().contains(&Action::ContainmentFailed));
    assert!(out[0].message.contains("not in force"), "{}", out[0].message);
}

#[tokio::test(start_paused = true)]
async fn when_even_the_revert_fails_the_allow_all_group_is_emptied() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    w.cloud.fail("ModifyNetworkInterfaceAttribute", Some("cleanroom-isolation"), None);
    w.cloud.fail("ModifyNetworkInterfaceAttribute", Some("-> web"), None);
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Failed);
    let allow = &w.cloud.case_groups_of(&case(), Purpose::AllowAll)[0];
    assert!(allow.rules.is_empty(), "fail closed: the allow-all group allows nothing: {:?}", allow.rules);
    assert!(out[0].errors.iter().any(|e| e.contains("allow_all_emptied")), "{:?}", out[0].errors);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    for op in [
        "DescribeInstances",
        "CreateSecurityGroup",
        "ModifyNetworkInterfaceAttribute",
        "PutRolePolicy",
        "DetachInstances",
    ] {
        w.cloud.throttle(op, 2);
    }
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Isolated);
    assert_contained(&w, &id);
    assert!(w.cloud.log().iter().filter(|l| l.failed).count() >= 10);
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_any_two_calls_then_a_rerun_completes_without_a_second_isolation_group() {
    // How many calls a clean run makes.
    let clean = World::new(FakeCloud::new());
    let id = clean.cloud.seed_service_instance();
    clean.isolate(std::slice::from_ref(&id)).await;
    let total = clean.cloud.log().len();
    assert!(total > 20, "{total}");

    for k in 1..total {
        let w = World::new(FakeCloud::new());
        let id = w.cloud.seed_service_instance();
        let before = w.cloud.snapshot();
        w.cloud.crash_after(k);
        let first = w.isolate(std::slice::from_ref(&id)).await;
        if first[0].status == Status::Isolated {
            // Only reads that are warnings (the network paths) came after the crash point.
            assert!(
                first[0].checks.iter().any(|c| c.warning && c.detail.contains("could not read")),
                "crash after call {k} is noticed: {:#?}",
                first[0]
            );
        }
        w.cloud.heal();
        let again = w.isolate(std::slice::from_ref(&id)).await;
        assert!(
            matches!(again[0].status, Status::Isolated | Status::AlreadyIsolated),
            "rerun after crash at call {k}: {:#?}",
            again[0]
        );
        assert_contained(&w, &id);
        assert_eq!(w.cloud.case_groups_of(&case(), Purpose::AllowAll).len(), 1, "crash at {k}");
        // The stored prior state is the one from before the first change.
        let stored = w.custody.items.lock().unwrap().values().next().unwrap().1.clone();
        let enis = &stored["enis"];
        let want: Vec<String> =
            before.instances[&id].enis.iter().map(|e| before.enis[e].groups[0].to_string()).collect();
        let got: Vec<String> =
            enis.as_array().unwrap().iter().map(|e| e["groups"][0].as_str().unwrap().to_owned()).collect();
        assert_eq!(got, want, "crash at {k}: prior state is the original");
    }
}

#[tokio::test(start_paused = true)]
async fn isolating_an_isolated_instance_changes_nothing_and_says_so() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    w.isolate(std::slice::from_ref(&id)).await;
    let changes = w.mutating_calls().len();
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::AlreadyIsolated);
    assert!(out[0].message.contains("nothing changed"), "{}", out[0].message);
    assert_eq!(
        w.mutating_calls().len(),
        changes,
        "no change on the second run: {:?}",
        &w.mutating_calls()[changes..]
    );
}

#[tokio::test(start_paused = true)]
async fn plan_prints_every_call_and_changes_nothing() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    let out = w.isolate_with(&Settings { plan_only: true, ..settings() }, std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Planned);
    assert!(w.mutating_calls().is_empty(), "{:?}", w.mutating_calls());
    assert!(w.custody.events().is_empty());
    let plan = out[0].plan.join("\n");
    for want in [
        "DryRun=true",
        "CreateSecurityGroup VpcId=",
        "RevokeSecurityGroupEgress",
        "AuthorizeSecurityGroupIngress",
        "DisableApiTermination=true",
        "InstanceInitiatedShutdownBehavior=stop",
        "DeleteOnTermination=false: /dev/xvda",
        "DetachInstances web",
        "ShouldDecrementDesiredCapacity=false",
        "DeregisterTargets arn:aws:elasticloadbalancing",
        "Port=8080",
        "DeregisterInstancesFromLoadBalancer web-classic",
        "DisassociateIamInstanceProfile",
        "PutRolePolicy RoleName=web-role",
        "(step 1: allow-all)",
        "(step 2: isolation)",
    ] {
        assert!(plan.contains(want), "plan lacks {want:?}:\n{plan}");
    }
}

#[tokio::test(start_paused = true)]
async fn bad_input_in_a_fleet_refuses_the_run_and_changes_nothing() {
    let w = World::new(FakeCloud::new());
    let good = w.cloud.seed_service_instance();
    let terminated = w.cloud.seed_plain_instance(&good);
    w.cloud.state.lock().unwrap().instances.get_mut(&terminated).unwrap().state = "terminated".into();
    let unknown: InstanceId = "i-0123456789abcdef0".parse().unwrap();
    let out = w.isolate(&[good.clone(), terminated.clone(), unknown.clone()]).await;
    assert_eq!(
        out.iter().map(|o| o.status).collect::<Vec<_>>(),
        vec![Status::NotStarted, Status::Refused, Status::Refused]
    );
    assert!(out[1].message.contains("terminated"), "{}", out[1].message);
    assert!(out[2].message.contains("not found"), "{}", out[2].message);
    assert!(w.mutating_calls().is_empty(), "{:?}", w.mutating_calls());
}

#[tokio::test(start_paused = true)]
async fn a_refused_dry_run_stops_everything_before_the_first_change() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    w.cloud.deny("DryRun:ModifyNetworkInterfaceAttribute");
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Refused);
    assert!(
        out[0].message.contains("DryRun permission check of ModifyNetworkInterfaceAttribute refused"),
        "{}",
        out[0].message
    );
    assert!(w.mutating_calls().is_empty(), "{:?}", w.mutating_calls());
    assert!(w.custody.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fleet_in_one_vpc_shares_one_isolation_group() {
    let w = World::new(FakeCloud::new());
    let first = w.cloud.seed_service_instance();
    let mut ids = vec![first.clone()];
    for _ in 0..30 {
        ids.push(w.cloud.seed_plain_instance(&first));
    }
    let out = w.isolate(&ids).await;
    assert_status(&out, Status::Isolated);
    assert_eq!(out.len(), 31);
    assert_eq!(w.cloud.case_groups_of(&case(), Purpose::Isolation).len(), 1);
    assert_eq!(w.cloud.case_groups_of(&case(), Purpose::AllowAll).len(), 1);
    assert_eq!(w.cloud.calls_of("DescribeTargetGroups").len(), 1, "load balancers listed once per account");
}

/// Issue 5 goal: at most 6 sequential round trips from start to the isolation group on
/// every ENI. Every fake call takes 10 ms of virtual time, so elapsed time counts them.
/// The evidence store's write of the prior state is counted separately: a store it
/// waits for is modelled as its PUT (the read-back and the records follow behind, issue
/// 12), run beside the creation of the case's groups, so it adds no round trip.
#[tokio::test(start_paused = true)]
async fn at_most_six_sequential_round_trips_to_isolation() {
    const LATENCY: Duration = Duration::from_millis(10);
    let rounds = |o: &Outcome| o.isolated_after_ms.unwrap() / LATENCY.as_millis() as u64;

    // EC2, IAM, Auto Scaling and ELB round trips alone (an instant evidence store).
    let w = World::new(FakeCloud::new().with_latency(LATENCY));
    let id = w.cloud.seed_service_instance();
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Isolated);
    let first = rounds(&out[0]);
    let second = w.cloud.seed_plain_instance(&id);
    let out = w.isolate(std::slice::from_ref(&second)).await;
    let in_place = rounds(&out[0]);

    // With the evidence store's S3 round trips.
    let w = World {
        cloud: Arc::new(FakeCloud::new().with_latency(LATENCY)),
        custody: Arc::new(MemoryCustody::with_store_latency(4, LATENCY)),
    };
    let id = w.cloud.seed_service_instance();
    let out = w.isolate(std::slice::from_ref(&id)).await;
    assert_status(&out, Status::Isolated);
    let with_s3 = rounds(&out[0]);
    println!(
        "CONTAINMENT_ROUND_TRIPS new_vpc={first} groups_in_place={in_place} new_vpc_with_evidence_store_s3={with_s3}"
    );
    assert!(first <= 6, "{first} sequential round trips");
    assert!(in_place <= first);
    assert!(with_s3 <= first, "the evidence store added round trips: {with_s3} against {first}");
}

#[tokio::test(start_paused = true)]
async fn release_restores_the_prior_state_exactly() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    let before = w.cloud.snapshot();
    w.isolate(std::slice::from_ref(&id)).await;
    let released = w.release(&id).await;
    assert!(released.ok, "{released:#?}");
    let after = w.cloud.snapshot();
    assert_eq!(
        w.cloud.eni_groups(&id),
        before.instances[&id].enis.iter().map(|e| before.enis[e].groups.clone()).collect::<Vec<_>>()
    );
    assert_eq!(after.instances[&id].attributes, before.instances[&id].attributes);
    assert_eq!(after.instances[&id].volumes, before.instances[&id].volumes);
    assert!(after.asgs["web"].instances.contains(&id));
    assert_eq!(after.target_groups, before.target_groups);
    assert_eq!(after.classic, before.classic);
    let profiles: BTreeSet<_> =
        after.associations.iter().filter(|a| a.instance == id).map(|a| a.profile_arn.clone()).collect();
    assert_eq!(profiles, ["arn:aws:iam::111122223333:instance-profile/web".to_owned()].into());
    assert!(after.role_policies.is_empty(), "deny removed");
    assert_eq!(w.custody.actions().last(), Some(&Action::Released));
    assert!(!w.custody.events().last().unwrap().aws_request_ids.is_empty());
}

/// A case whose process dies right after the changes: every custody record after the
/// write-ahead plan is lost.
struct DiesAfterPlanning(Arc<MemoryCustody>);

#[async_trait::async_trait]
impl cleanroom::pipeline::custody::CustodySink for DiesAfterPlanning {
    async fn record(
        &self,
        event: cleanroom::pipeline::custody::Event,
    ) -> Result<(), cleanroom::pipeline::custody::CustodyError> {
        if event.action == Action::ContainmentPlanned {
            return self.0.record(event).await;
        }
        Err(cleanroom::pipeline::custody::CustodyError("process killed".into()))
    }
    async fn store_json(
        &self,
        item: cleanroom::pipeline::custody::Item,
        value: &serde_json::Value,
    ) -> Result<cleanroom::evidence::EvidenceRef, cleanroom::pipeline::custody::CustodyError> {
        self.0.store_json(item, value).await
    }
    async fn load_json(
        &self,
        id: &str,
    ) -> Result<
        Option<(cleanroom::evidence::EvidenceRef, serde_json::Value)>,
        cleanroom::pipeline::custody::CustodyError,
    > {
        self.0.load_json(id).await
    }
    async fn store_bytes(
        &self,
        item: cleanroom::pipeline::custody::Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<cleanroom::evidence::EvidenceRef, cleanroom::pipeline::custody::CustodyError> {
        self.0.store_bytes(item, bytes, content_type).await
    }
    async fn find(
        &self,
        id: &str,
    ) -> Result<Option<cleanroom::evidence::EvidenceRef>, cleanroom::pipeline::custody::CustodyError> {
        self.0.find(id).await
    }
    async fn seal(
        &self,
    ) -> Result<(cleanroom::evidence::EvidenceRef, usize), cleanroom::pipeline::custody::CustodyError> {
        Err(cleanroom::pipeline::custody::CustodyError("process killed".into()))
    }
    async fn adopt(
        &self,
        _: cleanroom::pipeline::custody::Item,
        _: Option<&str>,
        _: &cleanroom::evidence::digest::Digests,
        _: u64,
    ) -> Result<(cleanroom::evidence::EvidenceRef, bool), cleanroom::pipeline::custody::CustodyError> {
        Err(cleanroom::pipeline::custody::CustodyError("process killed".into()))
    }
    async fn read_object(
        &self,
        _: &str,
        _: usize,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, cleanroom::pipeline::custody::CustodyError> {
        Ok(None)
    }
    async fn list(&self, _: &str) -> Result<Vec<String>, cleanroom::pipeline::custody::CustodyError> {
        Ok(vec![])
    }
}

// Regression: a crash after an instance's changes and before their custody records
// left changes with no trace in the chain. The plan is now written ahead of them.
#[tokio::test(start_paused = true)]
async fn a_crash_between_the_changes_and_their_records_leaves_the_plan_on_record() {
    let w = World::new(FakeCloud::new());
    let id = w.cloud.seed_service_instance();
    let cloud: Arc<dyn Cloud> = w.cloud.clone();
    let scope = Scope::new(ACCOUNT.parse().unwrap(), REGION.parse().unwrap(), cloud);
    let dying = Arc::new(DiesAfterPlanning(w.custody.clone()));
    isolate(&settings(), vec![(scope, id.clone())], dying, Arc::new(Silent)).await;
    assert_contained(&w, &id);
    let events = w.custody.events();
    // Evidence items (the prior state, the records of the case's new groups) and the
    // plan; no record after it.
    let actions: Vec<Action> = events.iter().map(|e| e.action).collect();
    assert_eq!(actions[0], Action::EvidenceStored);
    let records: Vec<&Action> = actions.iter().filter(|a| **a != Action::EvidenceStored).collect();
    assert_eq!(records, vec![&Action::ContainmentPlanned], "{actions:?}");
    let planned = events.iter().position(|e| e.action == Action::ContainmentPlanned).unwrap();
    let plan = events[planned].details["plan"].to_string();
    assert!(plan.contains("eni-"), "the plan names the ENIs to swap: {plan}");

    // The rerun finds the instance contained and proves it.
    let again = w.isolate(std::slice::from_ref(&id)).await;
    assert_eq!(again[0].status, Status::AlreadyIsolated, "{:#?}", again[0]);
    assert_eq!(w.custody.actions().last(), Some(&Action::ContainmentVerified));
}
