//! Verify a case at any later time: re-download and re-hash every evidence object
//! (streamed, in parallel), compare with the manifest and with S3's stored checksum,
//! check Object Lock is still in force, walk the custody chain and its signed
//! checkpoints, and name every problem with what and where. Works on the bucket or,
//! offline, on a downloaded case folder (where versions and locks cannot be seen).

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use crate::evidence::case::{
    CaseFile, ChainHead, Manifest, ManifestItem, SMALL_OBJECT_LIMIT, case_key, custody_prefix, manifest_key,
    utc_ms,
};
use crate::evidence::checkpoint::{CheckpointDetails, fingerprint, verify_signature};
use crate::evidence::custody::{self, Action, ChainFinding, CustodyRecord, seq_of_key};
use crate::evidence::digest::sha256_tagged;
use crate::evidence::store::{ObjectStore, StoreErrorKind, get_all};
use crate::evidence::upload::hash_stream;
use crate::evidence::{EvidenceError, LockMode};
use crate::ids::CaseId;

/// Objects re-hashed at once: each holds a few MiB of buffers; four keep two cores
/// busy while S3 streams.
pub const VERIFY_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// A public key (PEM or DER) to check checkpoint signatures with, instead of the
    /// one stored in the case (which an attacker with write access could replace).
    pub public_key: Option<Vec<u8>>,
}

/// One problem: what kind, where (key and version), and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub what: &'static str,
    pub location: String,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemCheck {
    pub id: String,
    pub s3_key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// "ok", or a short word for the first problem.
    pub status: String,
    pub lock: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CustodyCheck {
    pub records: u64,
    pub head: Option<ChainHead>,
    pub checkpoints_verified: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub case: String,
    pub location: String,
    pub checked_at: String,
    /// False offline: versions and Object Lock could not be checked.
    pub locks_checked: bool,
    pub items: Vec<ItemCheck>,
    pub custody: CustodyCheck,
    pub manifest: Option<String>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    pub fn verdict(&self) -> String {
        if self.ok() {
            format!(
                "VERIFIED: {} evidence objects match their digests, {} custody records form one unbroken chain{}",
                self.items.len(),
                self.custody.records,
                if self.locks_checked { ", Object Lock in force" } else { " (offline: locks not checked)" }
            )
        } else {
            format!("FAILED: {} problem(s) found", self.findings.len())
        }
    }
}

/// Everything read from a case, shared by verify, report and cases.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub case_file: CaseFile,
    /// `sha256:` of case.json as read.
    pub case_file_sha256: String,
    /// (seq from key, key, record if parseable), by key order.
    pub records: Vec<(u64, String, Option<CustodyRecord>)>,
    pub chain_findings: Vec<ChainFinding>,
    pub other_keys: Vec<String>,
}

impl LoadedCase {
    pub fn chain(&self) -> impl Iterator<Item = &CustodyRecord> {
        self.records.iter().filter_map(|r| r.2.as_ref())
    }

    /// Items as recorded in `evidence_stored` records, by id (first record wins).
    pub fn items(&self) -> BTreeMap<String, ManifestItem> {
        let mut out = BTreeMap::new();
        for r in self.chain().filter(|r| r.action == Action::EvidenceStored) {
            if let Some(item) =
                r.details.get("item").and_then(|v| serde_json::from_value::<ManifestItem>(v.clone()).ok())
            {
                out.entry(item.id.clone()).or_insert(item);
            }
        }
        out
    }

    pub fn head(&self) -> Option<ChainHead> {
        self.chain().last().map(|r| ChainHead { seq: r.seq, hash: r.hash.clone() })
    }

    pub fn last(&self, action: Action) -> Option<&CustodyRecord> {
        self.chain().filter(|r| r.action == action).last()
    }
}

fn corrupt(case: &str, key: &str, what: &'static str, problem: impl Into<String>) -> EvidenceError {
    EvidenceError::Corrupt { case: case.into(), key: key.into(), what, problem: problem.into() }
}

/// Reads case.json and every custody record (latest versions), checking each record.
pub async fn load_case(store: &dyn ObjectStore, case: &CaseId) -> Result<LoadedCase, EvidenceError> {
    let case = case.as_str();
    let key = case_key(case);
    let bytes = match get_all(store, &key, None, SMALL_OBJECT_LIMIT).await {
        Ok(b) => b,
        Err(e) if e.is(StoreErrorKind::NotFound) => {
            return Err(EvidenceError::CaseMissing { case: case.into(), location: store.location() });
        }
        Err(e) => return Err(EvidenceError::store(format!("reading {key}"))(e)),
    };
    let case_file: CaseFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(case, &key, "case file", e.to_string()))?;
    let keys =
        store.list(&custody_prefix(case)).await.map_err(EvidenceError::store("listing custody records"))?;
    let mut records = Vec::new();
    let mut chain_findings = Vec::new();
    let mut other_keys = Vec::new();
    for k in keys {
        let Some(seq) = seq_of_key(case, &k) else {
            chain_findings.push(ChainFinding {
                seq: None,
                key: k.clone(),
                problem: "unexpected object among custody records (inserted)".into(),
            });
            other_keys.push(k);
            continue;
        };
        let bytes = get_all(store, &k, None, SMALL_OBJECT_LIMIT)
            .await
            .map_err(EvidenceError::store(format!("reading {k}")))?;
        let record = custody::check_record(case, &k, &bytes, &mut chain_findings);
        records.push((seq, k, record));
    }
    records.sort_by_key(|r| r.0);
    let links: Vec<(u64, Option<CustodyRecord>)> = records.iter().map(|(s, _, r)| (*s, r.clone())).collect();
    custody::check_links(case, &links, &mut chain_findings);
    let case_file_sha256 = sha256_tagged(&bytes);
    Ok(LoadedCase { case_file, case_file_sha256, records, chain_findings, other_keys })
}

/// Verifies `case` in `store`. Errors only when the case cannot be read at all;
/// every integrity problem is a finding in the report.
pub async fn verify_case(
    store: &dyn ObjectStore,
    case: &CaseId,
    options: &VerifyOptions,
) -> Result<VerifyReport, EvidenceError> {
    let loaded = load_case(store, case).await?;
    let case_str = case.as_str();
    let now = OffsetDateTime::now_utc();
    let locks = store.has_locks();
    let mut findings: Vec<Finding> = loaded
        .chain_findings
        .iter()
        .map(|f| Finding { what: "custody", location: f.key.clone(), problem: f.problem.clone() })
        .collect();
    let mut notes = Vec::new();
    let expected_mode = loaded.case_file.retention.mode;

    // Versions: a locked version cannot change, but new versions and delete markers
    // can be added; each one is an event to report.
    let versions = if locks {
        store
            .list_versions(&format!("cases/{case_str}/"))
            .await
            .map_err(EvidenceError::store("listing versions"))?
    } else {
        notes.push("offline folder: object versions, delete markers and Object Lock were not checked (check them in S3)".into());
        Vec::new()
    };
    let mut by_key: BTreeMap<&str, Vec<&crate::evidence::store::Version>> = BTreeMap::new();
    for v in &versions {
        by_key.entry(v.key.as_str()).or_default().push(v);
    }
    let manifest_k = manifest_key(case_str);
    let report_prefix = format!("cases/{case_str}/report/");
    for (key, vs) in &by_key {
        if *key == manifest_k || key.starts_with(&report_prefix) {
            continue; // versioned by design; the sealed version is checked below
        }
        if vs.iter().any(|v| v.delete_marker) {
            findings.push(Finding {
                what: "object",
                location: key.to_string(),
                problem: "has a delete marker (someone deleted it; the locked version may remain)".into(),
            });
        }
        let objects = vs.iter().filter(|v| !v.delete_marker).count();
        if objects > 1 {
            findings.push(Finding {
                what: if key.contains("/custody/") { "custody" } else { "object" },
                location: key.to_string(),
                problem: format!("has {objects} versions; the tool writes each key once (a new version was written over it)"),
            });
        }
    }

    // case.json must be the one the first record names.
    let case_k = case_key(case_str);
    match loaded.chain().next().filter(|r| r.action == Action::CaseOpened).and_then(|r| r.evidence.first()) {
        Some(opened) if opened.sha256 == loaded.case_file_sha256 => {}
        Some(opened) => findings.push(Finding {
            what: "case",
            location: case_k.clone(),
            problem: format!(
                "case.json is {}, the case_opened record says {} (replaced)",
                loaded.case_file_sha256, opened.sha256
            ),
        }),
        None => findings.push(Finding {
            what: "custody",
            location: case_k.clone(),
            problem: "the chain does not start with a case_opened record naming case.json".into(),
        }),
    }
    if locks && let Some(p) = lock_problem(store, &case_k, None, expected_mode, None, now).await? {
        findings.push(Finding { what: "lock", location: case_k.clone(), problem: p });
    }

    // Custody records: locks.
    if locks {
        for (_, key, _) in &loaded.records {
            if let Some(p) = lock_problem(store, key, None, expected_mode, None, now).await? {
                findings.push(Finding { what: "lock", location: key.clone(), problem: p });
            }
        }
    }

    // Checkpoints.
    let mut checkpoints_verified = 0;
    let hashes: BTreeMap<u64, &str> = loaded.chain().map(|r| (r.seq, r.hash.as_str())).collect();
    for r in loaded.chain().filter(|r| r.action == Action::CheckpointSigned) {
        let loc = custody::record_key(case_str, r.seq);
        let details: CheckpointDetails = match serde_json::from_value(r.details.clone()) {
            Ok(d) => d,
            Err(e) => {
                findings.push(Finding {
                    what: "checkpoint",
                    location: loc,
                    problem: format!("details unreadable: {e}"),
                });
                continue;
            }
        };
        if hashes.get(&details.signed.seq) != Some(&details.signed.hash.as_str())
            || details.signed.case != case_str
        {
            findings.push(Finding {
                what: "checkpoint",
                location: loc.clone(),
                problem: format!(
                    "signs record {} with hash {}, which is not the chain's record {}",
                    details.signed.seq, details.signed.hash, details.signed.seq
                ),
            });
        }
        let key = match &options.public_key {
            Some(k) => Some(k.to_vec()),
            None => match get_all(store, &details.public_key_s3_key, None, 1 << 16).await {
                Ok(b) => Some(b.to_vec()),
                Err(e) => {
                    findings.push(Finding {
                        what: "checkpoint",
                        location: details.public_key_s3_key.clone(),
                        problem: format!("public key unreadable: {e}"),
                    });
                    None
                }
            },
        };
        if let Some(key) = key {
            if options.public_key.is_none() && fingerprint(&key).as_ref() != Ok(&details.public_key_sha256) {
                findings.push(Finding {
                    what: "checkpoint",
                    location: details.public_key_s3_key.clone(),
                    problem: "stored public key differs from the one recorded".into(),
                });
            }
            match verify_signature(&details, &key) {
                Ok(()) => checkpoints_verified += 1,
                Err(e) => findings.push(Finding { what: "checkpoint", location: loc, problem: e }),
            }
        }
    }

    // Manifest: the latest manifest.json must be the sealed one and agree with the chain.
    let chain_items = loaded.items();
    let manifest_status = match loaded.last(Action::ManifestSealed) {
        None => {
            notes.push("no manifest sealed yet: items are checked against the custody records".into());
            None
        }
        Some(sealed) => {
            let sealed_ref = sealed.evidence.first();
            match get_all(store, &manifest_k, None, SMALL_OBJECT_LIMIT).await {
                Err(e) => {
                    findings.push(Finding {
                        what: "manifest",
                        location: manifest_k.clone(),
                        problem: format!("unreadable: {e}"),
                    });
                    None
                }
                Ok(bytes) => {
                    let digest = sha256_tagged(&bytes);
                    if Some(&digest) != sealed_ref.map(|r| &r.sha256) {
                        findings.push(Finding {
                            what: "manifest",
                            location: manifest_k.clone(),
                            problem: format!(
                                "latest manifest.json ({digest}) is not the one sealed in custody record {} ({}): replaced",
                                sealed.seq,
                                sealed_ref.map(|r| r.sha256.as_str()).unwrap_or("?")
                            ),
                        });
                    }
                    match serde_json::from_slice::<Manifest>(&bytes) {
                        Ok(m) => {
                            for mi in &m.items {
                                if chain_items.get(&mi.id) != Some(mi) {
                                    findings.push(Finding {
                                        what: "manifest",
                                        location: format!("{manifest_k} item {}", mi.id),
                                        problem: "differs from the item recorded in custody".into(),
                                    });
                                }
                            }
                            if let Some(h) = &m.custody_head
                                && hashes.get(&h.seq) != Some(&h.hash.as_str())
                            {
                                findings.push(Finding { what: "custody", location: manifest_k.clone(), problem: format!("manifest names custody head {} {}, which the chain does not hold (truncated or rewritten)", h.seq, h.hash) });
                            }
                        }
                        Err(e) => findings.push(Finding {
                            what: "manifest",
                            location: manifest_k.clone(),
                            problem: format!("not a manifest: {e}"),
                        }),
                    }
                    Some(digest)
                }
            }
        }
    };

    // Every object of the case must be accounted for by a custody record: an object
    // no record names was written outside the tool, or its record was removed.
    let mut referenced: std::collections::BTreeSet<&str> =
        loaded.chain().flat_map(|r| r.evidence.iter().map(|e| e.s3_key.as_str())).collect();
    referenced.insert(&case_k);
    let all_keys =
        store.list(&format!("cases/{case_str}/")).await.map_err(EvidenceError::store("listing the case"))?;
    // The operational journal (what was created in the cloud, for resume and teardown)
    // is not evidence: custody records do not name its objects.
    let journal = format!("cases/{case_str}/journal/");
    for key in &all_keys {
        let is_record = seq_of_key(case_str, key).is_some();
        if !is_record
            && !key.starts_with(&journal)
            && !referenced.contains(key.as_str())
            && !loaded.other_keys.contains(key)
        {
            findings.push(Finding {
                what: if key == &manifest_k { "manifest" } else { "object" },
                location: key.clone(),
                problem: "no custody record accounts for this object (written outside the tool, or its record was removed)".into(),
            });
        }
    }

    // Evidence objects, re-hashed in parallel.
    let checks: Vec<Result<(ItemCheck, Vec<Finding>), EvidenceError>> =
        futures::stream::iter(chain_items.values())
            .map(|item| check_item(store, item, expected_mode, now))
            .buffer_unordered(VERIFY_CONCURRENCY)
            .collect()
            .await;
    let mut items = Vec::new();
    for c in checks {
        let (check, f) = c?;
        items.push(check);
        findings.extend(f);
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));

    Ok(VerifyReport {
        case: case_str.into(),
        location: store.location(),
        checked_at: utc_ms(now),
        locks_checked: locks,
        items,
        custody: CustodyCheck {
            records: loaded.chain().count() as u64,
            head: loaded.head(),
            checkpoints_verified,
        },
        manifest: manifest_status,
        findings,
        notes,
    })
}

async fn lock_problem(
    store: &dyn ObjectStore,
    key: &str,
    version_id: Option<&str>,
    expected: Option<LockMode>,
    recorded_until: Option<&str>,
    now: OffsetDateTime,
) -> Result<Option<String>, EvidenceError> {
    let Some(meta) =
        store.head(key, version_id).await.map_err(EvidenceError::store(format!("HEAD {key}")))?
    else {
        return Ok(Some("object version is gone".into()));
    };
    Ok(match (meta.lock_mode, meta.retain_until) {
        (None, _) | (_, None) if !meta.legal_hold => {
            Some("no Object Lock retention in force (removed)".into())
        }
        (Some(mode), _) if expected.is_some_and(|e| e != mode) => Some(format!(
            "lock mode {mode}, the case writes {}",
            expected.map(|m| m.to_string()).unwrap_or_default()
        )),
        (_, Some(until)) if until <= now && !meta.legal_hold => {
            Some(format!("retention expired at {}", utc_ms(until)))
        }
        (_, Some(until)) if recorded_until.is_some_and(|r| utc_ms(until).as_str() < r) => Some(format!(
            "retain-until {} is earlier than the {} recorded (shortened)",
            utc_ms(until),
            recorded_until.unwrap_or_default()
        )),
        _ => None,
    })
}

async fn check_item(
    store: &dyn ObjectStore,
    item: &ManifestItem,
    expected: Option<LockMode>,
    now: OffsetDateTime,
) -> Result<(ItemCheck, Vec<Finding>), EvidenceError> {
    let loc = format!("{} (version {})", item.s3_key, item.version_id.as_deref().unwrap_or("none"));
    let mut f = Vec::new();
    let mut find =
        |what: &'static str, problem: String| f.push(Finding { what, location: loc.clone(), problem });
    let mut lock = "not checked".to_owned();
    let meta = store
        .head(&item.s3_key, item.version_id.as_deref())
        .await
        .map_err(EvidenceError::store(format!("HEAD {}", item.s3_key)))?;
    let check = |status: &str, lock: String| ItemCheck {
        id: item.id.clone(),
        s3_key: item.s3_key.clone(),
        version_id: item.version_id.clone(),
        size: item.size,
        sha256: item.sha256.clone(),
        status: status.into(),
        lock,
    };
    let Some(meta) = meta else {
        find("evidence", "object version missing (deleted)".into());
        return Ok((check("MISSING", lock), f));
    };
    if meta.size != item.size {
        find("evidence", format!("size {} bytes, manifest says {}", meta.size, item.size));
    }
    if let Some(stored) = &meta.checksum_sha256
        && stored.split('-').next() != item.s3_checksum_sha256.split('-').next()
    {
        find(
            "evidence",
            format!("S3 stored checksum {stored}, manifest recorded {}", item.s3_checksum_sha256),
        );
    }
    if store.has_locks() {
        lock = match lock_problem(
            store,
            &item.s3_key,
            item.version_id.as_deref(),
            expected,
            item.retain_until.as_deref(),
            now,
        )
        .await?
        {
            Some(p) => {
                find("lock", p);
                "NOT IN FORCE".into()
            }
            None => format!(
                "{} until {}",
                meta.lock_mode.map(|m| m.to_string()).unwrap_or_else(|| "legal hold".into()),
                meta.retain_until.map(utc_ms).unwrap_or_default()
            ),
        };
    }
    let (digests, parts) =
        match hash_stream(store, &item.s3_key, item.version_id.as_deref(), item.part_size).await {
            Ok(d) => d,
            Err(EvidenceError::Store { source, .. }) if source.is(StoreErrorKind::NotFound) => {
                find("evidence", "object version missing (deleted)".into());
                return Ok((check("MISSING", lock), f));
            }
            Err(e) => return Err(e),
        };
    let mut bad = Vec::new();
    for (name, got, want) in [
        ("sha256", &digests.sha256, &item.sha256),
        ("sha1", &digests.sha1, &item.sha1),
        ("md5", &digests.md5, &item.md5),
    ] {
        if got != want {
            bad.push(name);
            find("evidence", format!("{name} is {got}, manifest says {want} (content altered)"));
        }
    }
    if item.part_size.is_some() {
        let composite = crate::evidence::digest::composite_sha256(&parts);
        if composite != item.s3_checksum_sha256 {
            find(
                "evidence",
                format!(
                    "composite part checksum recomputes to {composite}, manifest says {}",
                    item.s3_checksum_sha256
                ),
            );
        }
    }
    let status = if f.is_empty() {
        "ok"
    } else if !bad.is_empty() {
        "ALTERED"
    } else {
        "PROBLEM"
    };
    Ok((check(status, lock), f))
}
