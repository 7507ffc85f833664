//! `cleanroom report`: owns the hand-off report. Writes it to stdout (or `--output`),
//! stores it in the case under `report/`, and records `report_written`. Besides the
//! custody chain it reads the capture summaries and clean-room results the chain
//! vouches for (`report::sources`). Like every
//! writer, it refuses to extend (seal, record) a chain that does not verify. Every
//! value in the report is escaped for its format (`report.rs`), so the document is
//! also safe to print on a terminal.

use std::path::PathBuf;

use crate::error::{Error, ExitKind, Result};
use crate::evidence::{Action, CustodyEvent};
use crate::ids::CaseId;
use crate::report::{Format, build, render, sources};
use crate::text::sanitize;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The case to report on.
    #[arg(long)]
    pub case: CaseId,
    #[arg(long, value_enum, default_value = "html")]
    pub format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = ctx.connect(&config, &format!("report-{}", args.case)).await;
    // A report never creates a case: refuse (exit 2) when there is none.
    let store = crate::evidence::evidence_store(&aws, &config).await;
    // One HEAD, not a read of the whole chain: opening the case reads and checks it next.
    let case_file = crate::evidence::layout::case_file(&args.case);
    if store.head(&case_file, None).await.map_err(|e| Error::failed(e.to_string()))?.is_none() {
        return Err(crate::evidence::EvidenceError::CaseMissing {
            case: args.case.to_string(),
            location: store.location(),
        }
        .into());
    }
    let case = crate::evidence::open_case(&aws, &config, &args.case, &examiner).await?;
    case.seal().await?;
    let loaded = crate::verify::load_case(case.store().as_ref(), &args.case).await?;
    let items: Vec<_> = loaded.items().into_values().collect();
    let read = sources::load(case.store().as_ref(), &items).await;
    for problem in &read.problems {
        tracing::warn!("{}", sanitize(problem));
    }
    let text = render(&build(&loaded, &read), args.format);
    let stored = case
        .store_report(args.format.extension(), text.clone().into_bytes(), args.format.content_type())
        .await?;
    let receipt = case
        .record(CustodyEvent {
            action: Action::ReportWritten,
            subject: format!("case:{}", args.case),
            evidence: vec![stored.clone()],
            aws_request_ids: vec![],
            details: serde_json::json!({ "format": args.format }),
        })
        .await?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text)
                .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))?;
            eprintln!("wrote {}", path.display());
        }
        None => super::out(&text),
    }
    eprintln!(
        "stored as {} (version {}), custody record {}",
        sanitize(&stored.s3_key),
        sanitize(stored.version_id.as_deref().unwrap_or("none")),
        receipt.seq
    );
    Ok(ExitKind::Done)
}
