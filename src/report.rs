//! The hand-off report: case summary, timeline of every custody event, evidence table
//! with digests and locations, the verification result, how to re-verify with standard
//! tools, and a FRE 902(14) certification template. HTML (self-contained, no scripts
//! or external resources), Markdown and JSON from the same data.
//!
//! Every value comes from the evidence bucket and is attacker-controlled: in HTML it
//! is entity-escaped, in Markdown HTML- and backslash-escaped (code spans only for
//! values of a checked form), in both its control and bidi characters shown as
//! escapes (`text::sanitize`); JSON escapes them as `\uXXXX`. A value pasted into a
//! re-verification command is first checked against the form it must have (bucket
//! name, case id, S3 key of this case, version id, digest, key ARN, base64) and then
//! shell-quoted; a value of any other form leaves its command out, saying why.

use std::fmt::Write as _;

use serde::Serialize;

use crate::evidence::case::{ChainHead, ManifestItem, utc_ms};
use crate::evidence::checkpoint::{CHECKPOINT_PURPOSE, CheckpointDetails};
use crate::evidence::custody::Action;
use crate::evidence::layout;
use crate::ids::{BucketName, CaseId, KmsKeyArn};
use crate::text::sanitize;
use crate::verify::LoadedCase;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Html,
    Md,
    Json,
}

impl Format {
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Md => "md",
            Format::Json => "json",
        }
    }
    pub fn content_type(&self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineRow {
    pub seq: u64,
    pub time: String,
    pub action: String,
    pub examiner: String,
    pub principal: String,
    pub subject: String,
    pub evidence: Vec<String>,
    pub aws_request_ids: Vec<String>,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub seq: u64,
    pub time: String,
    pub examiner: String,
    pub ok: bool,
    pub verdict: String,
    pub findings: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportData {
    pub schema: &'static str,
    pub case: String,
    pub bucket: String,
    pub generated_at: String,
    pub opened_at: String,
    pub opened_by: String,
    pub principal: String,
    pub tool: String,
    pub binary_sha256: String,
    pub config_digest: String,
    pub retention: String,
    pub custody_head: Option<ChainHead>,
    pub chain_problems: Vec<String>,
    pub timeline: Vec<TimelineRow>,
    pub items: Vec<ManifestItem>,
    pub verification: Option<Verification>,
    pub checkpoint: Option<CheckpointDetails>,
    /// The key the newest signed record names (checked against KMS, not trusted here).
    pub signing_key: Option<SigningKeyInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SigningKeyInfo {
    pub key_id: String,
    pub public_key_sha256: String,
}

pub fn build(loaded: &LoadedCase) -> ReportData {
    let cf = &loaded.case_file;
    let timeline = loaded
        .chain()
        .map(|r| TimelineRow {
            seq: r.seq,
            time: r.time.clone(),
            action: r.action.as_str(),
            examiner: r.actor.examiner.clone(),
            principal: r.actor.principal_arn.clone(),
            subject: r.subject.clone(),
            evidence: r.evidence.iter().map(|e| e.id.clone()).collect(),
            aws_request_ids: r.aws_request_ids.clone(),
            hash: r.hash.clone(),
        })
        .collect();
    let verification = loaded.last(Action::Verified).map(|r| Verification {
        seq: r.seq,
        time: r.time.clone(),
        examiner: r.actor.examiner.clone(),
        ok: r.details.get("ok").and_then(|v| v.as_bool()).unwrap_or(false),
        verdict: r.details.get("verdict").and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
        findings: r.details.get("findings").cloned().unwrap_or(serde_json::Value::Null),
    });
    let checkpoint = loaded
        .last(Action::CheckpointSigned)
        .and_then(|r| serde_json::from_value::<CheckpointDetails>(r.details.clone()).ok());
    let signing_key = loaded
        .chain()
        .filter_map(|r| r.signature.as_ref())
        .last()
        .map(|s| SigningKeyInfo { key_id: s.key_id.clone(), public_key_sha256: s.public_key_sha256.clone() });
    ReportData {
        schema: "cleanroom.report/1",
        // The case id asked for (validated), never the one case.json claims.
        case: loaded.case.to_string(),
        bucket: cf.store.clone(),
        generated_at: utc_ms(time::OffsetDateTime::now_utc()),
        opened_at: cf.opened_at.clone(),
        opened_by: cf.opened_by.examiner.clone(),
        principal: cf.opened_by.principal_arn.clone(),
        tool: format!("{} {}", cf.tool.name, cf.tool.version),
        binary_sha256: cf.tool.binary_sha256.clone(),
        config_digest: cf.config_digest.clone(),
        retention: match (cf.retention.mode, cf.retention.days) {
            (Some(m), Some(d)) => format!("Object Lock {m}, {d} days from each write"),
            _ => "the bucket's default Object Lock retention".into(),
        },
        custody_head: loaded.head(),
        chain_problems: loaded.chain_findings.iter().map(|f| format!("{}: {}", f.key, f.problem)).collect(),
        timeline,
        items: loaded.items().into_values().collect(),
        verification,
        checkpoint,
        signing_key,
    }
}

pub fn render(data: &ReportData, format: Format) -> String {
    match format {
        Format::Json => {
            crate::text::json_for_terminal(&serde_json::to_value(data).expect("report serialises")) + "\n"
        }
        Format::Md => markdown(data),
        Format::Html => html(data),
    }
}

fn bucket_name(location: &str) -> &str {
    location.strip_prefix("s3://").unwrap_or(location)
}

/// `'value'` for a POSIX shell: the value can hold nothing the shell acts on.
fn sh(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// Characters every value pasted into a command is limited to (on top of its form).
fn plain(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/+=@,-".contains(&b))
}

/// `sha256:` and 64 lowercase hex digits.
fn is_sha256(value: &str) -> bool {
    crate::evidence::digest::untag_sha256(value).is_some()
}

/// An S3 version id as S3 writes them: up to 1,024 URL-safe characters.
fn is_version_id(value: &str) -> bool {
    value.len() <= 1024 && plain(value)
}

/// An evidence key of this case, of the shape `layout` builds.
fn is_evidence_key(case: &CaseId, key: &str) -> bool {
    plain(key) && layout::kind(case, key) == Some(layout::Kind::Evidence)
}

fn is_base64(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 1024
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
}

/// Re-verification steps with the case's own values, as (explanation, commands).
/// A value not of its expected form leaves its step out, with a line saying so.
fn reverify_steps(d: &ReportData) -> Vec<(String, String)> {
    let mut steps = Vec::new();
    let mut omitted = Vec::new();
    let case: Option<CaseId> = d.case.parse().ok();
    let bucket: Option<BucketName> = bucket_name(&d.bucket).parse().ok();
    let (Some(case), Some(bucket)) = (case, bucket) else {
        steps.push((
            format!(
                "The evidence store ({}) or the case id ({}) does not have the form of an S3 bucket name and a case id: no commands are given for it. Ask the examiner where the evidence is.",
                d.bucket, d.case
            ),
            String::new(),
        ));
        return steps;
    };
    let (b, c) = (sh(bucket.as_str()), sh(case.as_str()));
    if let Some(item) = d.items.first() {
        let version = item.version_id.as_deref().filter(|v| is_version_id(v));
        if is_evidence_key(&case, &item.s3_key)
            && is_sha256(&item.sha256)
            && let Some(v) = version
        {
            let (k, v) = (sh(&item.s3_key), sh(v));
            steps.push((
                format!("Download one evidence object by its version id and compare its SHA-256 with the evidence table (expected {}).", item.sha256),
                format!(
                    "aws s3api get-object --bucket {b} --key {k} --version-id {v} item.bin\nsha256sum item.bin   # also: sha1sum item.bin, md5sum item.bin"
                ),
            ));
            steps.push((
                "Check that Object Lock still protects that version (mode and retain-until date).".into(),
                format!("aws s3api get-object-retention --bucket {b} --key {k} --version-id {v}"),
            ));
        } else {
            omitted.push(format!(
                "evidence item {}: its S3 key, version id or digest is not of the expected form",
                item.id
            ));
        }
        steps.push((
            "Check that no newer version or delete marker was added over any evidence key or custody record."
                .into(),
            format!(
                "aws s3api list-object-versions --bucket {b} --prefix {}",
                sh(&layout::case_prefix(&case))
            ),
        ));
    }
    let key_arn = d
        .signing_key
        .as_ref()
        .filter(|k| is_sha256(&k.public_key_sha256) && plain(&k.key_id))
        .and_then(|k| k.key_id.parse::<KmsKeyArn>().ok().map(|arn| (arn, k.public_key_sha256.clone())));
    match &key_arn {
        Some((arn, fingerprint)) => steps.push((
            format!(
                "Get the signing key's public key from KMS (not from the case: whoever can write the case could replace the copy in it) and check its fingerprint (expected {fingerprint}).",
            ),
            format!(
                "aws kms get-public-key --key-id {} --query PublicKey --output text | base64 -d > signing-key.der\nopenssl pkey -pubin -inform DER -in signing-key.der -out signing-key.pem\nsha256sum signing-key.der   # expected: {}",
                sh(arn.as_str()),
                fingerprint.trim_start_matches("sha256:")
            ),
        )),
        None if d.signing_key.is_some() => {
            omitted.push("the signing key: its id or fingerprint is not of the expected form".into());
        }
        None => {}
    }
    let prefix = sh(&format!("s3://{bucket}/{}", layout::case_prefix(&case)));
    steps.push((
        "Download the whole case and let cleanroom (or your own script) re-check every digest, the custody chain and every record's signature offline: each custody record's `hash` is the SHA-256 of its RFC 8785 canonical JSON without the `hash` and `signature` fields, each `prev` is the previous record's `hash`, and each `signature` is an ECDSA P-256 signature over the canonical JSON {\"case\",\"hash\",\"purpose\":\"cleanroom.custody-record/1\",\"seq\"}.".into(),
        format!(
            "aws s3 cp --recursive {prefix} {dir}\ncleanroom verify --case {c} --dir {dir}{key}",
            dir = sh(&format!("./{case}/")),
            key = if key_arn.is_some() { " --public-key signing-key.pem" } else { "" }
        ),
    ));
    if let Some(cp) = &d.checkpoint {
        let s = &cp.signed;
        let well_formed = s.purpose == CHECKPOINT_PURPOSE
            && s.case == case.as_str()
            && is_sha256(&s.hash)
            && is_base64(&cp.signature)
            && is_sha256(&cp.public_key_sha256);
        if well_formed && key_arn.is_some() {
            let signed = String::from_utf8(crate::evidence::custody::canonical(s)).unwrap_or_default();
            steps.push((
                format!(
                    "Verify the signed checkpoint over custody record {} with the public key from KMS alone ({}; key {}).",
                    s.seq, cp.public_key_sha256, cp.key_id
                ),
                format!(
                    "printf '%s' {} > signed.json\nprintf '%s' {} | base64 -d > signature.der\nopenssl dgst -sha256 -verify signing-key.pem -signature signature.der signed.json   # prints: Verified OK",
                    sh(&signed),
                    sh(&cp.signature)
                ),
            ));
        } else if !well_formed {
            omitted.push("the checkpoint: its statement or signature is not of the expected form".into());
        }
    }
    if !omitted.is_empty() {
        steps.push((
            format!(
                "Commands left out because a value is not of the form it must have (investigate these): {}.",
                omitted.join("; ")
            ),
            String::new(),
        ));
    }
    steps
}

const CERTIFICATION: &str = "I, [NAME], declare under penalty of perjury under the laws of the United States that the following is true and correct:

1. I am [TITLE] at [ORGANISATION]. I am qualified by [TRAINING AND EXPERIENCE] to authenticate electronic evidence by a process of digital identification.
2. The evidence items listed in this report (case [CASE]) were acquired on the dates and by the methods recorded in its chain-of-custody log. At acquisition, the SHA-256, SHA-1 and MD5 hash values of each item were computed as the bytes were read and recorded in the manifest.
3. On [DATE OF COMPARISON], I [or: the process described in this report] retrieved each item from the storage location listed and computed its SHA-256 hash value again. Each recomputed hash value matches the value recorded at acquisition, which establishes that the item is an exact copy of the data acquired.
4. The items have been stored in Amazon S3 with Object Lock retention in COMPLIANCE mode, under which no user, including the account's administrators, can modify or delete a stored object version before its retention date.
5. This certification is made under Federal Rules of Evidence 902(14) (and 902(13) as to the process that produced the records), and the proponent will give the adverse party reasonable written notice and make the records and this certification available for inspection, as Rule 902(11) requires.

Executed on [DATE] at [PLACE].

______________________________
[NAME]";

fn verification_line(d: &ReportData) -> String {
    match &d.verification {
        None => format!("Not verified yet: run cleanroom verify --case {}", d.case),
        Some(v) => format!(
            "{} (custody record {}, {} by {})",
            if v.verdict.is_empty() {
                if v.ok { "VERIFIED" } else { "FAILED" }.to_owned()
            } else {
                v.verdict.clone()
            },
            v.seq,
            v.time,
            v.examiner
        ),
    }
}

fn markdown(d: &ReportData) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Evidence report: case {}\n", md(&d.case));
    let _ = writeln!(s, "## Case summary\n");
    for (k, v) in summary_rows(d) {
        let _ = writeln!(s, "- **{k}:** {}", md(&v));
    }
    let _ = writeln!(s, "\n## Verification\n\n{}\n", md(&verification_line(d)));
    if !d.chain_problems.is_empty() {
        let _ = writeln!(s, "**Custody chain problems found while writing this report:**\n");
        for p in &d.chain_problems {
            let _ = writeln!(s, "- {}", md(p));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## Evidence\n\n| Id | Source / method | Acquired | Size | SHA-256 | SHA-1 | MD5 | Location (S3 key, version) |\n|---|---|---|---|---|---|---|---|"
    );
    for i in &d.items {
        let _ = writeln!(
            s,
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} ({}) |",
            md(&i.id),
            md(&i.source),
            md(&i.method),
            md(&i.acquired_at),
            i.size,
            md_code(&i.sha256),
            md_code(&i.sha1),
            md_code(&i.md5),
            md_code(&i.s3_key),
            md_code(i.version_id.as_deref().unwrap_or("-"))
        );
    }
    let _ = writeln!(
        s,
        "\n## Timeline (chain of custody)\n\n| # | Time (UTC) | Action | Examiner | Principal | Subject | Evidence | AWS request ids |\n|---|---|---|---|---|---|---|---|"
    );
    for r in &d.timeline {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.seq,
            md(&r.time),
            md(&r.action),
            md(&r.examiner),
            md(&r.principal),
            md(&r.subject),
            md(&r.evidence.join(", ")),
            md(&r.aws_request_ids.join(", "))
        );
    }
    let _ = writeln!(s, "\n## How to re-verify independently\n");
    for (n, (why, cmd)) in reverify_steps(d).iter().enumerate() {
        // Commands hold only checked, shell-quoted values: no backtick can end the fence.
        let _ = writeln!(s, "{}. {}\n", n + 1, md(why));
        if !cmd.is_empty() {
            let _ = writeln!(s, "```sh\n{}\n```\n", sanitize(cmd).replace("\\n", "\n"));
        }
    }
    let _ = writeln!(
        s,
        "## Certification (FRE 902(14)) — template to complete\n\n```text\n{}\n```",
        CERTIFICATION.replace("[CASE]", &certified_case(d))
    );
    s
}

/// The case id for the certification template (inside a fence: only a valid id).
fn certified_case(d: &ReportData) -> String {
    d.case.parse::<CaseId>().map(|c| c.to_string()).unwrap_or_else(|_| "[CASE]".into())
}

/// A value as Markdown text: control and bidi characters shown as escapes, HTML
/// special characters as entities, Markdown punctuation backslash-escaped, so no
/// value can open a code span, a link, emphasis or a heading, or end a table cell.
/// Punctuation that matters only at the start of a block (`-`, `+`, `1.`) is escaped
/// there only, so dates and digests stay readable in the raw file.
fn md(s: &str) -> String {
    let safe = sanitize(s);
    let mut out = String::with_capacity(safe.len());
    let mut leading_digits = true;
    for (i, c) in safe.chars().enumerate() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '-' | '+' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if leading_digits && i > 0 => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
        leading_digits &= c.is_ascii_digit();
    }
    out
}

/// A value in a code span when it has a plain form (digests, keys, version ids);
/// escaped text otherwise (inside a code span nothing can be escaped).
fn md_code(s: &str) -> String {
    if plain(s) { format!("`{s}`") } else { md(s) }
}

fn summary_rows(d: &ReportData) -> Vec<(&'static str, String)> {
    vec![
        ("Case", d.case.clone()),
        ("Evidence store", d.bucket.clone()),
        ("Opened", format!("{} by {} ({})", d.opened_at, d.opened_by, d.principal)),
        ("Tool", format!("{} (binary {})", d.tool, d.binary_sha256)),
        ("Configuration digest", d.config_digest.clone()),
        ("Retention", d.retention.clone()),
        ("Evidence items", d.items.len().to_string()),
        (
            "Custody records",
            d.custody_head
                .as_ref()
                .map(|h| format!("{} (head {})", h.seq, h.hash))
                .unwrap_or_else(|| "none".into()),
        ),
        ("Report generated", d.generated_at.clone()),
    ]
}

/// A value as HTML text: control and bidi characters shown as escapes (a browser
/// would apply an entity-escaped override all the same), then entity-escaped.
fn esc(s: &str) -> String {
    let s = sanitize(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(d: &ReportData) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Evidence report: case {case}</title>\n<style>\
body{{font-family:Georgia,serif;max-width:70em;margin:2em auto;padding:0 1em;color:#111}}\
table{{border-collapse:collapse;width:100%;font-size:.85em;margin:1em 0}}th,td{{border:1px solid #999;padding:.3em;vertical-align:top;text-align:left}}\
th{{background:#eee}}code,pre{{font-family:monospace;word-break:break-all;white-space:pre-wrap}}pre{{background:#f6f6f6;padding:.6em;border:1px solid #ccc}}\
.ok{{color:#064}}.bad{{color:#a00;font-weight:bold}}dt{{font-weight:bold}}\
</style></head><body>\n<h1>Evidence report: case {case}</h1>\n",
        case = esc(&d.case)
    );
    s.push_str("<h2>Case summary</h2>\n<dl>");
    for (k, v) in summary_rows(d) {
        let _ = write!(s, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    s.push_str("</dl>\n<h2>Verification</h2>\n");
    let class = match &d.verification {
        Some(v) if v.ok => "ok",
        _ => "bad",
    };
    let _ = writeln!(s, "<p class=\"{class}\">{}</p>", esc(&verification_line(d)));
    if let Some(v) = &d.verification
        && let Some(list) = v.findings.as_array()
        && !list.is_empty()
    {
        s.push_str("<ul>");
        for f in list {
            let _ = write!(
                s,
                "<li>{}: <code>{}</code>: {}</li>",
                esc(f.get("what").and_then(|x| x.as_str()).unwrap_or("")),
                esc(f.get("location").and_then(|x| x.as_str()).unwrap_or("")),
                esc(f.get("problem").and_then(|x| x.as_str()).unwrap_or(""))
            );
        }
        s.push_str("</ul>\n");
    }
    if !d.chain_problems.is_empty() {
        s.push_str("<p class=\"bad\">Custody chain problems found while writing this report:</p><ul>");
        for p in &d.chain_problems {
            let _ = write!(s, "<li>{}</li>", esc(p));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("<h2>Evidence</h2>\n<table><tr><th>Id</th><th>Source / method</th><th>Acquired (UTC)</th><th>Size (bytes)</th><th>Digests</th><th>Location</th></tr>\n");
    for i in &d.items {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}<br>{}</td><td>{}</td><td>{}</td><td><code>{}</code><br><code>{}</code><br><code>{}</code></td><td><code>s3://{}/{}</code><br>version <code>{}</code><br>{}</td></tr>",
            esc(&i.id),
            esc(&i.source),
            esc(&i.method),
            esc(&i.acquired_at),
            i.size,
            esc(&i.sha256),
            esc(&i.sha1),
            esc(&i.md5),
            esc(bucket_name(&d.bucket)),
            esc(&i.s3_key),
            esc(i.version_id.as_deref().unwrap_or("-")),
            esc(&match (&i.lock_mode, &i.retain_until) {
                (Some(m), Some(u)) => format!("locked {m} until {u}"),
                _ => "lock: bucket default".into(),
            })
        );
    }
    s.push_str("</table>\n<h2>Timeline (chain of custody)</h2>\n<table><tr><th>#</th><th>Time (UTC)</th><th>Action</th><th>Who</th><th>Subject</th><th>Evidence</th><th>AWS request ids</th></tr>\n");
    for r in &d.timeline {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}<br><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            r.seq,
            esc(&r.time),
            esc(&r.action),
            esc(&r.examiner),
            esc(&r.principal),
            esc(&r.subject),
            esc(&r.evidence.join(", ")),
            esc(&r.aws_request_ids.join(", "))
        );
    }
    s.push_str("</table>\n<p>Order is given by the sequence number; each record carries the SHA-256 of the one before it, so any edited, removed, inserted or reordered record breaks the chain.</p>\n<h2>How to re-verify independently</h2>\n<ol>\n");
    for (why, cmd) in reverify_steps(d) {
        let _ = write!(s, "<li><p>{}</p>", esc(&why));
        if !cmd.is_empty() {
            let lines: Vec<String> = cmd.lines().map(esc).collect();
            let _ = write!(s, "<pre>{}</pre>", lines.join("\n"));
        }
        s.push_str("</li>\n");
    }
    let _ = write!(
        s,
        "</ol>\n<h2>Certification under FRE 902(14): template to complete</h2>\n<pre>{}</pre>\n</body></html>\n",
        esc(&CERTIFICATION.replace("[CASE]", &certified_case(d)))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_it_is_given() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(esc("a\u{1b}[2J\u{202e}b"), "a\\u{1b}[2J\\u{202e}b");
    }

    #[test]
    fn markdown_values_cannot_open_code_links_emphasis_html_or_cells() {
        assert_eq!(md("`rm -rf ~`"), "\\`rm -rf \\~\\`");
        assert_eq!(md("<img src=x>"), "&lt;img src=x&gt;");
        assert_eq!(
            md("[a](http://x) *b* _c_ |d| ~e~ #f \\g"),
            "\\[a\\](http://x) \\*b\\* \\_c\\_ \\|d\\| \\~e\\~ \\#f \\\\g"
        );
        assert_eq!(md("- item"), "\\- item");
        assert_eq!(md("12. x"), "12\\. x");
        assert_eq!(md("2026-01-02T03:04:05.000Z"), "2026-01-02T03:04:05.000Z", "dates stay readable");
        assert_eq!(md("line\nbreak\u{202e}"), "line\\\\nbreak\\\\u{202e}");
        assert_eq!(md_code("sha256:ab12"), "`sha256:ab12`");
        assert_eq!(md_code("x`y"), "x\\`y");
    }

    #[test]
    fn shell_quoting_keeps_any_value_one_inert_word() {
        assert_eq!(sh("plain"), "'plain'");
        assert_eq!(sh("it's $(reboot)"), "'it'\\''s $(reboot)'");
    }

    fn data(item_key: &str, version: &str, bucket: &str) -> ReportData {
        let sha = format!("sha256:{}", "ab".repeat(32));
        let item = ManifestItem {
            id: "x".into(),
            account: "111122223333".into(),
            subject: "i-0abc".into(),
            name: "x.json".into(),
            source: "s".into(),
            method: "m".into(),
            derived_from: vec![],
            acquired_at: "t".into(),
            size: 1,
            sha256: sha.clone(),
            sha1: "sha1:00".into(),
            md5: "md5:00".into(),
            s3_key: item_key.into(),
            version_id: Some(version.into()),
            s3_checksum_sha256: "AA==".into(),
            part_size: None,
            lock_mode: None,
            retain_until: None,
            legal_hold: false,
        };
        ReportData {
            schema: "cleanroom.report/1",
            case: "IR-1".into(),
            bucket: bucket.into(),
            generated_at: "t".into(),
            opened_at: "t".into(),
            opened_by: "Ada".into(),
            principal: "p".into(),
            tool: "cleanroom".into(),
            binary_sha256: sha.clone(),
            config_digest: sha.clone(),
            retention: "r".into(),
            custody_head: None,
            chain_problems: vec![],
            timeline: vec![],
            items: vec![item],
            verification: None,
            checkpoint: None,
            signing_key: Some(SigningKeyInfo {
                key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd".into(),
                public_key_sha256: sha,
            }),
        }
    }

    #[test]
    fn reverify_commands_quote_values_of_the_expected_form_and_leave_out_the_rest() {
        let good = data("cases/IR-1/evidence/111122223333/i-0abc/x.json", "v1.abc_DEF", "s3://acme-evidence");
        let steps = reverify_steps(&good);
        let all: String = steps.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("\n");
        assert!(all.contains("--bucket 'acme-evidence' --key 'cases/IR-1/evidence/111122223333/i-0abc/x.json' --version-id 'v1.abc_DEF'"), "{all}");
        assert!(
            all.contains("aws kms get-public-key --key-id 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd'"),
            "{all}"
        );
        assert!(
            all.contains("cleanroom verify --case 'IR-1' --dir './IR-1/' --public-key signing-key.pem"),
            "{all}"
        );

        for (key, version) in [
            ("cases/IR-1/evidence/111122223333/i-0abc/$(reboot)", "v1"),
            ("cases/IR-2/evidence/111122223333/i-0abc/x.json", "v1"),
            ("cases/IR-1/evidence/111122223333/i-0abc/x.json", "v1'; reboot; '"),
            ("cases/IR-1/evidence/111122223333/i-0abc/x.json", "v1\nreboot"),
        ] {
            let steps = reverify_steps(&data(key, version, "s3://acme-evidence"));
            let all: String = steps.iter().map(|(_, c)| c.as_str()).collect::<Vec<_>>().join("\n");
            assert!(!all.contains("get-object "), "{key:?} {version:?}: {all}");
            assert!(!all.contains("reboot"), "{key:?} {version:?}: {all}");
            assert!(steps.iter().any(|(why, _)| why.contains("not of the form it must have")), "{steps:?}");
        }
        let steps = reverify_steps(&data("k", "v", "s3://Bad Bucket`x`"));
        assert!(steps.iter().all(|(_, c)| c.is_empty()), "{steps:?}");
    }

    #[test]
    fn the_case_in_the_certification_is_the_checked_id() {
        let mut d = data("k", "v", "s3://acme-evidence");
        d.case = "IR-1```\n<b>".into();
        let text = markdown(&d);
        assert!(!text.contains("<b>"), "{text}");
        assert!(text.contains("case [CASE]"), "{text}");
    }
}
