//! What the report reads besides the custody chain: each instance's capture summary
//! and the clean room's result files (disk image, triage, YARA). Each is read by the
//! version id the chain recorded and used only when its SHA-256 is the one recorded:
//! the report never tells what an object says unless custody vouches for the bytes.

use serde_json::Value;

use crate::capture::Summary;
use crate::evidence::ManifestItem;
use crate::evidence::digest::sha256_tagged;
use crate::evidence::store::{ObjectStore, get_all};

/// Largest result file read. A capture summary is tens of KiB (4 KiB previews, up to
/// 1,000 CloudTrail events); triage.json lists at most 20,000 key files and 2,000
/// findings (ssm-documents/README.md), a few MiB; 64 MiB is over ten times that.
pub const MAX_SOURCE_BYTES: usize = 64 << 20;

/// The kinds of item the report reads, by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Capture,
    DiskImage,
    Triage,
    Yara,
}

impl SourceKind {
    /// The kind of an item, from the last segment of its name.
    pub fn of(item: &ManifestItem) -> Option<Self> {
        match item.name.rsplit('/').next()? {
            "capture-summary.json" => Some(Self::Capture),
            "image.json" => Some(Self::DiskImage),
            "triage.json" => Some(Self::Triage),
            "yara.json" => Some(Self::Yara),
            _ => None,
        }
    }
}

/// One result file, checked against its recorded digest and parsed.
#[derive(Debug, Clone)]
pub struct Source {
    pub item: ManifestItem,
    pub value: Value,
}

/// Everything read, and what could not be used (and why).
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub captures: Vec<(ManifestItem, Summary)>,
    pub images: Vec<Source>,
    pub triage: Vec<Source>,
    pub yara: Vec<Source>,
    pub problems: Vec<String>,
}

/// Reads the result files among `items` from `store`.
pub async fn load(store: &dyn ObjectStore, items: &[ManifestItem]) -> Sources {
    let mut out = Sources::default();
    for item in items {
        let Some(kind) = SourceKind::of(item) else { continue };
        let value = match read(store, item).await {
            Ok(v) => v,
            Err(problem) => {
                out.problems.push(format!("evidence item {} is not used in this report: {problem}", item.id));
                continue;
            }
        };
        match kind {
            SourceKind::Capture => match serde_json::from_value::<Summary>(value) {
                Ok(s) => out.captures.push((item.clone(), s)),
                Err(e) => out.problems.push(format!(
                    "evidence item {} is not used in this report: not a capture summary: {e}",
                    item.id
                )),
            },
            SourceKind::DiskImage => out.images.push(Source { item: item.clone(), value }),
            SourceKind::Triage => out.triage.push(Source { item: item.clone(), value }),
            SourceKind::Yara => out.yara.push(Source { item: item.clone(), value }),
        }
    }
    out
}

async fn read(store: &dyn ObjectStore, item: &ManifestItem) -> Result<Value, String> {
    if item.size > MAX_SOURCE_BYTES as u64 {
        return Err(format!("{} bytes, more than the {MAX_SOURCE_BYTES} a report reads", item.size));
    }
    let bytes = get_all(store, &item.s3_key, item.version_id.as_deref(), MAX_SOURCE_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    let digest = sha256_tagged(&bytes);
    if digest != item.sha256 {
        return Err(format!("its bytes hash to {digest}, not the {} custody recorded", item.sha256));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}
