//! What the drill checks in the case it made, and the responder's summary it prints:
//! read from the report's JSON, the same model the HTML for legal is written from.

use serde_json::Value;

use crate::report::timeline::human_size;
use crate::text::sanitize;

/// A finding the incident planted, which the report must show with its digest.
pub struct Expected {
    pub what: &'static str,
    /// Matches a finding of the report (its JSON form).
    pub matches: fn(&Value) -> bool,
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn has_digest(f: &Value) -> bool {
    text(f, "sha256").trim_start_matches("sha256:").len() == 64
}

/// The cryptomining incident's traces on the suspect's disk.
pub const CRYPTOMINING: &[Expected] = &[
    Expected {
        what: "the miner (/tmp/.cache/xmrig)",
        matches: |f| {
            text(f, "path").ends_with("/xmrig") && text(f, "kind").starts_with("yara:Cleanroom_Miner")
        },
    },
    Expected {
        what: "the cron entry that restarts it (/etc/crontab)",
        matches: |f| text(f, "path") == "/etc/crontab",
    },
    Expected {
        what: "the backdoor key (/root/.ssh/authorized_keys)",
        matches: |f| text(f, "path") == "/root/.ssh/authorized_keys" && text(f, "kind") == "authorized_key",
    },
];

/// Every expected finding that the report does not show with a SHA-256, and why; the
/// HTML for legal must carry the same digest.
pub fn missing_findings(report: &Value, html: &str, expected: &[Expected]) -> Vec<String> {
    let findings = report.get("findings").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut missing = Vec::new();
    for e in expected {
        let found: Vec<&Value> = findings.iter().filter(|f| (e.matches)(f)).collect();
        let Some(with_digest) = found.iter().find(|f| has_digest(f)) else {
            missing.push(if found.is_empty() {
                format!("{}: not among the report's findings", e.what)
            } else {
                format!("{}: found, but without its SHA-256", e.what)
            });
            continue;
        };
        let digest = text(with_digest, "sha256").trim_start_matches("sha256:");
        if !html.contains(digest) {
            missing.push(format!(
                "{}: the HTML report does not show its digest {}",
                e.what,
                sanitize(digest)
            ));
        }
    }
    missing
}

/// The report's instances differ from `wanted`: each one missing or extra.
pub fn instances_differ(report: &Value, wanted: &[String]) -> Vec<String> {
    let have: Vec<String> = report
        .pointer("/summary/instances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| text(i, "instance").to_owned())
        .collect();
    let mut out: Vec<String> = wanted
        .iter()
        .filter(|w| !have.contains(w))
        .map(|w| format!("{w}, launched with the key, is not in the case"))
        .collect();
    out.extend(
        have.iter()
            .filter(|h| !wanted.contains(h))
            .map(|h| format!("{} is in the case, but the key did not launch it", sanitize(h))),
    );
    out
}

/// Every way the owner's instances (not launched by the key) were touched: their
/// security groups changed, or a case tag on them.
pub async fn bystanders_touched(
    lab: &crate::lab::Lab,
    l: &crate::lab::unauthorized::Launched,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in &l.bystanders {
        let c = lab.clients(&p.account, &p.region);
        let described = c.ec2.describe_instances().instance_ids(p.instance.as_str()).send().await;
        let Some(i) = described
            .ok()
            .and_then(|d| d.reservations().first().and_then(|r| r.instances().first().cloned()))
        else {
            out.push(format!("bystander {} could not be described", p.instance));
            continue;
        };
        let mut groups: Vec<String> =
            i.security_groups().iter().filter_map(|g| g.group_id().map(str::to_owned)).collect();
        let mut before = p.groups.clone();
        groups.sort();
        before.sort();
        if groups != before {
            out.push(format!("bystander {}: security groups {groups:?}, {before:?} before", p.instance));
        }
        if i.tags().iter().any(|t| t.key().is_some_and(|k| k.starts_with("cleanroom:"))) {
            out.push(format!("bystander {} carries a cleanroom tag", p.instance));
        }
    }
    out
}

/// The responder's summary: instances and their containment, the evidence, findings,
/// the report, what to do next.
pub fn summary(report: &Value, report_path: &str, key_path: &str, expected: &[Expected]) -> String {
    let s = report.get("summary").cloned().unwrap_or(Value::Null);
    let items = report.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let bytes: u64 = items.iter().filter_map(|i| i.get("size").and_then(Value::as_u64)).sum();
    let mut out =
        format!("case {} in {}\n", sanitize(text(report, "case")), sanitize(text(report, "location")));
    for i in s.get("instances").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!(
            "  {} ({}, account {} {}): containment {}, {} evidence items, {}\n",
            sanitize(text(i, "instance")),
            sanitize(i.get("name").and_then(Value::as_str).unwrap_or("no Name tag")),
            sanitize(text(i, "account")),
            sanitize(text(i, "region")),
            text(i, "containment").replace('_', " "),
            i.get("evidence_items").and_then(Value::as_u64).unwrap_or(0),
            human_size(i.get("evidence_bytes").and_then(Value::as_u64).unwrap_or(0)),
        ));
    }
    out.push_str(&format!(
        "evidence: {} items, {}, retained {}\nverification: {}\n",
        items.len(),
        human_size(bytes),
        sanitize(text(report, "retention")),
        text(&s, "verification_status").replace('_', " "),
    ));
    let findings = report.get("findings").and_then(Value::as_array).cloned().unwrap_or_default();
    let of_suspect = findings.iter().filter(|f| f.get("process_problem") != Some(&Value::Bool(true))).count();
    out.push_str(&format!(
        "findings: {of_suspect} about the suspect{}\n",
        if expected.is_empty() { " (listed in the report)" } else { ", among them:" }
    ));
    for e in expected {
        if let Some(f) = findings.iter().find(|f| (e.matches)(f) && has_digest(f)) {
            out.push_str(&format!(
                "  {}  sha256 {}\n",
                e.what,
                sanitize(text(f, "sha256").trim_start_matches("sha256:"))
            ));
        }
    }
    out.push_str(&format!(
        "report for legal: {report_path}\n\
         next:\n  \
         - hand the report and the signing public key ({key_path}) to counsel\n  \
         - examine the evidence offline: `cleanroom verify --dir ... --public-key ...` first\n  \
         - the instance stays isolated until the incident commander approves `cleanroom release --yes`\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(findings: Value) -> Value {
        json!({"case": "C", "findings": findings, "items": [], "summary": {}})
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_planted_trace_without_its_digest_fails_the_drill() {
        let r = report(json!([{"path": "/etc/crontab", "kind": "runs_from_tmp"}]));
        let missing = missing_findings(&r, "", &CRYPTOMINING[1..2]);
        assert_eq!(
            missing,
            vec!["the cron entry that restarts it (/etc/crontab): found, but without its SHA-256"]
        );
    }

    #[test]
    fn a_digest_the_html_does_not_show_fails_the_drill() {
        let r = report(json!([{"path": "/etc/crontab", "kind": "runs_from_tmp", "sha256": DIGEST}]));
        assert_eq!(missing_findings(&r, "no digest here", &CRYPTOMINING[1..2]).len(), 1);
        let html = format!("<td>{}</td>", DIGEST.trim_start_matches("sha256:"));
        assert!(missing_findings(&r, &html, &CRYPTOMINING[1..2]).is_empty());
    }

    #[test]
    fn an_instance_missing_from_the_case_or_one_too_many_is_named() {
        let r = json!({"summary": {"instances": [{"instance": "i-1"}, {"instance": "i-9"}]}});
        let wanted = vec!["i-1".to_owned(), "i-2".to_owned()];
        assert_eq!(
            instances_differ(&r, &wanted),
            [
                "i-2, launched with the key, is not in the case",
                "i-9 is in the case, but the key did not launch it"
            ]
        );
        let exact = json!({"summary": {"instances": [{"instance": "i-2"}, {"instance": "i-1"}]}});
        assert!(instances_differ(&exact, &wanted).is_empty());
    }

    #[test]
    fn a_missing_trace_is_named() {
        let missing = missing_findings(&report(json!([])), "", CRYPTOMINING);
        assert_eq!(missing.len(), 3);
        assert!(missing[0].contains("xmrig") && missing[0].contains("not among"));
    }
}
