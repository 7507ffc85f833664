//! `cleanroom acquire`: the whole pipeline for one instance or a fleet, in the stage
//! order of [`crate::pipeline`]. Owns its arguments; resolves the targets (bad input
//! refused before anything is written); checks permissions with DryRun before the first
//! change; runs the stages; prints one row per instance, what was preserved and where,
//! every failure at the end, and what to do next. A rerun of the same command resumes.

use std::sync::Arc;

use crate::cloud::Accounts;
use crate::error::{Error, ExitKind, Result};
use crate::ids::CaseId;
use crate::pipeline::custody::{CaseCustody, CustodySink, Item, ReadOnlyCase};
use crate::pipeline::journal::Journal;
use crate::pipeline::{Run, Selection, Settings, Stage, TargetState, plan_stages, work};
use crate::text::sanitize;

use super::Context;
use super::targets::{Launches, TargetArgs, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// The case every action is recorded under.
    #[arg(long)]
    pub case: CaseId,
    /// Print every stage and API call it would make; change nothing, write nothing.
    #[arg(long)]
    pub plan: bool,
    /// Containment alone: protect and isolate, no capture, snapshot or hand-off.
    #[arg(long, conflicts_with_all = ["no_isolate", "no_analysis"])]
    pub isolate_only: bool,
    /// Preserve without isolating (e.g. a decoy the attacker must not notice).
    #[arg(long)]
    pub no_isolate: bool,
    /// Stop after the hand-off: no clean-room analysis.
    #[arg(long)]
    pub no_analysis: bool,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = Arc::new(ctx.connect(&config, &format!("acquire-{}", args.case)).await);
    let accounts: Arc<dyn Accounts> = aws.clone();
    let region = aws.default_region().clone();
    let (mut targets, launches) = resolve(accounts.as_ref(), &args.targets, &region).await?;

    let store = crate::evidence::evidence_store(&aws, &config).await;
    let (custody, journal): (Arc<dyn CustodySink>, Journal) = if args.plan {
        let case = ReadOnlyCase::open(store.clone(), &args.case)
            .await
            .map_err(|e| Error::failed(format!("reading case {}: {e}", args.case)))?;
        let journal = Journal::open_read_only(store, &args.case)
            .await
            .map_err(|e| Error::failed(format!("reading case {}: {e}", args.case)))?;
        (Arc::new(case), journal)
    } else {
        let case = crate::evidence::open_case(&aws, &config, &args.case, &examiner).await?;
        let journal = Journal::open(store, &args.case, case.lock_now_for_journal())
            .await
            .map_err(|e| Error::failed(e.to_string()))?;
        (Arc::new(CaseCustody(case)), journal)
    };
    let run = Run {
        case: args.case.clone(),
        accounts,
        custody,
        journal,
        reporter: ctx.reporter.clone(),
        settings: Settings {
            concurrency: config.limits.instance_concurrency,
            forensics_key: config.forensics.kms_key_arn.to_string(),
            handoff_key: config.member.handoff_key.clone(),
            member_role: config.member.role_name.to_string(),
            snapshot_timeout: std::time::Duration::from_secs(config.limits.snapshot_timeout_minutes * 60),
            first_poll: std::time::Duration::from_secs(2),
            plan_only: args.plan,
            analysis: (!args.no_analysis && !args.isolate_only).then(|| analysis_settings(&config)),
        },
    };
    let selection =
        Selection { isolate: !args.no_isolate, analysis: !args.no_analysis, isolate_only: args.isolate_only };
    let stages = selection.stages();
    if args.plan {
        let plan = plan_stages(&run, &stages, &targets).await;
        let mut text = format!("acquire {} would run: {}\n", args.case, stage_list(&stages));
        for (instance, calls) in &plan {
            text.push_str(&format!("\n{instance}:\n"));
            for (i, c) in calls.iter().enumerate() {
                text.push_str(&format!("  {:>2}. {}\n", i + 1, sanitize(c).into_owned()));
            }
        }
        ctx.emit(
            &serde_json::json!({"case": args.case, "plan": true, "stages": stages, "instances": plan}),
            &text,
        );
        return Ok(ExitKind::Done);
    }
    let missing: Vec<Stage> = stages.iter().copied().filter(|s| work(*s).is_none()).collect();
    if !missing.is_empty() {
        ctx.reporter.warn(
            "acquire",
            &format!(
                "stages not built yet, skipped: {} (run with --no-analysis to say so)",
                stage_list(&missing)
            ),
        );
    }

    for l in &launches {
        store_launches(&run, l).await?;
    }
    crate::pipeline::execute(&run, &stages, &mut targets)
        .await
        .map_err(|e| if e.refused { Error::refused(e) } else { Error::failed(e) })?;
    ctx.emit(&json(&args.case, &targets, &launches), &render(&args.case, &targets, &launches));
    Ok(if targets.iter().all(TargetState::succeeded) { ExitKind::Done } else { ExitKind::Failed })
}

/// The clean room as the configuration describes it.
pub fn analysis_settings(config: &crate::config::Config) -> crate::analyze::AnalysisSettings {
    let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
    crate::analyze::AnalysisSettings {
        ami: config.analysis.ami.clone(),
        instance_type: config.analysis.instance_type.clone(),
        subnet: config.analysis.subnet_id.clone(),
        security_group: config.analysis.security_group_id.clone(),
        instance_profile: config.analysis.instance_profile.clone(),
        documents: config.ssm.clone(),
        bucket: config.forensics.evidence_bucket.clone(),
        region: config.forensics.region.clone(),
        volumes_per_instance: config.limits.volumes_per_analysis_instance,
        max_instances: config.limits.analysis_instances,
        online_timeout: minutes(config.limits.ssm_online_timeout_minutes),
        command_timeout: minutes(config.limits.command_timeout_minutes),
        rehash_limit: config.limits.rehash_max_gib << 30,
    }
}

fn stage_list(stages: &[Stage]) -> String {
    stages.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// The CloudTrail launches that made each instance a target, as evidence.
async fn store_launches(run: &Run, l: &Launches) -> Result<()> {
    let subject: String = format!("launched-by-{}", l.credential)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    let item = Item {
        id: format!("{}/{subject}/launches.json", l.account),
        account: l.account.clone(),
        subject,
        name: "launches.json".into(),
        source: "cloudtrail:LookupEvents in every enabled region".into(),
        method: "cleanroom acquire --launched-by(-key): the RunInstances events of the credential, which made these instances targets".into(),
        derived_from: vec![],
    };
    run.custody
        .store_json(item, &serde_json::to_value(l).expect("launches serialise"))
        .await
        .map_err(|e| Error::failed(e.to_string()))?;
    Ok(())
}

fn containment(t: &TargetState) -> String {
    match (&t.containment, &t.failed) {
        (Some(o), _) => o.status.as_str().to_owned(),
        (None, Some(f)) if f.stage <= Stage::Isolate => "not isolated (failed before)".into(),
        (None, _) => "not isolated".into(),
    }
}

fn json(case: &CaseId, targets: &[TargetState], launches: &[Launches]) -> serde_json::Value {
    serde_json::json!({
        "case": case,
        "instances": targets.iter().map(|t| serde_json::json!({
            "instance": t.target.id, "account": t.target.side.account, "region": t.target.side.region,
            "containment": t.containment, "evidence": t.evidence, "forensics_copies": t.copies,
            "launched_by": t.capture.as_ref().and_then(|c| c.trail.launched_by.clone()),
            "gaps": t.capture.as_ref().map(|c| c.gaps.clone()).unwrap_or_default(),
            "failed": t.failed, "warnings": t.warnings,
            "checks": t.checks.iter().map(|(s, c)| serde_json::json!({"stage": s, "check": c})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "launches": launches,
    })
}

/// One row per instance, then what each preserved, then every failure, then next steps.
pub fn render(case: &CaseId, targets: &[TargetState], launches: &[Launches]) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.target.id.to_string(),
                t.target.side.account.to_string(),
                t.target.side.region.to_string(),
                containment(t),
                t.evidence.len().to_string(),
                format!("{}/{}", t.copies.len(), t.instance.volumes.len()),
                match &t.failed {
                    None => "done".into(),
                    Some(f) => format!("FAILED at {}", f.stage.name()),
                },
            ]
        })
        .collect();
    let mut out =
        super::table(&["INSTANCE", "ACCOUNT", "REGION", "CONTAINMENT", "ITEMS", "DISKS", "RESULT"], &rows);
    for l in launches {
        out.push_str(&format!(
            "\n{} launched {} instance(s) in account {} ({} region(s) searched)",
            sanitize(&l.credential).into_owned(),
            l.launches.len(),
            l.account,
            l.regions.len()
        ));
        for (region, id) in &l.gone {
            out.push_str(&format!("\n  {id} in {region} is terminated: only its CloudTrail events are kept"));
        }
        out.push('\n');
    }
    for t in targets {
        out.push_str(&format!("\n{}:\n", t.target.id));
        if let Some(c) = &t.capture {
            if let Some(l) = &c.trail.launched_by {
                out.push_str(&format!(
                    "  launched {} by {} with key {} from {} ({})\n",
                    sanitize(&l.event_time).into_owned(),
                    sanitize(l.username.as_deref().unwrap_or("?")),
                    sanitize(l.access_key_id.as_deref().unwrap_or("?")),
                    sanitize(l.source_ip.as_deref().unwrap_or("?")),
                    sanitize(l.user_agent.as_deref().unwrap_or("?"))
                ));
            }
            if let Some(u) = &c.user_data {
                out.push_str(&format!("  UserData: {} bytes, {}\n", u.bytes, u.sha256));
            }
            if let Some(s) = &c.instance_store {
                out.push_str(&format!(
                    "  instance store: {} disk(s), {} GiB NOT captured (cannot be snapshotted)\n",
                    s.disks, s.total_gib
                ));
            }
            for g in &c.gaps {
                out.push_str(&format!(
                    "  not captured: {}: {}\n",
                    sanitize(&g.what).into_owned(),
                    sanitize(&g.error).into_owned()
                ));
            }
        }
        for h in &t.copies {
            out.push_str(&format!(
                "  disk {} -> {} in {} ({}){}\n",
                h.volume.as_deref().unwrap_or("?"),
                h.forensics_snapshot,
                h.forensics_account,
                h.forensics_key.as_deref().unwrap_or("unencrypted"),
                h.relay_copy.as_ref().map(|r| format!(", via relay copy {r}")).unwrap_or_default()
            ));
        }
        for (stage, c) in t.checks.iter().filter(|(_, c)| !c.ok) {
            out.push_str(&format!("  check failed ({}): {}: {}\n", stage.name(), c.control, c.detail));
        }
        for w in &t.warnings {
            out.push_str(&format!("  warning: {}\n", sanitize(w).into_owned()));
        }
    }
    let findings: Vec<crate::collect::Finding> =
        targets.iter().flat_map(|t| t.findings.iter().cloned()).collect();
    out.push_str(&render_findings(&findings));
    let failed: Vec<&TargetState> = targets.iter().filter(|t| t.failed.is_some()).collect();
    if !failed.is_empty() {
        out.push_str(&format!("\n{} instance(s) not done:\n", failed.len()));
        for t in failed {
            let f = t.failed.as_ref().expect("failed");
            out.push_str(&format!(
                "  {} ({}): {}\n",
                t.target.id,
                f.stage.name(),
                crate::text::sanitize_lines(&f.error).replace('\n', "\n    ")
            ));
        }
        out.push_str(&format!(
            "\nnext: fix what is named above and rerun the same command; it resumes case {case}.\n"
        ));
    } else {
        out.push_str(&format!(
            "\nnext: cleanroom verify --case {case}; cleanroom report --case {case}; release only with the owner's approval.\n"
        ));
    }
    out
}

/// The findings a responder must look at, each with the file's digest and where it is.
pub fn render_findings(findings: &[crate::collect::Finding]) -> String {
    if findings.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| {
            vec![
                f.source.clone(),
                sanitize(&f.kind).into_owned(),
                f.volume.clone().unwrap_or_default(),
                sanitize(&f.path).into_owned(),
                f.sha256.as_deref().map(|s| s.chars().take(23).collect()).unwrap_or_else(|| "-".into()),
                sanitize(&f.detail).into_owned(),
            ]
        })
        .collect();
    format!(
        "\nfindings ({}):\n{}",
        findings.len(),
        super::table(&["SOURCE", "WHAT", "VOLUME", "PATH", "SHA-256", "DETAIL"], &rows)
    )
}
