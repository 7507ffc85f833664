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
        cleanroom::verify::verify_case(s3_store(&f).as_ref(), &case_id("IR-LAB-RACE"), &Default::default())
            .await
            .unwrap();
    assert!(report.ok(), "{:#?}", report.findings);
    assert_eq!(report.custody.records, 21);
}

#[tokio::test]
async fn retention_cannot_be_removed_in_the_lab_bucket() {
    // The COMPLIANCE lab bucket refuses what the tamper suite must therefore model
    // with a GOVERNANCE bucket or the fake: deleting a locked custody record.
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
    let s3 = f.clients().s3;
    let del = s3
        .delete_object()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(&receipt.s3_key)
        .version_id(receipt.version_id.clone().unwrap())
        .send()
        .await;
    assert!(del.is_err(), "a COMPLIANCE-locked custody record must not be deletable");
}
