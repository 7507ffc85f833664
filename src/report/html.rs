//! The report as one self-contained HTML file, made to be printed: no script, no
//! external resource of any kind (a Content-Security-Policy forbids them as well), a
//! stylesheet for A4 paper (page numbers, sections on new pages, no item split across
//! pages). Every value is entity-escaped with its control and bidi characters shown as
//! escapes; values from the suspect's account or disk are shown marked as data.

use std::fmt::Write as _;

use super::model::{Containment, Finding, Item, Report, VerificationStatus};
use super::phrase::{Phrase, Span};
use super::reverify;
use super::timeline::{human_size, plural, split_time};
use crate::ids::CaseId;
use crate::text::{sanitize, sanitize_lines};

/// Nothing may be fetched, run or framed: the report is read as it is.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

const STYLE: &str = r#"
:root{--ink:#111;--muted:#555;--rule:#999;--soft:#f2f2f2;--bad:#a00;--ok:#075;}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}
html{font-family:"Liberation Serif","DejaVu Serif",Georgia,serif;font-size:10pt;line-height:1.35;color:var(--ink)}
body{max-width:46em;margin:2em auto;padding:0 1em}
h1,h2,h3,h4,.kicker,th,.label{font-family:"Liberation Sans","DejaVu Sans",Arial,sans-serif}
h1{font-size:18pt;margin:.1em 0 .2em}
h2{font-size:13pt;border-bottom:1.5pt solid var(--ink);padding-bottom:2pt;margin:1em 0 .5em}
h3{font-size:11pt;margin:1em 0 .35em}
h4{font-size:10.5pt;margin:.8em 0 .3em}
p{margin:.35em 0 .6em}
.kicker{text-transform:uppercase;letter-spacing:.08em;font-size:8.5pt;color:var(--muted);margin:0}
.meta{color:var(--muted);font-size:9pt}
.lead{font-size:10.5pt}
code,pre,.mono{font-family:"DejaVu Sans Mono","Liberation Mono",monospace;font-size:8pt}
.digest{font-family:"DejaVu Sans Mono","Liberation Mono",monospace;font-size:7.5pt;word-break:break-all}
pre{white-space:pre-wrap;overflow-wrap:anywhere;margin:.3em 0 .7em;padding:.4em .6em;border:.5pt solid #bbb;background:var(--soft)}
pre.cmd{background:#fff;border-left:2pt solid #777;font-size:7.5pt}
.data{font-family:"DejaVu Sans Mono","Liberation Mono",monospace;font-size:.88em;background:#fff6d6;border:.5pt dotted #a80;padding:0 .15em;overflow-wrap:anywhere}
pre.data{font-size:7.5pt;border:.75pt dotted #a80;background:#fffaf0}
.box{border:1pt solid var(--rule);padding:.3em .7em;margin:.6em 0}
.verdict{border-width:1.5pt}
.verdict.ok{border-color:var(--ok)}
.verdict.bad{border-color:var(--bad)}
.verdict .label{font-weight:bold;font-size:9pt;text-transform:uppercase;letter-spacing:.05em}
.ok .label,.okc{color:var(--ok)}
.bad .label,.badc{color:var(--bad);font-weight:bold}
.legend{font-size:8.5pt;color:var(--muted);border-top:.5pt solid var(--rule);margin-top:1.5em;padding-top:.4em}
table{border-collapse:collapse;width:100%;margin:.5em 0 .9em;font-size:9pt}
th,td{border:.5pt solid var(--rule);padding:2pt 4pt;vertical-align:top;text-align:left}
th{background:#e8e8e8;font-size:8.5pt}
thead{display:table-header-group}
tr,li,.finding,.box,pre.data{break-inside:avoid}
h2,h3,h4{break-after:avoid}
table.kv th{width:8em;background:#f4f4f4}
table.kv td,table.kv th{padding:1.5pt 4pt}
.instance{border:.75pt solid var(--rule);padding:.3em .8em .4em;margin:.6em 0}
.instance ul,.timeline{padding-left:1.2em;margin:.3em 0}
.instance li{margin:.15em 0}
.finding{border-left:2.5pt solid #777;padding:.1em 0 .1em .6em;margin:.7em 0}
.finding.process{border-left-color:var(--bad)}
.finding .head{margin:.1em 0 .2em}
.num{font-family:"Liberation Sans","DejaVu Sans",Arial,sans-serif;font-weight:bold;margin-right:.4em}
.tag{font-family:"Liberation Sans","DejaVu Sans",Arial,sans-serif;font-size:7.5pt;text-transform:uppercase;letter-spacing:.04em;border:.5pt solid var(--rule);padding:0 .3em;margin-right:.4em;color:var(--muted)}
.ev{font-size:8.5pt;color:#333}
.timeline{list-style:none;padding-left:0}
.timeline li{margin:.25em 0 .45em;padding-left:.6em;border-left:1pt solid #ccc}
.timeline li.fail{border-left:2.5pt solid var(--bad)}
.rec{display:block;font-size:7.5pt;color:var(--muted)}
.item{margin:1em 0 1.2em;padding-top:.2em;border-top:1pt solid var(--ink)}
.item h3{margin:.2em 0 .4em}
.note{font-size:8.5pt;color:var(--muted)}
.facts{margin:.2em 0 .4em}
table.story{margin:.2em 0 .3em;font-size:9pt}
table.story td{border:none;border-top:.5pt solid #ddd;padding:1.5pt 4pt}
table.story td.t{white-space:nowrap;width:4.5em;font-family:"DejaVu Sans Mono","Liberation Mono",monospace;font-size:8pt;padding-top:2.5pt}
table.story tr.fail td{color:var(--bad);font-weight:bold}
.person{font-size:9pt;margin:.2em 0 .35em}
a{color:inherit}
@media print{
  body{max-width:none;margin:0;padding:0}
  .newpage{break-before:page}
  a{text-decoration:none}
}
"#;

/// A value as HTML text: control and bidi characters shown as escapes (a browser
/// would apply an entity-escaped override all the same), then entity-escaped.
pub fn esc(s: &str) -> String {
    entities(&sanitize(s))
}

/// Multi-line text: each line as [`esc`], the line breaks kept.
fn esc_lines(s: &str) -> String {
    entities(&sanitize_lines(s))
}

fn entities(s: &str) -> String {
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

/// A phrase: our words as text, suspect values in a marked span.
fn phrase(p: &Phrase) -> String {
    let mut out = String::new();
    for span in &p.0 {
        match span {
            Span::Text(t) => out.push_str(&esc(t)),
            Span::Data(d) => {
                let _ = write!(out, "<span class=\"data\">{}</span>", esc(d));
            }
        }
    }
    out
}

fn digest(d: &str) -> String {
    format!("<span class=\"digest\">{}</span>", esc(d))
}

/// The case id for the page footer (a CSS string): only a valid id.
fn footer_case(d: &Report) -> String {
    d.case.parse::<CaseId>().map(|c| c.to_string()).unwrap_or_default()
}

pub fn render(d: &Report) -> String {
    let mut s = String::new();
    let footer = footer_case(d);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Evidence report: case {case}</title>\n<style>{STYLE}@page{{size:A4;margin:14mm 14mm 16mm 14mm;@bottom-left{{content:\"Case {footer}: evidence report\";font:8pt sans-serif;color:#555}}@bottom-right{{content:\"Page \" counter(page) \" of \" counter(pages);font:8pt sans-serif;color:#555}}}}</style>\n</head><body>\n",
        case = esc(&d.case)
    );
    cover(&mut s, d);
    summary(&mut s, d);
    findings(&mut s, d);
    timeline(&mut s, d);
    evidence(&mut s, d);
    verification(&mut s, d);
    let _ = write!(
        s,
        "<section id=\"certification\" class=\"newpage\"><h2>6. Certification under FRE 902(14): template to complete</h2>\n<p>For a qualified person who has checked the hash values (section 5) to complete, sign and serve with notice to the other side.</p>\n<pre>{}</pre>\n</section>\n</body></html>\n",
        esc_lines(&reverify::certification(d))
    );
    s
}

fn cover(s: &mut String, d: &Report) {
    let head = d
        .custody_head
        .as_ref()
        .map(|h| format!("{} custody records", h.seq))
        .unwrap_or_else(|| "no custody records".into());
    let _ = write!(
        s,
        "<header><p class=\"kicker\">cleanroom · evidence report</p><h1>Case {case}</h1>\n<p class=\"meta\">Report generated {gen} by {tool} · evidence store <span class=\"mono\">{loc}</span> · {head}</p></header>\n",
        case = esc(&d.case),
        gen = esc(&d.generated_at),
        tool = esc(&d.opened.tool),
        loc = esc(&d.location),
    );
}

fn summary(s: &mut String, d: &Report) {
    let sm = &d.summary;
    let _ = write!(
        s,
        "<section id=\"summary\"><h2>1. Summary</h2>\n<p class=\"lead\">{}</p>\n",
        phrase(&sm.overview)
    );
    let (class, label) = match sm.verification_status {
        VerificationStatus::Verified => ("ok", "Everything verified"),
        VerificationStatus::IntegrityOnly => ("bad", "Intact, not authenticated"),
        VerificationStatus::Failed => ("bad", "Verification failed"),
        VerificationStatus::NotVerified => ("bad", "Not verified yet"),
    };
    let _ = writeln!(
        s,
        "<div class=\"box verdict {class}\"><p class=\"label\">Did everything verify? {label}</p><p>{}</p></div>",
        phrase(&sm.verification)
    );
    if !d.chain_problems.is_empty() {
        s.push_str("<div class=\"box verdict bad\"><p class=\"label\">Custody chain problems found while writing this report</p><ul>");
        for p in &d.chain_problems {
            let _ = write!(s, "<li>{}</li>", esc(p));
        }
        s.push_str("</ul></div>\n");
    }
    s.push_str("<h3>What happened to which instances</h3>\n");
    let first_day = d.timeline.first().map(|e| e.date.clone()).unwrap_or_default();
    for i in &sm.instances {
        let _ = write!(s, "<div class=\"instance\"><h4>{}", esc(&i.instance));
        if let Some(n) = &i.name {
            let _ = write!(s, " <span class=\"data\">{}</span>", esc(n));
        }
        let (cclass, ctext) = match i.containment {
            Containment::Verified => ("okc", "contained, and checked"),
            Containment::Failed => ("badc", "CONTAINMENT FAILED"),
            Containment::Released => ("", "released"),
            Containment::NotContained => ("badc", "not contained by cleanroom"),
        };
        let _ = write!(
            s,
            " · <span class=\"{cclass}\">{ctext}</span></h4>\n<p class=\"facts\">Account {}, region {}",
            esc(&i.account),
            esc(&i.region)
        );
        if let Some(t) = &i.instance_type {
            let _ = write!(s, "; type <span class=\"data\">{}</span>", esc(t));
        }
        if let Some(st) = &i.state_at_capture {
            let _ = write!(s, ", <span class=\"data\">{}</span> when captured", esc(st));
        }
        if let Some(l) = &i.launched_by {
            let _ = write!(s, "; {}", phrase(l));
        }
        let _ = writeln!(
            s,
            ". {}, {}.</p>",
            plural(i.evidence_items, "evidence item", "evidence items"),
            human_size(i.evidence_bytes)
        );
        if !i.story.is_empty() {
            s.push_str("<table class=\"story\"><tbody>\n");
            for line in &i.story {
                let time = line.time.strip_prefix(&format!("{first_day} ")).unwrap_or(&line.time);
                let _ = writeln!(
                    s,
                    "<tr{}><td class=\"t\">{}</td><td>{}</td></tr>",
                    if line.failure { " class=\"fail\"" } else { "" },
                    esc(time),
                    phrase(&line.what)
                );
            }
            s.push_str("</tbody></table>\n");
        }
        s.push_str("</div>\n");
    }
    if sm.instances.is_empty() {
        s.push_str("<p>No instance is named in this case.</p>\n");
    }
    let _ = write!(s, "<h3>What was preserved, where, for how long</h3>\n<p>{}</p>\n", phrase(&sm.preserved));
    s.push_str("<h3>Who did what</h3>\n");
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
            "<p class=\"person\"><b>{}</b>: {} {}: {}. From host {}, with {}.</p>",
            esc(&p.who),
            plural(p.actions, "action", "actions"),
            esc(&when),
            esc(&p.did.join(", ")),
            esc(&p.hosts.join(", ")),
            esc(&p.tool_versions.join(", "))
        );
    }
    s.push_str("<p class=\"legend\">How to read this report: values <span class=\"data\">in dotted boxes</span> come from the suspect's account or disk (tags, names, UserData, console text, CloudTrail fields, file paths). They are shown exactly as found, as inert text: control and direction-changing characters appear as escapes such as <span class=\"mono\">\\u{1b}</span>. Times are UTC; digests are written <span class=\"mono\">algorithm:hex</span>. Section 2 lists the findings with the evidence that shows each; section 3 every action in order; section 4 every evidence item with the commands that check it; section 5 how to verify the whole case independently.</p>\n</section>\n");
}

fn evidence_links(f: &Finding) -> String {
    f.evidence
        .iter()
        .map(|e| match e.number {
            Some(n) => format!("<a href=\"#e{n}\">E{n}</a> {}", esc(&e.id)),
            None => esc(&e.id),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn findings(s: &mut String, d: &Report) {
    s.push_str("<section id=\"findings\" class=\"newpage\"><h2>2. Findings and their evidence</h2>\n");
    if d.findings.is_empty() {
        s.push_str(
            "<p>No findings: the capture summaries and clean-room results hold nothing to report.</p>\n",
        );
    } else {
        s.push_str("<p>What the evidence shows about each instance, each with the evidence item (section 4) it comes from. Marked red: a gap or problem of the process, not of the suspect.</p>\n");
    }
    let mut current: Option<(Option<String>, Option<String>)> = None;
    for f in &d.findings {
        let group = (f.instance.clone(), f.volume.clone());
        if current.as_ref() != Some(&group) {
            let heading = match &group {
                (Some(i), Some(v)) => format!("{} · volume {}", esc(i), esc(v)),
                (Some(i), None) => esc(i),
                _ => "The case".into(),
            };
            let _ = writeln!(s, "<h3>{heading}</h3>");
            current = Some(group);
        }
        let _ = write!(
            s,
            "<div class=\"finding{}\" id=\"f{n}\"><p class=\"head\"><span class=\"num\">F{n}</span><span class=\"tag\">{}</span>{}</p>",
            if f.process_problem { " process" } else { "" },
            esc(&f.source),
            phrase(&f.title),
            n = f.number
        );
        let mut facts = Vec::new();
        if let Some(p) = &f.path {
            facts.push(format!("file <span class=\"data\">{}</span>", esc(p)));
        }
        if let Some(i) = &f.inode {
            facts.push(format!("inode <span class=\"data\">{}</span>", esc(i)));
        }
        if let Some(h) = &f.sha256 {
            facts.push(digest(h));
        }
        if !facts.is_empty() {
            let _ = writeln!(s, "<p>{}</p>", facts.join(" · "));
        }
        if let Some(x) = &f.excerpt {
            let _ = writeln!(s, "<pre class=\"data\">{}</pre>", esc_lines(x));
        }
        if !f.evidence.is_empty() {
            let _ = writeln!(s, "<p class=\"ev\">Evidence: {}</p>", evidence_links(f));
        }
        s.push_str("</div>\n");
    }
    if !d.source_problems.is_empty() {
        s.push_str(
            "<div class=\"box verdict bad\"><p class=\"label\">Evidence this report could not use</p><ul>",
        );
        for p in &d.source_problems {
            let _ = write!(s, "<li>{}</li>", esc(p));
        }
        s.push_str("</ul></div>\n");
    }
    s.push_str("</section>\n");
}

fn timeline(s: &mut String, d: &Report) {
    s.push_str("<section id=\"timeline\" class=\"newpage\"><h2>3. Timeline: every action, in order</h2>\n<p>One sentence per custody record. The order is the records' sequence numbers; each record carries the SHA-256 of the one before it, so no record can be edited, removed, inserted or moved without breaking the chain.</p>\n");
    let mut day = String::new();
    for e in &d.timeline {
        if e.date != day {
            if !day.is_empty() {
                s.push_str("</ol>\n");
            }
            let _ = write!(s, "<h3>{}</h3>\n<ol class=\"timeline\">\n", esc(&e.date));
            day = e.date.clone();
        }
        let _ = writeln!(
            s,
            "<li{}><b>{} UTC</b>, {}<span class=\"rec\">custody record {} · {} · {}</span></li>",
            if e.failure { " class=\"fail\"" } else { "" },
            esc(&e.clock),
            phrase(&e.body),
            e.seq,
            esc(&e.record_hash),
            if e.signed { "signed" } else { "not signed" }
        );
    }
    if !day.is_empty() {
        s.push_str("</ol>\n");
    }
    s.push_str("<h3>The same, as the IR log</h3>\n<p>In the form the incident-response playbooks keep their log.</p>\n<pre>");
    let lines: Vec<String> = d.timeline.iter().map(|e| entities(&e.ir_log)).collect();
    s.push_str(&lines.join("\n"));
    s.push_str("</pre>\n</section>\n");
}

fn item_block(s: &mut String, d: &Report, it: &Item) {
    let i = &it.item;
    let _ = write!(
        s,
        "<div class=\"item\" id=\"e{n}\"><h3>E{n} · {}</h3>\n<table class=\"kv\"><tbody>\n",
        esc(&i.id),
        n = it.number
    );
    let row = |s: &mut String, k: &str, v: String| {
        let _ = writeln!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row(s, "About", format!("{} in account {}", esc(&i.subject), esc(&i.account)));
    row(s, "Source", esc(&i.source));
    row(s, "Method", esc(&i.method));
    row(s, "Acquired", format!("{} UTC · {} bytes ({})", esc(&i.acquired_at), i.size, human_size(i.size)));
    row(s, "Digests", format!("{}<br>{}<br>{}", digest(&i.sha256), digest(&i.sha1), digest(&i.md5)));
    let lock = match (&i.lock_mode, &i.retain_until) {
        (Some(m), Some(u)) => {
            format!("Object Lock {m} until {u}{}", if i.legal_hold { ", legal hold" } else { "" })
        }
        _ => "Object Lock: the bucket's default retention".into(),
    };
    row(
        s,
        "Stored as",
        format!(
            "<span class=\"mono\">s3://{}/{}</span><br>version <span class=\"mono\">{}</span> · {}",
            esc(&d.bucket),
            esc(&i.s3_key),
            esc(i.version_id.as_deref().unwrap_or("none")),
            esc(&lock)
        ),
    );
    if !i.derived_from.is_empty() {
        row(s, "Derived from", esc(&i.derived_from.join(", ")));
    }
    if let Some(r) = &it.recorded_in {
        row(
            s,
            "Custody record",
            format!(
                "{} ({}){}",
                r.seq,
                digest(&r.hash),
                if r.signature.is_some() { ", signed" } else { ", not signed" }
            ),
        );
    }
    row(
        s,
        "Verification",
        format!("<span class=\"{}\">{}</span>", if it.status_ok { "okc" } else { "badc" }, esc(&it.status)),
    );
    s.push_str("</tbody></table>\n");
    if !it.commands.is_empty() {
        let lines: Vec<String> = it.commands.iter().map(|c| esc(c)).collect();
        let _ = writeln!(
            s,
            "<p class=\"note\">To check it (after the first step of section 5):</p><pre class=\"cmd\">{}</pre>",
            lines.join("\n")
        );
    }
    if let Some(n) = &it.commands_note {
        let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(&format!("Commands incomplete: {n}.")));
    }
    s.push_str("</div>\n");
}

fn evidence(s: &mut String, d: &Report) {
    let _ = write!(
        s,
        "<section id=\"evidence\" class=\"newpage\"><h2>4. Evidence items</h2>\n<p>{} item(s), each stored once, never overwritten, under {}. The SHA-256, SHA-1 and MD5 were computed by cleanroom as the bytes were read, before storing, and checked again on read-back.</p>\n<table><thead><tr><th>#</th><th>Item</th><th>Size</th><th>SHA-256</th></tr></thead><tbody>\n",
        d.items.len(),
        esc(&d.retention)
    );
    for it in &d.items {
        let _ = writeln!(
            s,
            "<tr><td><a href=\"#e{n}\">E{n}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&it.item.id),
            human_size(it.item.size),
            digest(&it.item.sha256),
            n = it.number
        );
    }
    s.push_str("</tbody></table>\n");
    for it in &d.items {
        item_block(s, d, it);
    }
    s.push_str("</section>\n");
}

fn verification(s: &mut String, d: &Report) {
    s.push_str(
        "<section id=\"verify\" class=\"newpage\"><h2>5. Verifying the whole case independently</h2>\n",
    );
    match &d.verification {
        None => s.push_str("<p class=\"badc\">No verification is recorded in this case.</p>\n"),
        Some(v) => {
            let (date, clock, _) = split_time(&v.time);
            let _ = writeln!(
                s,
                "<p>Last verification: {date} {clock} UTC by {}, custody record {}:</p>\n<p class=\"{}\">{}</p>",
                esc(&v.who),
                v.seq,
                if v.ok { "okc" } else { "badc" },
                esc(&v.verdict)
            );
            if let Some(list) = v.findings.as_array().filter(|l| !l.is_empty()) {
                s.push_str("<ul>");
                for f in list {
                    let _ = write!(
                        s,
                        "<li>{}: <span class=\"mono\">{}</span>: {}</li>",
                        esc(f.get("what").and_then(|x| x.as_str()).unwrap_or("")),
                        esc(f.get("location").and_then(|x| x.as_str()).unwrap_or("")),
                        esc(f.get("problem").and_then(|x| x.as_str()).unwrap_or(""))
                    );
                }
                s.push_str("</ul>\n");
            }
        }
    }
    s.push_str("<p>Anyone with read access to the evidence bucket and the AWS CLI, <span class=\"mono\">jq</span> and <span class=\"mono\">openssl</span> can repeat these checks; none of them needs cleanroom except the last, which does them all at once.</p>\n<ol>\n");
    for step in &d.reverify {
        let _ = write!(s, "<li><p>{}</p>", esc(&step.why));
        if !step.commands.is_empty() {
            let lines: Vec<String> = step.commands.lines().map(esc).collect();
            let _ = write!(s, "<pre class=\"cmd\">{}</pre>", lines.join("\n"));
        }
        s.push_str("</li>\n");
    }
    s.push_str("</ol>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::{build_at, fixtures};
    use crate::report::sources::Sources;

    #[test]
    fn html_escapes_everything_it_is_given() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(esc("a\u{1b}[2J\u{202e}b"), "a\\u{1b}[2J\\u{202e}b");
        assert_eq!(esc_lines("a\u{1b}\n<b>"), "a\\u{1b}\n&lt;b&gt;");
    }

    #[test]
    fn suspect_data_is_marked_and_our_words_are_not() {
        let p = Phrase::of("launched by ").data("<dev>");
        assert_eq!(phrase(&p), "launched by <span class=\"data\">&lt;dev&gt;</span>");
    }

    #[test]
    fn the_document_fetches_nothing_runs_nothing_and_prints_on_a4() {
        let mut report = build_at(&fixtures::case(), &Sources::default(), "t".into());
        report.summary.instances[0].name = Some("</style><script>x</script>".into());
        let html = render(&report);
        assert!(html.contains(&format!("content=\"{CSP}\"")));
        assert!(!html.contains("<script") && !html.contains(" src=") && !html.contains("url("), "{html}");
        assert!(html.contains("@page{size:A4;") && html.contains("counter(pages)"));
        let sections: Vec<usize> = [
            "id=\"summary\"",
            "id=\"findings\"",
            "id=\"timeline\"",
            "id=\"evidence\"",
            "id=\"verify\"",
            "id=\"certification\"",
        ]
        .iter()
        .map(|s| html.find(s).unwrap_or_else(|| panic!("{s}")))
        .collect();
        assert!(sections.windows(2).all(|w| w[0] < w[1]), "sections in order");
        assert!(
            html.contains(
                "<b>05:44:03 UTC</b>, Jane Doe (role CleanroomForensics) removed every network path"
            )
        );
    }
}
