//! The AWS calls cleanroom makes, derived from the code, not from a hand-kept list.
//!
//! Every SDK call in `src/aws/` names its service and operation where its error is
//! mapped: `CloudError::of("ec2", "CreateSnapshots")`, `CloudError::from_sdk("kms",
//! "DescribeKey", e)`, `captured("iam", "GetRole", ...)`, the S3 adapter's
//! `self.err("PutObject", ...)`. [`sdk_operations`] reads those. A second reading,
//! [`builder_operations`], finds every SDK builder call (`self.ec2.describe_instances()`)
//! so a call whose error is mapped under another name (or not at all) cannot hide.
//! [`analysis_commands`] reads the AWS CLI calls of the collection documents' scripts:
//! what the analysis instance's role does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One AWS operation and where the code names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Operation {
    /// The service as the adapters name it: `ec2`, `s3`, `elbv2`, `elb`, ...
    pub service: String,
    /// The API operation, e.g. `CreateSnapshots`.
    pub name: String,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.service, self.name)
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The adapter files, without their unit tests (which call nothing) and comments (the
/// doc comment of `CloudError::of` quotes an example call).
fn adapter_sources() -> Vec<(String, String)> {
    let dir = repo().join("src/aws");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    files
        .into_iter()
        // error.rs and raw.rs define the mapping (`CloudError::of(service, operation)`):
        // they are the machinery, not calls.
        .filter(|p| !p.ends_with("error.rs") && !p.ends_with("raw.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: Vec<String> = text
                .lines()
                .map(|l| if l.trim_start().starts_with("//") { String::new() } else { l.to_owned() })
                .collect();
            (p.file_name().unwrap().to_string_lossy().into_owned(), code.join("\n"))
        })
        .collect()
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// A string literal (`"ec2"`) or an identifier (`OP`) at the start of `text`, after
/// whitespace; returns it and the rest.
fn argument(text: &str) -> Option<(Result<String, String>, &str)> {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix('"') {
        let end = rest.find('"')?;
        return Some((Ok(rest[..end].to_owned()), &rest[end + 1..]));
    }
    let end = text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
    (end > 0).then(|| (Err(text[..end].to_owned()), &text[end..]))
}

/// `const OP: &str = "X";` nearest before `at`: the operation an identifier names.
fn constant(text: &str, at: usize, ident: &str) -> Option<String> {
    let decl = format!("const {ident}: &str = \"");
    let start = text[..at].rfind(&decl)? + decl.len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_owned())
}

/// Every (service, operation) the adapters name in their error mapping, with where.
pub fn sdk_operations() -> BTreeMap<Operation, Vec<String>> {
    let mut found: BTreeMap<Operation, Vec<String>> = BTreeMap::new();
    for (file, text) in adapter_sources() {
        let mut sites: Vec<(usize, Option<&str>)> = Vec::new();
        for needle in ["CloudError::of(", "CloudError::from_sdk(", "captured("] {
            sites.extend(text.match_indices(needle).map(|(i, n)| (i + n.len(), None)));
        }
        // The S3 adapter maps its errors with `self.err("Operation", key, e)`.
        if file == "s3.rs" {
            sites.extend(text.match_indices("self.err(").map(|(i, n)| (i + n.len(), Some("s3"))));
        }
        for (at, service) in sites {
            let site = format!("src/aws/{file}:{}", line_of(&text, at));
            let unreadable = || -> ! {
                panic!(
                    "{site}: cannot read the service and operation of this call; name them with string literals or a `const OP: &str`"
                )
            };
            let resolve = |arg: Result<String, String>| match arg {
                Ok(s) => s,
                Err(ident) => constant(&text, at, &ident).unwrap_or_else(|| unreadable()),
            };
            let (service, operation) = match service {
                Some(s) => {
                    let (op, _) = argument(&text[at..]).unwrap_or_else(|| unreadable());
                    (s.to_owned(), resolve(op))
                }
                None => {
                    let (svc, rest) = argument(&text[at..]).unwrap_or_else(|| unreadable());
                    let rest = rest.trim_start().strip_prefix(',').unwrap_or_else(|| unreadable());
                    let (op, _) = argument(rest).unwrap_or_else(|| unreadable());
                    // The S3 store maps every error in one `fn err(operation, ...)`: its
                    // callers (`self.err("PutObject", ...)`) are read instead.
                    if file == "s3.rs" && op == Err("operation".to_owned()) {
                        continue;
                    }
                    (resolve(svc), resolve(op))
                }
            };
            found.entry(Operation { service, name: operation }).or_default().push(site);
        }
    }
    found
}

/// Client fields and variables that hold an SDK client, and the service they call.
const CLIENTS: [&str; 10] =
    ["ec2", "s3", "ssm", "sts", "kms", "iam", "autoscaling", "elbv2", "elb", "cloudtrail"];
/// Builder methods of client *configurations* (mod.rs builds them), not operations.
const NOT_OPERATIONS: [&str; 6] =
    ["config", "build", "push_interceptor", "connect_timeout", "operation_attempt_timeout", "clone"];

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Every SDK operation invoked through a client (`<client>.<operation>()`, however the
/// chain is broken over lines), with where.
pub fn builder_operations() -> BTreeMap<Operation, Vec<String>> {
    let mut found: BTreeMap<Operation, Vec<String>> = BTreeMap::new();
    for (file, text) in adapter_sources() {
        if file == "mod.rs" {
            continue; // builds the clients; calls nothing
        }
        let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join("");
        // `self.client` is the one client of the S3 store and the KMS signer.
        let own = match file.as_str() {
            "s3.rs" => Some("s3"),
            "kms.rs" => Some("kms"),
            _ => None,
        };
        for (at, _) in squeezed.match_indices('.') {
            let before = &squeezed[..at];
            let name_start =
                before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
            let receiver = &before[name_start..];
            let service = match receiver {
                r if CLIENTS.contains(&r) => r,
                "client" => match own {
                    Some(s) => s,
                    None => continue,
                },
                _ => continue,
            };
            let after = &squeezed[at + 1..];
            let end = after
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(0);
            let method = &after[..end];
            if method.is_empty() || !after[end..].starts_with("()") || NOT_OPERATIONS.contains(&method) {
                continue;
            }
            found
                .entry(Operation { service: service.to_owned(), name: camel(method) })
                .or_default()
                .push(format!("src/aws/{file}"));
        }
    }
    found
}

/// One AWS CLI call of a collection script: `s3api head-object ...`, `s3 cp ...`.
#[derive(Debug, Clone)]
pub struct CliCall {
    pub command: String,
    /// The call names `--version-id`: S3 then checks the *Version permission.
    pub version_id: bool,
    pub site: String,
}

/// The S3 calls of `ssm-documents/scripts/*.sh`: what the analysis instance's role does.
pub fn analysis_commands() -> Vec<CliCall> {
    let dir = repo().join("ssm-documents/scripts");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    let mut calls = Vec::new();
    for path in scripts {
        let text = std::fs::read_to_string(&path).unwrap();
        // A call may continue over `\`-ended lines: join them, keeping line numbers.
        let mut logical: Vec<(usize, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with('#') {
                continue;
            }
            match logical.last_mut() {
                Some((_, prev)) if prev.ends_with('\\') => {
                    prev.pop();
                    prev.push(' ');
                    prev.push_str(code);
                }
                _ => logical.push((n + 1, code.to_owned())),
            }
        }
        for (n, line) in logical {
            let words: Vec<&str> = line.split_whitespace().collect();
            let site = format!("{}:{n}", rel(&path));
            for (i, w) in words.iter().enumerate() {
                let command = match (*w, words.get(i + 1)) {
                    ("s3api", Some(op)) => format!("s3api {op}"),
                    ("s3", Some(op)) if !op.starts_with('-') && !op.starts_with('"') => format!("s3 {op}"),
                    _ => continue,
                };
                calls.push(CliCall {
                    command,
                    version_id: line.contains("--version-id"),
                    site: site.clone(),
                });
            }
        }
    }
    calls
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}
