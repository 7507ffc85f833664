//! What no emulator produces: a process killed part way, a failed write, throttling.
//! The fake store keeps its state across the "restart" (a new `Case` on the same
//! store), as S3 would.

use cleanroom::error::ExitKind;
use cleanroom::evidence::EvidenceError;
use cleanroom::evidence::store::StoreErrorKind;
use cleanroom::fake::store::{Faults, MemoryStore};
use cleanroom::verify::verify_case;

use super::*;

fn acct() -> AccountId {
    "111122223333".parse().unwrap()
}

async fn open_mem(store: &Arc<MemoryStore>, name: &str) -> Result<Case, EvidenceError> {
    Case::open_signed(
        store.clone(),
        &case_id(name),
        actor(&acct()),
        tool(),
        "sha256:config".into(),
        Retention::bucket_default(),
        local_signer(),
    )
    .await
}

#[tokio::test]
async fn killed_during_a_multipart_upload_loses_nothing_and_rerun_completes_the_case() {
    let store = Arc::new(MemoryStore::with_default_lock("crash", LockMode::Compliance, 30));
    let case = open_mem(&store, "IR-CRASH").await.unwrap();
    case.store_json(item(&acct(), "before.json"), &serde_json::json!({"n": 1})).await.unwrap();
    let before = case.head().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    std::fs::write(&path, pattern(50 << 20)).unwrap(); // 4 parts

    // The process dies at its 3rd write: two parts are up, nothing completed.
    store.set_faults(Faults { crash_at_write: Some(3), ..Default::default() });
    let err = case.store_file(item(&acct(), "disk.raw"), &path, &Silent).await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::Store { ref source, .. } if source.is(StoreErrorKind::Unreachable)),
        "{err}"
    );
    drop(case);

    // Restart: the chain is exactly as it was, gap-free.
    store.set_faults(Faults::default());
    let case = open_mem(&store, "IR-CRASH").await.unwrap();
    assert_eq!(case.head().await.unwrap(), before);
    assert_eq!(case.find_item(&item(&acct(), "disk.raw").id).await.unwrap(), None);
    let r = case.store_file(item(&acct(), "disk.raw"), &path, &Silent).await.unwrap();
    assert_eq!(r.sha256, cleanroom::evidence::digest::sha256_tagged(&pattern(50 << 20)));
    case.seal().await.unwrap();
    let report = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
    assert_eq!(report.items.len(), 2);
}

#[tokio::test]
async fn killed_between_the_evidence_write_and_its_custody_record_rerun_adopts_the_object() {
    let store = Arc::new(MemoryStore::with_default_lock("between", LockMode::Compliance, 30));
    let case = open_mem(&store, "IR-BETWEEN").await.unwrap();
    // Write 1: the evidence PUT succeeds; write 2 (the custody record) never happens.
    store.set_faults(Faults { crash_at_write: Some(2), ..Default::default() });
    let value = serde_json::json!({"state": "prior"});
    case.store_json(item(&acct(), "prior.json"), &value).await.unwrap_err();
    store.set_faults(Faults::default());
    let orphan = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert!(
        orphan.findings.iter().any(|f| f.problem.contains("no custody record accounts")),
        "{:#?}",
        orphan.findings
    );

    let case = open_mem(&store, "IR-BETWEEN").await.unwrap();
    let r = case.store_json(item(&acct(), "prior.json"), &value).await.unwrap();
    let versions = store.list_versions(&r.s3_key).await.unwrap();
    assert_eq!(versions.len(), 1, "no second version: {versions:?}");
    let report = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
    // Different bytes under the same key are refused, never written as a new version.
    let other = open_mem(&store, "IR-BETWEEN").await.unwrap();
    let mut clash = item(&acct(), "prior.json");
    clash.id = "another-id".into();
    let err = other.store_json(clash, &serde_json::json!({"state": "forged"})).await.unwrap_err();
    assert!(matches!(err, EvidenceError::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn a_failed_custody_write_is_a_resumable_failure_and_leaves_no_gap() {
    let store = Arc::new(MemoryStore::new("fail"));
    let case = open_mem(&store, "IR-FAIL").await.unwrap();
    // The case_opened record is written behind the opening: written by now.
    case.flush().await.unwrap();
    store.set_faults(Faults { fail_write: Some(1), ..Default::default() });
    let event = || CustodyEvent {
        action: Action::Verified,
        subject: "s".into(),
        evidence: vec![],
        aws_request_ids: vec![],
        details: serde_json::json!({}),
    };
    let err = case.record(event()).await.unwrap_err();
    assert_eq!(cleanroom::error::Error::from(err).kind(), ExitKind::Failed);
    let r = case.record(event()).await.unwrap();
    assert_eq!(r.seq, 2, "the failed attempt took no sequence number");
}

// Issue 12: the case_opened record is written behind the opening. When it cannot be
// written, no record may follow it (a chain must open with it): every later one fails,
// flush says so, and the next opening of the case writes it first.
#[tokio::test]
async fn a_case_opened_record_that_fails_behind_lets_no_record_follow_it() {
    let store = Arc::new(MemoryStore::with_default_lock("unopened", LockMode::Compliance, 30));
    // Writes 1 and 2 are case.json and the public key; write 3, the case_opened
    // record, fails.
    store.set_faults(Faults { fail_write: Some(3), ..Default::default() });
    let case = open_mem(&store, "IR-UNOPENED").await.unwrap();
    let event = CustodyEvent {
        action: Action::Verified,
        subject: "s".into(),
        evidence: vec![],
        aws_request_ids: vec![],
        details: serde_json::json!({}),
    };
    let err = case.record(event.clone()).await.unwrap_err();
    assert!(err.to_string().contains("opening record was not written"), "{err}");
    case.record_behind(event.clone());
    let err = case.flush().await.unwrap_err();
    assert_eq!(cleanroom::error::Error::from(err).kind(), ExitKind::Failed);
    assert_eq!(case.head().await, None, "nothing was appended");

    let again = open_mem(&store, "IR-UNOPENED").await.unwrap();
    let r = again.record(event).await.unwrap();
    assert_eq!(r.seq, 2, "case_opened first, then this record");
    let report = verify_case(store.as_ref(), again.id(), &local_trust()).await.unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
}

#[tokio::test]
async fn throttling_that_outlasts_retries_is_named_and_exits_1() {
    let store = Arc::new(MemoryStore::new("throttle"));
    store.set_faults(Faults { throttle_calls: 1, ..Default::default() });
    let err = open_mem(&store, "IR-THROTTLE").await.unwrap_err();
    assert!(err.to_string().contains("SlowDown"), "{err}");
    assert_eq!(cleanroom::error::Error::from(err).kind(), ExitKind::Failed);
    // Once the burst passes the same call succeeds.
    open_mem(&store, "IR-THROTTLE").await.unwrap();
}

#[tokio::test]
async fn bad_item_names_are_refused_with_exit_2_before_any_write() {
    let store = Arc::new(MemoryStore::new("bad"));
    let case = open_mem(&store, "IR-BAD").await.unwrap();
    let writes = store.writes();
    let mut bad = item(&acct(), "../escape.json");
    bad.id = "x".into();
    let err = case.store_json(bad, &serde_json::json!({})).await.unwrap_err();
    assert!(matches!(err, EvidenceError::InvalidItem { field: "name", .. }), "{err}");
    assert_eq!(store.writes(), writes);
    assert_eq!(cleanroom::error::Error::from(err).kind(), ExitKind::Refused);
}

#[tokio::test]
async fn concurrent_writers_on_the_fake_interleave_into_one_chain() {
    let store = Arc::new(MemoryStore::with_default_lock("race", LockMode::Compliance, 1));
    let a = open_mem(&store, "IR-RACE").await.unwrap();
    let b = open_mem(&store, "IR-RACE").await.unwrap();
    let ev = |n: u64| CustodyEvent {
        action: Action::Verified,
        subject: format!("{n}"),
        evidence: vec![],
        aws_request_ids: vec![],
        details: serde_json::json!({}),
    };
    let (x, y) = tokio::join!(
        async {
            for i in 0..10 {
                a.record(ev(i)).await.unwrap();
            }
        },
        async {
            for i in 0..10 {
                b.record(ev(100 + i)).await.unwrap();
            }
        }
    );
    let _ = (x, y);
    let r = verify_case(store.as_ref(), &case_id("IR-RACE"), &local_trust()).await.unwrap();
    assert!(r.verified(), "{:#?}", r.findings);
    assert_eq!(r.custody.records, 21);
}

#[tokio::test]
async fn a_failed_part_stops_the_upload_and_aborts_it() {
    let store = Arc::new(MemoryStore::with_default_lock("abort", LockMode::Compliance, 1));
    let case = open_mem(&store, "IR-ABORT").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    std::fs::write(&path, pattern(100 << 20)).unwrap(); // 7 parts
    store.set_faults(Faults { fail_write: Some(2), ..Default::default() });
    let err = case.store_file(item(&acct(), "disk.raw"), &path, &Silent).await.unwrap_err();
    assert!(err.to_string().contains("uploading part"), "{err}");
    assert_eq!(store.open_uploads(), 0, "the failed upload was aborted");
    assert!(store.writes() < 7, "it stopped instead of sending every part: {} writes", store.writes());
    assert!(store.keys().iter().all(|k| !k.ends_with("disk.raw")), "no object was completed");
}
