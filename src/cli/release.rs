//! `cleanroom release`: undo containment of one instance, restoring the state recorded
//! before isolation, after a confirmation prompt (or `--yes`), and record it.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use crate::error::{Error, ExitKind, Result};
use crate::ids::{CaseId, InstanceRef};
use crate::pipeline::custody::CaseCustody;
use crate::release::{ReleaseError, apply, prepare};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The instance: an id (in --region, the caller's account) or an instance ARN.
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    /// The case under which it was isolated.
    #[arg(long)]
    pub case: CaseId,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Print the calls it would make and change nothing.
    #[arg(long)]
    pub plan: bool,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let r: InstanceRef = args.instance.parse()?;
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = ctx.connect(&config, &format!("release-{}", args.case)).await;
    let region = aws.default_region().clone();
    let (case, targets) = futures::join!(
        crate::evidence::open_case(&aws, &config, &args.case, &examiner),
        super::isolate::resolve(&aws, std::slice::from_ref(&r), &region)
    );
    let custody = Arc::new(CaseCustody(case?));
    let (scope, id) = targets?.into_iter().next().ok_or_else(|| Error::refused("no instance"))?;
    let pending = prepare(&args.case, &scope, &id, custody.as_ref())
        .await
        .map_err(|e: ReleaseError| if e.is_refusal() { Error::refused(e) } else { Error::failed(e) })?;
    let calls = pending.plan.api_calls(&id, &args.case);
    let mut text = format!(
        "release of {id} (case {}) restores the state recorded at {}:\n",
        args.case, pending.prior.captured_at
    );
    for (i, c) in calls.iter().enumerate() {
        text.push_str(&format!("  {:>2}. {c}\n", i + 1));
    }
    for eni in &pending.plan.missing_enis {
        text.push_str(&format!("  note: {eni} is no longer attached; its groups cannot be restored\n"));
    }
    if args.plan {
        ctx.emit(&serde_json::json!({"instance": id, "case": args.case, "plan": calls}), &text);
        return Ok(ExitKind::Done);
    }
    if !args.yes {
        eprint!("{text}");
        if !std::io::stdin().is_terminal() {
            return Err(Error::refused(
                "release changes the instance: confirm with --yes (stdin is not a terminal)",
            ));
        }
        eprint!("Restore {id} to its prior state? Type yes to go on: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(Error::failed)?;
        if answer.trim() != "yes" {
            return Err(Error::refused("release not confirmed: nothing changed"));
        }
    }
    ctx.reporter.step(id.as_str(), "restoring");
    let released = apply(&args.case, &scope, &id, pending, custody.as_ref()).await;
    let rows: Vec<Vec<String>> = released
        .checks
        .iter()
        .map(|c| {
            vec![
                c.control.clone(),
                if c.ok { "restored".into() } else { "NOT RESTORED".into() },
                c.detail.clone(),
            ]
        })
        .collect();
    let mut human = format!(
        "{id}: {}\n{}",
        if released.ok { "released; prior state restored" } else { "release FAILED" },
        super::table(&["CONTROL", "STATE", "DETAIL"], &rows)
    );
    for e in &released.errors {
        human.push_str(&format!("error: {e}\n"));
    }
    ctx.emit(&serde_json::to_value(&released).expect("serialises"), &human);
    Ok(if released.ok { ExitKind::Done } else { ExitKind::Failed })
}
