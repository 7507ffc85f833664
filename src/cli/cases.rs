//! `cleanroom cases`: owns listing the cases in the evidence bucket with their state.
//! The state is read from each case's custody chain; with a signing key configured,
//! a chain with records that key does not vouch for shows as UNAUTHENTICATED, since
//! its story may have been written by anyone who can write to the bucket.

use crate::error::{ExitKind, Result};
use crate::evidence::Action;
use crate::evidence::layout;
use crate::evidence::signing::TrustedKey;
use crate::text::{json_for_terminal, sanitize};
use crate::verify::{LoadedCase, load_case};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// A case's state from its custody chain, latest meaningful event first.
pub fn state(loaded: &LoadedCase, key: Option<&TrustedKey>) -> String {
    if !loaded.chain_findings.is_empty() {
        return "CHAIN BROKEN".into();
    }
    if let Some(key) = key
        && let Some((seq, _)) = loaded.unauthenticated(key).first()
    {
        return format!("UNAUTHENTICATED (record {seq})");
    }
    let mut state = "open".to_owned();
    for r in loaded.chain() {
        state = match r.action {
            Action::NetworkIsolated | Action::ContainmentVerified => "contained".into(),
            Action::ContainmentFailed => "containment failed".into(),
            Action::Released => "released".into(),
            Action::ManifestSealed if state == "open" => "sealed".into(),
            Action::Verified => match (
                r.details.get("ok").and_then(|v| v.as_bool()),
                r.details.get("intact").and_then(|v| v.as_bool()),
            ) {
                (Some(true), _) => format!("verified {}", r.time),
                (_, Some(true)) => format!("integrity only {}", r.time),
                _ => "VERIFY FAILED".into(),
            },
            _ => state,
        };
    }
    state
}

pub async fn run(ctx: &Context, _args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let aws = ctx.connect(&config, "cases").await;
    let store = crate::evidence::evidence_store(&aws, &config).await;
    let key = crate::evidence::configured_key(&aws, &config).await?;
    let keys =
        store.list(layout::CASES).await.map_err(crate::evidence::EvidenceError::store("listing cases"))?;
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for case in keys.iter().filter_map(|k| layout::case_of_case_file(k)) {
        let loaded = load_case(store.as_ref(), &case).await?;
        let st = state(&loaded, key.as_ref());
        let items = loaded.items().len();
        let records = loaded.chain().count();
        let cf = &loaded.case_file;
        rows.push(vec![
            case.to_string(),
            sanitize(&cf.opened_at).into_owned(),
            sanitize(&cf.opened_by.examiner).into_owned(),
            items.to_string(),
            records.to_string(),
            sanitize(&st).into_owned(),
        ]);
        json.push(serde_json::json!({
            "case": case, "opened_at": cf.opened_at, "examiner": cf.opened_by.examiner,
            "items": items, "custody_records": records, "state": st,
        }));
    }
    if ctx.global.json {
        let out =
            serde_json::json!({ "cases": json, "authenticated_by": key.as_ref().map(|k| &k.fingerprint) });
        super::out(&format!("{}\n", json_for_terminal(&out)));
        return Ok(ExitKind::Done);
    }
    let mut human = if rows.is_empty() {
        format!("no cases in {}\n", sanitize(&store.location()))
    } else {
        super::table(&["CASE", "OPENED", "EXAMINER", "ITEMS", "RECORDS", "STATE"], &rows)
    };
    if key.is_none() && !rows.is_empty() {
        human.push_str(
            "note: no signing key configured: states are read from records that could not be authenticated\n",
        );
    }
    super::out(&human);
    Ok(ExitKind::Done)
}
