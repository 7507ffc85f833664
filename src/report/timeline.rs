//! The timeline: one sentence per custody record, for the reader who was not there
//! ("05:44:26 UTC, Jane Doe (role CleanroomForensics) removed every network path of
//! i-0abc... on both its network interfaces; AWS request ids ..."), and the same
//! events as the plain IR log the playbooks keep (`[2026-11-22 05:44 UTC] ...`).
//!
//! Sentences are built from the record's action and details as the stages write them
//! (`capture`, `protect`, `snapshot`, `isolate`, `share`, `release`, `evidence`,
//! `cli::verify`). A field that is missing or of another shape is left out of the
//! sentence, never guessed: the record itself is always in the case.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::phrase::Phrase;
use crate::evidence::custody::{Action, Actor, CustodyRecord};
use crate::ids::parse_arn;

/// Most ids named in one sentence (snapshots, interfaces, request ids); the rest are
/// counted ("and 7 more"). The record holds them all.
const MAX_LISTED: usize = 8;

/// What the sentences need beyond the record: the instances' Name tags.
#[derive(Debug, Default)]
pub struct Names {
    /// Instance id -> its `Name` tag, as captured (suspect data).
    pub instances: BTreeMap<String, String>,
}

/// One custody record, told.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub seq: u64,
    /// UTC, RFC 3339 with milliseconds, as recorded.
    pub time: String,
    /// `YYYY-MM-DD` of `time` (the timeline is grouped by day).
    pub date: String,
    pub action: String,
    /// The accountable person and the role they acted as.
    pub who: String,
    pub principal: String,
    /// The instance (or snapshot, or case) the record is about.
    pub subject: String,
    /// The whole sentence, time and request ids included.
    pub sentence: Phrase,
    /// `HH:MM:SS` (UTC) of `time`.
    pub clock: String,
    /// The sentence without its leading time (for layouts that show the time apart).
    #[serde(skip)]
    pub body: Phrase,
    /// The line of the playbooks' IR log.
    pub ir_log: String,
    pub aws_request_ids: Vec<String>,
    pub evidence: Vec<String>,
    pub record_hash: String,
    pub signed: bool,
    /// The action failed or found a problem.
    pub failure: bool,
}

/// The timeline of `records`, in sequence order.
pub fn entries<'a>(records: impl Iterator<Item = &'a CustodyRecord>, names: &Names) -> Vec<Entry> {
    records.map(|r| entry(r, names)).collect()
}

fn entry(r: &CustodyRecord, names: &Names) -> Entry {
    let (date, clock, minute) = split_time(&r.time);
    let who = who(&r.actor);
    let what = what(r, names);
    let mut body = Phrase::of(format!("{who} "));
    body.append(what.clone());
    let ids = &r.aws_request_ids;
    if !ids.is_empty() {
        body.push_text(format!(
            "; AWS request id{} {}",
            if ids.len() == 1 { "" } else { "s" },
            listed(ids.iter().map(String::as_str))
        ));
    }
    body.push_text(".");
    let mut sentence = Phrase::of(format!("{clock} UTC, "));
    sentence.append(body.clone());
    let mut log = Phrase::of(format!("[{date} {minute} UTC] {who} "));
    log.append(what);
    log.push_text(format!(" (custody record {})", r.seq));
    Entry {
        seq: r.seq,
        time: r.time.clone(),
        date,
        action: r.action.as_str(),
        who,
        principal: r.actor.principal_arn.clone(),
        subject: r.subject.clone(),
        sentence,
        clock,
        body,
        ir_log: log.plain(),
        aws_request_ids: ids.clone(),
        evidence: r.evidence.iter().map(|e| e.id.clone()).collect(),
        record_hash: r.hash.clone(),
        signed: r.signature.is_some(),
        failure: failed(r),
    }
}

/// True when the record tells of a failure or a problem found.
pub fn failed(r: &CustodyRecord) -> bool {
    match r.action {
        Action::ContainmentFailed
        | Action::ReleaseFailed
        | Action::SnapshotFailed
        | Action::HandOffFailed
        | Action::CollectionFailed => true,
        Action::Verified => r.details.get("ok").and_then(Value::as_bool) != Some(true),
        _ => false,
    }
}

/// (`2026-11-22`, `05:44:26`, `05:44`) of an RFC 3339 time; the raw text when it is
/// not one (then all three are that text, made one safe line).
pub fn split_time(t: &str) -> (String, String, String) {
    match OffsetDateTime::parse(t, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            (
                format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
                format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
                format!("{:02}:{:02}", t.hour(), t.minute()),
            )
        }
        Err(_) => {
            let raw = crate::text::sanitize(t).into_owned();
            (raw.clone(), raw.clone(), raw)
        }
    }
}

/// `Jane Doe (role CleanroomForensics)`: the accountable person and the AWS identity.
pub fn who(actor: &Actor) -> String {
    match identity(&actor.principal_arn) {
        Some(identity) => format!("{} ({identity})", actor.examiner),
        None => actor.examiner.clone(),
    }
}

/// `role CleanroomForensics`, `IAM user ada`, `the root user of 111122223333`.
pub fn identity(principal_arn: &str) -> Option<String> {
    let arn = parse_arn(principal_arn)?;
    let mut parts = arn.resource.split('/');
    match (parts.next()?, parts.next()) {
        ("assumed-role", Some(role)) | ("role", Some(role)) => Some(format!("role {role}")),
        ("user", Some(user)) => Some(format!("IAM user {user}")),
        ("root", None) => Some(format!("the root user of {}", arn.account)),
        ("federated-user", Some(user)) => Some(format!("federated user {user}")),
        _ => None,
    }
}

/// `a, b, c and 4 more`.
pub fn listed<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = values.collect();
    let shown = &all[..all.len().min(MAX_LISTED)];
    let mut text = match shown {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] if all.len() <= MAX_LISTED => format!("{} and {last}", rest.join(", ")),
        _ => shown.join(", "),
    };
    if all.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more", all.len() - MAX_LISTED));
    }
    text
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn count(v: &Value, key: &str) -> usize {
    v.get(key).and_then(Value::as_array).map(Vec::len).unwrap_or(0)
}

/// The instance an ARN (or a bare id) names, with its Name tag as data:
/// `i-0abc ("web-1")`.
fn instance(subject: &str, names: &Names) -> Phrase {
    let id =
        parse_arn(subject).and_then(|a| a.resource.strip_prefix("instance/")).unwrap_or(subject).to_owned();
    let mut p = Phrase::of(id.clone());
    if let Some(name) = names.instances.get(&id) {
        p.push_text(" (");
        p.push_data(name.clone());
        p.push_text(")");
    }
    p
}

/// The snapshot an ARN names (or the subject as it is).
fn snapshot_of(subject: &str) -> String {
    parse_arn(subject).and_then(|a| a.resource.strip_prefix("snapshot/")).unwrap_or(subject).to_owned()
}

/// The id at the end of an ARN (`i-0abc` of `...:instance/i-0abc`), or the text as it is.
fn resource_id(subject: &str) -> String {
    parse_arn(subject)
        .and_then(|a| a.resource.rsplit('/').next().map(str::to_owned))
        .unwrap_or_else(|| subject.to_owned())
}

/// `its network interface eni-1`, `both its network interfaces (eni-1 and eni-2)`.
fn interfaces(enis: &[String]) -> String {
    let list = listed(enis.iter().map(String::as_str));
    match enis.len() {
        0 => "its network interfaces".into(),
        1 => format!("its network interface {list}"),
        2 => format!("both its network interfaces ({list})"),
        n => format!("all {n} of its network interfaces ({list})"),
    }
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Human size: `1.5 MiB`, `512 bytes`.
pub fn human_size(bytes: u64) -> String {
    size(bytes)
}

/// `sha256:0123456789abcdef…` (the evidence section has the whole digest).
fn short_digest(d: &str) -> String {
    let keep = "sha256:".len() + 16;
    if d.chars().count() > keep {
        format!("{}…", d.chars().take(keep).collect::<String>())
    } else {
        d.into()
    }
}

/// The errors of a failed step, as data (AWS error text can echo suspect values).
fn errors(p: &mut Phrase, details: &Value) {
    let errs = strings(details, "errors");
    if errs.is_empty() {
        return;
    }
    p.push_text(": ");
    for (i, e) in errs.iter().take(MAX_LISTED).enumerate() {
        if i > 0 {
            p.push_text("; ");
        }
        p.push_data(e.clone());
    }
    if errs.len() > MAX_LISTED {
        p.push_text(format!(" and {} more", errs.len() - MAX_LISTED));
    }
}

/// The protective changes of a plan or record (both shapes the stages write).
fn protections(d: &Value) -> Vec<String> {
    let plan = d.get("plan").unwrap_or(d);
    let mut out = Vec::new();
    if plan.get("termination_protection").and_then(Value::as_bool) == Some(true) {
        out.push("termination protection turned on".to_owned());
    }
    if plan.get("shutdown_stop").or_else(|| plan.get("shutdown_behavior_stop")).and_then(Value::as_bool)
        == Some(true)
    {
        out.push("shutdown behaviour set to stop".to_owned());
    }
    let mut volumes = strings(plan, "keep_volumes");
    volumes.extend(strings(plan, "delete_on_termination_false"));
    if !volumes.is_empty() {
        out.push(format!(
            "delete-on-termination turned off for {}",
            listed(volumes.iter().map(String::as_str))
        ));
    }
    if plan.get("tags").and_then(Value::as_object).is_some_and(|t| !t.is_empty()) {
        out.push("case tags added".to_owned());
    }
    out
}

/// What the record says was done, as the predicate of the sentence.
fn what(r: &CustodyRecord, names: &Names) -> Phrase {
    let d = &r.details;
    let inst = || instance(&r.subject, names);
    match r.action {
        Action::CaseOpened => Phrase::of(format!(
            "opened case {} (configuration {})",
            r.case,
            str_of(d, "config_digest").map(short_digest).unwrap_or_else(|| "not recorded".into())
        )),
        Action::EvidenceStored => {
            let item = d.get("item");
            let field = |k: &str| item.and_then(|i| str_of(i, k)).unwrap_or("?").to_owned();
            let bytes = item.and_then(|i| i.get("size")).and_then(Value::as_u64);
            let mut p = Phrase::of(format!("stored evidence item {}", field("id")));
            if let Some(b) = bytes {
                p.push_text(format!(" ({}, {})", size(b), short_digest(&field("sha256"))));
            }
            let lock = item.and_then(|i| str_of(i, "lock_mode"));
            let until = item.and_then(|i| str_of(i, "retain_until"));
            if let (Some(mode), Some(until)) = (lock, until) {
                p.push_text(format!(", locked {mode} until {until}"));
            }
            p
        }
        Action::ContainmentPlanned => {
            let plan = d.get("plan").cloned().unwrap_or(Value::Null);
            let mut steps = Vec::new();
            let enis: Vec<String> = plan
                .get("swaps")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| str_of(s, "eni").map(str::to_owned)).collect())
                .unwrap_or_default();
            if !enis.is_empty() {
                steps.push(Phrase::of(format!("cut the network on {}", interfaces(&enis))));
            }
            steps.extend(protections(&plan).into_iter().map(Phrase::of));
            if let Some(asg) = str_of(&plan, "detach_asg") {
                steps.push(Phrase::of("detach it from Auto Scaling group ").data(asg));
            }
            let targets = count(&plan, "deregister") + count(&plan, "classic");
            if targets > 0 {
                steps.push(Phrase::of(format!(
                    "deregister it from {targets} load balancer(s) or target group(s)"
                )));
            }
            if str_of(&plan, "disassociate").is_some() {
                steps.push(Phrase::of("remove its instance profile"));
            }
            let roles = strings(&plan, "deny_roles");
            if !roles.is_empty() {
                let mut p = Phrase::of("deny the older sessions of role ");
                push_data_list(&mut p, &roles);
                steps.push(p);
            }
            let mut p = Phrase::of("recorded what containment would change on ");
            p.append(inst());
            p.push_text(", before changing anything");
            if !steps.is_empty() {
                p.push_text(": ");
                join_phrases(&mut p, steps);
            }
            p
        }
        Action::InstanceProtected => {
            let mut p = Phrase::of("protected ");
            p.append(inst());
            p.push_text(" against losing its evidence");
            let done = protections(d);
            if !done.is_empty() {
                p.push_text(format!(": {}", done.join(", ")));
            }
            p
        }
        Action::ServiceDetached => {
            let mut p = Phrase::of("took ");
            p.append(inst());
            p.push_text(" out of service");
            let mut parts = Vec::new();
            if let Some(asg) = str_of(d, "auto_scaling_group") {
                parts.push(Phrase::of("detached it from Auto Scaling group ").data(asg).text(
                    " without lowering the group's desired capacity (a replacement keeps the service up)",
                ));
            }
            let targets = count(d, "target_groups") + count(d, "classic_load_balancers");
            if targets > 0 {
                parts.push(Phrase::of(format!(
                    "deregistered it from {targets} load balancer(s) or target group(s)"
                )));
            }
            if !parts.is_empty() {
                p.push_text(": ");
                join_phrases(&mut p, parts);
            }
            p
        }
        Action::NetworkIsolated => {
            let swaps = d.get("swaps").and_then(Value::as_array).cloned().unwrap_or_default();
            let enis: Vec<String> =
                swaps.iter().filter_map(|s| str_of(s, "eni").map(str::to_owned)).collect();
            let groups = d.get("groups").and_then(Value::as_array).cloned().unwrap_or_default();
            let group = |purpose: &str| {
                groups
                    .iter()
                    .filter(|g| str_of(g, "purpose") == Some(purpose))
                    .filter_map(|g| str_of(g, "group").map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            let (isolation, allow_all) = (group("isolation"), group("allow-all"));
            let mut p = Phrase::of("removed every network path of ");
            p.append(inst());
            p.push_text(format!(" on {}", interfaces(&enis)));
            if !allow_all.is_empty() {
                p.push_text(
                    ": each was first moved to an allow-all security group, so that open connections stopped being tracked, then",
                );
            } else {
                p.push_text(": each was");
            }
            p.push_text(if isolation.is_empty() {
                " moved to the case's isolation security group, which has no rules".to_owned()
            } else {
                format!(
                    " moved to the isolation security group {}, which has no rules",
                    listed(isolation.iter().map(String::as_str))
                )
            });
            p
        }
        Action::CredentialsRevoked => {
            let mut p = Phrase::of("revoked the credentials of ");
            p.append(inst());
            let mut parts = Vec::new();
            if d.get("disassociated").is_some_and(|v| !v.is_null()) {
                parts.push(Phrase::of(
                    "removed its instance profile, so the instance can get no new credentials",
                ));
            }
            let roles = strings(d, "roles");
            if !roles.is_empty() {
                let mut q = Phrase::of("denied every session of role ");
                push_data_list(&mut q, &roles);
                if let Some(before) = str_of(d, "sessions_issued_before") {
                    let (date, clock, _) = split_time(before);
                    q.push_text(format!(" issued before {date} {clock} UTC"));
                }
                if let Some(policy) = str_of(d, "deny_policy") {
                    q.push_text(format!(" (inline policy {policy})"));
                }
                parts.push(q);
            }
            if !parts.is_empty() {
                p.push_text(": ");
                join_phrases(&mut p, parts);
            }
            p
        }
        Action::ContainmentVerified => {
            let checks = d.get("checks").and_then(Value::as_array).cloned().unwrap_or_default();
            let controls: Vec<String> =
                checks.iter().filter_map(|c| str_of(c, "control").map(str::to_owned)).collect();
            let mut p = Phrase::of("read ");
            p.append(inst());
            p.push_text(format!(
                " again and found every containment control in force ({} controls: {})",
                controls.len(),
                listed(controls.iter().map(String::as_str))
            ));
            p
        }
        Action::ContainmentFailed | Action::ReleaseFailed => {
            let step = str_of(d, "step").unwrap_or("");
            let doing = match step {
                "InstanceProtected" | "protect" => "protect",
                "ServiceDetached" => "take out of service",
                "NetworkIsolated" => "isolate the network of",
                "CredentialsRevoked" => "revoke the credentials of",
                "release" => "release",
                _ => "",
            };
            let mut p = if doing.is_empty() {
                let checks = d.get("checks").and_then(Value::as_array).cloned().unwrap_or_default();
                let failed: Vec<String> = checks
                    .iter()
                    .filter(|c| c.get("ok").and_then(Value::as_bool) == Some(false))
                    .filter_map(|c| str_of(c, "control").map(str::to_owned))
                    .collect();
                let mut p = Phrase::of("read ");
                p.append(inst());
                p.push_text(format!(
                    " again and found containment NOT complete: {} of {} controls not in force ({})",
                    failed.len(),
                    checks.len(),
                    listed(failed.iter().map(String::as_str))
                ));
                p
            } else {
                let mut p = Phrase::of(format!("FAILED to {doing} "));
                p.append(inst());
                p
            };
            errors(&mut p, d);
            p
        }
        Action::Released => {
            let mut p = Phrase::of("released ");
            p.append(inst());
            let checks = count(d, "checks");
            p.push_text(format!(
                " from containment: its own security groups and instance profile restored, the case's deny lifted; {checks} check(s) confirm it"
            ));
            p
        }
        Action::CaptureCompleted => {
            let items = d.get("items").and_then(Value::as_u64).unwrap_or(0);
            let mut p = Phrase::of("captured what AWS knew about ");
            p.append(inst());
            p.push_text(format!(
                " before changing anything: {items} evidence items (its description and attributes with the UserData, network interfaces, security groups, volumes, IAM role and policies, console output, CloudTrail events)"
            ));
            if let Some(l) = d.get("launched_by").filter(|v| v.is_object()) {
                p.push_text("; CloudTrail records its launch");
                if let Some(t) = str_of(l, "event_time") {
                    let (date, clock, _) = split_time(t);
                    p.push_text(format!(" at {date} {clock} UTC"));
                }
                if let Some(u) = str_of(l, "username") {
                    p.push_text(" by ");
                    p.push_data(u);
                }
                if let Some(k) = str_of(l, "access_key_id") {
                    p.push_text(" with access key ");
                    p.push_data(k);
                }
                if let Some(ip) = str_of(l, "source_ip") {
                    p.push_text(" from ");
                    p.push_data(ip);
                }
            }
            let gaps = d.get("gaps").and_then(Value::as_array).cloned().unwrap_or_default();
            let gap_names: Vec<String> =
                gaps.iter().filter_map(|g| str_of(g, "what").map(str::to_owned)).collect();
            if !gap_names.is_empty() {
                p.push_text("; not captured: ");
                push_data_list(&mut p, &gap_names);
            }
            if d.get("instance_store_not_captured").is_some_and(|v| !v.is_null()) {
                p.push_text("; its instance-store disks cannot be snapshotted and were not captured");
            }
            p
        }
        Action::SnapshotsCreated => {
            let snaps = d.get("snapshots").and_then(Value::as_array).cloned().unwrap_or_default();
            let pairs: Vec<String> = snaps
                .iter()
                .map(|s| match (str_of(s, "snapshot"), str_of(s, "volume")) {
                    (Some(s), Some(v)) => format!("{s} of {v}"),
                    (Some(s), None) => s.to_owned(),
                    _ => "?".into(),
                })
                .collect();
            let mut p = Phrase::of("froze the disks of ");
            p.append(inst());
            let consistent = d.get("crash_consistent").and_then(Value::as_bool) == Some(true);
            p.push_text(format!(
                ": {} snapshot set of its {} volume(s)",
                if consistent { "one crash-consistent" } else { "a" },
                snaps.len()
            ));
            if let Some(t) = str_of(d, "point_in_time") {
                let (date, clock, _) = split_time(t);
                p.push_text(format!(" at {date} {clock} UTC"));
            }
            p.push_text(format!(" ({})", listed(pairs.iter().map(String::as_str))));
            p
        }
        Action::SnapshotFailed => {
            let mut p = Phrase::of(format!(
                "found that snapshot {} of {} ended in error",
                str_of(d, "failed_snapshot").unwrap_or("?"),
                str_of(d, "volume").unwrap_or("?")
            ));
            if let Some(m) = str_of(d, "state_message") {
                p.push_text(" (");
                p.push_data(m);
                p.push_text(")");
            }
            p.push_text(format!(
                " and took it again as {}; deviation: that snapshot is of one volume, taken later than the set, so its point in time differs",
                str_of(d, "retried_as").unwrap_or("?")
            ));
            p
        }
        Action::RelayCopyCreated => Phrase::of(format!(
            "copied snapshot {} under the hand-off key {} as {}, because a snapshot under the default aws/ebs key (or another key of the suspect's account) cannot be given to another account",
            str_of(d, "source_snapshot").unwrap_or("?"),
            str_of(d, "handoff_key").unwrap_or("?"),
            str_of(d, "relay_copy").unwrap_or("?"),
        )),
        Action::SnapshotShared => Phrase::of(format!(
            "shared snapshot {} with the forensics account {} for the time of the copy",
            str_of(d, "snapshot").unwrap_or("?"),
            str_of(d, "account").unwrap_or("?"),
        )),
        Action::ForensicsCopyCompleted => {
            let copy =
                str_of(d, "forensics_snapshot").map(str::to_owned).unwrap_or_else(|| snapshot_of(&r.subject));
            Phrase::of(format!(
                "completed the forensics account's own copy {copy} of snapshot {}{} under its key {}: this copy, out of the suspect account's reach, is the disk evidence",
                str_of(d, "source_snapshot").unwrap_or("?"),
                str_of(d, "volume").map(|v| format!(" (volume {v})")).unwrap_or_default(),
                str_of(d, "key").unwrap_or("?"),
            ))
        }
        Action::ShareRemoved => Phrase::of(format!(
            "took back the forensics account's access to snapshot {}: the suspect's account shares nothing any more",
            str_of(d, "snapshot").unwrap_or("?"),
        )),
        Action::HandOffFailed => {
            let mut p = Phrase::of(format!(
                "found that the copy {} of snapshot {} in account {} ended in error",
                str_of(d, "copy").unwrap_or("?"),
                str_of(d, "of").unwrap_or("?"),
                str_of(d, "account").unwrap_or("?"),
            ));
            if let Some(m) = str_of(d, "state_message") {
                p.push_text(" (");
                p.push_data(m);
                p.push_text(")");
            }
            p
        }
        Action::DocumentsRegistered => {
            let docs = d.get("documents").and_then(Value::as_array).cloned().unwrap_or_default();
            let listed_docs: Vec<String> = docs
                .iter()
                .map(|doc| {
                    format!(
                        "{} version {} ({})",
                        str_of(doc, "name").unwrap_or("?"),
                        str_of(doc, "version").unwrap_or("?"),
                        short_digest(str_of(doc, "sha256").unwrap_or("?"))
                    )
                })
                .collect();
            let mut p = Phrase::of(format!(
                "registered the collection documents in the forensics account by content digest: {}",
                listed(listed_docs.iter().map(String::as_str))
            ));
            if let Some(ami) = str_of(d, "ami") {
                p.push_text(format!("; the analysis image is {ami}"));
                if let Some(from) = str_of(d, "ami_resolved_from") {
                    p.push_text(" (");
                    p.push_data(from);
                    p.push_text(")");
                }
            }
            p
        }
        Action::AnalysisInstanceLaunched => Phrase::of(format!(
            "launched the analysis instance {} in the forensics account from image {} ({}, subnet {}, security group {}, IMDS {}, no public IP): no one else uses it",
            resource_id(&r.subject),
            str_of(d, "ami").unwrap_or("?"),
            str_of(d, "instance_type").unwrap_or("?"),
            str_of(d, "subnet").unwrap_or("?"),
            str_of(d, "security_group").unwrap_or("?"),
            str_of(d, "imds").unwrap_or("?"),
        )),
        Action::AnalysisVolumeAttached => Phrase::of(format!(
            "attached a volume made from the forensics copy of {} to the analysis instance {} as {}; it is read as a block device and never mounted",
            str_of(d, "source").map(resource_id).unwrap_or_else(|| "?".into()),
            str_of(d, "instance").unwrap_or("?"),
            str_of(d, "device").unwrap_or("?"),
        )),
        Action::CollectionStarted => Phrase::of(format!(
            "ran {} (document {}) on volume {} of the analysis instance {} (SSM command {})",
            str_of(d, "document").unwrap_or("?"),
            short_digest(str_of(d, "document_sha256").unwrap_or("?")),
            str_of(d, "volume").unwrap_or("?"),
            str_of(d, "instance").unwrap_or("?"),
            str_of(d, "command_id").unwrap_or("?"),
        )),
        Action::CollectionFailed if d.get("still_running").and_then(Value::as_bool) == Some(true) => {
            Phrase::of(format!(
                "stopped waiting for {} on volume {} after {} minute(s) (limits.command_timeout_minutes; SSM command {} still {}): a rerun waits for the same command",
                str_of(d, "document").unwrap_or("?"),
                resource_id(&r.subject),
                d.get("waited_minutes").and_then(Value::as_u64).unwrap_or(0),
                str_of(d, "command_id").unwrap_or("?"),
                str_of(d, "status").unwrap_or("?"),
            ))
        }
        Action::CollectionCompleted | Action::CollectionFailed => {
            let ok = r.action == Action::CollectionCompleted;
            let mut p = if str_of(d, "mode") == Some("local") {
                Phrase::of("ran the collection scripts on a workstation against the disk image ")
                    .data(r.subject.trim_start_matches("file:"))
            } else {
                Phrase::of(format!(
                    "{} {} on volume {}",
                    if ok { "completed" } else { "FAILED:" },
                    str_of(d, "document").unwrap_or("?"),
                    resource_id(&r.subject),
                ))
            };
            if let Some(code) = d.get("response_code").and_then(Value::as_i64) {
                p.push_text(format!(" (exit {code})"));
            }
            if !r.evidence.is_empty() {
                p.push_text(format!("; {} stored as evidence", plural(r.evidence.len(), "item", "items")));
            }
            p
        }
        Action::ResourceRemoved => Phrase::of(format!(
            "removed {} {}, which the case had created for the analysis; the evidence and the forensics snapshot copies stay",
            match str_of(d, "kind") {
                Some("AnalysisInstance") | Some("analysis_instance") => "the analysis instance",
                Some("AnalysisVolume") | Some("analysis_volume") => "the analysis volume",
                _ => "the relay copy",
            },
            str_of(d, "id").unwrap_or("?"),
        )),
        Action::Verified => {
            let ok = d.get("ok").and_then(Value::as_bool) == Some(true);
            let mut p = Phrase::of(if ok {
                "re-verified the whole case"
            } else {
                "re-verified the whole case and found it NOT verified"
            });
            if let Some(v) = str_of(d, "verdict") {
                p.push_text(format!(": {v}"));
            }
            p
        }
        Action::ReportWritten => {
            let format = match str_of(d, "format") {
                Some("html") => "HTML",
                Some("md") => "Markdown",
                Some("json") => "JSON",
                _ => "",
            };
            let mut p = Phrase::of(format!("wrote the {format} report"));
            if let Some(e) = r.evidence.first() {
                p.push_text(format!(
                    " and stored it in the case ({}, version {})",
                    e.id,
                    e.version_id.as_deref().unwrap_or("none")
                ));
            }
            p
        }
        Action::CheckpointSigned => {
            let signed = d.get("signed");
            let upto = signed.and_then(|s| s.get("seq")).and_then(Value::as_u64);
            Phrase::of(format!(
                "signed a checkpoint over custody records 1 to {} with key {} (public key {}): with that public key alone anyone can check the chain up to there",
                upto.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                str_of(d, "key_id").unwrap_or("?"),
                str_of(d, "public_key_sha256").map(short_digest).unwrap_or_else(|| "?".into()),
            ))
        }
        Action::ManifestSealed => {
            let items = d.get("items").and_then(Value::as_u64).unwrap_or(0);
            let head = d.get("custody_head").and_then(|h| h.get("seq")).and_then(Value::as_u64);
            Phrase::of(format!(
                "sealed the manifest: {items} evidence item(s), up to custody record {}",
                head.map(|s| s.to_string()).unwrap_or_else(|| "?".into())
            ))
        }
    }
}

/// `"a", "b" and "c"` as data.
fn push_data_list(p: &mut Phrase, values: &[String]) {
    let shown = values.len().min(MAX_LISTED);
    for (i, v) in values[..shown].iter().enumerate() {
        if i > 0 {
            p.push_text(if i + 1 == shown && values.len() <= MAX_LISTED { " and " } else { ", " });
        }
        p.push_data(v.clone());
    }
    if values.len() > MAX_LISTED {
        p.push_text(format!(" and {} more", values.len() - MAX_LISTED));
    }
}

/// `a, b and c` of phrases.
fn join_phrases(p: &mut Phrase, parts: Vec<Phrase>) {
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            p.push_text(if i + 1 == n { " and " } else { ", " });
        }
        p.append(part);
    }
}

/// What a record did to its instance, in a few words for the first page (`it` is
/// the instance); None for records the first page leaves to the timeline.
pub fn short(r: &CustodyRecord) -> Option<Phrase> {
    let d = &r.details;
    Some(match r.action {
        Action::CaptureCompleted => {
            let items = d.get("items").and_then(Value::as_u64).unwrap_or(0);
            let gaps = count(d, "gaps");
            Phrase::of(format!(
                "captured what AWS knew about it, before any change: {items} evidence items{}",
                if gaps > 0 {
                    format!(" ({gaps} read(s) not possible, see the findings)")
                } else {
                    String::new()
                }
            ))
        }
        Action::InstanceProtected => {
            let done = protections(d);
            Phrase::of(format!(
                "protected it against losing its evidence{}",
                if done.is_empty() { String::new() } else { format!(" ({})", done.join(", ")) }
            ))
        }
        Action::SnapshotsCreated => {
            let n = count(d, "snapshots");
            let consistent = d.get("crash_consistent").and_then(Value::as_bool) == Some(true);
            Phrase::of(format!(
                "froze its {n} disk(s) in {} snapshot set",
                if consistent { "one crash-consistent" } else { "a" }
            ))
        }
        Action::ServiceDetached => Phrase::of("took it out of service (Auto Scaling, load balancers)"),
        Action::NetworkIsolated => {
            let enis: Vec<String> = d
                .get("swaps")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| str_of(s, "eni").map(str::to_owned)).collect())
                .unwrap_or_default();
            Phrase::of(format!("cut every network path on {}", interfaces(&enis)))
        }
        Action::CredentialsRevoked => {
            let mut p = Phrase::of("revoked its credentials");
            let roles = strings(d, "roles");
            if !roles.is_empty() {
                p.push_text(" (instance profile removed; older sessions of role ");
                push_data_list(&mut p, &roles);
                p.push_text(" denied)");
            }
            p
        }
        Action::ContainmentVerified => {
            let n = count(d, "checks");
            Phrase::of(if n == 1 {
                "read it again: its one containment control in force".to_owned()
            } else {
                format!("read it again: all {n} containment controls in force")
            })
        }
        Action::ContainmentFailed | Action::ReleaseFailed => {
            let mut p = Phrase::of("FAILED");
            if let Some(step) = str_of(d, "step") {
                p.push_text(format!(" ({})", step.replace('_', " ")));
            }
            errors(&mut p, d);
            p
        }
        Action::Released => Phrase::of("released it from containment"),
        Action::SnapshotFailed => Phrase::of(format!(
            "snapshot of {} failed and was taken again alone (a deviation: its point in time differs)",
            str_of(d, "volume").unwrap_or("a volume")
        )),
        Action::HandOffFailed => Phrase::of("the copy of a disk to the forensics account FAILED"),
        _ => return None,
    })
}

/// `1 item`, `2 items`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::model::fixtures::{INSTANCE, arn, hex, item, record};

    fn names() -> Names {
        Names { instances: [(INSTANCE.to_owned(), "web <b>1</b>".to_owned())].into() }
    }

    fn told(action: Action, subject: &str, details: serde_json::Value) -> Entry {
        entries(std::iter::once(&record(7, action, subject, details)), &names()).remove(0)
    }

    #[test]
    fn every_action_is_one_sentence_with_time_who_what_and_request_ids() {
        let cases: Vec<(Action, String, serde_json::Value, &str)> = vec![
            (Action::CaseOpened, "case:IR-1".into(), json!({"config_digest": hex('d')}), "opened case IR-1"),
            (
                Action::EvidenceStored,
                INSTANCE.into(),
                json!({"item": item("userdata.bin")}),
                "stored evidence item 444455556666/i-0123456789abcdef0/capture/userdata.bin (2.0 KiB, sha256:aaaaaaaaaaaaaaaa…), locked COMPLIANCE until",
            ),
            (
                Action::ContainmentPlanned,
                arn(),
                json!({"plan": {"swaps": [{"eni": "eni-0a"}], "termination_protection": true, "deny_roles": ["app"]}}),
                "recorded what containment would change on i-0123456789abcdef0 (\"web <b>1</b>\"), before changing anything: cut the network on its network interface eni-0a, termination protection turned on and deny the older sessions of role \"app\"",
            ),
            (
                Action::InstanceProtected,
                arn(),
                json!({"plan": {"termination_protection": true, "shutdown_stop": true, "keep_volumes": ["vol-1"], "tags": {"cleanroom:case": "IR-1"}}}),
                "protected i-0123456789abcdef0 (\"web <b>1</b>\") against losing its evidence: termination protection turned on, shutdown behaviour set to stop, delete-on-termination turned off for vol-1, case tags added",
            ),
            (
                Action::ServiceDetached,
                arn(),
                json!({"auto_scaling_group": "web-asg", "target_groups": [{}, {}]}),
                "detached it from Auto Scaling group \"web-asg\" without lowering the group's desired capacity",
            ),
            (
                Action::NetworkIsolated,
                arn(),
                json!({"groups": [{"purpose": "isolation", "group": "sg-0iso"}, {"purpose": "allow-all", "group": "sg-0all"}], "swaps": [{"eni": "eni-0a"}, {"eni": "eni-0b"}]}),
                "removed every network path of i-0123456789abcdef0 (\"web <b>1</b>\") on both its network interfaces (eni-0a and eni-0b): each was first moved to an allow-all security group, so that open connections stopped being tracked, then moved to the isolation security group sg-0iso, which has no rules",
            ),
            (
                Action::CredentialsRevoked,
                arn(),
                json!({"disassociated": "iip-assoc-1", "roles": ["app"], "deny_policy": "cleanroom-revoke-sessions-IR-1", "sessions_issued_before": "2026-11-22T05:44:07Z"}),
                "removed its instance profile, so the instance can get no new credentials and denied every session of role \"app\" issued before 2026-11-22 05:44:07 UTC (inline policy cleanroom-revoke-sessions-IR-1)",
            ),
            (
                Action::ContainmentVerified,
                arn(),
                json!({"checks": [{"control": "network eni-0a", "ok": true}, {"control": "termination protection", "ok": true}]}),
                "found every containment control in force (2 controls: network eni-0a and termination protection)",
            ),
            (
                Action::ContainmentFailed,
                arn(),
                json!({"step": "NetworkIsolated", "errors": ["eni-0a: \u{1b}[2Jdenied"]}),
                "FAILED to isolate the network of i-0123456789abcdef0 (\"web <b>1</b>\"): \"eni-0a: \\u{1b}[2Jdenied\"",
            ),
            (
                Action::ContainmentFailed,
                arn(),
                json!({"checks": [{"control": "network eni-0a", "ok": false}, {"control": "termination protection", "ok": true}]}),
                "found containment NOT complete: 1 of 2 controls not in force (network eni-0a)",
            ),
            (
                Action::Released,
                arn(),
                json!({"checks": [{}, {}]}),
                "released i-0123456789abcdef0 (\"web <b>1</b>\") from containment",
            ),
            (
                Action::ReleaseFailed,
                arn(),
                json!({"step": "release", "errors": ["x"]}),
                "FAILED to release i-0123456789abcdef0",
            ),
            (
                Action::CaptureCompleted,
                arn(),
                json!({"items": 8, "gaps": [{"what": "console screenshot", "error": "e"}], "launched_by": {"event_time": "2026-11-21T23:10:02Z", "username": "dev-ci", "access_key_id": "AKIAEXAMPLE", "source_ip": "203.0.113.66"}}),
                "CloudTrail records its launch at 2026-11-21 23:10:02 UTC by \"dev-ci\" with access key \"AKIAEXAMPLE\" from \"203.0.113.66\"; not captured: \"console screenshot\"",
            ),
            (
                Action::SnapshotsCreated,
                arn(),
                json!({"crash_consistent": true, "point_in_time": "2026-11-22T05:44:03Z", "snapshots": [{"snapshot": "snap-1", "volume": "vol-1"}, {"snapshot": "snap-2", "volume": "vol-2"}]}),
                "froze the disks of i-0123456789abcdef0 (\"web <b>1</b>\"): one crash-consistent snapshot set of its 2 volume(s) at 2026-11-22 05:44:03 UTC (snap-1 of vol-1 and snap-2 of vol-2)",
            ),
            (
                Action::SnapshotFailed,
                arn(),
                json!({"failed_snapshot": "snap-1", "volume": "vol-1", "retried_as": "snap-3"}),
                "found that snapshot snap-1 of vol-1 ended in error and took it again as snap-3; deviation:",
            ),
            (
                Action::RelayCopyCreated,
                arn(),
                json!({"source_snapshot": "snap-1", "handoff_key": "arn:aws:kms:eu-west-1:444455556666:key/k", "relay_copy": "snap-4"}),
                "copied snapshot snap-1 under the hand-off key arn:aws:kms:eu-west-1:444455556666:key/k as snap-4",
            ),
            (
                Action::SnapshotShared,
                arn(),
                json!({"snapshot": "snap-4", "account": "111122223333"}),
                "shared snapshot snap-4 with the forensics account 111122223333",
            ),
            (
                Action::ForensicsCopyCompleted,
                "arn:aws:ec2:eu-west-1::snapshot/snap-5".into(),
                json!({"source_snapshot": "snap-1", "volume": "vol-1", "forensics_snapshot": "snap-5", "key": "arn:aws:kms:eu-west-1:111122223333:key/f"}),
                "completed the forensics account's own copy snap-5 of snapshot snap-1 (volume vol-1) under its key",
            ),
            (
                Action::ShareRemoved,
                arn(),
                json!({"snapshot": "snap-4", "account": "111122223333"}),
                "took back the forensics account's access to snapshot snap-4",
            ),
            (
                Action::HandOffFailed,
                arn(),
                json!({"copy": "snap-6", "of": "snap-1", "account": "111122223333", "state_message": "KMS"}),
                "found that the copy snap-6 of snapshot snap-1 in account 111122223333 ended in error (\"KMS\")",
            ),
            (
                Action::Verified,
                "case:IR-1".into(),
                json!({"ok": true, "verdict": "VERIFIED: ok"}),
                "re-verified the whole case: VERIFIED: ok",
            ),
            (Action::ReportWritten, "case:IR-1".into(), json!({"format": "html"}), "wrote the HTML report"),
            (
                Action::CheckpointSigned,
                "k".into(),
                json!({"signed": {"seq": 6}, "key_id": "arn:aws:kms:eu-west-1:111122223333:key/s", "public_key_sha256": hex('f')}),
                "signed a checkpoint over custody records 1 to 6 with key arn:aws:kms:eu-west-1:111122223333:key/s",
            ),
            (
                Action::ManifestSealed,
                "case:IR-1".into(),
                json!({"items": 3, "custody_head": {"seq": 6}}),
                "sealed the manifest: 3 evidence item(s), up to custody record 6",
            ),
        ];
        for (action, subject, details, expected) in cases {
            let e = told(action, &subject, details);
            let s = e.sentence.plain();
            assert!(s.starts_with("05:44:07 UTC, Jane Doe (role CleanroomForensics) "), "{s}");
            assert!(s.contains(expected), "{action:?}:\n{s}\nlacks\n{expected}");
            assert!(s.ends_with("; AWS request id req-1."), "{s}");
            assert!(
                e.ir_log.starts_with("[2026-11-22 05:44 UTC] Jane Doe (role CleanroomForensics) "),
                "{}",
                e.ir_log
            );
            assert!(e.ir_log.ends_with("(custody record 7)"), "{}", e.ir_log);
            assert!(!e.ir_log.contains("req-1"), "the IR log is terse");
        }
    }

    #[test]
    fn suspect_values_are_data_pieces_and_missing_fields_are_left_out() {
        let e = told(Action::NetworkIsolated, &arn(), json!({}));
        assert!(e.body.0.contains(&super::super::phrase::Span::Data("web <b>1</b>".into())), "{:?}", e.body);
        assert!(
            e.sentence
                .plain()
                .contains("on its network interfaces: each was moved to the case's isolation security group")
        );
        assert!(!told(Action::Verified, "case:IR-1", json!({"ok": false})).sentence.plain().contains("null"));
        assert!(told(Action::Verified, "case:IR-1", json!({"ok": false})).failure);
    }

    #[test]
    fn identities_lists_and_times_read_naturally() {
        assert_eq!(identity("arn:aws:iam::111122223333:user/ada").as_deref(), Some("IAM user ada"));
        assert_eq!(
            identity("arn:aws:iam::111122223333:root").as_deref(),
            Some("the root user of 111122223333")
        );
        assert_eq!(identity("not an arn"), None);
        assert_eq!(listed(["a"].into_iter()), "a");
        assert_eq!(listed(["a", "b", "c"].into_iter()), "a, b and c");
        let many: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(listed(many.iter().map(String::as_str)), "0, 1, 2, 3, 4, 5, 6, 7 and 2 more");
        assert_eq!(split_time("2026-11-22T05:44:07.123Z").1, "05:44:07");
        assert_eq!(split_time("x\u{1b}y").0, "x\\u{1b}y", "a time that is not one is shown safely");
        assert_eq!(plural(1, "day", "days"), "1 day");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
