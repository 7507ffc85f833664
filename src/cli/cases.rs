//! `cleanroom cases`: owns listing the cases in the evidence bucket with their state.

use crate::error::{ExitKind, Result};
use crate::evidence::Action;
use crate::verify::{LoadedCase, load_case};

use super::Context;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// A case's state from its custody chain, latest meaningful event first.
pub fn state(loaded: &LoadedCase) -> String {
    if !loaded.chain_findings.is_empty() {
        return "CHAIN BROKEN".into();
    }
    let mut state = "open".to_owned();
    for r in loaded.chain() {
        state = match r.action {
            Action::NetworkIsolated | Action::ContainmentVerified => "contained".into(),
            Action::ContainmentFailed => "containment failed".into(),
            Action::Released => "released".into(),
            Action::ManifestSealed if state == "open" => "sealed".into(),
            Action::Verified => {
                if r.details.get("ok").and_then(|v| v.as_bool()) == Some(true) {
                    format!("verified {}", r.time)
                } else {
                    "VERIFY FAILED".into()
                }
            }
            _ => state,
        };
    }
    state
}

pub async fn run(ctx: &Context, _args: Args) -> Result<ExitKind> {
    let config = ctx.load_config()?;
    let aws = ctx.connect(&config, "cases").await;
    let store = crate::evidence::evidence_store(&aws, &config).await;
    let keys = store.list("cases/").await.map_err(crate::evidence::EvidenceError::store("listing cases"))?;
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for key in keys.iter().filter(|k| k.ends_with("/case.json") && k.matches('/').count() == 2) {
        let name = &key["cases/".len()..key.len() - "/case.json".len()];
        let Ok(case) = name.parse() else { continue };
        let loaded = load_case(store.as_ref(), &case).await?;
        let st = state(&loaded);
        let items = loaded.items().len();
        let records = loaded.chain().count();
        rows.push(vec![
            name.to_owned(),
            loaded.case_file.opened_at.clone(),
            loaded.case_file.opened_by.examiner.clone(),
            items.to_string(),
            records.to_string(),
            st.clone(),
        ]);
        json.push(serde_json::json!({
            "case": name, "opened_at": loaded.case_file.opened_at, "examiner": loaded.case_file.opened_by.examiner,
            "items": items, "custody_records": records, "state": st,
        }));
    }
    let human = if rows.is_empty() {
        format!("no cases in {}\n", store.location())
    } else {
        super::table(&["CASE", "OPENED", "EXAMINER", "ITEMS", "RECORDS", "STATE"], &rows)
    };
    ctx.emit(&serde_json::json!({ "cases": json }), &human);
    Ok(ExitKind::Done)
}
