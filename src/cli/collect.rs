//! `cleanroom collect --image disk.raw --case ID`: the clean room's triage and YARA on a
//! workstation against a raw image obtained any other way; the image and every output
//! are stored in the case, hashed, with the same custody as the clean room's.

use std::path::PathBuf;

use crate::collect::findings_of;
use crate::collect::local::{self, LocalError};
use crate::error::{Error, ExitKind, Result};
use crate::evidence::NewItem;
use crate::ids::CaseId;
use crate::pipeline::custody::Action;

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The raw disk image (a file: dd output, ewfexport -f raw...).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// The case the image and results are stored in.
    #[arg(long)]
    pub case: CaseId,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    // The scripts first: a file that is not a disk image is refused before the case is touched.
    let ran = local::run(&args.image, &args.case, ctx.reporter.as_ref())
        .await
        .map_err(|e| if e.is_input() { Error::refused(e) } else { Error::failed(e) })?;
    let aws = ctx.connect(&config, &format!("collect-{}", args.case)).await;
    let case = crate::evidence::open_case(&aws, &config, &args.case, &examiner).await?;
    let account = config.forensics.account_id.clone();
    let subject = local::subject_for(&ran.image);
    let item = |name: &str, source: &str, method: &str, derived: Vec<String>| NewItem {
        id: format!("{account}/{subject}/{name}"),
        account: account.clone(),
        subject: subject.clone(),
        name: name.to_owned(),
        source: source.to_owned(),
        method: method.to_owned(),
        derived_from: derived,
    };
    ctx.reporter.step("collect", "storing the image");
    let image_ref = case
        .store_file(
            item("image.raw", &format!("workstation file {}", ran.image.display()), "stored by cleanroom collect --image: SHA-256, SHA-1 and MD5 in one pass while uploading, read back", vec![]),
            &ran.image,
            ctx.reporter.as_ref(),
        )
        .await?;
    let mut stored = vec![image_ref.clone()];
    let mut findings = Vec::new();
    for r in &ran.runs {
        let script = r.kind.step();
        let source = format!(
            "{} run locally by cleanroom collect on {} (script {})",
            r.kind.script(),
            image_ref.sha256,
            r.result.get("script_sha256").and_then(|v| v.as_str()).unwrap_or("?")
        );
        let mut names: Vec<String> = r
            .result
            .get("outputs")
            .and_then(|o| o.as_array())
            .map(|o| {
                o.iter().filter_map(|x| x.get("name").and_then(|n| n.as_str()).map(str::to_owned)).collect()
            })
            .unwrap_or_default();
        names.push(r.kind.result().to_owned());
        for name in names {
            let path = r.outputs.join(&name);
            let rel = format!("{script}/{name}");
            let e = case
                .store_file(
                    item(
                        &rel,
                        &source,
                        "the Sleuth Kit and YARA reading the image file; never mounted",
                        vec![image_ref.id.clone()],
                    ),
                    &path,
                    ctx.reporter.as_ref(),
                )
                .await?;
            if name == r.kind.result() {
                findings.extend(findings_of(script, &r.result, None, &e.id));
            }
            stored.push(e);
        }
    }
    case.record(crate::evidence::CustodyEvent {
        action: Action::CollectionCompleted,
        subject: format!("file:{}", ran.image.display()),
        evidence: stored.clone(),
        aws_request_ids: vec![],
        details: serde_json::json!({
            "mode": "local", "image": image_ref, "scripts": ran.runs.iter().map(|r| serde_json::json!({
                "script": r.kind.script(), "script_sha256": r.result.get("script_sha256"), "tools": r.result.get("tools")})).collect::<Vec<_>>(),
            "findings": findings.len(),
        }),
    })
    .await?;
    let mut text =
        format!("{} items stored in case {} (image {}):\n", stored.len(), args.case, image_ref.sha256);
    for e in &stored {
        text.push_str(&format!("  {}  {}\n", e.sha256, e.id));
    }
    text.push_str(&super::acquire::render_findings(&findings));
    ctx.emit(&serde_json::json!({"case": args.case, "items": stored, "findings": findings}), &text);
    Ok(ExitKind::Done)
}

impl From<LocalError> for Error {
    fn from(e: LocalError) -> Self {
        if e.is_input() { Error::refused(e) } else { Error::failed(e) }
    }
}
