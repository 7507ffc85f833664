//! Storing and recording through the real S3 client against the lab.

use super::*;
use cleanroom::evidence::store::get_all;

#[tokio::test]
async fn store_json_is_locked_checksummed_recorded_and_idempotent() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-1").await;
    let value = serde_json::json!({"b": 2, "a": [1, "x"]});
    let r = case.store_json(item(&f.account, "state.json"), &value).await.unwrap();
    assert_eq!(r.s3_key, format!("cases/IR-LAB-1/evidence/{}/i-0123456789abcdef0/state.json", f.account));
    assert!(r.sha256.starts_with("sha256:"));
    let store = s3_store(&f);
    let meta = store.head(&r.s3_key, r.version_id.as_deref()).await.unwrap().unwrap();
    assert_eq!(meta.lock_mode, Some(LockMode::Compliance), "{meta:?}");
    assert!(meta.retain_until.is_some());
    assert!(meta.checksum_sha256.is_some(), "{meta:?}");
    let body = get_all(store.as_ref(), &r.s3_key, None, 1 << 20).await.unwrap();
    assert_eq!(&body[..], br#"{"a":[1,"x"],"b":2}"#);

    // Rerun: same ref, nothing written twice.
    let again = case.store_json(item(&f.account, "state.json"), &value).await.unwrap();
    assert_eq!(again, r);
    let reopened = open(&f, "IR-LAB-1").await;
    assert_eq!(reopened.find_item(&item(&f.account, "state.json").id).await.unwrap(), Some(r.clone()));
    let versions = store.list_versions(&r.s3_key).await.unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let head = reopened.head().await.unwrap();
    assert_eq!(head.seq, 2, "case_opened + evidence_stored");
}

#[tokio::test]
async fn multipart_file_keeps_full_object_digests_beside_the_composite_checksum() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-MP").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let data = pattern(40 << 20); // 3 parts of 16 MiB
    std::fs::write(&path, &data).unwrap();
    let r = case.store_file(item(&f.account, "disk.raw"), &path, &Silent).await.unwrap();
    let d = cleanroom::evidence::digest::digests_of(&data);
    assert_eq!(r.sha256, d.sha256);
    let items = case.items().await;
    let it = items.iter().find(|i| i.id == r.id).unwrap();
    assert_eq!(
        (it.sha1.as_str(), it.md5.as_str(), it.size),
        (d.sha1.as_str(), d.md5.as_str(), data.len() as u64)
    );
    assert!(it.s3_checksum_sha256.ends_with("-3"), "{}", it.s3_checksum_sha256);
    assert_eq!(it.part_size, Some(16 << 20));
    let meta = s3_store(&f).head(&r.s3_key, r.version_id.as_deref()).await.unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.lock_mode, Some(LockMode::Compliance));
}

#[tokio::test]
async fn two_writers_never_fork_the_chain() {
    let f = Forensics::seed().await;
    let a = open(&f, "IR-LAB-RACE").await;
    let b = open(&f, "IR-LAB-RACE").await;
    let mut tasks = Vec::new();
    for (n, case) in [a.clone(), b.clone(), a, b].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..5 {
                let r = case
                    .record(CustodyEvent {
                        action: Action::Verified,
                        subject: format!("writer-{n}"),
                        evidence: vec![],
                        aws_request_ids: vec![],
                        details: serde_json::json!({"i": i}),
                    })
                    .await
                    .unwrap();
                seqs.push(r.seq);
            }
            seqs
        }));
    }
    let mut all: Vec<u64> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (2..=21).collect::<Vec<_>>(), "every record got its own seq, none lost");
    // A third reader walks a single, unbroken chain.
    let report =
        cleanroom::verify::verify_case(s3_store(&f).as_ref(), &case_id("IR-LAB-RACE"), &kms_trust(&f).await)
            .await
            .unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
    assert_eq!(report.custody.records, 21);
}

#[tokio::test]
async fn retention_cannot_be_removed_in_the_lab_bucket() {
    // The COMPLIANCE lab bucket refuses what the tamper suite must therefore model with
    // a GOVERNANCE bucket or the fake: removing, shortening or weakening the retention
    // of a locked custody record. Each attempt must be refused as AccessDenied, and the
    // version must keep exactly the retention it had.
    use aws_sdk_s3::primitives::DateTime;
    use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-LOCK").await;
    let receipt = case
        .record(CustodyEvent {
            action: Action::Verified,
            subject: "x".into(),
            evidence: vec![],
            aws_request_ids: vec![],
            details: serde_json::json!({}),
        })
        .await
        .unwrap();
    let store = s3_store(&f);
    let version = receipt.version_id.clone().unwrap();
    let before = store.head(&receipt.s3_key, Some(&version)).await.unwrap().unwrap();
    let (mode, until) = (before.lock_mode.unwrap(), before.retain_until.unwrap());
    assert_eq!(mode, LockMode::Compliance, "{before:?}");
    let sooner = DateTime::from_secs(until.unix_timestamp() - 3600);
    let attempts = [
        ("removed", ObjectLockRetention::builder().build()),
        (
            "shortened",
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Compliance)
                .retain_until_date(sooner)
                .build(),
        ),
        (
            "switched to GOVERNANCE",
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(DateTime::from_secs(until.unix_timestamp()))
                .build(),
        ),
    ];
    let s3 = f.clients().s3;
    for (what, retention) in attempts {
        let err = s3
            .put_object_retention()
            .bucket(f.config.forensics.evidence_bucket.as_str())
            .key(&receipt.s3_key)
            .version_id(&version)
            .retention(retention)
            .bypass_governance_retention(true)
            .send()
            .await
            .expect_err(what);
        let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&err);
        assert_eq!(code, Some("AccessDenied"), "retention {what}: {err:?}");
        let after = store.head(&receipt.s3_key, Some(&version)).await.unwrap().unwrap();
        assert_eq!(
            (after.lock_mode, after.retain_until),
            (Some(mode), Some(until)),
            "retention {what}: the lock changed although the call failed"
        );
    }
}

/// The S3 store, but the process "dies" at its Nth write: from then on every call
/// fails, and nothing (not even an abort) reaches the lab.
struct Dying {
    inner: Arc<dyn ObjectStore>,
    writes: std::sync::atomic::AtomicU64,
    die_at: u64,
}

impl Dying {
    fn check(&self, write: bool) -> Result<(), cleanroom::evidence::store::StoreError> {
        use std::sync::atomic::Ordering;
        let n = if write {
            self.writes.fetch_add(1, Ordering::SeqCst) + 1
        } else {
            self.writes.load(Ordering::SeqCst)
        };
        if n >= self.die_at {
            return Err(cleanroom::evidence::store::StoreError::new(
                cleanroom::evidence::store::StoreErrorKind::Unreachable,
                "any",
                "dying",
                "process killed",
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl ObjectStore for Dying {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(
        &self,
        r: cleanroom::evidence::store::PutObject,
    ) -> Result<cleanroom::evidence::store::Written, cleanroom::evidence::store::StoreError> {
        self.check(true)?;
        self.inner.put(r).await
    }
    async fn create_multipart(
        &self,
        k: &str,
        c: &'static str,
        l: &cleanroom::evidence::store::ObjectLock,
    ) -> Result<String, cleanroom::evidence::store::StoreError> {
        self.check(false)?;
        self.inner.create_multipart(k, c, l).await
    }
    async fn upload_part(
        &self,
        k: &str,
        u: &str,
        n: i32,
        b: bytes::Bytes,
        s: &str,
    ) -> Result<cleanroom::evidence::store::Part, cleanroom::evidence::store::StoreError> {
        self.check(true)?;
        self.inner.upload_part(k, u, n, b, s).await
    }
    async fn complete_multipart(
        &self,
        k: &str,
        u: &str,
        p: &[cleanroom::evidence::store::Part],
        a: bool,
    ) -> Result<cleanroom::evidence::store::Written, cleanroom::evidence::store::StoreError> {
        self.check(true)?;
        self.inner.complete_multipart(k, u, p, a).await
    }
    async fn abort_multipart(&self, k: &str, u: &str) -> Result<(), cleanroom::evidence::store::StoreError> {
        self.check(false)?;
        self.inner.abort_multipart(k, u).await
    }
    async fn set_retention(
        &self,
        k: &str,
        v: Option<&str>,
        m: LockMode,
        t: time::OffsetDateTime,
    ) -> Result<(), cleanroom::evidence::store::StoreError> {
        self.check(true)?;
        self.inner.set_retention(k, v, m, t).await
    }
    async fn get(
        &self,
        k: &str,
        v: Option<&str>,
    ) -> Result<cleanroom::evidence::store::ByteChunks, cleanroom::evidence::store::StoreError> {
        self.check(false)?;
        self.inner.get(k, v).await
    }
    async fn head(
        &self,
        k: &str,
        v: Option<&str>,
    ) -> Result<Option<cleanroom::evidence::store::ObjectMeta>, cleanroom::evidence::store::StoreError> {
        self.check(false)?;
        self.inner.head(k, v).await
    }
    async fn list(&self, p: &str) -> Result<Vec<String>, cleanroom::evidence::store::StoreError> {
        self.check(false)?;
        self.inner.list(p).await
    }
    async fn list_versions(
        &self,
        p: &str,
    ) -> Result<Vec<cleanroom::evidence::store::Version>, cleanroom::evidence::store::StoreError> {
        self.check(false)?;
        self.inner.list_versions(p).await
    }
}

#[tokio::test]
async fn killed_mid_upload_against_the_lab_rerun_completes_with_no_gap() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-KILL").await;
    case.store_json(item(&f.account, "first.json"), &serde_json::json!({"n": 1})).await.unwrap();
    let head = case.head().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    std::fs::write(&path, pattern(60 << 20)).unwrap();

    // Same chain state, through a store that dies at the 4th write: opening tries
    // case.json and the public key (both there already), then 2 parts go up.
    let dying: Arc<dyn ObjectStore> =
        Arc::new(Dying { inner: s3_store(&f), writes: Default::default(), die_at: 4 });
    let doomed = Case::open_signed(
        dying,
        &case_id("IR-LAB-KILL"),
        actor(&f.account),
        tool(),
        "sha256:config".into(),
        Retention::explicit(LockMode::Compliance, 1),
        kms_signer(&f),
    )
    .await
    .unwrap();
    doomed.store_file(item(&f.account, "disk.raw"), &path, &Silent).await.unwrap_err();
    drop(doomed);

    // The rerun: a new process state from the bucket.
    let rerun = open(&f, "IR-LAB-KILL").await;
    assert_eq!(rerun.head().await.unwrap(), head, "nothing recorded was lost, nothing half-recorded");
    let r = rerun.store_file(item(&f.account, "disk.raw"), &path, &Silent).await.unwrap();
    assert_eq!(r.sha256, cleanroom::evidence::digest::sha256_tagged(&pattern(60 << 20)));
    let report =
        cleanroom::verify::verify_case(s3_store(&f).as_ref(), &case_id("IR-LAB-KILL"), &kms_trust(&f).await)
            .await
            .unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
    assert_eq!((report.items.len(), report.custody.records), (2, 3));
}

#[tokio::test]
async fn legal_hold_is_set_when_asked() {
    let f = Forensics::seed().await;
    let retention = Retention { legal_hold: true, ..Retention::explicit(LockMode::Compliance, 1) };
    let case = Case::open_signed(
        s3_store(&f),
        &case_id("IR-LAB-HOLD"),
        actor(&f.account),
        tool(),
        "sha256:config".into(),
        retention,
        kms_signer(&f),
    )
    .await
    .unwrap();
    let r = case.store_json(item(&f.account, "held.json"), &serde_json::json!({"x": 1})).await.unwrap();
    let meta = s3_store(&f).head(&r.s3_key, r.version_id.as_deref()).await.unwrap().unwrap();
    assert!(meta.legal_hold, "{meta:?}");
    let items = case.items().await;
    assert!(items[0].legal_hold);
}

#[tokio::test]
async fn a_corrupted_upload_is_refused_by_its_checksum() {
    // The lab validates x-amz-checksum-sha256 as S3 does: bytes that changed on the way
    // never become evidence.
    let f = Forensics::seed().await;
    let store = s3_store(&f);
    let err = store
        .put(cleanroom::evidence::store::PutObject {
            key: "cases/IR-LAB-BAD/evidence/x".into(),
            body: bytes::Bytes::from_static(b"the bytes that arrived"),
            sha256_b64: cleanroom::evidence::digest::b64(&cleanroom::evidence::digest::sha256_raw(
                b"the bytes we hashed",
            )),
            content_type: "application/octet-stream",
            lock: cleanroom::evidence::store::ObjectLock { retention: None, legal_hold: false },
            if_absent: true,
        })
        .await
        .unwrap_err();
    assert!(err.message.contains("BadDigest"), "{err}");
    assert!(store.head("cases/IR-LAB-BAD/evidence/x", None).await.unwrap().is_none());
}

#[tokio::test]
async fn per_volume_outputs_live_one_folder_below_their_instance() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-VOL").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    std::fs::write(&path, pattern(1 << 20)).unwrap();
    let r =
        case.store_file(item(&f.account, "vol-0123456789abcdef0/image.raw"), &path, &Silent).await.unwrap();
    assert_eq!(
        r.s3_key,
        format!(
            "cases/IR-LAB-VOL/evidence/{}/i-0123456789abcdef0/vol-0123456789abcdef0/image.raw",
            f.account
        )
    );
    for bad in ["vol-0123456789abcdef0/sub/image.raw", "../image.raw", "vol-0123456789abcdef0/.."] {
        let err = case.store_file(item(&f.account, bad), &path, &Silent).await.unwrap_err();
        assert!(
            matches!(err, cleanroom::evidence::EvidenceError::InvalidItem { field: "name", .. }),
            "{bad}: {err}"
        );
    }
    let report =
        cleanroom::verify::verify_case(s3_store(&f).as_ref(), &case_id("IR-LAB-VOL"), &kms_trust(&f).await)
            .await
            .unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
}

// Issue 12: the prior state is stored early (a change waits for its PUT only); its
// read-back and its record follow behind, in their place: before every record asked
// for after it. The chain verifies, and the item carries the lock S3 applied.
#[tokio::test]
async fn an_early_item_is_read_back_and_recorded_behind_in_its_place() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-EARLY").await;
    let value = serde_json::json!({"state": "before"});
    let (r, found) = case.store_json_early(item(&f.account, "prior.json"), &value).await.unwrap();
    assert!(found.is_none());
    case.record_behind(CustodyEvent {
        action: Action::ContainmentPlanned,
        subject: "arn:aws:ec2:eu-west-1:123456789012:instance/i-0123456789abcdef0".into(),
        evidence: vec![r.clone()],
        aws_request_ids: vec![],
        details: serde_json::json!({"plan": "swap"}),
    });
    case.flush().await.unwrap();
    let store = s3_store(&f);
    let loaded = cleanroom::verify::load_case(store.as_ref(), &case_id("IR-LAB-EARLY")).await.unwrap();
    let actions: Vec<Action> = loaded.chain().map(|r| r.action).collect();
    assert_eq!(actions, [Action::CaseOpened, Action::EvidenceStored, Action::ContainmentPlanned]);
    let stored = &loaded.items()[&r.id];
    let meta = store.head(&r.s3_key, r.version_id.as_deref()).await.unwrap().unwrap();
    assert_eq!(stored.lock_mode, meta.lock_mode);
    assert_eq!(stored.retain_until, meta.retain_until.map(cleanroom::evidence::case::utc_ms));
    let report =
        cleanroom::verify::verify_case(store.as_ref(), &case_id("IR-LAB-EARLY"), &kms_trust(&f).await)
            .await
            .unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
}

// Issue 12: a run that stored the prior state and stopped before its record (written
// behind) left an object no record names. The next run adopts that object, the
// earlier observation, returns it, and says in the record that it was recovered.
#[tokio::test]
async fn an_item_stored_without_its_record_is_adopted_as_recovered() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-LAB-RECOVER").await;
    case.flush().await.unwrap();
    let it = item(&f.account, "prior.json");
    let key = format!("cases/IR-LAB-RECOVER/evidence/{}/i-0123456789abcdef0/prior.json", f.account);
    let before = cleanroom::evidence::custody::canonical(&serde_json::json!({"state": "before"}));
    let store = s3_store(&f);
    store
        .put(cleanroom::evidence::store::PutObject {
            key: key.clone(),
            sha256_b64: cleanroom::evidence::digest::b64(&cleanroom::evidence::digest::sha256_raw(&before)),
            body: before.clone().into(),
            content_type: "application/json",
            lock: cleanroom::evidence::store::ObjectLock { retention: None, legal_hold: false },
            if_absent: true,
        })
        .await
        .unwrap();

    let (r, found) = case.store_json_early(it, &serde_json::json!({"state": "after"})).await.unwrap();
    assert_eq!(found.as_deref(), Some(&before[..]), "the earlier observation is returned");
    assert_eq!(r.sha256, cleanroom::evidence::digest::sha256_tagged(&before));
    case.flush().await.unwrap();
    let loaded = cleanroom::verify::load_case(store.as_ref(), &case_id("IR-LAB-RECOVER")).await.unwrap();
    let record = loaded.chain().find(|r| r.action == Action::EvidenceStored).unwrap();
    assert_eq!(record.details["recovered_after_interruption"], true);
    assert_eq!(record.details["adopted_existing_object"], true);
    let versions = store.list_versions(&key).await.unwrap();
    assert_eq!(versions.len(), 1, "no second version: {versions:?}");
}

// Issue 12: records queued behind are appended in batches, all signed at once. Two
// processes' batches racing for the same sequence numbers never fork the chain: the
// loser reads the winner's records and builds and signs its own again on top of them.
#[tokio::test]
async fn two_writers_appending_in_batches_never_fork_the_chain() {
    let f = Forensics::seed().await;
    let a = open(&f, "IR-LAB-BATCH").await;
    a.flush().await.unwrap();
    let b = open(&f, "IR-LAB-BATCH").await;
    for i in 0..15 {
        for (n, case) in [(0, &a), (1, &b)] {
            case.record_behind(CustodyEvent {
                action: Action::Verified,
                subject: format!("writer-{n}"),
                evidence: vec![],
                aws_request_ids: vec![],
                details: serde_json::json!({"i": i}),
            });
        }
    }
    let (x, y) = tokio::join!(a.flush(), b.flush());
    x.unwrap();
    y.unwrap();
    let store = s3_store(&f);
    let report =
        cleanroom::verify::verify_case(store.as_ref(), &case_id("IR-LAB-BATCH"), &kms_trust(&f).await)
            .await
            .unwrap();
    assert!(report.verified(), "{:#?}", report.findings);
    assert_eq!(report.custody.records, 31, "one case_opened and 30 records, none twice");
    let loaded = cleanroom::verify::load_case(store.as_ref(), &case_id("IR-LAB-BATCH")).await.unwrap();
    for writer in ["writer-0", "writer-1"] {
        let order: Vec<i64> = loaded
            .chain()
            .filter(|r| r.subject == writer)
            .map(|r| r.details["i"].as_i64().unwrap())
            .collect();
        assert_eq!(order, (0..15).collect::<Vec<_>>(), "{writer}'s records in the order asked for");
    }
}
