//! The report as Markdown, for the case file: the same sections as the HTML. Every
//! value is HTML-escaped and backslash-escaped so it can open no code span, link,
//! emphasis, heading or table cell; suspect values are quoted; text as found (UserData,
//! console output) and the IR log are indented code blocks, which no content can end
//! (every line is one escaped line); commands are fenced, holding only checked values.

use std::fmt::Write as _;

use super::model::{Containment, Report, VerificationStatus};
use super::phrase::{Phrase, Span, quoted};
use super::reverify::{self, plain};
use super::timeline::{human_size, plural, split_time};
use crate::text::{sanitize, sanitize_lines};

/// A value as Markdown text: control and bidi characters shown as escapes, HTML
/// special characters as entities, Markdown punctuation backslash-escaped, so no
/// value can open a code span, a link, emphasis or a heading, or end a table cell.
/// Punctuation that matters only at the start of a block (`-`, `+`, `1.`) is escaped
/// there only, so dates and digests stay readable in the raw file.
pub fn md(s: &str) -> String {
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
pub fn md_code(s: &str) -> String {
    if plain(s) { format!("`{s}`") } else { md(s) }
}

/// A phrase: our words escaped, suspect values quoted and escaped.
fn phrase(p: &Phrase) -> String {
    p.0.iter()
        .map(|span| match span {
            Span::Text(t) => md(t),
            Span::Data(d) => md(&quoted(d)),
        })
        .collect()
}

/// Text as found, as an indented code block (each line made one safe line).
fn block(s: &mut String, text: &str) {
    s.push('\n');
    for line in sanitize_lines(text).lines() {
        let _ = writeln!(s, "    {line}");
    }
    s.push('\n');
}

pub fn render(d: &Report) -> String {
    let mut s = String::new();
    let sm = &d.summary;
    let _ = writeln!(s, "# Evidence report: case {}\n", md(&d.case));
    let _ = writeln!(
        s,
        "Report generated {} by {}. Evidence store: {}. {}\n",
        md(&d.generated_at),
        md(&d.opened.tool),
        md_code(&d.location),
        d.custody_head
            .as_ref()
            .map(|h| format!("{} custody records, head {}.", h.seq, md_code(&h.hash)))
            .unwrap_or_else(|| "No custody records.".into())
    );
    let _ = writeln!(
        s,
        "Values in quotes come from the suspect's account or disk (tags, names, UserData, console text, CloudTrail fields, file paths): shown exactly as found, as inert text, control and direction-changing characters as escapes such as `\\u{{1b}}`. Times are UTC.\n"
    );
    let _ = writeln!(s, "## 1. Summary\n\n{}\n", phrase(&sm.overview));
    let label = match sm.verification_status {
        VerificationStatus::Verified => "Everything verified",
        VerificationStatus::IntegrityOnly => "Intact, not authenticated",
        VerificationStatus::Failed => "VERIFICATION FAILED",
        VerificationStatus::NotVerified => "NOT VERIFIED YET",
    };
    let _ = writeln!(s, "**Did everything verify? {label}.** {}\n", phrase(&sm.verification));
    if !d.chain_problems.is_empty() {
        let _ = writeln!(s, "**Custody chain problems found while writing this report:**\n");
        for p in &d.chain_problems {
            let _ = writeln!(s, "- {}", md(p));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### What happened to which instances\n");
    for i in &sm.instances {
        let state = match i.containment {
            Containment::Verified => "contained, checked",
            Containment::Failed => "CONTAINMENT FAILED",
            Containment::Released => "released",
            Containment::NotContained => "not contained by cleanroom",
        };
        let _ = writeln!(
            s,
            "#### {}{} ({state})\n",
            md(&i.instance),
            i.name.as_deref().map(|n| format!(" {}", md(&quoted(n)))).unwrap_or_default()
        );
        let mut line = format!("Account {}, region {}", md(&i.account), md(&i.region));
        if let Some(t) = &i.instance_type {
            line.push_str(&format!(", type {}", md(&quoted(t))));
        }
        if let Some(st) = &i.state_at_capture {
            line.push_str(&format!(", {} when captured", md(&quoted(st))));
        }
        line.push_str(&format!(
            "; {}, {}.",
            plural(i.evidence_items, "evidence item", "evidence items"),
            human_size(i.evidence_bytes)
        ));
        if let Some(l) = &i.launched_by {
            line.push_str(&format!(" It was {}.", phrase(l)));
        }
        let _ = writeln!(s, "{line}\n");
        for line in &i.story {
            let _ = writeln!(
                s,
                "- {}{}: {}",
                if line.failure { "**FAILED or problem:** " } else { "" },
                md(&line.time),
                phrase(&line.what)
            );
        }
        if !i.disk_copies.is_empty() {
            let copies: Vec<String> = i
                .disk_copies
                .iter()
                .map(|c| {
                    format!(
                        "{} (copy of {}{})",
                        md(&c.forensics_snapshot),
                        md(&c.source_snapshot),
                        c.volume.as_deref().map(|v| format!(", volume {}", md(v))).unwrap_or_default()
                    )
                })
                .collect();
            let _ = writeln!(s, "\nDisk evidence in the forensics account: {}.", copies.join("; "));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "### What was preserved, where, for how long\n\n{}\n", phrase(&sm.preserved));
    let _ = writeln!(s, "### Who did what\n");
    for p in &sm.people {
        let (fd, fc, _) = split_time(&p.first);
        let (ld, lc, _) = split_time(&p.last);
        let when = if fd == ld {
            format!("on {fd} from {fc} to {lc} UTC")
        } else {
            format!("from {fd} {fc} to {ld} {lc} UTC")
        };
        let _ = writeln!(
            s,
            "- **{}**: {} {}: {}. From host {}, with {}.",
            md(&p.who),
            plural(p.actions, "action", "actions"),
            md(&when),
            md(&p.did.join(", ")),
            md(&p.hosts.join(", ")),
            md(&p.tools.join("; "))
        );
    }
    let _ = writeln!(s, "\n## 2. Findings and their evidence\n");
    if d.findings.is_empty() {
        let _ = writeln!(
            s,
            "No findings: the capture summaries and clean-room results hold nothing to report.\n"
        );
    }
    let mut current: Option<(Option<String>, Option<String>)> = None;
    for f in &d.findings {
        let group = (f.instance.clone(), f.volume.clone());
        if current.as_ref() != Some(&group) {
            let heading = match &group {
                (Some(i), Some(v)) => format!("{} · volume {}", md(i), md(v)),
                (Some(i), None) => md(i),
                _ => "The case".into(),
            };
            let _ = writeln!(s, "### {heading}\n");
            current = Some(group);
        }
        let head = format!(
            "**F{}** \\[{}\\]{} {}",
            f.number,
            md(&f.source),
            if f.process_problem { " (gap or problem of the process)" } else { "" },
            phrase(&f.title)
        );
        let _ = writeln!(s, "{head}\n");
        let mut facts = Vec::new();
        if let Some(p) = &f.path {
            facts.push(format!("file {}", md(&quoted(p))));
        }
        if let Some(i) = &f.inode {
            facts.push(format!("inode {}", md(&quoted(i))));
        }
        if let Some(h) = &f.sha256 {
            facts.push(md_code(h));
        }
        if !facts.is_empty() {
            let _ = writeln!(s, "{}\n", facts.join(" · "));
        }
        if let Some(x) = &f.excerpt {
            block(&mut s, x);
        }
        if !f.evidence.is_empty() {
            let ev: Vec<String> = f
                .evidence
                .iter()
                .map(|e| match e.number {
                    Some(n) => format!("E{n} {}", md(&e.id)),
                    None => md(&e.id),
                })
                .collect();
            let _ = writeln!(s, "Evidence: {}\n", ev.join("; "));
        }
    }
    if !d.source_problems.is_empty() {
        let _ = writeln!(s, "**Evidence this report could not use:**\n");
        for p in &d.source_problems {
            let _ = writeln!(s, "- {}", md(p));
        }
        s.push('\n');
    }

    let _ = writeln!(
        s,
        "## 3. Timeline: every action, in order\n\nOne sentence per custody record, in the order of their sequence numbers; each record carries the SHA-256 of the one before it.\n"
    );
    let mut day = String::new();
    for e in &d.timeline {
        if e.date != day {
            let _ = writeln!(s, "### {}\n", md(&e.date));
            day = e.date.clone();
        }
        let _ = writeln!(
            s,
            "- {}{} (custody record {}, {})",
            if e.failure { "**FAILED or problem:** " } else { "" },
            phrase(&e.sentence),
            e.seq,
            md_code(&e.record_hash)
        );
    }
    let _ = writeln!(s, "\n### The same, as the IR log\n");
    block(&mut s, &d.timeline.iter().map(|e| e.ir_log.clone()).collect::<Vec<_>>().join("\n"));

    let _ = writeln!(
        s,
        "## 4. Evidence items\n\n{} item(s) under {}; digests computed as the bytes were read, before storing, and checked again on read-back.\n",
        d.items.len(),
        md(&d.retention)
    );
    for it in &d.items {
        let i = &it.item;
        let _ = writeln!(s, "### E{} · {}\n", it.number, md(&i.id));
        let mut rows = vec![
            ("About", format!("{} in account {}", md(&i.subject), md(&i.account))),
            ("Source", md(&i.source)),
            ("Method", md(&i.method)),
            ("Acquired (UTC)", md(&i.acquired_at)),
            ("Size", format!("{} bytes ({})", i.size, human_size(i.size))),
            ("SHA-256", md_code(&i.sha256)),
            ("SHA-1", md_code(&i.sha1)),
            ("MD5", md_code(&i.md5)),
            ("Stored as", md_code(&format!("s3://{}/{}", d.bucket, i.s3_key))),
            ("S3 version", md_code(i.version_id.as_deref().unwrap_or("none"))),
            (
                "Object Lock",
                md(&match (&i.lock_mode, &i.retain_until) {
                    (Some(m), Some(u)) => {
                        format!("{m} until {u}{}", if i.legal_hold { ", legal hold" } else { "" })
                    }
                    _ => "the bucket's default retention".into(),
                }),
            ),
        ];
        if !i.derived_from.is_empty() {
            rows.push(("Derived from", md(&i.derived_from.join(", "))));
        }
        if let Some(r) = &it.recorded_in {
            rows.push((
                "Custody record",
                format!(
                    "{} ({}){}",
                    r.seq,
                    md_code(&r.hash),
                    if r.signature.is_some() { ", signed" } else { ", not signed" }
                ),
            ));
        }
        rows.push(("Verification", md(&it.status)));
        for (k, v) in rows {
            let _ = writeln!(s, "- **{k}:** {v}");
        }
        if !it.commands.is_empty() {
            // Commands hold only checked, shell-quoted values: no backtick can end the fence.
            let lines: Vec<String> = it.commands.iter().map(|c| sanitize(c).into_owned()).collect();
            let _ = writeln!(
                s,
                "\nTo check it (after the first step of section 5):\n\n```sh\n{}\n```",
                lines.join("\n")
            );
        }
        if let Some(n) = &it.commands_note {
            let _ = writeln!(s, "\n{}", md(&format!("Commands incomplete: {n}.")));
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## 5. Verifying the whole case independently\n");
    match &d.verification {
        None => {
            let _ = writeln!(s, "No verification is recorded in this case.\n");
        }
        Some(v) => {
            let (date, clock, _) = split_time(&v.time);
            let _ = writeln!(
                s,
                "Last verification: {date} {clock} UTC by {}, custody record {}: {}\n",
                md(&v.who),
                v.seq,
                md(&v.verdict)
            );
            if let Some(list) = v.findings.as_array().filter(|l| !l.is_empty()) {
                for f in list {
                    let _ = writeln!(
                        s,
                        "- {}: {}: {}",
                        md(f.get("what").and_then(|x| x.as_str()).unwrap_or("")),
                        md(f.get("location").and_then(|x| x.as_str()).unwrap_or("")),
                        md(f.get("problem").and_then(|x| x.as_str()).unwrap_or(""))
                    );
                }
                s.push('\n');
            }
        }
    }
    for (n, step) in d.reverify.iter().enumerate() {
        let _ = writeln!(s, "{}. {}\n", n + 1, md(&step.why));
        if !step.commands.is_empty() {
            // Commands hold only checked, shell-quoted values: no backtick can end the fence.
            let _ = writeln!(s, "```sh\n{}\n```\n", sanitize_lines(&step.commands));
        }
    }
    let _ = writeln!(
        s,
        "## 6. Certification under FRE 902(14): template to complete\n\n```text\n{}\n```",
        reverify::certification(d)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{build_at, fixtures};
    use crate::report::sources::Sources;

    #[test]
    fn values_cannot_open_code_links_emphasis_html_or_cells() {
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
    fn text_as_found_is_an_indented_block_no_line_can_leave() {
        let mut s = String::new();
        block(&mut s, "#!/bin/sh\n```\n</pre><script>x</script>\u{1b}[2J\nnot code");
        for line in s.lines().filter(|l| !l.is_empty()) {
            assert!(line.starts_with("    "), "{line:?} left the block");
        }
        assert!(s.contains("    </pre><script>x</script>\\u{1b}[2J\n"), "{s}");
    }

    #[test]
    fn suspect_names_are_quoted_and_escaped_everywhere() {
        let mut case = fixtures::case();
        let r = case.records[2].record.as_mut().unwrap();
        r.details["swaps"][0]["eni"] = serde_json::json!("eni-0a");
        let mut report = build_at(&case, &Sources::default(), "t".into());
        report.summary.instances[0].name = Some("*x* <b>".into());
        let text = render(&report);
        assert!(text.contains("i-0123456789abcdef0 \"\\*x\\* &lt;b&gt;\""), "{text}");
        assert!(text.contains("## 1. Summary") && text.contains("## 6. Certification"), "{text}");
    }
}
