//! Custody benchmark (run by `scripts/bench-custody`): what signing every record costs,
//! measured in the same run against the same lab, so the machine's speed cancels out.
//!
//! 1. appending a record, unsigned vs signed with the KMS key (one Sign call each)
//! 2. a KMS Sign call alone, and checking one signature locally
//! 3. opening a case of N signed records (every signature checked on catch-up)
//! 4. verifying a case of N signed records (`verify_case`, pinned key)
//!
//! Prints numbers and ratios; it checks only that what it timed worked (a benchmark,
//! not a test). N: `BENCH_RECORDS` (default 200).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cleanroom::aws::kms::KmsSigner;
use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::checkpoint::Signer;
use cleanroom::evidence::signing::{KeySource, Signed, TrustedKey};
use cleanroom::evidence::store::ObjectStore;
use cleanroom::evidence::{Action, Actor, Case, CustodyEvent, LockMode, Retention, ToolInfo};
use cleanroom::ids::{AccountId, BucketName, CaseId, Region};
use cleanroom::verify::{Trust, VerifyOptions, load_case, verify_case};

fn main() {
    // SAFETY: single-threaded here, before any runtime starts.
    unsafe { std::env::set_var("AWS_EC2_METADATA_DISABLED", "true") };
    let n: u64 = std::env::var("BENCH_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(n));
}

fn actor(account: &AccountId) -> Actor {
    Actor {
        examiner: "bench".into(),
        principal_arn: format!("arn:aws:sts::{account}:assumed-role/CleanroomForensics/bench"),
        account: account.clone(),
        session_name: "cleanroom-bench".into(),
    }
}

fn tool() -> ToolInfo {
    ToolInfo { name: "cleanroom".into(), version: "bench".into(), binary_sha256: "sha256:00".into() }
}

fn event(i: u64) -> CustodyEvent {
    CustodyEvent {
        action: Action::Verified,
        subject: format!("bench-{i}"),
        evidence: vec![],
        aws_request_ids: vec![format!("req-{i}")],
        details: serde_json::json!({"i": i, "note": "a record of typical size, a few hundred bytes of details"}),
    }
}

async fn append(case: &Case, n: u64) -> Duration {
    let started = Instant::now();
    for i in 0..n {
        case.record(event(i)).await.unwrap();
    }
    started.elapsed()
}

fn per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1000.0 / n as f64
}

async fn run(n: u64) {
    let lab = cleanroom::lab::Lab::start(&Default::default()).expect("the lab starts");
    let account: AccountId = "398888888888".parse().unwrap();
    let region: Region = "eu-west-1".parse().unwrap();
    let bucket: BucketName = format!("bench-custody-{}", std::process::id()).parse().unwrap();
    let seeded =
        cleanroom::lab::seed::forensics_account(&lab, &account, &region, &bucket, 1).await.expect("seed");
    let clients = lab.clients(&account, &region);
    let store: Arc<dyn ObjectStore> = Arc::new(S3Store::new(clients.s3.clone(), bucket));
    let arn = seeded.config.forensics.signing_key_arn.clone().expect("a signing key");
    let signer: Arc<dyn Signer> = Arc::new(KmsSigner::new(clients.kms.clone(), arn.clone()));
    let retention = Retention::explicit(LockMode::Compliance, 1);
    let open = |name: &str, signed: bool| {
        let (store, signer, retention) = (store.clone(), signer.clone(), retention.clone());
        let case: CaseId = name.parse().unwrap();
        let actor = actor(&account);
        async move {
            if signed {
                Case::open_signed(store, &case, actor, tool(), "sha256:config".into(), retention, signer)
                    .await
            } else {
                Case::open_with(store, &case, actor, tool(), "sha256:config".into(), retention).await
            }
            .unwrap()
        }
    };

    // Warm-up: connections, moto's first writes and first Sign.
    let warm = open("BENCH-WARM", true).await;
    append(&warm, 5).await;

    let unsigned = open("BENCH-UNSIGNED", false).await;
    let t_unsigned = append(&unsigned, n).await;
    let signed = open("BENCH-SIGNED", true).await;
    let t_signed = append(&signed, n).await;

    let message = Signed::record(&"BENCH-SIGNED".parse().unwrap(), 1, "sha256:00").message();
    let started = Instant::now();
    for _ in 0..n {
        signer.sign_message(&message).await.unwrap();
    }
    let t_sign = started.elapsed();

    let der = signer.public_key_der().await.unwrap();
    let key = TrustedKey::from_bytes(&der, KeySource::Configured { key_id: arn.to_string() }).unwrap();
    let case_id: CaseId = "BENCH-SIGNED".parse().unwrap();
    let loaded = load_case(store.as_ref(), &case_id).await.unwrap();
    let records = loaded.records.len() as u64;
    let started = Instant::now();
    let failed = loaded.unauthenticated(&key);
    let t_check = started.elapsed();
    assert!(failed.is_empty(), "{failed:?}");

    // Alternating, best of three: other work on the machine skews single runs.
    let (mut t_open_signed, mut t_open_unsigned) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        drop(open("BENCH-SIGNED", true).await);
        t_open_signed = t_open_signed.min(started.elapsed());
        let started = Instant::now();
        drop(open("BENCH-UNSIGNED", false).await);
        t_open_unsigned = t_open_unsigned.min(started.elapsed());
    }

    let started = Instant::now();
    let report = verify_case(store.as_ref(), &case_id, &VerifyOptions { trust: Trust::Key(key.clone()) })
        .await
        .unwrap();
    let t_verify = started.elapsed();
    assert!(report.verified(), "{:#?}", report.findings);
    let started = Instant::now();
    let unsigned_id: CaseId = "BENCH-UNSIGNED".parse().unwrap();
    let integrity = verify_case(store.as_ref(), &unsigned_id, &VerifyOptions::default()).await.unwrap();
    let t_verify_unsigned = started.elapsed();
    assert!(integrity.intact(), "{:#?}", integrity.findings);

    println!("custody benchmark, {n} records per case, lab on loopback (profile: {})", profile());
    println!(
        "append unsigned          {:8.2} ms/record   (PUT If-None-Match + read-back GET)",
        per(t_unsigned, n)
    );
    println!(
        "append signed            {:8.2} ms/record   ratio signed/unsigned {:.2}",
        per(t_signed, n),
        t_signed.as_secs_f64() / t_unsigned.as_secs_f64()
    );
    println!("KMS Sign alone           {:8.2} ms/call", per(t_sign, n));
    println!("signature check, local   {:8.3} ms/record   ({records} records)", per(t_check, records));
    println!(
        "open (catch up) signed   {:8.2} ms/record   unsigned {:.2} ms/record   ratio {:.2}",
        per(t_open_signed, records),
        per(t_open_unsigned, records),
        t_open_signed.as_secs_f64() / t_open_unsigned.as_secs_f64()
    );
    println!(
        "verify signed case       {:8.1} ms total    integrity-only verify of the unsigned case {:.1} ms   ratio {:.2}",
        t_verify.as_secs_f64() * 1000.0,
        t_verify_unsigned.as_secs_f64() * 1000.0,
        t_verify.as_secs_f64() / t_verify_unsigned.as_secs_f64()
    );
    drop(lab);
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) { "dev" } else { "release" }
}
