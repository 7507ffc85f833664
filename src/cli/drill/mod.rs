//! `cleanroom drill`: rehearses the response to an incident of the seeds against the
//! local lab. It starts the lab, seeds a correct forensics account and the incident,
//! then runs the real commands, as a responder would type them, against it: each step
//! is this same binary in a child process with the lab's environment, so the rehearsal
//! exercises exactly what a real response runs.

mod outcome;
mod steps;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, ExitKind, Result};
use crate::ids::{AccountId, BucketName, CaseId, Region};
use crate::lab::{Lab, LabOptions, scenario, seed};

use self::steps::{Step, Work};
use super::Context;

/// The lab region of the drill.
const REGION: &str = "eu-west-1";
/// The drill's forensics and member accounts (the seeds' story: one victim account).
const FORENSICS_ACCOUNT: &str = "111122223333";
const MEMBER_ACCOUNT: &str = "444455556666";
/// Snapshots stay pending for this many polls, so waiting is rehearsed too.
const SNAPSHOT_POLLS: u32 = 2;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Scenario {
    /// Leaked developer key, attacker-launched instance mining cryptocurrency.
    Cryptomining,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The incident to rehearse.
    #[arg(long, value_enum, default_value = "cryptomining")]
    pub scenario: Scenario,
    /// Where the drill writes its configuration, logs and the case report.
    #[arg(long, default_value = "drill-out")]
    pub out: PathBuf,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let started = Instant::now();
    let out = args.out;
    std::fs::create_dir_all(&out)
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", out.display())))?;
    let out = out.canonicalize().map_err(|e| Error::failed(format!("{}: {e}", out.display())))?;
    let region: Region = REGION.parse()?;
    let forensics: AccountId = FORENSICS_ACCOUNT.parse()?;
    let member: AccountId = MEMBER_ACCOUNT.parse()?;
    let case: CaseId = format!("DRILL-{}", utc_stamp()).parse()?;

    ctx.reporter.step("lab", "starting the local lab (moto with cleanroom's extensions)");
    let lab = tokio::task::spawn_blocking(|| Lab::start(&LabOptions { snapshot_polls: SNAPSHOT_POLLS }))
        .await
        .map_err(|e| Error::failed(format!("lab start panicked: {e}")))?
        .map_err(Error::failed)?;
    ctx.reporter.done("lab", &format!("listening on {}", lab.url()));

    ctx.reporter.step("seed", "forensics account and the cryptomining incident");
    let bucket: BucketName = "drill-forensics-evidence".parse()?;
    let setup =
        seed::forensics_account(&lab, &forensics, &region, &bucket, 1).await.map_err(Error::failed)?;
    let config_path = out.join("cleanroom.toml");
    std::fs::write(&config_path, seed::config_toml(&setup.config))
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", config_path.display())))?;
    // The signing key's public key, as the third party of step 8 gets it: out of band
    // (KMS GetPublicKey), never from the case folder it verifies.
    let key_path = out.join("signing-key.pem");
    let signing_arn = setup
        .config
        .forensics
        .signing_key_arn
        .clone()
        .ok_or_else(|| Error::failed("the drill's forensics account has no signing key"))?;
    let kms = crate::aws::kms::KmsSigner::new(lab.clients(&forensics, &region).kms, signing_arn.clone());
    let der = crate::evidence::checkpoint::Signer::public_key_der(&kms).await?;
    let signing_key = crate::evidence::signing::TrustedKey::from_bytes(
        &der,
        crate::evidence::signing::KeySource::Configured { key_id: signing_arn.to_string() },
    )
    .map_err(Error::failed)?;
    std::fs::write(&key_path, signing_key.pem())
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", key_path.display())))?;
    let suspect = match args.scenario {
        Scenario::Cryptomining => {
            scenario::cryptomining(&lab, &member, &region, &forensics, &out).await.map_err(Error::failed)?
        }
    };
    ctx.reporter.done(
        "seed",
        &format!(
            "suspect {} in account {} (miner in UserData and on its disk, cron job, backdoor key, a deleted dropper)",
            suspect.instance, member
        ),
    );

    let case_s = case.to_string();
    let report_file = |format: &str| out.join(format!("report.{format}")).to_string_lossy().into_owned();
    let report = |format: &str| {
        Step::run(
            match format {
                "html" => "report for legal",
                "md" => "report for the case file",
                _ => "report for tools",
            },
            &["report", "--case", &case_s, "--format", format, "--output", &report_file(format)],
        )
    };
    let folder = out.join(format!("{case}-download"));
    let arn = suspect.arn();
    let steps = [
        Step::run(
            "preflight: can cleanroom do its job in both accounts?",
            &["preflight", "--account", member.as_str()],
        ),
        Step::expecting(
            "acquire: capture, protect, snapshot, isolate, hand off, examine in the clean room, seal",
            &["acquire", &arn, "--case", &case_s],
            0,
            &["xmrig", "authorized_key"],
        ),
        Step::expecting(
            "verify the evidence (and sign a checkpoint)",
            &["verify", "--case", &case_s],
            0,
            &["VERIFIED"],
        ),
        report("html"),
        report("md"),
        report("json"),
        Step::run("verify again: the checkpoint and the reports", &["verify", "--case", &case_s]),
        Step {
            title: "download the case as a third party would (aws s3 cp --recursive)".into(),
            work: Work::Download { into: folder.clone() },
        },
        Step::expecting(
            "verify the downloaded copy offline, with the public key given out of band",
            &[
                "verify",
                "--case",
                &case_s,
                "--dir",
                &folder.to_string_lossy(),
                "--public-key",
                &key_path.to_string_lossy(),
            ],
            0,
            &["VERIFIED"],
        ),
        Step::expecting(
            "teardown: remove the clean room (the evidence stays)",
            &["teardown", "--case", &case_s],
            0,
            &["removed"],
        ),
        Step::expecting(
            "release without approval is refused (the instance stays isolated)",
            &["release", &arn, "--case", &case_s],
            2,
            &["--yes"],
        ),
        Step::run("list cases", &["cases"]),
    ];

    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("cannot find this binary: {e}")))?;
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let step_started = Instant::now();
        let outcome = match &step.work {
            Work::Run { args, expect, shows } => {
                println!(
                    "\n## {n}. {}\n$ cleanroom --config {} {}",
                    step.title,
                    display(&config_path),
                    args.join(" ")
                );
                let log = out.join(format!("{n:02}-{}.log", args[0]));
                steps::run_cleanroom(&exe, &config_path, (args, *expect, shows), &lab, REGION, &log)
            }
            Work::Download { into } => {
                println!("\n## {n}. {}", step.title);
                let clients = lab.clients(&forensics, &region);
                steps::download_case(&clients.s3, &bucket, &case, into).await.map(|(count, bytes)| {
                    println!(
                        "{count} objects ({}) of s3://{bucket}/cases/{case}/ saved in {}",
                        crate::report::timeline::human_size(bytes),
                        display(into)
                    );
                })
            }
        };
        println!("({:.1} s)", step_started.elapsed().as_secs_f64());
        if let Err(problem) = outcome {
            println!("!! step failed: {problem}");
            failures.push(format!("{} ({problem})", step.title));
        }
    }

    // The findings the incident planted must reach the report, each with its digest.
    let expected = outcome::CRYPTOMINING;
    let report_json = std::fs::read(report_file("json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let html = std::fs::read_to_string(report_file("html")).unwrap_or_default();
    match &report_json {
        Some(r) => {
            for problem in outcome::missing_findings(r, &html, expected) {
                println!("!! finding missing: {problem}");
                failures.push(format!("finding ({problem})"));
            }
            println!(
                "\n## summary\n{}",
                outcome::summary(r, &report_file("html"), &display(&key_path), expected)
            );
        }
        None => {
            failures.push("the JSON report could not be read: nothing to check the findings against".into())
        }
    }

    println!(
        "## drill {case} finished in {:.1} s: {} of {} steps succeeded\nconfiguration, logs and reports: {}",
        started.elapsed().as_secs_f64(),
        steps.len() - failures.iter().filter(|f| !f.starts_with("finding")).count().min(steps.len()),
        steps.len(),
        display(&out)
    );
    if failures.is_empty() {
        Ok(ExitKind::Done)
    } else {
        Err(Error::failed(format!("drill failed: {}", failures.join("; "))))
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// `YYYYMMDD-HHMMSS` in UTC, for case ids.
fn utc_stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    now.format(&format).unwrap_or_else(|_| "0".into())
}
