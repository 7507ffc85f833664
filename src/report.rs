//! The hand-off report: case summary, timeline of every custody event, evidence table
//! with digests and locations, the verification result, how to re-verify with standard
//! tools, and a FRE 902(14) certification template. HTML (self-contained, no scripts
//! or external resources), Markdown and JSON from the same data.

use std::fmt::Write as _;

use serde::Serialize;

use crate::evidence::case::{ChainHead, ManifestItem, utc_ms};
use crate::evidence::checkpoint::CheckpointDetails;
use crate::evidence::custody::Action;
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
    ReportData {
        schema: "cleanroom.report/1",
        case: cf.case.clone(),
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
    }
}

pub fn render(data: &ReportData, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(data).expect("report serialises") + "\n",
        Format::Md => markdown(data),
        Format::Html => html(data),
    }
}

fn bucket_name(location: &str) -> &str {
    location.strip_prefix("s3://").unwrap_or(location)
}

/// Re-verification steps with the case's own values, as (explanation, commands).
fn reverify_steps(d: &ReportData) -> Vec<(String, String)> {
    let bucket = bucket_name(&d.bucket);
    let mut steps = Vec::new();
    if let Some(item) = d.items.first() {
        let v = item.version_id.as_deref().unwrap_or("<version id>");
        steps.push((
            format!("Download one evidence object by its version id and compare its SHA-256 with the evidence table (expected {}).", item.sha256),
            format!(
                "aws s3api get-object --bucket {bucket} --key '{}' --version-id '{v}' item.bin\nsha256sum item.bin   # also: sha1sum item.bin, md5sum item.bin",
                item.s3_key
            ),
        ));
        steps.push((
            "Check that Object Lock still protects that version (mode and retain-until date).".into(),
            format!(
                "aws s3api get-object-retention --bucket {bucket} --key '{}' --version-id '{v}'",
                item.s3_key
            ),
        ));
        steps.push((
            "Check that no newer version or delete marker was added over any evidence key.".into(),
            format!("aws s3api list-object-versions --bucket {bucket} --prefix 'cases/{}/'", d.case),
        ));
    }
    steps.push((
        "Download the whole case and let cleanroom (or your own script) re-check every digest and the custody chain offline: each custody record's `hash` is the SHA-256 of its RFC 8785 canonical JSON without the `hash` field, and each `prev` is the previous record's `hash`.".into(),
        format!("aws s3 cp --recursive s3://{bucket}/cases/{case}/ ./{case}/\ncleanroom verify --case {case} --dir ./{case}", case = d.case),
    ));
    if let Some(c) = &d.checkpoint {
        let signed = String::from_utf8(crate::evidence::custody::canonical(&c.signed)).unwrap_or_default();
        steps.push((
            format!(
                "Verify the signed checkpoint over custody record {} with the public key alone ({}; key {}).",
                c.signed.seq, c.public_key_sha256, c.key_id
            ),
            format!(
                "printf '%s' '{signed}' > signed.json\necho '{}' | base64 -d > signature.der\naws s3 cp 's3://{bucket}/{}' key.pem\nopenssl dgst -sha256 -verify key.pem -signature signature.der signed.json   # prints: Verified OK",
                c.signature, c.public_key_s3_key
            ),
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
        None => "Not verified yet: run `cleanroom verify --case ".to_owned() + &d.case + "`.",
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
    let _ = writeln!(s, "# Evidence report: case {}\n", d.case);
    let _ = writeln!(s, "## Case summary\n");
    for (k, v) in summary_rows(d) {
        let _ = writeln!(s, "- **{k}:** {v}");
    }
    let _ = writeln!(s, "\n## Verification\n\n{}\n", verification_line(d));
    if !d.chain_problems.is_empty() {
        let _ = writeln!(s, "**Custody chain problems found while writing this report:**\n");
        for p in &d.chain_problems {
            let _ = writeln!(s, "- {p}");
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
            "| {} | {} / {} | {} | {} | `{}` | `{}` | `{}` | `{}` ({}) |",
            md(&i.id),
            md(&i.source),
            md(&i.method),
            i.acquired_at,
            i.size,
            i.sha256,
            i.sha1,
            i.md5,
            md(&i.s3_key),
            i.version_id.as_deref().unwrap_or("-")
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
            r.time,
            r.action,
            md(&r.examiner),
            md(&r.principal),
            md(&r.subject),
            md(&r.evidence.join(", ")),
            md(&r.aws_request_ids.join(", "))
        );
    }
    let _ = writeln!(s, "\n## How to re-verify independently\n");
    for (n, (why, cmd)) in reverify_steps(d).iter().enumerate() {
        let _ = writeln!(s, "{}. {why}\n\n```sh\n{cmd}\n```\n", n + 1);
    }
    let _ = writeln!(
        s,
        "## Certification (FRE 902(14)) — template to complete\n\n```text\n{}\n```",
        CERTIFICATION.replace("[CASE]", &d.case)
    );
    s
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
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

fn esc(s: &str) -> String {
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
        let _ = writeln!(s, "<li><p>{}</p><pre>{}</pre></li>", esc(&why), esc(&cmd));
    }
    let _ = write!(
        s,
        "</ol>\n<h2>Certification under FRE 902(14): template to complete</h2>\n<pre>{}</pre>\n</body></html>\n",
        esc(&CERTIFICATION.replace("[CASE]", &d.case))
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_everything_it_is_given() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
    }
}
