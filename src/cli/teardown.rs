//! `cleanroom teardown --case ID`: removes the analysis volumes and
//! instances the case created (the journal says which), each a custody record; the
//! evidence and the forensics snapshot copies stay.

use crate::error::{Error, ExitKind, Result};
use crate::ids::CaseId;
use crate::pipeline::custody::CaseCustody;
use crate::pipeline::journal::Journal;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The case whose analysis resources are removed.
    #[arg(long)]
    pub case: CaseId,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = ctx.connect(&config, &format!("teardown-{}", args.case)).await;
    let store = crate::evidence::evidence_store(&aws, &config).await;
    if store
        .head(&crate::evidence::layout::case_file(&args.case), None)
        .await
        .map_err(|e| Error::failed(e.to_string()))?
        .is_none()
    {
        return Err(Error::refused(format!(
            "no case {} in s3://{}: nothing to tear down\nfix: check the case id (`cleanroom cases` lists them)",
            args.case, config.forensics.evidence_bucket
        )));
    }
    let case = crate::evidence::open_case(&aws, &config, &args.case, &examiner).await?;
    let journal = Journal::open(store, &args.case, case.lock_now_for_journal())
        .await
        .map_err(|e| Error::failed(e.to_string()))?;
    let custody = CaseCustody(case);
    let out = crate::teardown::teardown(
        &aws,
        &journal,
        &custody,
        std::time::Duration::from_secs(2),
        ctx.reporter.as_ref(),
    )
    .await;
    let rows: Vec<Vec<String>> = out
        .removed
        .iter()
        .map(|r| {
            vec![
                format!("{:?}", r.kind),
                r.id.clone(),
                r.account.clone(),
                if r.removed_now { "removed".into() } else { "already gone".into() },
            ]
        })
        .collect();
    let mut text = super::table(&["RESOURCE", "ID", "ACCOUNT", "RESULT"], &rows);
    if rows.is_empty() {
        text =
            format!("case {} created no analysis resource that is still there: nothing removed\n", args.case);
    }
    for e in &out.errors {
        text.push_str(&format!("FAILED: {e}\n"));
    }
    text.push_str("the evidence, the forensics snapshot copies and the custody chain stay.\n");
    ctx.emit(&serde_json::json!({"case": args.case, "teardown": out}), &text);
    Ok(if out.errors.is_empty() { ExitKind::Done } else { ExitKind::Failed })
}
