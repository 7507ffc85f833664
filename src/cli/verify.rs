//! `cleanroom verify`: owns re-checking a case. Online (the evidence bucket) it also
//! appends a `verified` custody record and, with a signing key configured, a signed
//! checkpoint. Offline (`--dir`, a downloaded case folder) it changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, ExitKind, Result};
use crate::evidence::folder::FolderStore;
use crate::evidence::store::ObjectStore;
use crate::evidence::{Action, CustodyEvent};
use crate::ids::CaseId;
use crate::verify::{VerifyOptions, VerifyReport, verify_case};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The case to verify.
    #[arg(long)]
    pub case: CaseId,
    /// Verify a downloaded case folder offline instead of the bucket
    /// (`aws s3 cp --recursive s3://<bucket>/cases/<case>/ <dir>`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Public key (PEM or DER) to check checkpoint signatures with, instead of the one stored in the case.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let public_key = match &args.public_key {
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| Error::refused(format!("cannot read public key {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let options = VerifyOptions { public_key };
    if let Some(dir) = &args.dir {
        if !dir.is_dir() {
            return Err(Error::refused(format!(
                "{} is not a folder\nfix: pass the folder you downloaded the case into",
                dir.display()
            )));
        }
        let store = FolderStore::new(dir, args.case.as_str());
        let report = verify_case(&store, &args.case, &options).await?;
        print(ctx, &report);
        return Ok(if report.ok() { ExitKind::Done } else { ExitKind::Failed });
    }
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = ctx.connect(&config, &format!("verify-{}", args.case)).await;
    let store: Arc<dyn ObjectStore> = crate::evidence::evidence_store(&aws, &config).await;
    ctx.reporter.step(args.case.as_str(), "re-hashing every object and walking the custody chain");
    let report = verify_case(store.as_ref(), &args.case, &options).await?;
    ctx.reporter.done(args.case.as_str(), &report.verdict());
    print(ctx, &report);
    // Record the verification, whatever its outcome, then sign the new head.
    let case = crate::evidence::open_case(&aws, &config, &args.case, &examiner).await?;
    let receipt = case
        .record(CustodyEvent {
            action: Action::Verified,
            subject: format!("case:{}", args.case),
            evidence: vec![],
            aws_request_ids: vec![],
            details: serde_json::json!({
                "ok": report.ok(),
                "verdict": report.verdict(),
                "items": report.items.len(),
                "custody_records": report.custody.records,
                "custody_head": report.custody.head,
                "checkpoints_verified": report.custody.checkpoints_verified,
                "locks_checked": report.locks_checked,
                "findings": report.findings,
            }),
        })
        .await?;
    eprintln!("recorded as custody record {} ({})", receipt.seq, receipt.hash);
    if let Some(key) = &config.forensics.signing_key_arn {
        let clients = aws.forensics().await;
        let signer = crate::aws::kms::KmsSigner::new(clients.kms.clone(), key.clone());
        let cp = case.checkpoint(&signer).await?;
        eprintln!("checkpoint signed with {key} as custody record {}", cp.seq);
    }
    Ok(if report.ok() { ExitKind::Done } else { ExitKind::Failed })
}

fn print(ctx: &Context, report: &VerifyReport) {
    let rows: Vec<Vec<String>> = report
        .items
        .iter()
        .map(|i| vec![i.id.clone(), i.size.to_string(), short(&i.sha256), i.lock.clone(), i.status.clone()])
        .collect();
    let mut human = super::table(&["ITEM", "BYTES", "SHA-256", "LOCK", "STATUS"], &rows);
    human.push_str(&format!(
        "\ncustody: {} records, head {}, {} signed checkpoint(s) verified\n",
        report.custody.records,
        report
            .custody
            .head
            .as_ref()
            .map(|h| format!("{} {}", h.seq, short(&h.hash)))
            .unwrap_or_else(|| "none".into()),
        report.custody.checkpoints_verified
    ));
    if !report.findings.is_empty() {
        let rows: Vec<Vec<String>> = report
            .findings
            .iter()
            .map(|f| vec![f.what.to_owned(), f.location.clone(), f.problem.clone()])
            .collect();
        human.push('\n');
        human.push_str(&super::table(&["WHAT", "WHERE", "PROBLEM"], &rows));
    }
    for n in &report.notes {
        human.push_str(&format!("note: {n}\n"));
    }
    human.push_str(&format!("\n{}\n", report.verdict()));
    let json = serde_json::to_value(report).expect("report serialises");
    let mut json = json;
    if let Some(o) = json.as_object_mut() {
        o.insert("ok".into(), report.ok().into());
        o.insert("verdict".into(), report.verdict().into());
    }
    ctx.emit(&json, &human);
}

fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 16).collect()
}
