//! The report as data (also its JSON form): a first page in plain language, the
//! findings with their evidence, the timeline, each evidence item with the commands
//! that re-verify it, and how to verify the whole case. Built from the custody chain
//! (`verify::LoadedCase`) and the result files it vouches for (`sources`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::phrase::Phrase;
use super::reverify::{self, Step};
use super::sources::{Source, Sources};
use super::timeline::{self, Entry, Names, human_size, listed, plural, split_time};
use crate::capture::Summary;
use crate::evidence::case::{ChainHead, ManifestItem, utc_ms};
use crate::evidence::checkpoint::CheckpointDetails;
use crate::evidence::custody::{Action, CustodyRecord};
use crate::ids::parse_arn;
use crate::verify::LoadedCase;

pub const SCHEMA: &str = "cleanroom.report/2";

/// Findings listed from one result file; the rest are counted and left to the file
/// (triage writes at most 2,000, ssm-documents/README.md; 500 is some 25 printed pages).
pub const MAX_FINDINGS_PER_SOURCE: usize = 500;
/// CloudTrail events of the launching key listed (the capture keeps up to 1,000).
pub const MAX_KEY_EVENTS: usize = 50;
/// Lines of UserData or console output shown in a finding (the item holds them all).
pub const MAX_EXCERPT_LINES: usize = 40;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub case: String,
    pub bucket: String,
    /// `s3://<bucket>/cases/<case>/`.
    pub location: String,
    pub generated_at: String,
    pub opened: Opened,
    pub retention: String,
    pub summary: CaseSummary,
    pub findings: Vec<Finding>,
    pub timeline: Vec<Entry>,
    pub items: Vec<Item>,
    pub verification: Option<Verification>,
    pub custody_head: Option<ChainHead>,
    pub custody_records: usize,
    /// Problems of the chain found while reading it (a report is written only when
    /// the chain holds, so normally none).
    pub chain_problems: Vec<String>,
    /// Result files the report could not use, and why.
    pub source_problems: Vec<String>,
    pub checkpoint: Option<CheckpointDetails>,
    /// The key the newest signed record names (checked against KMS by `verify`,
    /// not trusted here).
    pub signing_key: Option<SigningKeyInfo>,
    /// How to verify the whole case with standard tools.
    pub reverify: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Opened {
    pub at: String,
    pub by: String,
    pub principal: String,
    pub tool: String,
    pub binary_sha256: String,
    pub config_digest: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SigningKeyInfo {
    pub key_id: String,
    pub public_key_sha256: String,
}

/// The first page.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSummary {
    /// What happened, in one paragraph.
    pub overview: Phrase,
    pub instances: Vec<InstanceSummary>,
    /// What was preserved, where, under which retention.
    pub preserved: Phrase,
    pub verification_status: VerificationStatus,
    /// Whether everything verified, in words.
    pub verification: Phrase,
    /// Who did what.
    pub people: Vec<Person>,
    pub findings: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationStatus {
    /// Intact, and every record authenticated by a trusted key.
    Verified,
    /// Intact, but not authenticated (no trusted key at the time).
    IntegrityOnly,
    Failed,
    NotVerified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Containment {
    Verified,
    Failed,
    Released,
    NotContained,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceSummary {
    pub instance: String,
    pub account: String,
    pub region: String,
    /// The `Name` tag (suspect data).
    pub name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub instance_type: Option<String>,
    pub state_at_capture: Option<String>,
    pub launched_by: Option<Phrase>,
    /// What was done to it, step by step, in order.
    pub story: Vec<StoryLine>,
    pub containment: Containment,
    pub evidence_items: usize,
    pub evidence_bytes: u64,
    pub disk_copies: Vec<DiskCopy>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoryLine {
    pub seq: u64,
    /// `YYYY-MM-DD HH:MM:SS` (UTC).
    pub time: String,
    pub what: Phrase,
    pub failure: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskCopy {
    pub source_snapshot: String,
    pub volume: Option<String>,
    pub forensics_snapshot: String,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Person {
    /// `Jane Doe (role CleanroomForensics)`.
    pub who: String,
    pub examiner: String,
    /// The STS principals they acted as (one session per command).
    pub principals: Vec<String>,
    pub actions: usize,
    pub first: String,
    pub last: String,
    /// What they did, in words, in the order first done.
    pub did: Vec<String>,
    pub hosts: Vec<String>,
    /// `cleanroom 0.1.0`.
    pub tool_versions: Vec<String>,
    /// `cleanroom 0.1.0 (binary sha256:...)`.
    pub tools: Vec<String>,
}

/// Something found, with the evidence that shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub number: usize,
    pub instance: Option<String>,
    pub volume: Option<String>,
    /// Where it comes from: `CloudTrail`, `UserData`, `triage`, `YARA`, ...
    pub source: String,
    pub kind: String,
    pub title: Phrase,
    /// The file on the suspect's disk (suspect data).
    pub path: Option<String>,
    pub inode: Option<String>,
    pub sha256: Option<String>,
    /// Text as found (suspect data), several lines.
    pub excerpt: Option<String>,
    pub evidence: Vec<EvidenceLink>,
    /// A problem of the process (a check that did not match, a gap), not of the suspect.
    pub process_problem: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceLink {
    pub id: String,
    pub sha256: String,
    /// Its number in the evidence section.
    pub number: Option<usize>,
}

/// One evidence item, with where custody recorded it and how to check it.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub number: usize,
    #[serde(flatten)]
    pub item: ManifestItem,
    /// The `evidence_stored` record that recorded it.
    pub recorded_in: Option<RecordRef>,
    /// As of the last verification.
    pub status: String,
    pub status_ok: bool,
    /// Shell commands that re-verify it with standard tools, one per line; empty
    /// when a value is not of the form it must have (`commands_note` says which).
    pub commands: Vec<String>,
    pub commands_note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordRef {
    pub seq: u64,
    pub key: String,
    pub version_id: Option<String>,
    pub hash: String,
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub seq: u64,
    pub time: String,
    pub who: String,
    pub ok: bool,
    pub intact: bool,
    pub verdict: String,
    /// Items re-hashed and custody records checked.
    pub items: Option<u64>,
    pub custody_records: Option<u64>,
    pub locks_checked: bool,
    pub findings_count: Option<u64>,
    pub findings: Value,
}

/// Builds the report of `loaded` with the result files in `sources`.
pub fn build(loaded: &LoadedCase, sources: &Sources) -> Report {
    build_at(loaded, sources, utc_ms(time::OffsetDateTime::now_utc()))
}

/// [`build`] with the generation time given (for tests).
pub fn build_at(loaded: &LoadedCase, sources: &Sources, generated_at: String) -> Report {
    let cf = &loaded.case_file;
    let case = loaded.case.to_string();
    let bucket = cf.store.strip_prefix("s3://").unwrap_or(&cf.store).to_owned();
    let records: Vec<&CustodyRecord> = loaded.chain().collect();
    let names = Names {
        instances: sources
            .captures
            .iter()
            .filter_map(|(_, s)| s.tags.get("Name").map(|n| (s.instance.to_string(), n.clone())))
            .collect(),
    };
    let timeline = timeline::entries(records.iter().copied(), &names);
    let verification = loaded.last(Action::Verified).map(|r| Verification {
        seq: r.seq,
        time: r.time.clone(),
        who: timeline::who(&r.actor),
        ok: r.details.get("ok").and_then(Value::as_bool).unwrap_or(false),
        intact: r.details.get("intact").and_then(Value::as_bool).unwrap_or(false),
        verdict: r.details.get("verdict").and_then(Value::as_str).unwrap_or_default().to_owned(),
        items: r.details.get("items").and_then(Value::as_u64),
        custody_records: r.details.get("custody_records").and_then(Value::as_u64),
        locks_checked: r.details.get("locks_checked").and_then(Value::as_bool).unwrap_or(false),
        findings_count: r.details.get("findings_count").and_then(Value::as_u64),
        findings: r.details.get("findings").cloned().unwrap_or(Value::Null),
    });
    let checkpoint = loaded
        .last(Action::CheckpointSigned)
        .and_then(|r| serde_json::from_value::<CheckpointDetails>(r.details.clone()).ok());
    let signing_key = records
        .iter()
        .filter_map(|r| r.signature.as_ref())
        .next_back()
        .map(|s| SigningKeyInfo { key_id: s.key_id.clone(), public_key_sha256: s.public_key_sha256.clone() });

    let manifest: Vec<ManifestItem> = loaded.items().into_values().collect();
    let numbers: BTreeMap<String, usize> =
        manifest.iter().enumerate().map(|(i, item)| (item.id.clone(), i + 1)).collect();
    let mut items = items_of(loaded, &manifest, verification.as_ref());
    let findings = findings_of(sources, &numbers);
    let retention = match (cf.retention.mode, cf.retention.days) {
        (Some(m), Some(d)) => {
            format!("Object Lock {m} mode, {} from each write", plural(d as usize, "day", "days"))
        }
        _ => "the evidence bucket's default Object Lock retention".into(),
    };
    let prefix = crate::evidence::layout::case_prefix(&loaded.case);
    let location = if cf.store.contains("://") && !cf.store.starts_with("s3://") {
        format!("{}/{prefix}", cf.store.trim_end_matches('/'))
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    let summary =
        summary_of(&records, sources, &manifest, &findings, verification.as_ref(), &location, &retention);
    let mut report = Report {
        schema: SCHEMA,
        // The case id asked for (validated), never the one case.json claims.
        case,
        bucket,
        location,
        generated_at,
        opened: Opened {
            at: cf.opened_at.clone(),
            by: cf.opened_by.examiner.clone(),
            principal: cf.opened_by.principal_arn.clone(),
            tool: format!("{} {}", cf.tool.name, cf.tool.version),
            binary_sha256: cf.tool.binary_sha256.clone(),
            config_digest: cf.config_digest.clone(),
        },
        retention,
        summary,
        findings,
        timeline,
        items: Vec::new(),
        verification,
        custody_head: loaded.head(),
        custody_records: records.len(),
        chain_problems: loaded.chain_findings.iter().map(|f| format!("{}: {}", f.key, f.problem)).collect(),
        source_problems: sources.problems.clone(),
        checkpoint,
        signing_key,
        reverify: Vec::new(),
    };
    for item in &mut items {
        let (commands, note) = reverify::item_commands(&report, item);
        item.commands = commands;
        item.commands_note = note;
    }
    report.items = items;
    report.reverify = reverify::case_steps(&report);
    report
}

fn items_of(
    loaded: &LoadedCase,
    manifest: &[ManifestItem],
    verification: Option<&Verification>,
) -> Vec<Item> {
    // The evidence_stored record of each item (the first one, as the manifest).
    let mut recorded: BTreeMap<&str, RecordRef> = BTreeMap::new();
    for lr in &loaded.records {
        let Some(r) = &lr.record else { continue };
        if r.action != Action::EvidenceStored {
            continue;
        }
        if let Some(id) = r.details.get("item").and_then(|i| i.get("id")).and_then(Value::as_str) {
            let Some(item) = manifest.iter().find(|m| m.id == id) else { continue };
            recorded.entry(item.id.as_str()).or_insert(RecordRef {
                seq: r.seq,
                key: lr.key.clone(),
                version_id: lr.version_id.clone(),
                hash: r.hash.clone(),
                signature: r.signature.as_ref().map(|s| s.value.clone()),
            });
        }
    }
    let problems: Vec<(String, String)> = verification
        .and_then(|v| v.findings.as_array())
        .map(|list| {
            list.iter()
                .map(|f| {
                    (
                        f.get("location").and_then(Value::as_str).unwrap_or_default().to_owned(),
                        f.get("problem").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    manifest
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let recorded_in = recorded.get(item.id.as_str()).cloned();
            let (status, status_ok) = match verification {
                None => ("not verified yet".to_owned(), false),
                Some(v) if recorded_in.as_ref().is_some_and(|r| r.seq > v.seq) => (
                    format!("stored after the last verification (custody record {}): verify again", v.seq),
                    false,
                ),
                Some(v) => {
                    let own: Vec<&String> = problems
                        .iter()
                        .filter(|(loc, _)| loc.contains(&item.s3_key) || loc.contains(&item.id))
                        .map(|(_, p)| p)
                        .collect();
                    let (date, clock, _) = split_time(&v.time);
                    if !own.is_empty() {
                        (
                            format!(
                                "FAILED at the verification of {date} {clock} UTC: {}",
                                own.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("; ")
                            ),
                            false,
                        )
                    } else if v.intact {
                        (
                            format!(
                                "matched its digests and lock at the verification of {date} {clock} UTC (custody record {})",
                                v.seq
                            ),
                            true,
                        )
                    } else {
                        (format!("the verification of {date} {clock} UTC found problems elsewhere in the case"), false)
                    }
                }
            };
            Item {
                number: i + 1,
                item: item.clone(),
                recorded_in,
                status,
                status_ok,
                commands: Vec::new(),
                commands_note: None,
            }
        })
        .collect()
}

fn link(numbers: &BTreeMap<String, usize>, item: &ManifestItem) -> EvidenceLink {
    EvidenceLink { id: item.id.clone(), sha256: item.sha256.clone(), number: numbers.get(&item.id).copied() }
}

/// The item `id` among `sources`' items, as a link (when known).
fn link_id(numbers: &BTreeMap<String, usize>, id: &str, sha256: &str) -> EvidenceLink {
    EvidenceLink { id: id.to_owned(), sha256: sha256.to_owned(), number: numbers.get(id).copied() }
}

fn excerpt(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[..lines.len().min(MAX_EXCERPT_LINES)].join("\n");
    if lines.len() > MAX_EXCERPT_LINES {
        out.push_str(&format!(
            "\n[... {} more line(s) in the evidence item]",
            lines.len() - MAX_EXCERPT_LINES
        ));
    }
    out
}

fn findings_of(sources: &Sources, numbers: &BTreeMap<String, usize>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    let mut push = |mut f: Finding| {
        f.number = out.len() + 1;
        out.push(f);
    };
    let blank = |instance: Option<String>, source: &str, kind: &str, title: Phrase| Finding {
        number: 0,
        instance,
        volume: None,
        source: source.to_owned(),
        kind: kind.to_owned(),
        title,
        path: None,
        inode: None,
        sha256: None,
        excerpt: None,
        evidence: Vec::new(),
        process_problem: false,
    };
    for (summary_item, s) in &sources.captures {
        let inst = Some(s.instance.to_string());
        let id = s.instance.to_string();
        let capture_item = |name: &str| {
            let wanted = format!("{}/{}/capture/{name}", s.account, s.instance);
            numbers.get(&wanted).map(|_| wanted)
        };
        let summary_link = link(numbers, summary_item);
        if let Some(l) = &s.trail.launched_by {
            let mut title = Phrase::of(format!("{id} was launched"));
            title.append(launch_phrase(l, true));
            let mut f = blank(inst.clone(), "CloudTrail", "launched_by", title);
            f.evidence = capture_item("capture-cloudtrail.json")
                .map(|i| vec![link_id(numbers, &i, "")])
                .unwrap_or_default();
            f.evidence.push(summary_link.clone());
            push(f);
        }
        if !s.trail.key_events.is_empty() {
            let shown = s.trail.key_events.len().min(MAX_KEY_EVENTS);
            let mut lines: Vec<String> = s.trail.key_events[..shown]
                .iter()
                .map(|e| {
                    format!(
                        "{}  {}{}{}",
                        e.event_time,
                        e.event_name,
                        e.event_source.as_deref().map(|s| format!(" ({s})")).unwrap_or_default(),
                        e.source_ip.as_deref().map(|ip| format!(" from {ip}")).unwrap_or_default()
                    )
                })
                .collect();
            if s.trail.key_events.len() > shown {
                lines.push(format!(
                    "[... {} more event(s) in the evidence item]",
                    s.trail.key_events.len() - shown
                ));
            }
            let mut f = blank(
                inst.clone(),
                "CloudTrail",
                "launching_key_activity",
                Phrase::of(format!(
                    "The access key that launched {id} made {} call(s) recorded by CloudTrail between {} and {} UTC",
                    s.trail.key_events.len(),
                    day_clock(&s.trail.window_start),
                    day_clock(&s.trail.window_end)
                )),
            );
            f.excerpt = Some(lines.join("\n"));
            f.evidence = capture_item("capture-cloudtrail.json")
                .map(|i| vec![link_id(numbers, &i, "")])
                .unwrap_or_default();
            push(f);
        }
        for (blob, kind, what) in [
            (&s.user_data, "user_data", "UserData (the script it runs at launch)"),
            (&s.console_output, "console_output", "console output"),
        ] {
            if let Some(b) = blob {
                let mut f = blank(
                    inst.clone(),
                    if kind == "user_data" { "UserData" } else { "console" },
                    kind,
                    Phrase::of(format!(
                        "{id} carries {} of {what}; as captured{}",
                        human_size(b.bytes),
                        if b.preview.as_ref().is_none_or(|p| (p.len() as u64) < b.bytes) {
                            " (the beginning only)"
                        } else {
                            ""
                        }
                    )),
                );
                f.excerpt = b.preview.as_deref().map(excerpt);
                f.sha256 = Some(b.sha256.clone());
                f.evidence = vec![link_id(numbers, &b.item, &b.sha256)];
                push(f);
            }
        }
        if !s.tags.is_empty() {
            let mut f = blank(
                inst.clone(),
                "EC2",
                "tags",
                Phrase::of(format!("{id} carries {} tag(s), as captured", s.tags.len())),
            );
            f.excerpt = Some(s.tags.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join("\n"));
            f.evidence =
                capture_item("capture-ec2.json").map(|i| vec![link_id(numbers, &i, "")]).unwrap_or_default();
            push(f);
        }
        if let Some(iam) = &s.iam {
            let mut title = Phrase::of(format!("{id} ran with instance profile "));
            title.push_data(iam.profile_arn.clone());
            if !iam.roles.is_empty() {
                title.push_text(" (role ");
                for (i, r) in iam.roles.iter().enumerate() {
                    if i > 0 {
                        title.push_text(", ");
                    }
                    title.push_data(r.name.clone());
                }
                title.push_text("): its credentials were reachable by anyone on the instance");
            }
            let mut f = blank(inst.clone(), "IAM", "instance_role", title);
            let lines: Vec<String> = iam
                .roles
                .iter()
                .flat_map(|r| {
                    r.attached_policies.iter().map(move |p| format!("{}: attached policy {p}", r.name)).chain(
                        r.inline_policies.iter().map(move |p| format!("{}: inline policy {p}", r.name)),
                    )
                })
                .collect();
            if !lines.is_empty() {
                f.excerpt = Some(lines.join("\n"));
            }
            f.evidence =
                capture_item("capture-iam.json").map(|i| vec![link_id(numbers, &i, "")]).unwrap_or_default();
            push(f);
        }
        if !s.gaps.is_empty() {
            let mut title =
                Phrase::of(format!("Not captured for {id} ({} read(s) refused or failed): ", s.gaps.len()));
            for (i, g) in s.gaps.iter().enumerate() {
                if i > 0 {
                    title.push_text(", ");
                }
                title.push_data(g.what.clone());
            }
            let mut f = blank(inst.clone(), "capture", "not_captured", title);
            f.excerpt = Some(
                s.gaps.iter().map(|g| format!("{}: {}", g.what, g.error)).collect::<Vec<_>>().join("\n"),
            );
            f.evidence = vec![summary_link.clone()];
            f.process_problem = true;
            push(f);
        }
        if let Some(store) = &s.instance_store {
            let mut f = blank(
                inst.clone(),
                "EC2",
                "instance_store_not_captured",
                Phrase::of(format!(
                    "{id} has instance-store disks, which cannot be snapshotted: they were not captured and are lost when the instance stops"
                )),
            );
            f.excerpt = serde_json::to_string(store).ok();
            f.evidence = vec![summary_link.clone()];
            f.process_problem = true;
            push(f);
        }
    }
    for src in &sources.images {
        push(image_finding(src, numbers));
    }
    for src in &sources.triage {
        clean_room_findings(src, numbers, "triage", "findings", &mut push);
    }
    for src in &sources.yara {
        clean_room_findings(src, numbers, "YARA", "matches", &mut push);
    }
    out
}

/// `2026-11-22 05:44:26` of an RFC 3339 time (UTC).
fn day_clock(t: &str) -> String {
    let (date, clock, _) = split_time(t);
    if date == clock { date } else { format!("{date} {clock}") }
}

/// ` at <time> by <user> with access key <key> from <ip>`; `full` adds the user agent
/// and the CloudTrail event id.
fn launch_phrase(l: &crate::capture::trail::Launch, full: bool) -> Phrase {
    let mut p = Phrase::new();
    let (date, clock, _) = split_time(&l.event_time);
    p.push_text(format!(" at {date} {clock} UTC"));
    if let Some(u) = &l.username {
        p.push_text(" by ");
        p.push_data(u.clone());
    }
    if let Some(k) = &l.access_key_id {
        p.push_text(" with access key ");
        p.push_data(k.clone());
    }
    if let Some(ip) = &l.source_ip {
        p.push_text(" from ");
        p.push_data(ip.clone());
    }
    if !full {
        return p;
    }
    if let Some(ua) = &l.user_agent {
        p.push_text(", user agent ");
        p.push_data(ua.clone());
    }
    p.push_text(" (CloudTrail event ");
    p.push_data(l.event_id.clone());
    p.push_text(")");
    p
}

/// The instance and volume of a per-volume result (`<account>/<instance>/<vol>/x.json`).
fn instance_and_volume(item: &ManifestItem) -> (Option<String>, Option<String>) {
    let volume = item.name.split_once('/').map(|(v, _)| v.to_owned());
    (Some(item.subject.clone()), volume)
}

fn text_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn image_finding(src: &Source, numbers: &BTreeMap<String, usize>) -> Finding {
    let v = &src.value;
    let (instance, volume) = instance_and_volume(&src.item);
    let vol = volume.clone().or_else(|| text_of(v, "volume_id")).unwrap_or_else(|| "?".into());
    let bytes = v.get("bytes").and_then(Value::as_u64);
    let check = v.get("second_check");
    let matched = check.and_then(|c| c.get("match")).and_then(Value::as_bool);
    let mut title = Phrase::of(format!(
        "Volume {vol} was imaged in the clean room ({}), its SHA-256, SHA-1 and MD5 computed in the same read",
        bytes.map(human_size).unwrap_or_else(|| "size not recorded".into()),
    ));
    title.push_text(match matched {
        Some(true) => {
            "; the stored image was read back by another program and hashed again: it matches".to_owned()
        }
        Some(false) => "; the stored image read back does NOT match the digest of the image pass".to_owned(),
        None => "; no second check of the stored image was made".to_owned(),
    });
    let mut lines = Vec::new();
    for key in ["sha256", "sha1", "md5"] {
        if let Some(d) = text_of(v, key) {
            lines.push(d);
        }
    }
    if let Some(c) = check {
        lines.push(format!(
            "second check: {} {}",
            text_of(c, "method").unwrap_or_default(),
            text_of(c, "sha256").unwrap_or_default()
        ));
    }
    let mut evidence = vec![link(numbers, &src.item)];
    if let Some(image) = sibling(numbers, &src.item, "image.raw") {
        evidence.push(image);
    }
    Finding {
        number: 0,
        instance,
        volume,
        source: "disk image".into(),
        kind: "disk_image".into(),
        title,
        path: None,
        inode: None,
        sha256: None,
        excerpt: Some(lines.join("\n")),
        evidence,
        process_problem: matched != Some(true),
    }
}

/// The item `name` beside `item` (same instance and volume folder), as a link.
fn sibling(numbers: &BTreeMap<String, usize>, item: &ManifestItem, name: &str) -> Option<EvidenceLink> {
    let (folder, _) = item.id.rsplit_once('/')?;
    let id = format!("{folder}/{name}");
    numbers.get(&id).map(|n| EvidenceLink { id, sha256: String::new(), number: Some(*n) })
}

/// One finding per entry of `list` (`findings` of triage, `matches` of YARA).
fn clean_room_findings(
    src: &Source,
    numbers: &BTreeMap<String, usize>,
    source: &str,
    list: &str,
    push: &mut impl FnMut(Finding),
) {
    let (instance, volume) = instance_and_volume(&src.item);
    let entries = src.value.get(list).and_then(Value::as_array).cloned().unwrap_or_default();
    let mut evidence = vec![link(numbers, &src.item)];
    if source == "triage"
        && let Some(archive) = sibling(numbers, &src.item, "key-files.tar.gz")
    {
        evidence.push(archive);
    }
    for e in entries.iter().take(MAX_FINDINGS_PER_SOURCE) {
        let (kind, title) = if list == "matches" {
            let rule = text_of(e, "rule").unwrap_or_else(|| "?".into());
            let mut t = Phrase::of("YARA rule ").data(rule.clone());
            if let Some(ns) = text_of(e, "namespace") {
                t.push_text(" (rules ");
                t.push_data(ns);
                t.push_text(")");
            }
            t.push_text(" matched a ");
            if e.get("deleted").and_then(Value::as_bool) == Some(true) {
                t.push_text("deleted ");
            }
            t.push_text("file");
            if let Some(size) = e.get("size").and_then(Value::as_u64) {
                t.push_text(format!(" of {}", human_size(size)));
            }
            (format!("yara:{rule}"), t)
        } else {
            let kind = text_of(e, "kind").unwrap_or_else(|| "?".into());
            let mut t = Phrase::of(format!("{}: ", kind.replace('_', " ")));
            t.push_data(text_of(e, "detail").unwrap_or_default());
            (kind, t)
        };
        let mut f = Finding {
            number: 0,
            instance: instance.clone(),
            volume: volume.clone(),
            source: source.to_owned(),
            kind,
            title,
            path: text_of(e, "path"),
            inode: text_of(e, "inode"),
            sha256: text_of(e, "sha256"),
            excerpt: text_of(e, "evidence").map(|line| match text_of(e, "line_number") {
                Some(n) => format!("line {n}: {line}"),
                None => line,
            }),
            evidence: evidence.clone(),
            process_problem: false,
        };
        if f.kind == "?" {
            f.process_problem = true;
        }
        push(f);
    }
    if entries.len() > MAX_FINDINGS_PER_SOURCE {
        let f = Finding {
            number: 0,
            instance,
            volume,
            source: source.to_owned(),
            kind: "more".into(),
            title: Phrase::of(format!(
                "{} more {} in evidence item {} (not listed here)",
                entries.len() - MAX_FINDINGS_PER_SOURCE,
                if list == "matches" { "YARA matches" } else { "findings" },
                src.item.id
            )),
            path: None,
            inode: None,
            sha256: None,
            excerpt: None,
            evidence,
            process_problem: false,
        };
        push(f);
    }
}

#[allow(clippy::too_many_arguments)]
fn summary_of(
    records: &[&CustodyRecord],
    sources: &Sources,
    manifest: &[ManifestItem],
    findings: &[Finding],
    verification: Option<&Verification>,
    location: &str,
    retention: &str,
) -> CaseSummary {
    // Instances: those captured, and any a record names as its subject, except the
    // clean room's own analysis instances (the forensics account's, not a suspect).
    let mut order: Vec<String> = Vec::new();
    let mut where_: BTreeMap<String, (String, String)> = BTreeMap::new();
    let of_clean_room =
        |r: &CustodyRecord| matches!(r.action, Action::AnalysisInstanceLaunched | Action::ResourceRemoved);
    let analysis: Vec<&str> =
        records.iter().filter(|r| of_clean_room(r)).map(|r| r.subject.as_str()).collect();
    for r in records {
        if analysis.contains(&r.subject.as_str()) {
            continue;
        }
        if let Some(arn) = parse_arn(&r.subject)
            && let Some(id) = arn.resource.strip_prefix("instance/")
            && !order.iter().any(|o| o == id)
        {
            order.push(id.to_owned());
            where_.insert(id.to_owned(), (arn.account.to_owned(), arn.region.to_owned()));
        }
    }
    for (_, s) in &sources.captures {
        let id = s.instance.to_string();
        if !order.contains(&id) {
            order.push(id.clone());
        }
        where_.insert(id, (s.account.to_string(), s.region.to_string()));
    }
    // Instances known only from their evidence (e.g. clean-room results of a case
    // acquired elsewhere).
    for item in manifest {
        if item.subject.parse::<crate::ids::InstanceId>().is_ok() && !order.contains(&item.subject) {
            order.push(item.subject.clone());
            where_.insert(item.subject.clone(), (item.account.clone(), "not recorded".into()));
        }
    }
    let instances: Vec<InstanceSummary> = order
        .iter()
        .map(|id| {
            let capture = sources.captures.iter().map(|(_, s)| s).find(|s| s.instance.as_str() == id);
            let (account, region) = where_.get(id).cloned().unwrap_or_default();
            instance_summary(id, &account, &region, capture, records, manifest)
        })
        .collect();

    let total: u64 = manifest.iter().map(|i| i.size).sum();
    let copies: usize = instances.iter().map(|i| i.disk_copies.len()).sum();
    let accounts: BTreeSet<&str> = instances.iter().map(|i| i.account.as_str()).collect();
    let (first, last) = (records.first().map(|r| r.time.clone()), records.last().map(|r| r.time.clone()));
    let mut overview = Phrase::new();
    match (&first, &last) {
        (Some(f), Some(l)) => {
            let (fd, fc, _) = split_time(f);
            let (ld, lc, _) = split_time(l);
            overview.push_text(if fd == ld {
                format!("On {fd}, between {fc} and {lc} UTC, ")
            } else {
                format!("Between {fd} {fc} UTC and {ld} {lc} UTC, ")
            });
        }
        _ => overview.push_text("No custody record is in this case yet. "),
    }
    let people = people_of(records);
    if first.is_some() {
        overview.push_text(format!(
            "{} acted with cleanroom on {} in {} ({}). ",
            listed(people.iter().map(|p| p.who.as_str())),
            plural(instances.len(), "EC2 instance", "EC2 instances"),
            plural(accounts.len(), "AWS account", "AWS accounts"),
            listed(accounts.iter().copied())
        ));
    }
    let contained = instances.iter().filter(|i| i.containment == Containment::Verified).count();
    let failed = instances.iter().filter(|i| i.containment == Containment::Failed).count();
    let released = instances.iter().filter(|i| i.containment == Containment::Released).count();
    if !instances.is_empty() {
        overview.push_text(format!(
            "{}{}{}. ",
            match (instances.len(), contained) {
                (1, 1) => "The instance was contained, and the containment checked afterwards".to_owned(),
                (1, _) => "The instance was not contained by cleanroom".to_owned(),
                (n, c) => format!("{c} of the {n} instances were contained, and the containment checked afterwards"),
            },
            if failed > 0 { format!("; containment FAILED for {failed}") } else { String::new() },
            if released > 0 { format!("; {released} released since") } else { String::new() },
        ));
    }
    let suspect_findings = findings.iter().filter(|f| !f.process_problem).count();
    let problems = findings.len() - suspect_findings;
    overview.push_text(format!(
        "This report lists {} about the suspect{}.",
        plural(suspect_findings, "finding", "findings"),
        if problems > 0 {
            format!(" and {} of the process", plural(problems, "gap or problem", "gaps or problems"))
        } else {
            String::new()
        }
    ));

    let preserved = Phrase::of(format!(
        "{} ({}){} are stored in {location} under {retention}: until then no one, not even the account's administrators, can change or delete them. {} say who did what and when; each carries the hash of the one before it{}.",
        plural(manifest.len(), "evidence item", "evidence items"),
        human_size(total),
        if copies > 0 {
            format!(
                ", and {} held as snapshots in the forensics account,",
                plural(copies, "disk copy", "disk copies")
            )
        } else {
            String::new()
        },
        plural(records.len(), "custody record", "custody records"),
        if records.iter().all(|r| r.signature.is_some()) && !records.is_empty() {
            " and is signed with a key held in AWS KMS"
        } else {
            ""
        }
    ));
    let (verification_status, verification_text) = match verification {
        None => (
            VerificationStatus::NotVerified,
            Phrase::of(
                "No verification has been recorded: treat this evidence as unverified until cleanroom verify is run.",
            ),
        ),
        Some(v) => {
            let (date, clock, _) = split_time(&v.time);
            let stale =
                records.iter().filter(|r| r.seq > v.seq && r.action == Action::EvidenceStored).count();
            let status = if v.ok {
                VerificationStatus::Verified
            } else if v.intact {
                VerificationStatus::IntegrityOnly
            } else {
                VerificationStatus::Failed
            };
            let items = v.items.map(|n| n.to_string()).unwrap_or_else(|| "the".into());
            let chain = v.custody_records.map(|n| format!("{n} ")).unwrap_or_default();
            let locks = if v.locks_checked {
                "confirmed that Object Lock still protects each one, "
            } else {
                "(Object Lock could not be seen: a downloaded copy was checked), "
            };
            let mut p = Phrase::of(match status {
                VerificationStatus::Verified => format!(
                    "Yes. On {date} at {clock} UTC, {} read back all {items} evidence items and recomputed their digests, {locks}and checked that the {chain}custody records form one unbroken chain, each signed with the case's signing key. Nothing had changed",
                    v.who
                ),
                VerificationStatus::IntegrityOnly => format!(
                    "Intact, but not authenticated. On {date} at {clock} UTC, {} found all {items} evidence items and the {chain}custody records intact, but had no trusted key to check their signatures with, so anyone able to write to the evidence bucket could have written the records",
                    v.who
                ),
                _ => format!(
                    "NO. On {date} at {clock} UTC, {} found {} problem(s); section 5 lists them",
                    v.who,
                    v.findings_count.map(|n| n.to_string()).unwrap_or_else(|| "some".into())
                ),
            });
            p.push_text(format!(" (custody record {}).", v.seq));
            if stale > 0 {
                p.push_text(format!(
                    " {stale} item(s) were stored after that verification and are not covered by it."
                ));
            }
            (status, p)
        }
    };
    CaseSummary {
        overview,
        instances,
        preserved,
        verification_status,
        verification: verification_text,
        people,
        findings: findings.len(),
    }
}

fn instance_summary(
    id: &str,
    account: &str,
    region: &str,
    capture: Option<&Summary>,
    records: &[&CustodyRecord],
    manifest: &[ManifestItem],
) -> InstanceSummary {
    let about = |r: &&&CustodyRecord| {
        parse_arn(&r.subject).and_then(|a| a.resource.strip_prefix("instance/")) == Some(id)
    };
    let mine: Vec<&&CustodyRecord> = records.iter().filter(about).collect();
    let last = |a: Action| mine.iter().rev().find(|r| r.action == a).map(|r| r.seq);
    let containment = {
        let verified = last(Action::ContainmentVerified);
        let failed = last(Action::ContainmentFailed).max(last(Action::ReleaseFailed));
        let released = last(Action::Released);
        match (verified, failed, released) {
            (_, _, Some(r)) if Some(r) > verified.max(failed) => Containment::Released,
            (Some(v), f, _) if Some(v) > f => Containment::Verified,
            (_, Some(_), _) => Containment::Failed,
            _ => Containment::NotContained,
        }
    };
    let line = |r: &CustodyRecord, what: Phrase| {
        let (date, clock, _) = split_time(&r.time);
        StoryLine { seq: r.seq, time: format!("{date} {clock}"), what, failure: timeline::failed(r) }
    };
    let mut story: Vec<StoryLine> =
        mine.iter().filter_map(|r| timeline::short(r).map(|what| line(r, what))).collect();
    let items: Vec<&ManifestItem> =
        manifest.iter().filter(|i| i.subject == id && i.account == account).collect();
    let disk_copies = records
        .iter()
        .filter(|r| r.action == Action::ForensicsCopyCompleted)
        .filter(|r| r.evidence.iter().any(|e| items.iter().any(|i| i.id == e.id)))
        .map(|r| DiskCopy {
            source_snapshot: r
                .details
                .get("source_snapshot")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            volume: r.details.get("volume").and_then(Value::as_str).map(str::to_owned),
            forensics_snapshot: r
                .details
                .get("forensics_snapshot")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            key: r.details.get("key").and_then(Value::as_str).map(str::to_owned),
        })
        .collect();
    // The clean room, one line per volume examined, at the time its first result was stored.
    let mut volumes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for item in &items {
        if let Some((volume, file)) = item.name.split_once('/') {
            volumes.entry(volume).or_default().push(file);
        }
    }
    for (volume, files) in volumes {
        let done: Vec<&str> = [
            ("image.json", "imaged"),
            ("triage.json", "triaged with the Sleuth Kit"),
            ("yara.json", "scanned with YARA"),
        ]
        .iter()
        .filter(|(f, _)| files.contains(f))
        .map(|(_, what)| *what)
        .collect();
        let first = records.iter().find(|r| {
            r.action == Action::EvidenceStored
                && r.details
                    .get("item")
                    .and_then(|i| i.get("name"))
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with(&format!("{volume}/")))
                && r.subject == id
        });
        if let (false, Some(r)) = (done.is_empty(), first) {
            let what = Phrase::of(format!(
                "its volume {volume} was examined in the clean room: {} (findings in section 2)",
                listed(done.iter().copied())
            ));
            story.push(line(r, what));
        }
    }
    // The hand-off in one line, at the time the last copy completed.
    let copies: Vec<&&CustodyRecord> = records
        .iter()
        .filter(|r| r.action == Action::ForensicsCopyCompleted)
        .filter(|r| r.evidence.iter().any(|e| items.iter().any(|i| i.id == e.id)))
        .collect();
    if let Some(last) = copies.last() {
        let pairs: Vec<String> = copies
            .iter()
            .map(|r| {
                format!(
                    "{} as {}",
                    r.details.get("volume").and_then(Value::as_str).unwrap_or("?"),
                    r.details.get("forensics_snapshot").and_then(Value::as_str).unwrap_or("?")
                )
            })
            .collect();
        let what = Phrase::of(format!(
            "{} now {} of the forensics account, out of the suspect's reach ({})",
            if copies.len() == 1 {
                "its disk is".to_owned()
            } else {
                format!("its {} disks are", copies.len())
            },
            if copies.len() == 1 { "a snapshot" } else { "snapshots" },
            listed(pairs.iter().map(String::as_str))
        ));
        story.push(line(last, what));
    }
    story.sort_by_key(|l| l.seq);
    InstanceSummary {
        instance: id.to_owned(),
        account: account.to_owned(),
        region: region.to_owned(),
        name: capture.and_then(|c| c.tags.get("Name").cloned()),
        tags: capture.map(|c| c.tags.clone()).unwrap_or_default(),
        instance_type: capture.and_then(|c| c.details.instance_type.clone()),
        state_at_capture: capture.map(|c| c.state.clone()),
        launched_by: capture.and_then(|c| c.trail.launched_by.as_ref()).map(|l| {
            let mut p = Phrase::of("launched");
            p.append(launch_phrase(l, false));
            p
        }),
        story,
        containment,
        evidence_items: items.len(),
        evidence_bytes: items.iter().map(|i| i.size).sum(),
        disk_copies,
    }
}

/// What a record's action was, in a few words for "who did what".
fn did(action: Action) -> &'static str {
    match action {
        Action::CaseOpened => "opened the case",
        Action::EvidenceStored => "stored evidence",
        Action::ContainmentPlanned
        | Action::InstanceProtected
        | Action::ServiceDetached
        | Action::NetworkIsolated
        | Action::CredentialsRevoked => "contained instances",
        Action::ContainmentVerified => "checked the containment",
        Action::ContainmentFailed => "recorded containment failures",
        Action::Released | Action::ReleaseFailed => "released instances",
        Action::CaptureCompleted => "captured instances",
        Action::SnapshotsCreated | Action::SnapshotFailed => "took snapshots",
        Action::RelayCopyCreated
        | Action::SnapshotShared
        | Action::ForensicsCopyCompleted
        | Action::ShareRemoved
        | Action::HandOffFailed => "handed the disks to the forensics account",
        Action::DocumentsRegistered
        | Action::AnalysisInstanceLaunched
        | Action::AnalysisVolumeAttached
        | Action::CollectionStarted
        | Action::CollectionCompleted
        | Action::CollectionFailed => "examined the disks in the clean room",
        Action::ResourceRemoved => "tore down the clean room",
        Action::Verified => "verified the case",
        Action::ReportWritten => "wrote the report",
        Action::CheckpointSigned => "signed checkpoints",
        Action::ManifestSealed => "sealed the manifest",
    }
}

/// The people who acted: one per examiner and AWS identity (each command has its
/// own STS session, so the same person acts as several principals).
fn people_of(records: &[&CustodyRecord]) -> Vec<Person> {
    let mut people: Vec<Person> = Vec::new();
    for r in records {
        let who = timeline::who(&r.actor);
        let p = match people.iter_mut().find(|p| p.who == who) {
            Some(p) => p,
            None => {
                people.push(Person {
                    who,
                    examiner: r.actor.examiner.clone(),
                    principals: Vec::new(),
                    actions: 0,
                    first: r.time.clone(),
                    last: r.time.clone(),
                    did: Vec::new(),
                    hosts: Vec::new(),
                    tool_versions: Vec::new(),
                    tools: Vec::new(),
                });
                people.last_mut().expect("just pushed")
            }
        };
        p.actions += 1;
        p.last = r.time.clone();
        let add = |list: &mut Vec<String>, value: String| {
            if !list.contains(&value) {
                list.push(value);
            }
        };
        add(&mut p.principals, r.actor.principal_arn.clone());
        add(&mut p.did, did(r.action).to_owned());
        add(&mut p.hosts, r.host.hostname.clone());
        add(&mut p.tool_versions, format!("{} {}", r.tool.name, r.tool.version));
        add(&mut p.tools, format!("{} {} (binary {})", r.tool.name, r.tool.version, r.tool.binary_sha256));
    }
    people
}

/// Plain-data cases for the unit tests of the report modules.
#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::json;

    use crate::evidence::case::{CaseFile, ManifestItem, Retention};
    use crate::evidence::custody::{Action, Actor, CLOCK_SOURCE, CustodyRecord, HostInfo, SCHEMA, ToolInfo};
    use crate::evidence::layout;
    use crate::evidence::store::LockMode;
    use crate::ids::CaseId;
    use crate::verify::{LoadedCase, LoadedRecord};

    pub const INSTANCE: &str = "i-0123456789abcdef0";
    pub const ACCOUNT: &str = "444455556666";

    pub fn arn() -> String {
        format!("arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/{INSTANCE}")
    }

    pub fn actor(examiner: &str, session: &str) -> Actor {
        Actor {
            examiner: examiner.into(),
            principal_arn: format!("arn:aws:sts::111122223333:assumed-role/CleanroomForensics/{session}"),
            account: "111122223333".parse().unwrap(),
            session_name: session.into(),
        }
    }

    pub fn record(seq: u64, action: Action, subject: &str, details: serde_json::Value) -> CustodyRecord {
        CustodyRecord {
            schema: SCHEMA.into(),
            seq,
            case: "IR-1".into(),
            time: format!("2026-11-22T05:44:{:02}.000Z", seq % 60),
            clock: CLOCK_SOURCE.into(),
            actor: actor("Jane Doe", "cleanroom-acquire-IR-1"),
            host: HostInfo { hostname: "jump-1".into(), os: "linux".into(), arch: "x86_64".into() },
            tool: ToolInfo { name: "cleanroom".into(), version: "0.1.0".into(), binary_sha256: hex('b') },
            action,
            subject: subject.into(),
            evidence: vec![],
            aws_request_ids: vec!["req-1".into()],
            details,
            prev: None,
            hash: hex('c'),
            signature: None,
        }
    }

    pub fn hex(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    pub fn item(name: &str) -> ManifestItem {
        let case: CaseId = "IR-1".parse().unwrap();
        ManifestItem {
            id: format!("{ACCOUNT}/{INSTANCE}/capture/{name}"),
            account: ACCOUNT.into(),
            subject: INSTANCE.into(),
            name: name.into(),
            source: "ec2:DescribeInstances".into(),
            method: "API read".into(),
            derived_from: vec![],
            acquired_at: "2026-11-22T05:44:02.000Z".into(),
            size: 2048,
            sha256: hex('a'),
            sha1: format!("sha1:{}", "1".repeat(40)),
            md5: format!("md5:{}", "5".repeat(32)),
            s3_key: layout::evidence(&case, &ACCOUNT.parse().unwrap(), INSTANCE, &format!("capture/{name}"))
                .unwrap_or_else(|_| format!("cases/IR-1/evidence/{ACCOUNT}/{INSTANCE}/{name}")),
            version_id: Some("v1.abc_DEF".into()),
            s3_checksum_sha256: "AA==".into(),
            part_size: None,
            lock_mode: Some(LockMode::Compliance),
            retain_until: Some("2026-12-22T05:44:02.000Z".into()),
            legal_hold: false,
        }
    }

    /// A case: opened, one item stored (record 2), contained, verified (record 5),
    /// then a second item stored after the verification (record 6).
    pub fn case() -> LoadedCase {
        let case: CaseId = "IR-1".parse().unwrap();
        let mut stored = record(2, Action::EvidenceStored, INSTANCE, json!({"item": item("userdata.bin")}));
        stored.evidence = vec![item("userdata.bin").evidence_ref()];
        let records = vec![
            record(1, Action::CaseOpened, "case:IR-1", json!({"config_digest": hex('d')})),
            stored,
            record(
                3,
                Action::NetworkIsolated,
                &arn(),
                json!({"groups": [{"vpc": "vpc-1", "purpose": "isolation", "group": "sg-0iso"},
                                  {"vpc": "vpc-1", "purpose": "allow-all", "group": "sg-0all"}],
                       "swaps": [{"eni": "eni-0a", "result": "isolated"}, {"eni": "eni-0b", "result": "isolated"}]}),
            ),
            record(
                4,
                Action::ContainmentVerified,
                &arn(),
                json!({"checks": [{"control": "network eni-0a", "ok": true, "detail": ""}]}),
            ),
            {
                let mut r = record(
                    5,
                    Action::Verified,
                    "case:IR-1",
                    json!({"ok": true, "intact": true, "verdict": "VERIFIED: all good", "items": 1, "custody_records": 4, "locks_checked": true, "findings": []}),
                );
                r.actor = actor("Ada Examiner", "cleanroom-verify-IR-1");
                r
            },
            record(6, Action::EvidenceStored, INSTANCE, json!({"item": item("console-output.txt")})),
        ];
        LoadedCase {
            case: case.clone(),
            case_file: CaseFile {
                schema: "cleanroom.case/1".into(),
                case: "IR-1".into(),
                opened_at: "2026-11-22T05:44:01.000Z".into(),
                clock: CLOCK_SOURCE.into(),
                opened_by: actor("Jane Doe", "cleanroom-acquire-IR-1"),
                host: HostInfo { hostname: "jump-1".into(), os: "linux".into(), arch: "x86_64".into() },
                tool: ToolInfo { name: "cleanroom".into(), version: "0.1.0".into(), binary_sha256: hex('b') },
                config_digest: hex('d'),
                store: "s3://acme-evidence".into(),
                retention: Retention::explicit(LockMode::Compliance, 30),
            },
            case_file_sha256: hex('e'),
            case_file_version: Some("v0".into()),
            records: records
                .into_iter()
                .map(|r| LoadedRecord {
                    seq: r.seq,
                    key: layout::custody_record(&case, r.seq),
                    version_id: Some(format!("rv{}", r.seq)),
                    versions: 1,
                    record: Some(r),
                })
                .collect(),
            chain_findings: vec![],
            other_keys: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{self, INSTANCE};
    use super::*;

    #[test]
    fn the_first_page_tells_what_happened_who_did_it_and_whether_it_verified() {
        let r = build_at(&fixtures::case(), &Sources::default(), "t".into());
        let s = &r.summary;
        assert_eq!(s.instances.len(), 1);
        let i = &s.instances[0];
        assert_eq!(i.instance, INSTANCE);
        assert_eq!(i.containment, Containment::Verified);
        let story: Vec<String> = i.story.iter().map(|l| l.what.plain()).collect();
        assert_eq!(
            story,
            [
                "cut every network path on both its network interfaces (eni-0a and eni-0b)",
                "read it again: its one containment control in force"
            ]
        );
        assert_eq!(s.verification_status, VerificationStatus::Verified);
        let v = s.verification.plain();
        assert!(
            v.starts_with("Yes. On 2026-11-22 at 05:44:05 UTC, Ada Examiner (role CleanroomForensics)"),
            "{v}"
        );
        assert!(v.contains("1 item(s) were stored after that verification"), "{v}");
        // One person per examiner and role, whatever the session of each command.
        let who: Vec<&str> = s.people.iter().map(|p| p.who.as_str()).collect();
        assert_eq!(who, ["Jane Doe (role CleanroomForensics)", "Ada Examiner (role CleanroomForensics)"]);
        assert_eq!(s.people[0].actions, 5);
        assert!(s.preserved.plain().contains("under Object Lock COMPLIANCE mode, 30 days from each write"));
    }

    #[test]
    fn the_clean_rooms_analysis_instance_is_not_among_the_suspects() {
        let mut case = fixtures::case();
        let analysis = "arn:aws:ec2:eu-west-1:111122223333:instance/i-0aaaaaaaaaaaaaaa1";
        for (seq, action) in [(7, Action::AnalysisInstanceLaunched), (8, Action::ResourceRemoved)] {
            let mut loaded = case.records[0].clone();
            loaded.seq = seq;
            loaded.record = Some(fixtures::record(seq, action, analysis, serde_json::json!({})));
            case.records.push(loaded);
        }
        let r = build_at(&case, &Sources::default(), "t".into());
        let ids: Vec<&str> = r.summary.instances.iter().map(|i| i.instance.as_str()).collect();
        assert_eq!(ids, [INSTANCE]);
    }

    #[test]
    fn an_item_stored_after_the_last_verification_is_not_called_verified() {
        let r = build_at(&fixtures::case(), &Sources::default(), "t".into());
        let by_name = |n: &str| r.items.iter().find(|i| i.item.name == n).unwrap();
        assert!(by_name("userdata.bin").status_ok, "{}", by_name("userdata.bin").status);
        let late = by_name("console-output.txt");
        assert!(!late.status_ok);
        assert!(late.status.contains("stored after the last verification"), "{}", late.status);
    }

    #[test]
    fn a_failed_verification_is_said_as_no() {
        let mut case = fixtures::case();
        let v = case.records[4].record.as_mut().unwrap();
        v.details = serde_json::json!({"ok": false, "intact": false, "verdict": "FAILED: 1 problem(s) found", "findings_count": 1,
            "findings": [{"what": "item", "location": item_key(), "problem": "sha256 differs"}]});
        let r = build_at(&case, &Sources::default(), "t".into());
        assert_eq!(r.summary.verification_status, VerificationStatus::Failed);
        assert!(
            r.summary.verification.plain().starts_with("NO. On 2026-11-22"),
            "{}",
            r.summary.verification.plain()
        );
        let item = r.items.iter().find(|i| i.item.name == "userdata.bin").unwrap();
        assert!(
            item.status.starts_with("FAILED at the verification") && item.status.contains("sha256 differs")
        );
    }

    fn item_key() -> String {
        fixtures::item("userdata.bin").s3_key
    }
}
