//! The tamper suite: each scenario changes a verified case the way an attacker (or a
//! careless admin) could, and `verify` must find it and name what and where.
//!
//! What each scenario models:
//! - lab, GOVERNANCE bucket (real S3 API, the lab enforces locks; governance can be
//!   bypassed by a privileged principal, as in AWS): a new version over an evidence
//!   object, an edited custody record written as a new version, a custody record
//!   deleted (bypass), a manifest replaced, a retention shortened (bypass).
//! - offline folder (a downloaded case handed to someone else): bytes flipped in place,
//!   a record inserted (files renumbered), two records swapped.
//! - fake store (what COMPLIANCE forbids on AWS, i.e. a compromised or non-AWS store):
//!   retention removed, every version of a record deleted.

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
use cleanroom::evidence::store::get_all;
use cleanroom::fake::store::MemoryStore;
use cleanroom::verify::verify_case;

use super::*;

/// A GOVERNANCE Object Lock bucket in the forensics account (tampering needs bypass).
async fn governance_bucket(f: &Forensics) -> cleanroom::ids::BucketName {
    let bucket = crate::support::unique_bucket("governance");
    let s3 = f.clients().s3;
    s3.create_bucket()
        .bucket(bucket.as_str())
        .object_lock_enabled_for_bucket(true)
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(crate::support::REGION.into())
                .build(),
        )
        .send()
        .await
        .unwrap();
    bucket
}

async fn governance_case(f: &mut Forensics, name: &str) -> (Case, Arc<dyn ObjectStore>) {
    let bucket = governance_bucket(f).await;
    f.config.forensics.evidence_bucket = bucket.clone();
    f.save();
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(f.clients().s3, bucket));
    let case = Case::open_signed(
        store.clone(),
        &case_id(name),
        actor(&f.account),
        tool(),
        "sha256:config".into(),
        Retention::explicit(LockMode::Governance, 1),
        kms_signer(f),
    )
    .await
    .unwrap();
    populated(&case, &f.account, 20 << 20).await;
    let clean = verify_case(store.as_ref(), &case_id(name), &kms_trust(f).await).await.unwrap();
    assert!(clean.verified(), "before tampering the case verifies: {:#?}", clean.findings);
    (case, store)
}

#[track_caller]
pub fn assert_found(report: &cleanroom::verify::VerifyReport, location_has: &str, problem_has: &str) {
    assert!(!report.intact() && !report.verified(), "verify must fail");
    assert!(
        report.findings.iter().any(|f| f.location.contains(location_has) && f.problem.contains(problem_has)),
        "no finding at {location_has:?} saying {problem_has:?}: {:#?}",
        report.findings
    );
}

#[tokio::test]
async fn new_version_of_an_evidence_object_with_one_byte_flipped_is_found() {
    let mut f = Forensics::seed().await;
    let (case, store) = governance_case(&mut f, "IR-T-FLIP").await;
    let item = case.items().await.into_iter().find(|i| i.name == "console.bin").unwrap();
    let mut bytes = get_all(store.as_ref(), &item.s3_key, None, 64 << 20).await.unwrap().to_vec();
    bytes[12345] ^= 0x01;
    f.clients()
        .s3
        .put_object()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(&item.s3_key)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
    let report = verify_case(store.as_ref(), case.id(), &kms_trust(&f).await).await.unwrap();
    assert_found(&report, &item.s3_key, "has 2 versions");
    // Through the CLI too: exit 1, and the table names the key.
    f.cleanroom(&["verify", "--case", "IR-T-FLIP"])
        .expect_code(1)
        .stdout_has("has 2 versions")
        .stdout_has("FAILED");
}

#[tokio::test]
async fn edited_custody_record_is_found() {
    let mut f = Forensics::seed().await;
    let (case, store) = governance_case(&mut f, "IR-T-EDIT").await;
    let key = "cases/IR-T-EDIT/custody/0000000003.json";
    let text =
        String::from_utf8(get_all(store.as_ref(), key, None, 1 << 20).await.unwrap().to_vec()).unwrap();
    let edited = text.replacen("Ada Examiner", "Eve Examiner", 1);
    assert_ne!(text, edited);
    f.clients()
        .s3
        .put_object()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(key)
        .body(ByteStream::from(edited.into_bytes()))
        .send()
        .await
        .unwrap();
    // Online the original version is read (and the new one reported); a downloaded
    // copy holds the edited one, whose content no longer matches its hash.
    let report = verify_case(store.as_ref(), case.id(), &kms_trust(&f).await).await.unwrap();
    assert_found(&report, key, "has 2 versions");
    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), "IR-T-EDIT", dir.path()).await;
    let folder = cleanroom::evidence::folder::FolderStore::new(dir.path(), case.id());
    let offline = verify_case(&folder, case.id(), &kms_trust(&f).await).await.unwrap();
    assert_found(&offline, key, "does not match its hash");
}

#[tokio::test]
async fn deleted_custody_record_is_found() {
    let mut f = Forensics::seed().await;
    let (case, store) = governance_case(&mut f, "IR-T-DEL").await;
    let key = "cases/IR-T-DEL/custody/0000000004.json";
    let meta = store.head(key, None).await.unwrap().unwrap();
    f.clients()
        .s3
        .delete_object()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(key)
        .version_id(meta.version_id.unwrap())
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
    let report = verify_case(store.as_ref(), case.id(), &kms_trust(&f).await).await.unwrap();
    assert_found(&report, key, "missing");
}

#[tokio::test]
async fn replaced_manifest_is_found() {
    let mut f = Forensics::seed().await;
    let (case, store) = governance_case(&mut f, "IR-T-MAN").await;
    let key = "cases/IR-T-MAN/manifest.json";
    let text =
        String::from_utf8(get_all(store.as_ref(), key, None, 1 << 20).await.unwrap().to_vec()).unwrap();
    let forged = text.replacen("sha256:", "sha256:0", 1);
    f.clients()
        .s3
        .put_object()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(key)
        .body(ByteStream::from(forged.into_bytes()))
        .send()
        .await
        .unwrap();
    let report = verify_case(store.as_ref(), case.id(), &kms_trust(&f).await).await.unwrap();
    assert_found(&report, key, "is not the one sealed");
}

#[tokio::test]
async fn shortened_retention_is_found() {
    let mut f = Forensics::seed().await;
    let (case, store) = governance_case(&mut f, "IR-T-RET").await;
    let item = case.items().await.into_iter().find(|i| i.name == "userdata.json").unwrap();
    let soon =
        aws_sdk_s3::primitives::DateTime::from_secs(time::OffsetDateTime::now_utc().unix_timestamp() + 3600);
    f.clients()
        .s3
        .put_object_retention()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(&item.s3_key)
        .version_id(item.version_id.clone().unwrap())
        .retention(
            ObjectLockRetention::builder()
                .mode(ObjectLockRetentionMode::Governance)
                .retain_until_date(soon)
                .build(),
        )
        .bypass_governance_retention(true)
        .send()
        .await
        .unwrap();
    let report = verify_case(store.as_ref(), case.id(), &kms_trust(&f).await).await.unwrap();
    assert_found(&report, &item.s3_key, "shortened");
}

/// Copies a case out of a store into a folder, as `aws s3 cp --recursive` would.
pub async fn download(store: &dyn ObjectStore, case: &str, dir: &Path) {
    let prefix = format!("cases/{case}/");
    for key in store.list(&prefix).await.unwrap() {
        let rel = key.strip_prefix(&prefix).unwrap();
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, get_all(store, &key, None, 1 << 30).await.unwrap()).unwrap();
    }
}

pub async fn memory_case(name: &str) -> (Case, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::with_default_lock("tamper", LockMode::Compliance, 30));
    let account: AccountId = "111122223333".parse().unwrap();
    let case = Case::open_signed(
        store.clone(),
        &case_id(name),
        actor(&account),
        tool(),
        "sha256:config".into(),
        Retention::bucket_default(),
        local_signer(),
    )
    .await
    .unwrap();
    populated(&case, &account, 20 << 20).await;
    (case, store)
}

#[tokio::test]
async fn offline_folder_flipped_byte_inserted_and_swapped_records_are_found() {
    let (case, store) = memory_case("IR-T-DIR").await;
    let opts = local_trust();
    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), "IR-T-DIR", dir.path()).await;
    let folder = cleanroom::evidence::folder::FolderStore::new(dir.path(), case.id());
    let clean = verify_case(&folder, case.id(), &opts).await.unwrap();
    assert!(clean.verified(), "{:#?}", clean.findings);
    assert!(!clean.locks_checked && clean.notes.iter().any(|n| n.contains("not checked")));

    // Flipped byte in place.
    let item = case.items().await.into_iter().find(|i| i.name == "console.bin").unwrap();
    let rel = item.s3_key.strip_prefix("cases/IR-T-DIR/").unwrap();
    let mut bytes = std::fs::read(dir.path().join(rel)).unwrap();
    bytes[777] ^= 0x80;
    std::fs::write(dir.path().join(rel), &bytes).unwrap();
    let r = verify_case(&folder, case.id(), &opts).await.unwrap();
    assert_found(&r, &item.s3_key, "sha256 is");
    bytes[777] ^= 0x80;
    std::fs::write(dir.path().join(rel), &bytes).unwrap();

    // Swapped: records 3 and 4 exchange places.
    let custody = dir.path().join("custody");
    let (a, b) = (custody.join("0000000003.json"), custody.join("0000000004.json"));
    let (ta, tb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, &tb).unwrap();
    std::fs::write(&b, &ta).unwrap();
    let r = verify_case(&folder, case.id(), &opts).await.unwrap();
    assert_found(&r, "custody/0000000003.json", "says seq 4");
    assert_found(&r, "custody/0000000004.json", "says seq 3");
    std::fs::write(&a, &ta).unwrap();
    std::fs::write(&b, &tb).unwrap();
    assert!(verify_case(&folder, case.id(), &opts).await.unwrap().verified());

    // Inserted: a forged record at 3, later ones renumbered by file name.
    let mut files: Vec<_> = std::fs::read_dir(&custody).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for p in files.iter().rev().filter(|p| p.file_name().unwrap().to_str().unwrap() >= "0000000003.json") {
        let n: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        std::fs::rename(p, custody.join(format!("{:010}.json", n + 1))).unwrap();
    }
    // A well-formed forgery: its own hash recomputed, prev linking to record 2.
    let original: cleanroom::evidence::CustodyRecord =
        serde_json::from_slice(&std::fs::read(custody.join("0000000004.json")).unwrap()).unwrap();
    let mut forged = original.clone();
    forged.subject = "forged event".into();
    let (_, forged) = forged.seal();
    std::fs::write(custody.join("0000000003.json"), forged).unwrap();
    let r = verify_case(&folder, case.id(), &opts).await.unwrap();
    assert_found(&r, "custody/0000000004.json", "says seq 3");
    assert_found(&r, "custody/0000000004.json", "prev");
}

#[tokio::test]
async fn removed_retention_and_fully_deleted_record_are_found_in_a_store_without_compliance() {
    let (case, store) = memory_case("IR-T-FAKE").await;
    let item = case.items().await.into_iter().find(|i| i.name == "console.bin").unwrap();
    store.tamper_remove_retention(&item.s3_key);
    store.tamper_delete("cases/IR-T-FAKE/custody/0000000002.json");
    let r = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert_found(&r, &item.s3_key, "no Object Lock retention");
    assert_found(&r, "custody/0000000002.json", "missing");
}

#[tokio::test]
async fn truncated_chain_tail_is_found_by_objects_no_record_accounts_for() {
    let (case, store) = memory_case("IR-T-TRUNC").await;
    case.checkpoint(local_signer().as_ref()).await.unwrap();
    let head = case.head().await.unwrap();
    // Rewrite history: drop the last two records (checkpoint and seal). Every record
    // left is genuinely signed: truncation is found by what the tail leaves behind.
    store.tamper_delete(&format!("cases/IR-T-TRUNC/custody/{:010}.json", head.seq));
    store.tamper_delete(&format!("cases/IR-T-TRUNC/custody/{:010}.json", head.seq - 1));
    let r = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert_found(&r, "manifest.json", "no manifest_sealed record seals this version");
}

#[tokio::test]
async fn checkpoint_signature_verifies_with_the_trusted_key_and_fails_with_another() {
    let (case, store) = memory_case("IR-T-SIG").await;
    case.checkpoint(local_signer().as_ref()).await.unwrap();
    let r = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert!(r.verified(), "{:#?}", r.findings);
    assert_eq!(r.custody.checkpoints_verified, 1);
    let other = LocalSigner::from_seed(9).public_key_pem();
    let other = VerifyOptions {
        trust: Trust::Key(
            TrustedKey::from_bytes(other.as_bytes(), KeySource::File { path: "other.pem".into() }).unwrap(),
        ),
    };
    let r = verify_case(store.as_ref(), case.id(), &other).await.unwrap();
    assert_found(&r, "custody/", "not the trusted key");
    assert!(r.verdict().contains("no record carries a valid signature"), "{}", r.verdict());
    assert_eq!(r.custody.checkpoints_verified, 0);
}

#[tokio::test]
async fn replaced_case_file_is_found() {
    let (case, store) = memory_case("IR-T-CASEFILE").await;
    let key = "cases/IR-T-CASEFILE/case.json";
    let text = String::from_utf8(store.read(key).unwrap()).unwrap().replace("Ada Examiner", "Eve Examiner");
    store.tamper_new_version(key, text.into_bytes());
    let r = verify_case(store.as_ref(), case.id(), &local_trust()).await.unwrap();
    assert_found(&r, key, "has 2 versions");
    // A downloaded copy holds the replacement: it is not the case.json the chain names.
    let dir = tempfile::tempdir().unwrap();
    download(store.as_ref(), "IR-T-CASEFILE", dir.path()).await;
    let folder = cleanroom::evidence::folder::FolderStore::new(dir.path(), case.id());
    let r = verify_case(&folder, case.id(), &local_trust()).await.unwrap();
    assert_found(&r, key, "the case_opened record says");
}
