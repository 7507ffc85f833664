//! `cleanroom verify`: owns re-checking a case. Online (the evidence bucket) the
//! records are authenticated against the configured signing key (KMS GetPublicKey of
//! `signing_key_arn`, never a key the case names), and the result is appended as a
//! `verified` custody record and a signed checkpoint. Offline (`--dir`, a downloaded
//! case folder) it changes nothing, and authenticates only against a key handed over
//! out of band (`--public-key`), or, when the user says so (`--trust-case-key`),
//! against the key the folder holds, which the verdict then calls not independent.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, ExitKind, Result};
use crate::evidence::folder::FolderStore;
use crate::evidence::signing::{KeySource, TrustedKey};
use crate::evidence::store::ObjectStore;
use crate::evidence::{Action, CustodyEvent};
use crate::ids::CaseId;
use crate::text::{json_for_terminal, sanitize, sanitize_lines};
use crate::verify::{Trust, VerifyOptions, VerifyReport, verify_case};

use super::Context;

/// Findings copied into the `verified` custody record. A finding is at most about
/// 3 KiB (an S3 key is at most 1 KiB, the problem text names one or two); 100 of them
/// keep the record far below `custody::MAX_RECORD_BYTES` (1 MiB). The count is
/// recorded in full.
pub const MAX_FINDINGS_RECORDED: usize = 100;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The case to verify.
    #[arg(long)]
    pub case: CaseId,
    /// Verify a downloaded case folder offline instead of the bucket
    /// (`aws s3 cp --recursive s3://<bucket>/cases/<case>/ <dir>`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Public key (PEM or DER) of the signing key, obtained out of band (e.g. `aws kms
    /// get-public-key`), to authenticate the records with. Online it must be the
    /// configured signing key.
    #[arg(long, value_name = "FILE")]
    pub public_key: Option<PathBuf>,
    /// Offline: authenticate against the public key stored in the case folder itself.
    /// Anyone who could rewrite the folder could have replaced that key too; the
    /// verdict says so.
    #[arg(long, requires = "dir", conflicts_with = "public_key")]
    pub trust_case_key: bool,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitKind> {
    let given = match &args.public_key {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| Error::refused(format!("cannot read public key {}: {e}", p.display())))?;
            Some(
                TrustedKey::from_bytes(&bytes, KeySource::File { path: p.display().to_string() }).map_err(
                    |e| Error::refused(format!("{} is not a usable public key: {e}", p.display())),
                )?,
            )
        }
        None => None,
    };
    if let Some(dir) = &args.dir {
        if !dir.is_dir() {
            return Err(Error::refused(format!(
                "{} is not a folder\nfix: pass the folder you downloaded the case into",
                dir.display()
            )));
        }
        let trust = match given {
            Some(k) => Trust::Key(k),
            None if args.trust_case_key => Trust::CaseKey,
            None => Trust::None,
        };
        let store = FolderStore::new(dir, &args.case);
        let report = verify_case(&store, &args.case, &VerifyOptions { trust }).await?;
        print(ctx, &report);
        return Ok(exit(&report));
    }
    let config = ctx.load_config()?;
    let examiner = ctx.examiner(&config)?;
    let aws = ctx.connect(&config, &format!("verify-{}", args.case)).await;
    let store: Arc<dyn ObjectStore> = crate::evidence::evidence_store(&aws, &config).await;
    let configured = crate::evidence::configured_key(&aws, &config).await?;
    let trust = match (configured, given) {
        (Some(c), Some(g)) if c.fingerprint != g.fingerprint => {
            return Err(Error::refused(format!(
                "the public key given ({}) is not the configured signing key {} ({})\nfix: drop --public-key, or check forensics.signing_key_arn",
                g.fingerprint,
                config.forensics.signing_key_arn.as_ref().map(|k| k.to_string()).unwrap_or_default(),
                c.fingerprint
            )));
        }
        (Some(c), _) => Trust::Key(c),
        (None, Some(g)) => Trust::Key(g),
        (None, None) => Trust::None,
    };
    ctx.reporter.step(args.case.as_str(), "re-hashing every object and walking the custody chain");
    let report = verify_case(store.as_ref(), &args.case, &VerifyOptions { trust }).await?;
    ctx.reporter.done(args.case.as_str(), &sanitize(&report.verdict()));
    print(ctx, &report);
    // Record the verification, whatever its outcome, then sign a checkpoint over it;
    // but never extend a chain that does not verify (opening the case refuses).
    let case = match crate::evidence::open_case(&aws, &config, &args.case, &examiner).await {
        Ok(case) => case,
        Err(e) if !report.verified() => {
            eprintln!("this verification was not recorded in custody: {}", sanitize_lines(&e.to_string()));
            return Ok(ExitKind::Failed);
        }
        Err(e) => return Err(e),
    };
    let findings: Vec<_> = report.findings.iter().take(MAX_FINDINGS_RECORDED).collect();
    let receipt = case
        .record(CustodyEvent {
            action: Action::Verified,
            subject: format!("case:{}", args.case),
            evidence: vec![],
            aws_request_ids: vec![],
            details: serde_json::json!({
                "ok": report.verified(),
                "intact": report.intact(),
                "authenticated_by": report.authenticity.key,
                "verdict": report.verdict(),
                "items": report.items.len(),
                "custody_records": report.custody.records,
                "custody_head": report.custody.head,
                "checkpoints_verified": report.custody.checkpoints_verified,
                "locks_checked": report.locks_checked,
                "findings_count": report.findings.len(),
                "findings": findings,
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
    Ok(exit(&report))
}

/// Exit 0 only when the case is intact and authenticated.
fn exit(report: &VerifyReport) -> ExitKind {
    if report.verified() { ExitKind::Done } else { ExitKind::Failed }
}

fn print(ctx: &Context, report: &VerifyReport) {
    if ctx.global.json {
        let mut json = serde_json::to_value(report).expect("report serialises");
        if let Some(o) = json.as_object_mut() {
            o.insert("ok".into(), report.verified().into());
            o.insert("intact".into(), report.intact().into());
            o.insert("verdict".into(), report.verdict().into());
        }
        super::out(&format!("{}\n", json_for_terminal(&json)));
        return;
    }
    let cell = |s: &str| sanitize(s).into_owned();
    let rows: Vec<Vec<String>> = report
        .items
        .iter()
        .map(|i| {
            vec![cell(&i.id), i.size.to_string(), cell(&short(&i.sha256)), cell(&i.lock), cell(&i.status)]
        })
        .collect();
    let mut human = super::table(&["ITEM", "BYTES", "SHA-256", "LOCK", "STATUS"], &rows);
    human.push_str(&format!(
        "\ncustody: {} records, head {}, {} signed checkpoint(s) verified\n",
        report.custody.records,
        report
            .custody
            .head
            .as_ref()
            .map(|h| format!("{} {}", h.seq, cell(&short(&h.hash))))
            .unwrap_or_else(|| "none".into()),
        report.custody.checkpoints_verified
    ));
    let a = &report.authenticity;
    human.push_str(&match &a.key {
        Some(key) => format!(
            "authenticity: {} of {} records signed by {} ({})\n",
            a.authenticated,
            report.custody.records,
            cell(&a.source),
            cell(key)
        ),
        None => format!("authenticity: not checked: {}\n", cell(&a.source)),
    });
    if !report.findings.is_empty() {
        let rows: Vec<Vec<String>> = report
            .findings
            .iter()
            .map(|f| vec![f.what.to_owned(), cell(&f.location), cell(&f.problem)])
            .collect();
        human.push('\n');
        human.push_str(&super::table(&["WHAT", "WHERE", "PROBLEM"], &rows));
    }
    for n in &report.notes {
        human.push_str(&format!("note: {}\n", cell(n)));
    }
    human.push_str(&format!("\n{}\n", cell(&report.verdict())));
    super::out(&human);
}

fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 16).collect()
}
