//! Secrets out of text. A credential can reach an error message (a `credential_process`
//! that fails prints what it has on stderr, and the SDK quotes that stderr; a service or
//! proxy echoes a header), and from there a log line or a custody record, which is locked
//! for years and handed to the other side of a case. Everything such text passes through
//! on its way out goes through [`scrub`] first: the custody seam, `CloudError`, the log
//! writer and the final error line of the binary.
//!
//! What is removed: the value after any of [`SECRET_KEYS`] written as `key=value`,
//! `key: value`, `"key": "value"` or `<key>value</key>` (any case); everything after the
//! SDK's `Stderr:` of a failed credential process; and every value registered with
//! [`register`] (the binary registers the secret key and session token it was given).
//! Access key ids are kept: they name a credential (CloudTrail's `accessKeyId`), they do
//! not let anyone use it.

use std::borrow::Cow;
use std::sync::{OnceLock, RwLock};

/// What a removed value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Field names whose value is a secret, lowercase. From the shapes credentials take:
/// STS and `credential_process` JSON (`SecretAccessKey`, `SessionToken`), the shared
/// config files (`aws_secret_access_key`, `aws_session_token`), the environment, SigV4
/// headers and presigned URLs (`X-Amz-Security-Token`, `X-Amz-Signature`, `Signature`).
pub const SECRET_KEYS: [&str; 10] = [
    "secretaccesskey",
    "secret_access_key",
    "aws_secret_access_key",
    "sessiontoken",
    "session_token",
    "aws_session_token",
    "x-amz-security-token",
    "securitytoken",
    "x-amz-signature",
    "signature",
];

/// How aws-config quotes a failed credential process (`credential_process.rs`: "external
/// process exited with code {status}. Stderr: {stderr}"): all of that stderr may be secret.
const CREDENTIAL_PROCESS_FAILED: &str = "external process exited with code";
const CREDENTIAL_PROCESS_STDERR: &str = "stderr: ";

/// Registered values shorter than this are not treated as secrets: a short value would
/// match ordinary text (and no AWS secret key or session token is this short).
const MIN_REGISTERED_LEN: usize = 16;

fn registered() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Removes `secret` wherever it appears in text scrubbed from now on.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_REGISTERED_LEN {
        return;
    }
    let mut all = registered().write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_owned());
    }
}

/// Registers the secrets of the credentials in the environment (`AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`): the binary calls this once at start.
pub fn register_environment() {
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"] {
        if let Ok(value) = std::env::var(name) {
            register(&value);
        }
    }
}

fn is_value_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | ',' | ';' | '&' | '}' | ')' | ']' | '\\')
}

/// Where the value after a secret key starts, if `rest` (the text right after the key)
/// is a separator and a value: `=`, `:`, `>` or `": "`, with spaces and quotes (also
/// backslash-escaped ones, as a Debug-printed string shows them) around it.
fn value_start(rest: &str) -> Option<usize> {
    let mut chars = rest.char_indices().peekable();
    // A quote closing a quoted key ("SecretAccessKey": ...).
    while let Some((_, '"' | '\'' | '\\')) = chars.peek() {
        chars.next();
    }
    while let Some((_, ' ' | '\t')) = chars.peek() {
        chars.next();
    }
    match chars.next() {
        Some((_, '=' | ':' | '>')) => {}
        _ => return None,
    }
    while let Some((_, ' ' | '\t' | '"' | '\'' | '\\')) = chars.peek() {
        chars.next();
    }
    chars.peek().map(|(i, _)| *i)
}

/// `text` with every secret it shows replaced by [`REDACTED`]; borrowed when clean.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for secret in registered().read().unwrap_or_else(|e| e.into_inner()).iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    if let Some(scrubbed) = scrub_keyed(&out) {
        out = Cow::Owned(scrubbed);
    }
    let lower = out.to_ascii_lowercase();
    let stderr = lower.find(CREDENTIAL_PROCESS_FAILED).and_then(|failed| {
        lower[failed..]
            .find(CREDENTIAL_PROCESS_STDERR)
            .map(|at| failed + at + CREDENTIAL_PROCESS_STDERR.len())
    });
    if let Some(cut) = stderr {
        if out.len() > cut && !out[cut..].starts_with(REDACTED) {
            out = Cow::Owned(format!("{}{REDACTED} (the credential process's stderr)", &out[..cut]));
        }
    }
    out
}

/// The key=value rule of [`scrub`]; `None` when nothing matched.
fn scrub_keyed(text: &str) -> Option<String> {
    // ASCII lowercasing keeps every byte where it was, so indexes carry over.
    let lower = text.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(found) = lower[from..].find(key) {
            let key_end = from + found + key.len();
            from = key_end;
            // `signature` inside `SignatureVersion` or `x-amz-signature` (its own key) is
            // not a separate match: the key must end at a separator.
            let Some(offset) = value_start(&text[key_end..]) else { continue };
            let start = key_end + offset;
            let len = text[start..].find(is_value_end).unwrap_or(text.len() - start);
            if len > 0 && !text[start..].starts_with(REDACTED) {
                cuts.push((start, start + len));
            }
        }
    }
    if cuts.is_empty() {
        return None;
    }
    cuts.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in cuts {
        if start < at {
            continue; // overlaps a cut already made (x-amz-signature and signature)
        }
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Every string in `value` (keys included) scrubbed.
pub fn scrub_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(scrub(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub_json).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (scrub(&k).into_owned(), scrub_json(v))).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "FwoGZXIvYXdzEJr//////////wEaDExampleSessionTokenValue+AbC=";

    #[test]
    fn credential_shapes_lose_their_secrets_and_keep_their_key_ids() {
        let shapes = [
            format!(
                r#"{{"Version": 1, "AccessKeyId": "ASIAEXAMPLE", "SecretAccessKey": "{SECRET}", "SessionToken": "{TOKEN}"}}"#
            ),
            format!("aws_secret_access_key = {SECRET}\naws_session_token={TOKEN}"),
            format!(
                "<Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>{TOKEN}</SessionToken></Credentials>"
            ),
            format!(
                "x-amz-security-token: {TOKEN}\nauthorization: AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20260101/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            ),
            format!(
                "https://b.s3.amazonaws.com/k?X-Amz-Credential=ASIAEXAMPLE&X-Amz-Security-Token={TOKEN}&X-Amz-Signature=0123456789abcdef"
            ),
            format!("AWS_SECRET_ACCESS_KEY={SECRET} AWS_SESSION_TOKEN='{TOKEN}'"),
            // A JSON document Debug-printed inside a log line: escaped quotes.
            format!(r#"body: "{{\"SecretAccessKey\": \"{SECRET}\", \"SessionToken\":\"{TOKEN}\"}}""#),
        ];
        for shape in &shapes {
            let out = scrub(shape);
            assert!(!out.contains(SECRET) && !out.contains(TOKEN), "{out}");
            assert!(!out.contains("0123456789abcdef"), "signature kept: {out}");
            assert!(out.contains(REDACTED), "{out}");
            if shape.contains("ASIAEXAMPLE") {
                assert!(out.contains("ASIAEXAMPLE"), "the key id names the credential: {out}");
            }
        }
    }

    #[test]
    fn a_failed_credential_process_loses_its_stderr() {
        let text = format!(
            "the credentials provider was not enabled: Error retrieving credentials: external process exited with code exit status: 1. Stderr: vault said: token {SECRET} expired"
        );
        let out = scrub(&text);
        assert!(!out.contains(SECRET), "{out}");
        assert!(out.contains("external process exited with code exit status: 1"), "{out}");
    }

    #[test]
    fn registered_values_are_removed_anywhere() {
        let value = "registered-secret-value-0123456789";
        register(value);
        let text = format!("request failed for {value}.");
        assert_eq!(scrub(&text), format!("request failed for {REDACTED}."));
        register("short"); // too short to be a secret: ignored
        assert_eq!(scrub("a short word"), "a short word");
    }

    #[test]
    fn ordinary_text_is_untouched() {
        for text in [
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d08c1a08c1a08",
            "SignatureVersion 4; signatures verified: 12",
            "ec2:ModifyInstanceAttribute of i-0123456789abcdef0: UnauthorizedOperation",
            "arn:aws:sts::111122223333:assumed-role/CleanroomForensics/cleanroom-IR-1",
            "the triage script failed: see stderr: no file system found",
        ] {
            assert!(matches!(scrub(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn json_is_scrubbed_in_every_string() {
        let v = serde_json::json!({"errors": [format!("SecretAccessKey={SECRET}")], "n": 1,
            "nested": {"msg": format!("\"SessionToken\": \"{TOKEN}\"")}});
        let text = scrub_json(v).to_string();
        assert!(!text.contains(SECRET) && !text.contains(TOKEN), "{text}");
        assert!(text.contains("\"n\":1"));
    }
}
