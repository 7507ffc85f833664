//! Collect: the clean room's outputs become evidence items of the case. Each object a
//! document wrote (the image, the triage files, the YARA results, and each result JSON)
//! is read back here, hashed a third time, compared with what the document reported,
//! and recorded with its digests, source (document, version and digest, instance,
//! volume) and method. The findings a responder must look at (YARA matches, suspicious
//! key files) are gathered for the summary and the report.
//!
//! `local` runs the same scripts on a workstation against a raw image
//! (`cleanroom collect --image`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod local;

use crate::analyze::Examined;
use crate::analyze::documents::Kind;
use crate::evidence::digest::{Digests, digests_of};
use crate::pipeline::custody::{EvidenceRef, Item};
use crate::pipeline::{Check, Run, Stage, StageWork, TargetState};

/// Largest result JSON imported (as in the analyze stage).
const RESULT_LIMIT: usize = 64 << 20;

/// Something the clean room found that a responder must look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `yara` or `triage`.
    pub source: String,
    /// The YARA rule, or the triage finding's kind (`fetch_and_run`, `authorized_key`...).
    pub kind: String,
    /// The suspect's volume it was found on.
    pub volume: Option<String>,
    /// Attacker-controlled: a path on the suspect's disk.
    pub path: String,
    pub inode: serde_json::Value,
    pub sha256: Option<String>,
    /// A plain sentence (triage), or the rule's namespace and tags (YARA).
    pub detail: String,
    /// The evidence item that holds the finding (the result JSON).
    pub item: String,
}

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_owned)
}

/// The findings of one document result.
pub fn findings_of(kind: &str, result: &serde_json::Value, volume: Option<&str>, item: &str) -> Vec<Finding> {
    let list = |key: &str| result.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    match kind {
        "triage" => list("findings")
            .iter()
            .map(|f| Finding {
                source: "triage".into(),
                kind: text(f, "kind").unwrap_or_default(),
                volume: volume.map(str::to_owned),
                path: text(f, "path").unwrap_or_default(),
                inode: f.get("inode").cloned().unwrap_or(serde_json::Value::Null),
                sha256: text(f, "sha256"),
                detail: text(f, "detail").unwrap_or_default(),
                item: item.to_owned(),
            })
            .collect(),
        "yara" => list("matches")
            .iter()
            .map(|m| Finding {
                source: "yara".into(),
                kind: text(m, "rule").unwrap_or_default(),
                volume: volume.map(str::to_owned),
                path: text(m, "path").unwrap_or_default(),
                inode: m.get("inode").cloned().unwrap_or(serde_json::Value::Null),
                sha256: text(m, "sha256"),
                detail: format!(
                    "YARA rule {}:{} matched{}",
                    text(m, "namespace").unwrap_or_default(),
                    text(m, "rule").unwrap_or_default(),
                    if m.get("deleted").and_then(|d| d.as_bool()) == Some(true) {
                        " (a deleted file)"
                    } else {
                        ""
                    }
                ),
                item: item.to_owned(),
            })
            .collect(),
        _ => vec![],
    }
}

/// The digests a document reported for one of its outputs.
fn reported(output: &serde_json::Value) -> Option<(String, Digests)> {
    Some((
        text(output, "name")?,
        Digests {
            size: output.get("size")?.as_u64()?,
            sha256: text(output, "sha256")?,
            sha1: text(output, "sha1")?,
            md5: text(output, "md5")?,
        },
    ))
}

fn method(kind: &str, result: &serde_json::Value) -> String {
    match kind {
        "image" => {
            let check = result.get("second_check");
            format!(
                "block device read once, SHA-256/SHA-1/MD5 in the same pass, streamed to S3; second check: {} ({})",
                check.and_then(|c| text(c, "method")).unwrap_or_else(|| "?".into()),
                match check.and_then(|c| c.get("match")).and_then(|m| m.as_bool()) {
                    Some(true) => "matched",
                    Some(false) => "DID NOT MATCH",
                    None => "not made",
                }
            )
        }
        "triage" => {
            "the Sleuth Kit (mmls, fsstat, fls -r -m, mactime, icat), the volume never mounted".into()
        }
        _ => "YARA over every regular file, deleted files included, read with the Sleuth Kit".into(),
    }
}

/// Imports one examined disk: every output, then each result JSON. Returns the items
/// and the findings.
async fn import(
    run: &Run,
    t: &TargetState,
    x: &Examined,
    limit: u64,
) -> Result<(Vec<EvidenceRef>, Vec<Finding>), String> {
    let account = &t.target.side.account;
    let instance = t.target.id.to_string();
    let folder = x.analysis_volume.to_string();
    let copy_item = format!("{account}/{instance}/disk/forensics-copy-{}.json", x.copy.source_snapshot);
    let mut refs = Vec::new();
    let mut findings = Vec::new();
    for (kind, result) in &x.results {
        let doc = x.documents.iter().find(|d| d.kind.step() == kind);
        let source = format!(
            "ssm:{} version {} ({}) on {}, reading {} (made from {} in {}, the forensics copy of {})",
            doc.map(|d| d.name.as_str()).unwrap_or("?"),
            doc.map(|d| d.version.as_str()).unwrap_or("?"),
            doc.map(|d| d.sha256.as_str()).unwrap_or("?"),
            x.analysis_instance,
            x.analysis_volume,
            x.copy.forensics_snapshot,
            x.copy.forensics_account,
            x.copy.volume.as_deref().unwrap_or("?"),
        );
        let item = |name: &str, derived: Vec<String>| Item {
            id: format!("{account}/{instance}/{folder}/{name}"),
            account: account.clone(),
            subject: instance.clone(),
            name: format!("{folder}/{name}"),
            source: source.clone(),
            method: method(kind, result),
            derived_from: derived,
        };
        let outputs = result.get("outputs").and_then(|o| o.as_array()).cloned().unwrap_or_default();
        // The version each object was written as, as the document recorded it.
        let versions: Vec<(String, String)> = result
            .pointer("/s3/objects")
            .and_then(|o| o.as_array())
            .map(|o| o.iter().filter_map(|x| Some((text(x, "name")?, text(x, "version_id")?))).collect())
            .unwrap_or_default();
        for o in &outputs {
            let Some((name, digests)) = reported(o) else {
                return Err(format!("{kind} result lists an output without name, size or digests: {o}"));
            };
            let version = versions.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
            let (r, _) = run
                .custody
                .adopt(item(&name, vec![copy_item.clone()]), version, &digests, limit)
                .await
                .map_err(|e| format!("importing {name} of {folder}: {e}"))?;
            refs.push(r);
        }
        let result_name =
            Kind::ALL.iter().find(|k| k.step() == kind).map(|k| k.result()).unwrap_or("result.json");
        let key = format!("{}{result_name}", x.prefix);
        let (bytes, version) = run
            .custody
            .read_object(&key, RESULT_LIMIT)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{key} is gone"))?;
        let derived = refs
            .iter()
            .filter(|r| r.id.starts_with(&format!("{account}/{instance}/{folder}/")))
            .map(|r| r.id.clone())
            .collect();
        let (r, _) = run
            .custody
            .adopt(item(result_name, derived), version.as_deref(), &digests_of(&bytes), limit)
            .await
            .map_err(|e| format!("importing {result_name} of {folder}: {e}"))?;
        findings.extend(findings_of(kind, result, x.copy.volume.as_deref(), &r.id));
        refs.push(r);
    }
    Ok((refs, findings))
}

pub struct CollectStage;

#[async_trait]
impl StageWork for CollectStage {
    fn stage(&self) -> Stage {
        Stage::Collect
    }

    async fn plan(&self, _run: &Run, _state: &TargetState) -> Vec<String> {
        vec!["s3:GetObject every clean-room output (hashed again), recorded as evidence items".into()]
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        let limit = run.settings.analysis.as_ref().map_or(0, |a| a.rehash_limit);
        for t in targets.iter_mut().filter(|t| t.failed.is_none()) {
            for x in t.examined.clone() {
                run.reporter.step(
                    t.target.id.as_str(),
                    &format!("importing the clean room's outputs of {}", x.analysis_volume),
                );
                match import(run, t, &x, limit).await {
                    Ok((refs, findings)) => {
                        t.evidence.extend(refs);
                        t.findings.extend(findings);
                    }
                    Err(e) => {
                        t.fail(Stage::Collect, e);
                        break;
                    }
                }
            }
        }
    }

    async fn check(&self, run: &Run, state: &TargetState) -> Vec<Check> {
        let mut missing = 0;
        for x in &state.examined {
            for r in ["image.json", "triage.json", "yara.json"] {
                let id =
                    format!("{}/{}/{}/{r}", state.target.side.account, state.target.id, x.analysis_volume);
                if run.custody.find(&id).await.ok().flatten().is_none() {
                    missing += 1;
                }
            }
        }
        vec![Check::new(
            "clean-room results imported",
            missing == 0,
            format!("{missing} result(s) not in the case"),
        )]
    }
}
