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
    args: Vec<String>,
    /// Exit codes that mean the step did its job (isolate's verification table, etc.).
    ok: &'static [i32],
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
    let suspect = match args.scenario {
        Scenario::Cryptomining => {
            scenario::cryptomining(&lab, &member, &region, &out).await.map_err(Error::failed)?
        }
    };
    ctx.reporter.done(
        "seed",
        &format!(
            "suspect {} in account {} (miner in UserData, cron job, backdoor key)",
            suspect.instance, member
        ),
    );

    let config = config_path.to_string_lossy().into_owned();
    let case_s = case.to_string();
    let steps = [
        Step {
            title: "preflight",
            args: vec!["preflight".into(), "--account".into(), member.to_string()],
            ok: &[0],
        },
        Step {
            title: "contain the suspect",
            args: vec!["isolate".into(), suspect.arn(), "--case".into(), case_s.clone()],
            ok: &[0],
        },
        Step {
            title: "verify the evidence",
            args: vec!["verify".into(), "--case".into(), case_s.clone()],
            ok: &[0],
        },
        Step {
            title: "report for legal",
            args: vec![
                "report".into(),
                "--case".into(),
                case_s.clone(),
                "--format".into(),
                "html".into(),
                "--output".into(),
                out.join("report.html").to_string_lossy().into_owned(),
            ],
            ok: &[0],
        },
        Step {
            title: "report for the case file (Markdown)",
            args: vec![
                "report".into(),
                "--case".into(),
                case_s.clone(),
                "--format".into(),
                "md".into(),
                "--output".into(),
                out.join("report.md").to_string_lossy().into_owned(),
            ],
            ok: &[0],
        },
        Step { title: "list cases", args: vec!["cases".into()], ok: &[0] },
    ];

    let exe = std::env::current_exe().map_err(|e| Error::failed(format!("cannot find this binary: {e}")))?;
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        println!(
            "\n## {}. {}\n$ cleanroom --config {} {}",
            i + 1,
            step.title,
            display(&config_path),
            step.args.join(" ")
        );
        let log = out.join(format!("{:02}-{}.log", i + 1, step.args[0]));
        let output = Command::new(&exe)
            .arg("--config")
            .arg(&config)
            .args(&step.args)
            .envs(lab.env(REGION))
            .output()
            .map_err(|e| Error::failed(format!("cannot run step {}: {e}", step.title)))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        print!("{stdout}");
        std::fs::write(&log, format!("{stdout}\n--- stderr\n{stderr}"))
            .map_err(|e| Error::failed(format!("cannot write {}: {e}", log.display())))?;
        let code = output.status.code().unwrap_or(-1);
        if !step.ok.contains(&code) {
            eprintln!("{stderr}");
            println!("!! step failed with exit code {code} (log: {})", display(&log));
            failures.push(format!("{} (exit {code})", step.title));
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

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// `YYYYMMDD-HHMMSS` in UTC, for case ids.
fn utc_stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    now.format(&format).unwrap_or_else(|_| "0".into())
}
