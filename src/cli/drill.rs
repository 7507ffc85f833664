//! `cleanroom drill`: rehearses the response to an incident of the seeds against the
//! local lab. It starts the lab, seeds a correct forensics account and the incident,
//! then runs the real commands, as a responder would type them, against it: each step
//! is this same binary in a child process with the lab's environment, so the rehearsal
//! exercises exactly what a real response runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::error::{Error, ExitKind, Result};
use crate::ids::{AccountId, BucketName, CaseId, Region};
use crate::lab::{Lab, LabOptions, scenario, seed};

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

struct Step {
    title: &'static str,
    work: Work,
}

enum Work {
    /// `cleanroom <args>` as a child process with the lab's environment.
    Run(Vec<String>),
    /// Download the case folder from the evidence bucket.
    Download,
}

impl Step {
    fn run(title: &'static str, args: &[&str]) -> Self {
        Self { title, work: Work::Run(args.iter().map(|a| a.to_string()).collect()) }
    }
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
            "suspect {} in account {} (miner in UserData, cron job, backdoor key)",
            suspect.instance, member
        ),
    );

    let case_s = case.to_string();
    let report = |format: &str| {
        let file = out.join(format!("report.{format}")).to_string_lossy().into_owned();
        Step::run(
            if format == "html" { "report for legal" } else { "report for the case file" },
            &["report", "--case", &case_s, "--format", format, "--output", &file],
        )
    };
    let folder = out.join(format!("{case}-download"));
    let steps = [
        Step::run("preflight", &["preflight", "--account", member.as_str()]),
        Step::run("contain the suspect", &["isolate", &suspect.arn(), "--case", &case_s]),
        Step::run("verify the evidence (and sign a checkpoint)", &["verify", "--case", &case_s]),
        report("html"),
        report("md"),
        Step::run("verify again: the checkpoint and the reports", &["verify", "--case", &case_s]),
        Step {
            title: "download the case as a third party would (aws s3 cp --recursive)",
            work: Work::Download,
        },
        Step::run(
            "verify the downloaded copy offline",
            &[
                "verify",
                "--case",
                &case_s,
                "--dir",
                &folder.to_string_lossy(),
                "--public-key",
                &key_path.to_string_lossy(),
            ],
        ),
        Step::run("list cases", &["cases"]),
    ];

    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("cannot find this binary: {e}")))?;
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let n = i + 1;
        let outcome = match &step.work {
            Work::Run(args) => {
                println!(
                    "\n## {n}. {}\n$ cleanroom --config {} {}",
                    step.title,
                    display(&config_path),
                    args.join(" ")
                );
                run_step(&exe, &config_path, args, &lab, &out.join(format!("{n:02}-{}.log", args[0])))
            }
            Work::Download => {
                println!("\n## {n}. {}", step.title);
                let clients = lab.clients(&forensics, &region);
                download_case(&clients.s3, &bucket, &case, &folder).await.map(|count| {
                    println!("{count} objects of s3://{bucket}/cases/{case}/ saved in {}", display(&folder));
                })
            }
        };
        if let Err(problem) = outcome {
            println!("!! step failed: {problem}");
            failures.push(format!("{} ({problem})", step.title));
        }
    }

    println!(
        "\n## drill {case} finished in {:.1} s: {} of {} steps succeeded\nconfiguration, logs and report: {}",
        started.elapsed().as_secs_f64(),
        steps.len() - failures.len(),
        steps.len(),
        display(&out)
    );
    if failures.is_empty() {
        Ok(ExitKind::Done)
    } else {
        Err(Error::failed(format!("drill steps failed: {}", failures.join(", "))))
    }
}

/// Runs `cleanroom --config <config> <args>` against the lab, echoes its stdout, keeps
/// both streams in `log`; `Err` names the exit code.
fn run_step(
    exe: &Path,
    config: &Path,
    args: &[String],
    lab: &Lab,
    log: &Path,
) -> std::result::Result<(), String> {
    let output = Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(lab.env(REGION))
        .output()
        .map_err(|e| format!("cannot run: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    std::fs::write(log, format!("{stdout}\n--- stderr\n{stderr}"))
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    match output.status.code() {
        Some(0) => Ok(()),
        code => {
            eprintln!("{stderr}");
            Err(format!("exit code {}, log {}", code.map_or("none".into(), |c| c.to_string()), log.display()))
        }
    }
}

/// Saves every object of the case, latest versions, as `aws s3 cp --recursive` would.
async fn download_case(
    s3: &aws_sdk_s3::Client,
    bucket: &BucketName,
    case: &CaseId,
    folder: &Path,
) -> std::result::Result<usize, String> {
    let prefix = format!("cases/{case}/");
    let mut count = 0;
    let mut pages = s3.list_objects_v2().bucket(bucket.as_str()).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("ListObjectsV2: {e:?}"))?;
        for object in page.contents() {
            let key = object.key().ok_or("object without a key")?;
            let rel = key.strip_prefix(&prefix).ok_or("key outside the case")?;
            let path = folder.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let body = s3
                .get_object()
                .bucket(bucket.as_str())
                .key(key)
                .send()
                .await
                .map_err(|e| format!("GetObject {key}: {e:?}"))?
                .body
                .collect()
                .await
                .map_err(|e| format!("GetObject {key}: {e}"))?;
            std::fs::write(&path, body.into_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
            count += 1;
        }
    }
    Ok(count)
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
