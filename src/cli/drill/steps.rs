//! The drill's steps: this same binary in a child process with the lab's environment
//! (so the rehearsal runs exactly what a real response runs), and the third party's
//! download of the case.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use crate::ids::{BucketName, CaseId};
use crate::lab::Lab;

/// One thing the responder does.
pub struct Step {
    pub title: String,
    pub work: Work,
}

pub enum Work {
    /// `cleanroom <args>`, which must exit with `expect` (0, or 2 where the drill
    /// rehearses a refusal) and print every text of `shows`.
    Run { args: Vec<String>, expect: i32, shows: Vec<String> },
    /// Download the case folder from the evidence bucket into `into`.
    Download { into: PathBuf },
}

impl Step {
    pub fn run(title: impl Into<String>, args: &[&str]) -> Self {
        Self::expecting(title, args, 0, &[])
    }

    pub fn expecting(title: impl Into<String>, args: &[&str], expect: i32, shows: &[&str]) -> Self {
        Self {
            title: title.into(),
            work: Work::Run {
                args: args.iter().map(|a| a.to_string()).collect(),
                expect,
                shows: shows.iter().map(|s| s.to_string()).collect(),
            },
        }
    }
}

/// Runs `cleanroom --config <config> <args>` against the lab, shows both its streams as
/// they come, keeps them in `log`; `Err` says what differed from what the step expects.
pub fn run_cleanroom(
    exe: &Path,
    config: &Path,
    (args, expect, shows): (&[String], i32, &[String]),
    lab: &Lab,
    region: &str,
    log: &Path,
) -> Result<(), String> {
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(lab.env(region))
        // A refusal must come from the tool, not from a prompt nobody answers.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    // Both streams shown as they come (acquire's progress is minutes long) and kept.
    let out = tee(child.stdout.take().expect("piped"), false);
    let err = tee(child.stderr.take().expect("piped"), true);
    let status = child.wait().map_err(|e| format!("cannot wait: {e}"))?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    std::fs::write(log, format!("{stdout}\n--- stderr\n{stderr}"))
        .map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let code = status.code();
    if code != Some(expect) {
        return Err(format!(
            "exit code {} where {expect} was expected, log {}",
            code.map_or("none".into(), |c| c.to_string()),
            log.display()
        ));
    }
    let both = format!("{stdout}{stderr}");
    match shows.iter().find(|s| !both.contains(s.as_str())) {
        Some(missing) => Err(format!("the output does not say {missing:?}, log {}", log.display())),
        None => Ok(()),
    }
}

/// Copies a child's stream line by line to ours (stderr when `to_stderr`) and returns
/// all of it.
fn tee(stream: impl Read + Send + 'static, to_stderr: bool) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stream).split(b'\n').map_while(std::result::Result::ok) {
            let line = String::from_utf8_lossy(&line).into_owned();
            if to_stderr {
                let _ = writeln!(std::io::stderr(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout(), "{line}");
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    })
}

/// Saves every object of the case, latest versions, as `aws s3 cp --recursive` would,
/// streaming each body to its file (disk images do not fit in memory).
pub async fn download_case(
    s3: &aws_sdk_s3::Client,
    bucket: &BucketName,
    case: &CaseId,
    folder: &Path,
) -> Result<(usize, u64), String> {
    use tokio::io::AsyncWriteExt;
    let prefix = crate::evidence::layout::case_prefix(case);
    let (mut count, mut bytes) = (0, 0u64);
    let mut pages = s3.list_objects_v2().bucket(bucket.as_str()).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("ListObjectsV2: {e:?}"))?;
        for object in page.contents() {
            let key = object.key().ok_or("object without a key")?;
            let rel = key.strip_prefix(&prefix).ok_or("key outside the case")?;
            // Keys are ours, but a folder is no place to trust them: no `..`, no root.
            if rel.split('/').any(|part| part == ".." || part.is_empty()) {
                return Err(format!("refusing to save {key:?}: not a plain relative path"));
            }
            let path = folder.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let mut body = s3
                .get_object()
                .bucket(bucket.as_str())
                .key(key)
                .send()
                .await
                .map_err(|e| format!("GetObject {key}: {e:?}"))?
                .body;
            let mut file =
                tokio::fs::File::create(&path).await.map_err(|e| format!("{}: {e}", path.display()))?;
            while let Some(chunk) = body.try_next().await.map_err(|e| format!("GetObject {key}: {e}"))? {
                file.write_all(&chunk).await.map_err(|e| format!("{}: {e}", path.display()))?;
                bytes += chunk.len() as u64;
            }
            file.flush().await.map_err(|e| format!("{}: {e}", path.display()))?;
            count += 1;
        }
    }
    Ok((count, bytes))
}
