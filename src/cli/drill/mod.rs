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
use crate::lab::{Lab, LabOptions, scenario, seed, unauthorized};

use self::steps::{Step, Work};
use super::Context;

/// The lab region of the drill.
const REGION: &str = "eu-west-1";
/// The drill's forensics and member accounts (the seeds' story: one victim account).
const FORENSICS_ACCOUNT: &str = "111122223333";
const MEMBER_ACCOUNT: &str = "444455556666";
/// The second region of the unauthorized-launch incident.
const SECOND_REGION: &str = "us-east-1";
/// Snapshots stay pending for this many polls, so waiting is rehearsed too.
const SNAPSHOT_POLLS: u32 = 2;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Scenario {
    /// Leaked developer key, attacker-launched instance mining cryptocurrency.
    Cryptomining,
    /// A compromised IAM user launches instances in two regions and opens SSH to the world.
    UnauthorizedLaunch,
}

/// The incident as seeded: what the steps are given and what is checked at the end.
enum Incident {
    Cryptomining(scenario::Suspect),
    UnauthorizedLaunch(unauthorized::Launched),
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

    ctx.reporter.step("seed", "the forensics account and the incident");
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
    let incident = match args.scenario {
        Scenario::Cryptomining => {
            let suspect = scenario::cryptomining(&lab, &member, &region, &forensics, &out)
                .await
                .map_err(Error::failed)?;
            ctx.reporter.done(
                "seed",
                &format!(
                    "suspect {} in account {} (miner in UserData and on its disk, cron job, backdoor key, a deleted dropper)",
                    suspect.instance, member
                ),
            );
            Incident::Cryptomining(suspect)
        }
        Scenario::UnauthorizedLaunch => {
            let regions: Vec<Region> = vec![region.clone(), SECOND_REGION.parse()?];
            let launched = unauthorized::unauthorized_launch(&lab, &member, &regions, &forensics, &out)
                .await
                .map_err(Error::failed)?;
            ctx.reporter.done(
                "seed",
                &format!(
                    "key {} of user {} launched {} instance(s) in {} and {} and opened SSH to the world; {} instance(s) of the owner beside them",
                    launched.access_key,
                    launched.user,
                    launched.attacker.len(),
                    regions[0],
                    regions[1],
                    launched.bystanders.len()
                ),
            );
            Incident::UnauthorizedLaunch(launched)
        }
    };

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
    let folder_s = folder.to_string_lossy().into_owned();
    let key_s = key_path.to_string_lossy().into_owned();
    let preflight = Step::run(
        "preflight: can cleanroom do its job in both accounts?",
        &["preflight", "--account", member.as_str()],
    );
    let verify = Step::expecting(
        "verify the evidence (and sign a checkpoint)",
        &["verify", "--case", &case_s],
        0,
        &["VERIFIED"],
    );
    let download = Step {
        title: "download the case as a third party would (aws s3 cp --recursive)".into(),
        work: Work::Download { into: folder.clone() },
    };
    let offline = Step::expecting(
        "verify the downloaded copy offline, with the public key given out of band",
        &["verify", "--case", &case_s, "--dir", &folder_s, "--public-key", &key_s],
        0,
        &["VERIFIED"],
    );
    let refused = |arn: &str| {
        Step::expecting(
            "release without approval is refused (the instance stays isolated)",
            &["release", arn, "--case", &case_s],
            2,
            &["--yes"],
        )
    };
    let cases = Step::run("list cases", &["cases"]);
    let steps: Vec<Step> = match &incident {
        Incident::Cryptomining(suspect) => {
            let arn = suspect.arn();
            vec![
                preflight,
                Step::expecting(
                    "acquire: capture, protect, snapshot, isolate, hand off, examine in the clean room, seal",
                    &["acquire", &arn, "--case", &case_s],
                    0,
                    &["xmrig", "authorized_key"],
                ),
                verify,
                report("html"),
                report("md"),
                report("json"),
                Step::run("verify again: the checkpoint and the reports", &["verify", "--case", &case_s]),
                download,
                offline,
                Step::expecting(
                    "teardown: remove the clean room (the evidence stays)",
                    &["teardown", "--case", &case_s],
                    0,
                    &["removed"],
                ),
                refused(&arn),
                cases,
            ]
        }
        Incident::UnauthorizedLaunch(l) => {
            let ids: Vec<&str> = l.attacker.iter().map(|p| p.instance.as_str()).collect();
            vec![
                preflight,
                Step::expecting(
                    "acquire every instance the leaked key launched, in every region (capture, protect, snapshot, isolate, hand off; no clean room)",
                    &[
                        "acquire",
                        "--launched-by-key",
                        &l.access_key,
                        "--account",
                        l.account.as_str(),
                        "--case",
                        &case_s,
                        "--no-analysis",
                    ],
                    0,
                    &ids,
                ),
                verify,
                report("html"),
                report("json"),
                download,
                offline,
                refused(&l.attacker[0].arn()),
                cases,
            ]
        }
    };

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

    let failed_steps = failures.len();
    // What the incident planted must reach the report; what it did not touch must be as it was.
    let expected = match &incident {
        Incident::Cryptomining(_) => outcome::CRYPTOMINING,
        Incident::UnauthorizedLaunch(_) => &[],
    };
    let report_json = std::fs::read(report_file("json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let html = std::fs::read_to_string(report_file("html")).unwrap_or_default();
    match &report_json {
        Some(r) => {
            let mut problems = outcome::missing_findings(r, &html, expected);
            if let Incident::UnauthorizedLaunch(l) = &incident {
                let wanted: Vec<String> = l.attacker.iter().map(|p| p.instance.to_string()).collect();
                problems.extend(outcome::instances_differ(r, &wanted));
                problems.extend(outcome::bystanders_touched(&lab, l).await);
            }
            for problem in problems {
                println!("!! check failed: {problem}");
                failures.push(problem);
            }
            println!(
                "\n## summary\n{}",
                outcome::summary(r, &report_file("html"), &display(&key_path), expected)
            );
            if let Incident::UnauthorizedLaunch(l) = &incident {
                println!(
                    "the owner's {} other instance(s): untouched (security groups and tags checked); the group the attacker opened ({}) is recorded, not changed: close it and disable key {} in the account",
                    l.bystanders.len(),
                    l.open_groups.iter().map(|(r, g)| format!("{g} in {r}")).collect::<Vec<_>>().join(", "),
                    l.access_key
                );
            }
        }
        None => failures.push("the JSON report could not be read: nothing to check against".into()),
    }

    println!(
        "## drill {case} finished in {:.1} s: {} of {} steps succeeded\nconfiguration, logs and reports: {}",
        started.elapsed().as_secs_f64(),
        steps.len() - failed_steps,
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
