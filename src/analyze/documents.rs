//! The collection documents, built into the binary from `ssm-documents/` and rendered
//! exactly as `ssm-documents/render.py` renders them (the include rule, then
//! `json.dumps(doc, indent=2, sort_keys=True) + "\n"`), so their SHA-256 is the same
//! everywhere. Registered in the forensics account by that digest: a version with the
//! same content is reused; a changed script becomes a new version, never a silent edit.

use crate::cloud::{Call, CloudResult, Ssm, retry};

/// Every file a document includes, with its path relative to `ssm-documents/`.
const FILES: &[(&str, &str)] = &[
    ("scripts/lib.sh", include_str!("../../ssm-documents/scripts/lib.sh")),
    ("scripts/disk-image.sh", include_str!("../../ssm-documents/scripts/disk-image.sh")),
    ("scripts/triage.sh", include_str!("../../ssm-documents/scripts/triage.sh")),
    ("scripts/yara-scan.sh", include_str!("../../ssm-documents/scripts/yara-scan.sh")),
    ("scripts/layout.py", include_str!("../../ssm-documents/scripts/layout.py")),
    ("scripts/imagepass.py", include_str!("../../ssm-documents/scripts/imagepass.py")),
    ("scripts/triage.py", include_str!("../../ssm-documents/scripts/triage.py")),
    ("scripts/yarascan.py", include_str!("../../ssm-documents/scripts/yarascan.py")),
    ("yara/miners.yar", include_str!("../../ssm-documents/yara/miners.yar")),
    ("yara/persistence.yar", include_str!("../../ssm-documents/yara/persistence.yar")),
    ("yara/ssh.yar", include_str!("../../ssm-documents/yara/ssh.yar")),
];

const INCLUDE: &str = "#cleanroom:include ";

/// The three collection documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    DiskImage,
    Triage,
    Yara,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::DiskImage, Kind::Triage, Kind::Yara];

    fn source(self) -> &'static str {
        match self {
            Kind::DiskImage => include_str!("../../ssm-documents/Cleanroom-DiskImage.json"),
            Kind::Triage => include_str!("../../ssm-documents/Cleanroom-Triage.json"),
            Kind::Yara => include_str!("../../ssm-documents/Cleanroom-Yara.json"),
        }
    }

    /// The step (plugin) name of its one `aws:runShellScript` step.
    pub fn step(self) -> &'static str {
        match self {
            Kind::DiskImage => "image",
            Kind::Triage => "triage",
            Kind::Yara => "yara",
        }
    }

    /// The result file the script writes (and prints as its last stdout line).
    pub fn result(self) -> &'static str {
        match self {
            Kind::DiskImage => "image.json",
            Kind::Triage => "triage.json",
            Kind::Yara => "yara.json",
        }
    }

    /// The script file, for running locally.
    pub fn script(self) -> &'static str {
        match self {
            Kind::DiskImage => "scripts/disk-image.sh",
            Kind::Triage => "scripts/triage.sh",
            Kind::Yara => "scripts/yara-scan.sh",
        }
    }

    /// The configured document name.
    pub fn name(self, config: &crate::config::SsmDocuments) -> String {
        match self {
            Kind::DiskImage => config.disk_image.clone(),
            Kind::Triage => config.triage.clone(),
            Kind::Yara => config.yara.clone(),
        }
    }
}

/// The built-in files of `ssm-documents/` (for running the scripts on a workstation).
pub fn files() -> &'static [(&'static str, &'static str)] {
    FILES
}

/// The rendered document: what is registered, byte for byte.
pub fn render(kind: Kind) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(kind.source()).expect("the built-in documents are JSON");
    if let Some(steps) = doc.get_mut("mainSteps").and_then(|s| s.as_array_mut()) {
        for step in steps {
            let Some(commands) = step.pointer_mut("/inputs/runCommand").and_then(|c| c.as_array_mut()) else {
                continue;
            };
            let mut out = Vec::new();
            for line in commands.iter() {
                match line.as_str().and_then(|l| l.strip_prefix(INCLUDE)) {
                    Some(path) => {
                        let text = FILES
                            .iter()
                            .find(|(p, _)| *p == path)
                            .unwrap_or_else(|| panic!("{path} is included by a document but not built in"))
                            .1;
                        let text = text.strip_suffix('\n').unwrap_or(text);
                        out.extend(text.split('\n').map(|l| serde_json::Value::String(l.to_owned())));
                    }
                    None => out.push(line.clone()),
                }
            }
            *commands = out;
        }
    }
    let pretty = serde_json::to_string_pretty(&doc).expect("documents serialise");
    // Python's json.dumps writes every non-ASCII character as \uXXXX (UTF-16).
    let mut text = String::with_capacity(pretty.len() + 1);
    for c in pretty.chars() {
        if c.is_ascii() {
            text.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                text.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    text.push('\n');
    text
}

/// `sha256:<hex>` of the rendered document.
pub fn digest(kind: Kind) -> String {
    crate::evidence::digest::sha256_tagged(render(kind).as_bytes())
}

/// A registered document: the version to run and its digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registered {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// The hash SSM reports for the version (SHA-256 hex of what it stores; recorded
    /// beside ours so a difference is visible).
    pub ssm_hash: Option<String>,
    /// True when this run created the document or the version.
    pub created: bool,
    pub calls: Vec<Call>,
}

/// Finds the version of `name` whose content is the built-in document, or registers it
/// (a new document, or a new version of an existing one).
pub async fn register(ssm: &dyn Ssm, kind: Kind, name: &str) -> CloudResult<Registered> {
    let content = render(kind);
    let want = hex::encode(crate::evidence::digest::sha256_raw(content.as_bytes()));
    let sha256 = format!("sha256:{want}");
    let found = |v: crate::cloud::DocumentVersion, created: bool, calls: Vec<Call>| Registered {
        kind,
        name: name.to_owned(),
        version: v.version,
        sha256: sha256.clone(),
        ssm_hash: v.hash,
        created,
        calls,
    };
    match retry(|| ssm.describe_document(name, None)).await? {
        None => {
            let (v, call) = retry(|| ssm.create_document(name, &content)).await?;
            Ok(found(v, true, vec![call]))
        }
        Some(default) => {
            if default.hash.as_deref() == Some(want.as_str()) {
                return Ok(found(default, false, vec![]));
            }
            // Newest first: a rerun finds the version its first run registered.
            let mut versions = retry(|| ssm.document_versions(name)).await?;
            versions.sort_by_key(|v| std::cmp::Reverse(v.parse::<u64>().unwrap_or(0)));
            for v in versions {
                if let Some(d) = retry(|| ssm.describe_document(name, Some(&v))).await?
                    && d.hash.as_deref() == Some(want.as_str())
                {
                    return Ok(found(d, false, vec![]));
                }
            }
            let (v, call) = retry(|| ssm.update_document(name, &content)).await?;
            Ok(found(v, true, vec![call]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_include_is_built_in_and_rendering_matches_render_py() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ssm-documents");
        for kind in Kind::ALL {
            let text = render(kind);
            assert!(!text.contains(INCLUDE), "{kind:?} still has an include line");
            assert!(text.len() < 64_000, "{kind:?} is {} bytes: SSM refuses 64 KB", text.len());
            let source = match kind {
                Kind::DiskImage => "Cleanroom-DiskImage.json",
                Kind::Triage => "Cleanroom-Triage.json",
                Kind::Yara => "Cleanroom-Yara.json",
            };
            let out = std::process::Command::new("python3")
                .arg(root.join("render.py"))
                .arg("--digest")
                .arg(root.join(source))
                .output()
                .expect("python3 runs render.py");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest(kind), "{kind:?}");
        }
    }
}
