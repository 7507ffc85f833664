//! `cleanroom collect --image`: the clean room's triage and YARA scripts run on a
//! workstation against a raw image, read as a file by the Sleuth Kit and YARA (no root,
//! no loop mount). The scripts are the ones built into this binary, written to a
//! temporary folder: the same bytes the clean room runs. An image that is not a disk
//! image, or is truncated, is refused before anything is written to the case.

use std::path::{Path, PathBuf};

use crate::analyze::documents::{self, Kind};

/// What a script run produced: its result JSON and the folder of its outputs.
#[derive(Debug)]
pub struct ScriptRun {
    pub kind: Kind,
    pub result: serde_json::Value,
    pub outputs: PathBuf,
}

/// The scripts' work, kept until the outputs are stored.
pub struct LocalRun {
    pub image: PathBuf,
    pub runs: Vec<ScriptRun>,
    _work: tempfile::TempDir,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "{path}: {problem}\nfix: give the path of a raw disk image (dd, ewfexport -f raw, or a volume read with the EBS direct APIs)"
    )]
    BadPath { path: PathBuf, problem: String },
    #[error(
        "{image} is refused by the {script} script (exit {code}: {meaning}): {message}\nnothing was written to the case"
    )]
    NotAnImage { image: PathBuf, script: &'static str, code: i32, meaning: &'static str, message: String },
    #[error(
        "the {script} script needs a tool this machine lacks: {message}\nfix: install the Sleuth Kit, YARA, jq, OpenSSL and python3 (scripts/setup does, on Debian)"
    )]
    MissingTool { script: &'static str, message: String },
    #[error("the {script} script failed on {image} (exit {code}): {message}")]
    Failed { script: &'static str, image: PathBuf, code: i32, message: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl LocalError {
    /// Bad input (exit 2) or a failure of the run (exit 1).
    pub fn is_input(&self) -> bool {
        matches!(self, LocalError::BadPath { .. } | LocalError::NotAnImage { .. })
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// Writes the built-in scripts, helpers and rules into `dir` (as `ssm-documents/` lays them out).
fn write_scripts(dir: &Path) -> Result<(), LocalError> {
    for (rel, text) in documents::files() {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

fn first_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
    crate::text::sanitize(line).into_owned()
}

/// Runs triage and YARA on `image` for `case`. Nothing is written outside a temporary folder.
pub async fn run(
    image: &Path,
    case: &crate::ids::CaseId,
    reporter: &dyn crate::progress::Reporter,
) -> Result<LocalRun, LocalError> {
    let meta = std::fs::metadata(image)
        .map_err(|e| LocalError::BadPath { path: image.to_owned(), problem: e.to_string() })?;
    if !meta.is_file() {
        return Err(LocalError::BadPath { path: image.to_owned(), problem: "not a regular file".into() });
    }
    if meta.len() == 0 {
        return Err(LocalError::BadPath { path: image.to_owned(), problem: "empty file".into() });
    }
    let image = image.canonicalize().map_err(io(format!("resolving {}", image.display())))?;
    let work = tempfile::tempdir().map_err(io("creating a temporary folder"))?;
    write_scripts(work.path())?;
    let mut runs = Vec::new();
    for kind in [Kind::Triage, Kind::Yara] {
        let script = kind.step();
        reporter.step(script, &format!("running the {script} script on {}", image.display()));
        let out = work.path().join(format!("out-{script}"));
        std::fs::create_dir_all(&out).map_err(io(format!("creating {}", out.display())))?;
        let output = tokio::process::Command::new("bash")
            .arg(work.path().join(kind.script()))
            .env("CLEANROOM_CASE", case.as_str())
            .env("CLEANROOM_IMAGE", &image)
            .env("CLEANROOM_OUT", &out)
            .env("LANG", "C.UTF-8")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(io(format!("running the {script} script")))?;
        let code = output.status.code().unwrap_or(-1);
        match code {
            0 => {}
            3 | 4 if kind == Kind::Triage => {
                return Err(LocalError::NotAnImage {
                    image,
                    script,
                    code,
                    meaning: if code == 3 {
                        "no file system the Sleuth Kit reads"
                    } else {
                        "truncated: a file system runs past its end"
                    },
                    message: first_line(&output.stderr),
                });
            }
            5 => return Err(LocalError::MissingTool { script, message: first_line(&output.stderr) }),
            _ => return Err(LocalError::Failed { script, image, code, message: first_line(&output.stderr) }),
        }
        let result_path = out.join(kind.result());
        let bytes = std::fs::read(&result_path).map_err(io(format!("reading {}", result_path.display())))?;
        let result = serde_json::from_slice(&bytes).map_err(|e| LocalError::Failed {
            script,
            image: image.clone(),
            code,
            message: format!("{} is not JSON: {e}", result_path.display()),
        })?;
        reporter.done(script, "done");
        runs.push(ScriptRun { kind, result, outputs: out });
    }
    Ok(LocalRun { image, runs, _work: work })
}

/// A subject (evidence folder) for a local image: `image-` and its file name, made safe.
pub fn subject_for(image: &Path) -> String {
    let stem = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let safe: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .take(100)
        .collect();
    format!("image-{}", safe.trim_start_matches('.'))
}
