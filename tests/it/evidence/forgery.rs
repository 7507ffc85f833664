//! Forgery by a bucket writer: someone who can put objects into the evidence bucket
//! (or hand over a doctored case folder) but does not hold the KMS signing key. Each
//! test is named after the attack, runs it on the fake store (library verify, online
//! and offline) and in the lab (the `cleanroom` binary, `verify` and `verify --dir`),
//! and requires it to be reported with the key and the reason. Before per-record
//! signatures and a pinned key, every one of these cases verified as VERIFIED.
//!
//! Also here: what verify must not do: report an intact case as FAILED because another
//! process was between storing an object and recording it; follow links out of a case
//! folder; read an oversized "record" whole.

use std::sync::Mutex;

use cleanroom::evidence::case::ManifestItem;
use cleanroom::evidence::checkpoint::CheckpointDetails;
use cleanroom::evidence::custody::{CLOCK_SOURCE, CustodyRecord, RecordSignature, SCHEMA};
use cleanroom::evidence::digest::{b64, digests_of, sha256_raw};
use cleanroom::evidence::folder::FolderStore;
use cleanroom::evidence::layout;
use cleanroom::evidence::signing::{ALGORITHM, Signed};
use cleanroom::evidence::store::{ObjectLock, PutObject};
use cleanroom::evidence::{EvidenceError, EvidenceRef};
use cleanroom::fake::store::MemoryStore;
use cleanroom::verify::{Trust, VerifyReport, load_case, verify_case};

use super::tamper::{assert_found, download, memory_case};
use super::*;

/// The attacker's own signing key: valid signatures, just not by the case's key.
fn attacker_key() -> LocalSigner {
    LocalSigner::from_seed(9)
}

fn fingerprint_of(signer: &LocalSigner) -> String {
    cleanroom::evidence::signing::fingerprint(signer.public_key_pem().as_bytes()).unwrap()
}

/// A plain PUT, as anyone with s3:PutObject can make (no If-None-Match).
async fn attacker_put(store: &dyn ObjectStore, key: &str, body: Vec<u8>) {
    store
        .put(PutObject {
            key: key.into(),
            sha256_b64: b64(&sha256_raw(&body)),
            body: body.into(),
            content_type: "application/json",
            lock: ObjectLock { retention: None, legal_hold: false },
            if_absent: false,
        })
        .await
        .expect("the attacker can write to the bucket");
}

/// How a forged record is signed.
enum Sign<'a> {
    Not,
    /// With the attacker's own key: a valid signature, by the wrong key.
    With(&'a LocalSigner),
    /// With a signature block copied from a genuine record.
    Copied(Option<RecordSignature>),
}

/// A well-formed record appended after the current head: right seq, `prev` linking,
/// hash recomputed, signed as `sign` says.
async fn forge_record(
    store: &dyn ObjectStore,
    case: &CaseId,
    action: Action,
    evidence: Vec<EvidenceRef>,
    details: serde_json::Value,
    sign: Sign<'_>,
) -> CustodyRecord {
    let loaded = load_case(store, case).await.unwrap();
    let last = loaded.chain().last().unwrap().clone();
    let seq = last.seq + 1;
    let (mut record, _) = CustodyRecord {
        schema: SCHEMA.into(),
        seq,
        case: case.to_string(),
        time: "2026-03-01T00:00:00.000Z".into(),
        clock: CLOCK_SOURCE.into(),
        actor: last.actor.clone(),
        host: last.host.clone(),
        tool: last.tool.clone(),
        action,
        subject: format!("case:{case}"),
        evidence,
        aws_request_ids: vec![],
        details,
        prev: Some(last.hash.clone()),
        hash: String::new(),
        signature: None,
    }
    .seal();
    match sign {
        Sign::Not => {}
        Sign::With(signer) => {
            let (sig, _) =
                signer.sign_message(&Signed::record(case, seq, &record.hash).message()).await.unwrap();
            record.signature = Some(RecordSignature {
                key_id: signer.key_id(),
                public_key_sha256: fingerprint_of(signer),
                algorithm: ALGORITHM.into(),
                value: b64(&sig),
                request_id: None,
            });
        }
        Sign::Copied(signature) => record.signature = signature,
    }
    attacker_put(store, &layout::custody_record(case, seq), record.to_bytes()).await;
    record
}

/// Attack 1: a planted evidence object, an `evidence_stored` record for it and a
/// `checkpoint_signed` record over it, both signed with the attacker's own key, whose
/// public key is planted in the case too. Returns (object key, first forged seq).
async fn forge_object_record_and_checkpoint(store: &dyn ObjectStore, case: &CaseId) -> (String, u64) {
    let account: AccountId = "111122223333".parse().unwrap();
    let body = b"planted by the attacker".to_vec();
    let key = layout::evidence(case, &account, "i-0123456789abcdef0", "planted.bin").unwrap();
    attacker_put(store, &key, body.clone()).await;
    let d = digests_of(&body);
    let item = ManifestItem {
        id: format!("{account}/i-0123456789abcdef0/planted.bin"),
        account: account.to_string(),
        subject: "i-0123456789abcdef0".into(),
        name: "planted.bin".into(),
        source: "ec2:GetConsoleOutput".into(),
        method: "API read".into(),
        derived_from: vec![],
        acquired_at: "2026-03-01T00:00:00.000Z".into(),
        size: d.size,
        sha256: d.sha256.clone(),
        sha1: d.sha1,
        md5: d.md5,
        s3_key: key.clone(),
        version_id: store.head(&key, None).await.unwrap().and_then(|m| m.version_id),
        s3_checksum_sha256: b64(&sha256_raw(&body)),
        part_size: None,
        lock_mode: None,
        retain_until: None,
        legal_hold: false,
    };
    let attacker = attacker_key();
    let fp = fingerprint_of(&attacker);
    let key_file = layout::public_key(case, &fp).unwrap();
    attacker_put(store, &key_file, attacker.public_key_pem().into_bytes()).await;
    let stored = forge_record(
        store,
        case,
        Action::EvidenceStored,
        vec![item.evidence_ref()],
        serde_json::json!({ "item": item, "adopted_existing_object": false }),
        Sign::With(&attacker),
    )
    .await;
    let signed = Signed::checkpoint(case, stored.seq, &stored.hash);
    let (sig, _) = attacker.sign_message(&signed.message()).await.unwrap();
    let details = CheckpointDetails {
        signed,
        key_id: attacker.key_id(),
        algorithm: ALGORITHM.into(),
        message_type: "RAW".into(),
        signature: b64(&sig),
        public_key_sha256: fp,
        public_key_s3_key: key_file,
    };
    forge_record(
        store,
        case,
        Action::CheckpointSigned,
        vec![],
        serde_json::to_value(details).unwrap(),
        Sign::With(&attacker),
    )
    .await;
    (key, stored.seq)
}

/// The findings attack 1 must produce under the trusted key `trusted_fp`.
#[track_caller]
fn assert_forgery_1_found(r: &VerifyReport, object: &str, first: u64) {
    let attacker = fingerprint_of(&attacker_key());
    let (a, b) = (format!("custody/{first:010}.json"), format!("custody/{:010}.json", first + 1));
    assert_found(r, &a, &format!("not authenticated: signed by key {attacker}"));
    assert_found(r, &b, &format!("not authenticated: signed by key {attacker}"));
    assert_found(r, &b, "not the trusted key");
    assert_found(
        r,
        "custody/",
        &format!("records {first}-{} come after the last valid signature", first + 1),
    );
    let item = r.items.iter().find(|i| i.s3_key == object).expect("the planted item is checked");
    assert_eq!(item.status, "UNAUTHENTICATED");
    assert!(
        r.verdict().starts_with("FAILED") && r.verdict().contains("not authenticated"),
        "{}",
        r.verdict()
    );
}

#[tokio::test]
async fn forged_appended_record_with_its_own_object_and_a_checkpoint_signed_by_another_key_on_the_fake() {
    let (case, store) = memory_case("IR-F-FORGE").await;
    case.checkpoint(local_signer().as_ref()).await.unwrap();
    let (object, first) = forge_object_record_and_checkpoint(store.as_ref(), case.id()).await;

    let online = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert_forgery_1_found(&online, &object, first);

    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), case.id().as_str(), dir.path()).await;
    let folder = FolderStore::new(dir.path(), case.id());
    let offline = verify_case(&folder, case.id(), &local_trust()).await.unwrap();
    assert_forgery_1_found(&offline, &object, first);
    // Trusting "the case's key" cannot choose between the two keys the records name.
    let case_key = verify_case(&folder, case.id(), &VerifyOptions { trust: Trust::CaseKey }).await.unwrap();
    assert_found(&case_key, "keys/", "signed by 2 different keys");
    // Without a key the chain still hangs together: integrity only, never VERIFIED.
    let no_key = verify_case(&folder, case.id(), &VerifyOptions::default()).await.unwrap();
    assert!(!no_key.verified() && no_key.verdict().starts_with("NOT AUTHENTICATED"), "{}", no_key.verdict());

    // And no writer extends (or signs) the forged chain.
    let err = Case::open_signed(
        store.clone(),
        case.id(),
        actor(&"111122223333".parse().unwrap()),
        tool(),
        "sha256:config".into(),
        Retention::bucket_default(),
        local_signer(),
    )
    .await
    .unwrap_err();
    match &err {
        EvidenceError::Unauthenticated { seq, key, reason, .. } => {
            assert_eq!(*seq, first, "{err}");
            assert!(key.contains(&fingerprint_of(&LocalSigner::from_seed(1))), "{err}");
            assert!(reason.contains(&fingerprint_of(&attacker_key())), "{err}");
        }
        other => panic!("expected Unauthenticated, got {other}"),
    }
}

/// Downloads the case as a third party would and writes the KMS public key beside it.
pub(crate) async fn hand_over(f: &Forensics, case: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    download(s3_store(f).as_ref(), case, dir.path()).await;
    let key_path = f.dir.path().join("signing-key.pem");
    std::fs::write(&key_path, kms_key(f).await.pem()).unwrap();
    let folder = dir.path().to_str().unwrap().to_owned();
    (dir, folder, key_path.to_str().unwrap().to_owned())
}

/// A case written by the library, verified once through the CLI (which records a
/// signed checkpoint): the starting point of every lab attack.
async fn verified_lab_case(f: &Forensics, name: &str) -> Case {
    let case = open(f, name).await;
    populated(&case, &f.account, 1 << 10).await;
    f.cleanroom(&["verify", "--case", name]).success().stdout_has("VERIFIED");
    case
}

#[tokio::test]
async fn forged_appended_record_with_its_own_object_and_a_checkpoint_signed_by_another_key_in_the_lab() {
    let f = Forensics::seed().await;
    let case = verified_lab_case(&f, "IR-F-FORGE-LAB").await;
    let store = s3_store(&f);
    let (_, first) = forge_object_record_and_checkpoint(store.as_ref(), case.id()).await;
    let attacker = fingerprint_of(&attacker_key());
    let record = format!("custody/{first:010}.json");

    f.cleanroom(&["verify", "--case", "IR-F-FORGE-LAB"])
        .expect_code(1)
        .stdout_has(&record)
        .stdout_has(&format!("not authenticated: signed by key {attacker}"))
        .stdout_has("FAILED")
        .stderr_has("not recorded in custody");
    // Nothing was appended to the forged chain.
    assert_eq!(load_case(store.as_ref(), case.id()).await.unwrap().head().unwrap().seq, first + 1);
    f.cleanroom(&["report", "--case", "IR-F-FORGE-LAB", "--format", "md"])
        .expect_code(1)
        .stderr_has(&format!("custody record {first} of case IR-F-FORGE-LAB is not authenticated"));

    let (_dir, folder, key) = hand_over(&f, "IR-F-FORGE-LAB").await;
    f.cleanroom(&["verify", "--case", "IR-F-FORGE-LAB", "--dir", &folder, "--public-key", &key])
        .expect_code(1)
        .stdout_has(&record)
        .stdout_has(&format!("not authenticated: signed by key {attacker}"));
    f.cleanroom(&["verify", "--case", "IR-F-FORGE-LAB", "--dir", &folder, "--trust-case-key"])
        .expect_code(1)
        .stdout_has("signed by 2 different keys");
}

/// Attack 2: the details (and signature block) of an old checkpoint copied into a new
/// record at the head, as if the chain had just been checkpointed. Returns its seq.
async fn replay_old_checkpoint(store: &dyn ObjectStore, case: &CaseId) -> u64 {
    let loaded = load_case(store, case).await.unwrap();
    let old = loaded.last(Action::CheckpointSigned).expect("a checkpoint to replay").clone();
    assert!(old.seq < loaded.head().unwrap().seq, "the checkpoint is old: records follow it");
    // Its record signature too, copied from the old checkpoint record.
    let sign = Sign::Copied(old.signature.clone());
    forge_record(store, case, Action::CheckpointSigned, vec![], old.details.clone(), sign).await.seq
}

#[tokio::test]
async fn replayed_old_checkpoint_is_found_on_the_fake() {
    let (case, store) = memory_case("IR-F-REPLAY").await;
    case.checkpoint(local_signer().as_ref()).await.unwrap();
    case.seal().await.unwrap();
    let seq = replay_old_checkpoint(store.as_ref(), case.id()).await;
    let loc = format!("custody/{seq:010}.json");
    let online = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert_found(&online, &loc, "an old checkpoint replayed");
    assert_found(&online, &loc, "not authenticated: signature does not verify");

    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), case.id().as_str(), dir.path()).await;
    let offline =
        verify_case(&FolderStore::new(dir.path(), case.id()), case.id(), &local_trust()).await.unwrap();
    assert_found(&offline, &loc, "an old checkpoint replayed");
    assert_found(&offline, &loc, "not authenticated");
}

#[tokio::test]
async fn replayed_old_checkpoint_is_found_in_the_lab() {
    let f = Forensics::seed().await;
    let case = verified_lab_case(&f, "IR-F-REPLAY-LAB").await;
    case.seal().await.unwrap();
    let seq = replay_old_checkpoint(s3_store(&f).as_ref(), case.id()).await;
    let loc = format!("custody/{seq:010}.json");
    f.cleanroom(&["verify", "--case", "IR-F-REPLAY-LAB"])
        .expect_code(1)
        .stdout_has(&loc)
        .stdout_has("an old checkpoint replayed")
        .stdout_has("signature does not verify with the trusted key");
    let (_dir, folder, key) = hand_over(&f, "IR-F-REPLAY-LAB").await;
    f.cleanroom(&["verify", "--case", "IR-F-REPLAY-LAB", "--dir", &folder, "--public-key", &key])
        .expect_code(1)
        .stdout_has("an old checkpoint replayed");
}

/// Attack 3: a new version written over the tail record: edited, hash recomputed,
/// the original signature kept (the attacker cannot make a new one). Returns
/// (key, original subject).
async fn reversion_tail(store: &dyn ObjectStore, case: &CaseId) -> (String, CustodyRecord) {
    let loaded = load_case(store, case).await.unwrap();
    let original = loaded.chain().last().unwrap().clone();
    let mut forged = original.clone();
    forged.subject = "arn:aws:ec2:eu-west-1:111122223333:instance/i-0fedcba9876543210".into();
    let (forged, bytes) = forged.seal();
    assert_ne!(forged.hash, original.hash);
    let key = layout::custody_record(case, original.seq);
    attacker_put(store, &key, bytes).await;
    (key, original)
}

#[track_caller]
fn assert_reversioned_tail_found_online(r: &VerifyReport, key: &str) {
    assert_found(r, key, "has 2 versions: the original (oldest) was checked");
    assert!(
        !r.findings.iter().any(|f| f.location.contains(key) && f.problem.contains("not authenticated")),
        "the original version is the one checked, and it is genuine: {:#?}",
        r.findings
    );
}

#[tokio::test]
async fn re_versioned_tail_record_is_found_and_its_original_is_read_on_the_fake() {
    let (case, store) = memory_case("IR-F-REVERSION").await;
    let (key, original) = reversion_tail(store.as_ref(), case.id()).await;
    assert_reversioned_tail_found_online(
        &verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap(),
        &key,
    );
    // Everything that reads the chain reads the original.
    let loaded = load_case(store.as_ref(), case.id()).await.unwrap();
    assert_eq!(loaded.chain().last().unwrap(), &original);
    let resumed = Case::open_signed(
        store.clone(),
        case.id(),
        actor(&"111122223333".parse().unwrap()),
        tool(),
        "sha256:config".into(),
        Retention::bucket_default(),
        local_signer(),
    )
    .await
    .unwrap();
    assert_eq!(resumed.head().await.unwrap().hash, original.hash, "resume continues from the original");

    // A downloaded folder holds the latest version: the forgery, unauthenticated.
    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), case.id().as_str(), dir.path()).await;
    let offline =
        verify_case(&FolderStore::new(dir.path(), case.id()), case.id(), &local_trust()).await.unwrap();
    assert_found(&offline, &key, "not authenticated: signature does not verify");
}

#[tokio::test]
async fn re_versioned_tail_record_is_found_and_its_original_is_read_in_the_lab() {
    let f = Forensics::seed().await;
    let case = verified_lab_case(&f, "IR-F-REVERSION-LAB").await;
    let (key, original) = reversion_tail(s3_store(&f).as_ref(), case.id()).await;
    f.cleanroom(&["verify", "--case", "IR-F-REVERSION-LAB"])
        .expect_code(1)
        .stdout_has(&key)
        .stdout_has("has 2 versions: the original (oldest) was checked");
    // The chain was extended from the original, not the forgery.
    let loaded = load_case(s3_store(&f).as_ref(), case.id()).await.unwrap();
    let next = loaded.chain().find(|r| r.seq == original.seq + 1).expect("verify recorded its result");
    assert_eq!(next.prev.as_deref(), Some(original.hash.as_str()));
    let (_dir, folder, pem) = hand_over(&f, "IR-F-REVERSION-LAB").await;
    f.cleanroom(&["verify", "--case", "IR-F-REVERSION-LAB", "--dir", &folder, "--public-key", &pem])
        .expect_code(1)
        .stdout_has(&format!("custody/{:010}.json", original.seq))
        .stdout_has("not authenticated");
}

/// Attack 4: a well-formed, unsigned record after the last checkpoint.
async fn plant_after_checkpoint(store: &dyn ObjectStore, case: &CaseId) -> u64 {
    let loaded = load_case(store, case).await.unwrap();
    assert_eq!(loaded.chain().last().unwrap().action, Action::CheckpointSigned);
    forge_record(
        store,
        case,
        Action::Released,
        vec![],
        serde_json::json!({"approved_by": "the owner"}),
        Sign::Not,
    )
    .await
    .seq
}

#[tokio::test]
async fn record_planted_after_the_last_checkpoint_is_unauthenticated_on_the_fake() {
    let (case, store) = memory_case("IR-F-PLANT").await;
    case.checkpoint(local_signer().as_ref()).await.unwrap();
    let seq = plant_after_checkpoint(store.as_ref(), case.id()).await;
    let loc = format!("custody/{seq:010}.json");
    for r in [verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap(), {
        let dir = tempfile::tempdir().unwrap();
        download(store.as_ref(), case.id().as_str(), dir.path()).await;
        verify_case(&FolderStore::new(dir.path(), case.id()), case.id(), &local_trust()).await.unwrap()
    }] {
        assert_found(&r, &loc, "not authenticated: not signed");
        assert_found(
            &r,
            "custody/",
            &format!("records {seq} come after the last valid signature (record {})", seq - 1),
        );
        assert_eq!(r.authenticity.unauthenticated, vec![seq]);
    }
}

#[tokio::test]
async fn record_planted_after_the_last_checkpoint_is_unauthenticated_in_the_lab() {
    let f = Forensics::seed().await;
    let case = verified_lab_case(&f, "IR-F-PLANT-LAB").await;
    let seq = plant_after_checkpoint(s3_store(&f).as_ref(), case.id()).await;
    let loc = format!("custody/{seq:010}.json");
    f.cleanroom(&["verify", "--case", "IR-F-PLANT-LAB"])
        .expect_code(1)
        .stdout_has(&loc)
        .stdout_has("not authenticated: not signed")
        .stdout_has(&format!("come after the last valid signature (record {})", seq - 1));
    let cases = f.cleanroom(&["--json", "cases"]).success().json();
    assert_eq!(cases["cases"][0]["state"], format!("UNAUTHENTICATED (record {seq})"));
    let (_dir, folder, key) = hand_over(&f, "IR-F-PLANT-LAB").await;
    f.cleanroom(&["verify", "--case", "IR-F-PLANT-LAB", "--dir", &folder, "--public-key", &key])
        .expect_code(1)
        .stdout_has("not authenticated: not signed");
}

/// The fake store, but one listing of the custody records does not yet show a record
/// another process is writing: exactly what a verify sees when it lists the chain
/// between that process storing an object and recording it.
struct InFlight {
    inner: Arc<MemoryStore>,
    custody_prefix: String,
    hidden: Mutex<Option<String>>,
}

impl InFlight {
    fn hide_once(&self, key: &str) {
        *self.hidden.lock().unwrap() = Some(key.to_owned());
    }

    fn take_hidden(&self, prefix: &str) -> Option<String> {
        if prefix == self.custody_prefix { self.hidden.lock().unwrap().take() } else { None }
    }
}

#[async_trait::async_trait]
impl ObjectStore for InFlight {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(
        &self,
        r: PutObject,
    ) -> Result<cleanroom::evidence::store::Written, cleanroom::evidence::store::StoreError> {
        self.inner.put(r).await
    }
    async fn create_multipart(
        &self,
        k: &str,
        c: &'static str,
        l: &ObjectLock,
    ) -> Result<String, cleanroom::evidence::store::StoreError> {
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
        self.inner.upload_part(k, u, n, b, s).await
    }
    async fn complete_multipart(
        &self,
        k: &str,
        u: &str,
        p: &[cleanroom::evidence::store::Part],
        a: bool,
    ) -> Result<cleanroom::evidence::store::Written, cleanroom::evidence::store::StoreError> {
        self.inner.complete_multipart(k, u, p, a).await
    }
    async fn abort_multipart(&self, k: &str, u: &str) -> Result<(), cleanroom::evidence::store::StoreError> {
        self.inner.abort_multipart(k, u).await
    }
    async fn set_retention(
        &self,
        k: &str,
        v: Option<&str>,
        m: LockMode,
        t: time::OffsetDateTime,
    ) -> Result<(), cleanroom::evidence::store::StoreError> {
        self.inner.set_retention(k, v, m, t).await
    }
    async fn get(
        &self,
        k: &str,
        v: Option<&str>,
    ) -> Result<cleanroom::evidence::store::ByteChunks, cleanroom::evidence::store::StoreError> {
        self.inner.get(k, v).await
    }
    async fn head(
        &self,
        k: &str,
        v: Option<&str>,
    ) -> Result<Option<cleanroom::evidence::store::ObjectMeta>, cleanroom::evidence::store::StoreError> {
        self.inner.head(k, v).await
    }
    async fn list(&self, p: &str) -> Result<Vec<String>, cleanroom::evidence::store::StoreError> {
        let hidden = self.take_hidden(p);
        Ok(self.inner.list(p).await?.into_iter().filter(|k| Some(k) != hidden.as_ref()).collect())
    }
    async fn list_versions(
        &self,
        p: &str,
    ) -> Result<Vec<cleanroom::evidence::store::Version>, cleanroom::evidence::store::StoreError> {
        let hidden = self.take_hidden(p);
        Ok(self
            .inner
            .list_versions(p)
            .await?
            .into_iter()
            .filter(|v| Some(&v.key) != hidden.as_ref())
            .collect())
    }
}

#[tokio::test]
async fn verify_while_another_process_is_between_storing_and_recording_reports_the_truth() {
    let (case, store) = memory_case("IR-F-INFLIGHT").await;
    let racing = InFlight {
        inner: store.clone(),
        custody_prefix: layout::custody_prefix(case.id()),
        hidden: Mutex::new(None),
    };
    // An evidence object stored, its record not yet visible to the verify's chain read.
    case.store_json(item(&"111122223333".parse().unwrap(), "late.json"), &serde_json::json!({"late": true}))
        .await
        .unwrap();
    racing.hide_once(&layout::custody_record(case.id(), case.head().await.unwrap().seq));
    let r = verify_case(&racing, case.id(), &local_trust()).await.unwrap();
    assert!(r.verified(), "an intact case is not FAILED because a writer was mid-way: {:#?}", r.findings);
    assert!(r.notes.iter().any(|n| n.contains("being recorded by another process")), "{:#?}", r.notes);

    // A manifest being sealed: the new version is up, its manifest_sealed record not yet.
    case.seal().await.unwrap();
    racing.hide_once(&layout::custody_record(case.id(), case.head().await.unwrap().seq));
    let r = verify_case(&racing, case.id(), &local_trust()).await.unwrap();
    assert!(r.verified(), "{:#?}", r.findings);

    // What no record ever accounts for is still reported.
    attacker_put(
        store.as_ref(),
        &layout::evidence(case.id(), &"111122223333".parse().unwrap(), "i-0abc", "stray.json").unwrap(),
        b"{}".to_vec(),
    )
    .await;
    let r = verify_case(&racing, case.id(), &local_trust()).await.unwrap();
    assert_found(&r, "stray.json", "no custody record accounts for this object");
}

#[cfg(unix)]
#[tokio::test]
async fn offline_verify_does_not_follow_symlinks_out_of_the_folder() {
    let (case, store) = memory_case("IR-F-LINK").await;
    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), case.id().as_str(), dir.path()).await;
    let outside = tempfile::tempdir().unwrap();
    // The same bytes, but outside the folder, reached through links: an evidence file
    // and a custody record. Following them would "verify" files of this machine.
    let evidence = case.items().await.into_iter().find(|i| i.name == "console.bin").unwrap();
    let record = layout::custody_record(case.id(), 2);
    for key in [&evidence.s3_key, &record] {
        let rel = layout::relative(case.id(), key).unwrap();
        let inside = dir.path().join(rel);
        let target = outside.path().join(rel.replace('/', "_"));
        std::fs::rename(&inside, &target).unwrap();
        std::os::unix::fs::symlink(&target, &inside).unwrap();
    }
    // A folder link too: keys/ pointing elsewhere.
    let keys = dir.path().join("keys");
    let moved = outside.path().join("keys");
    std::fs::rename(&keys, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &keys).unwrap();

    let r = verify_case(&FolderStore::new(dir.path(), case.id()), case.id(), &local_trust()).await.unwrap();
    assert_found(&r, &evidence.s3_key, "is a symbolic link");
    assert_found(&r, &record, "is a symbolic link");
    assert_found(&r, "keys", "no custody record accounts for this object");
    let check = r.items.iter().find(|i| i.s3_key == evidence.s3_key).unwrap();
    assert_eq!(check.status, "UNREADABLE");
}

/// A folder store that counts the bytes read from one key.
struct Counting {
    inner: FolderStore,
    key: String,
    read: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn has_locks(&self) -> bool {
        false
    }
    async fn put(
        &self,
        r: PutObject,
    ) -> Result<cleanroom::evidence::store::Written, cleanroom::evidence::store::StoreError> {
        self.inner.put(r).await
    }
    async fn create_multipart(
        &self,
        k: &str,
        c: &'static str,
        l: &ObjectLock,
    ) -> Result<String, cleanroom::evidence::store::StoreError> {
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
        self.inner.upload_part(k, u, n, b, s).await
    }
    async fn complete_multipart(
        &self,
        k: &str,
        u: &str,
        p: &[cleanroom::evidence::store::Part],
        a: bool,
    ) -> Result<cleanroom::evidence::store::Written, cleanroom::evidence::store::StoreError> {
        self.inner.complete_multipart(k, u, p, a).await
    }
    async fn abort_multipart(&self, k: &str, u: &str) -> Result<(), cleanroom::evidence::store::StoreError> {
        self.inner.abort_multipart(k, u).await
    }
    async fn set_retention(
        &self,
        k: &str,
        v: Option<&str>,
        m: LockMode,
        t: time::OffsetDateTime,
    ) -> Result<(), cleanroom::evidence::store::StoreError> {
        self.inner.set_retention(k, v, m, t).await
    }
    async fn get(
        &self,
        k: &str,
        v: Option<&str>,
    ) -> Result<cleanroom::evidence::store::ByteChunks, cleanroom::evidence::store::StoreError> {
        use futures::StreamExt;
        let body = self.inner.get(k, v).await?;
        if k != self.key {
            return Ok(body);
        }
        let read = self.read.clone();
        Ok(Box::pin(body.inspect(move |c| {
            if let Ok(c) = c {
                read.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        })))
    }
    async fn head(
        &self,
        k: &str,
        v: Option<&str>,
    ) -> Result<Option<cleanroom::evidence::store::ObjectMeta>, cleanroom::evidence::store::StoreError> {
        self.inner.head(k, v).await
    }
    async fn list(&self, p: &str) -> Result<Vec<String>, cleanroom::evidence::store::StoreError> {
        self.inner.list(p).await
    }
    async fn list_versions(
        &self,
        p: &str,
    ) -> Result<Vec<cleanroom::evidence::store::Version>, cleanroom::evidence::store::StoreError> {
        self.inner.list_versions(p).await
    }
}

#[tokio::test]
async fn custody_object_larger_than_a_record_can_be_is_refused_before_it_is_read_whole() {
    let (case, store) = memory_case("IR-F-HUGE").await;
    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), case.id().as_str(), dir.path()).await;
    let head = case.head().await.unwrap().seq;
    let key = layout::custody_record(case.id(), head + 1);
    // 8 GiB, sparse: no disk is used, but reading it whole would take minutes and
    // (read into memory) the machine's memory.
    let path = dir.path().join(layout::relative(case.id(), &key).unwrap());
    std::fs::File::create(&path).unwrap().set_len(8 << 30).unwrap();
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting =
        Counting { inner: FolderStore::new(dir.path(), case.id()), key: key.clone(), read: read.clone() };
    let r = verify_case(&counting, case.id(), &local_trust()).await.unwrap();
    assert_found(&r, &key, "more than such an object can be: refused before reading it whole");
    let max = cleanroom::evidence::custody::MAX_RECORD_BYTES as u64;
    let bytes = read.load(std::sync::atomic::Ordering::Relaxed);
    assert!(bytes <= 2 * max, "read {bytes} bytes of an 8 GiB record, at most {} allowed", 2 * max);
}

#[tokio::test]
async fn an_unsigned_writer_refuses_to_extend_a_signed_chain() {
    let (case, store) = memory_case("IR-F-UNSIGNED").await;
    let err =
        Case::open(store.clone(), case.id(), actor(&"111122223333".parse().unwrap()), tool(), "x".into())
            .await
            .unwrap_err();
    assert!(matches!(err, EvidenceError::SigningKeyRequired { seq: 1, .. }), "{err}");
    assert_eq!(cleanroom::error::Error::from(err).kind(), cleanroom::error::ExitKind::Refused);
}

#[tokio::test]
async fn verify_without_a_signing_key_says_integrity_only_and_exits_1() {
    let mut f = Forensics::seed().await;
    f.config.forensics.signing_key_arn = None;
    f.save();
    let case = Case::open_with(
        s3_store(&f),
        &case_id("IR-F-NOKEY"),
        actor(&f.account),
        tool(),
        "sha256:config".into(),
        Retention::explicit(LockMode::Compliance, 1),
    )
    .await
    .unwrap();
    populated(&case, &f.account, 1 << 10).await;
    f.cleanroom(&["verify", "--case", "IR-F-NOKEY"])
        .expect_code(1)
        .stdout_has("NOT AUTHENTICATED (integrity only)")
        .stdout_has("forensics.signing_key_arn")
        .stderr_has("NO SIGNING KEY CONFIGURED");
    let cases = f.cleanroom(&["--json", "cases"]).success().json();
    assert!(cases["cases"][0]["state"].as_str().unwrap().starts_with("integrity only"), "{cases}");
}

/// Values an attacker controls, with terminal escapes, a bidi override, HTML, Markdown
/// and shell syntax.
const HOSTILE_ID: &str = "evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}exe.txt";
const HOSTILE_SOURCE: &str = "<img src=x onerror=alert(1)>`$(reboot)`|*x*";

#[tokio::test]
async fn hostile_values_are_inert_on_the_terminal_and_in_the_reports() {
    let f = Forensics::seed().await;
    let case = open(&f, "IR-F-HOSTILE").await;
    let mut it = item(&f.account, "hostile.json");
    it.id = HOSTILE_ID.into();
    it.source = HOSTILE_SOURCE.into();
    case.store_json(it, &serde_json::json!({"x": 1})).await.unwrap();

    let raw_control = |s: &str| s.chars().any(|c| c == '\u{1b}' || c == '\u{7}' || c == '\u{202e}');
    let verify = f.cleanroom(&["verify", "--case", "IR-F-HOSTILE"]);
    verify.success().stdout_has("evil\\u{1b}]0;pwned\\u{7}").stdout_has("\\u{202e}exe.txt");
    assert!(!raw_control(&verify.stdout()), "{:?}", verify.stdout());
    let json = f.cleanroom(&["--json", "verify", "--case", "IR-F-HOSTILE"]);
    assert!(!raw_control(&json.stdout()), "{:?}", json.stdout());
    assert!(json.json()["items"].as_array().unwrap().iter().any(|i| i["id"] == HOSTILE_ID), "same data");

    let md = f.cleanroom(&["report", "--case", "IR-F-HOSTILE", "--format", "md"]);
    let text = md.success().stdout();
    assert!(!raw_control(&text));
    assert!(!text.contains("<img") && text.contains("&lt;img src=x onerror=alert(1)&gt;"), "{text}");
    assert!(text.contains("\\`$(reboot)\\`\\|\\*x\\*"), "backticks, pipes and emphasis escaped: {text}");
    let html = f.cleanroom(&["report", "--case", "IR-F-HOSTILE", "--format", "html"]);
    let text = html.success().stdout();
    assert!(!raw_control(&text) && !text.contains("<img"), "{text}");
    let json = f.cleanroom(&["report", "--case", "IR-F-HOSTILE", "--format", "json"]);
    assert!(!raw_control(&json.stdout()));
    f.cleanroom(&["cases"]).success();
}
