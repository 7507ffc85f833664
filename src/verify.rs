//! Verify a case at any later time: re-download and re-hash every evidence object
//! (streamed, in parallel), compare with the manifest and with S3's stored checksum,
//! check Object Lock is still in force, walk the custody chain (the original version
//! of every record), check every record's signature and every checkpoint against a
//! key trusted for a reason other than finding it in the case, and name every problem
//! with what and where. Works on the bucket or, offline, on a downloaded case folder
//! (where versions and locks cannot be seen).
//!
//! Other processes may write to the case while it is verified (two examiners, a
//! `report` sealing the manifest). Objects are listed *before* the chain is read, so an
//! object stored just before the listing is normally recorded by the time the chain is
//! read; what is still unaccounted for at the end is re-checked against records written
//! since (read, linked and authenticated like the rest) before it is reported.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use crate::evidence::case::{
    CASE_FILE_LIMIT, CaseFile, ChainHead, Manifest, ManifestItem, PUBLIC_KEY_LIMIT, SMALL_OBJECT_LIMIT,
    original_versions, utc_ms,
};
use crate::evidence::checkpoint::{CheckpointDetails, check_checkpoint};
use crate::evidence::custody::{self, Action, ChainFinding, CustodyRecord, MAX_RECORD_BYTES};
use crate::evidence::digest::sha256_tagged;
use crate::evidence::layout::{self, Kind};
use crate::evidence::signing::{KeySource, TrustedKey};
use crate::evidence::store::{ObjectStore, StoreError, StoreErrorKind, Version, get_all};
use crate::evidence::upload::hash_stream;
use crate::evidence::{EvidenceError, LockMode};
use crate::ids::CaseId;

/// Objects re-hashed at once: each holds a few MiB of buffers; four keep two cores
/// busy while S3 streams.
pub const VERIFY_CONCURRENCY: usize = 4;

/// Which key vouches for the records.
#[derive(Debug, Clone, Default)]
pub enum Trust {
    /// None: integrity only (hashes, links, locks); authenticity cannot be proved.
    #[default]
    None,
    /// A key trusted for a reason outside the case: the configuration's signing key
    /// (online) or a public key the user was handed out of band (offline).
    Key(TrustedKey),
    /// The key stored in the case itself (`--trust-case-key`), used only when the
    /// user says so; the verdict says it was not independent.
    CaseKey,
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub trust: Trust,
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
    /// Records after the last valid checkpoint (each checked by its own signature).
    pub records_after_last_checkpoint: u64,
}

/// What the signatures prove.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Authenticity {
    /// `sha256:` of the key records were checked against; None: no trusted key.
    pub key: Option<String>,
    /// Where the key came from (what makes it trustworthy), or why there is none.
    pub source: String,
    /// False when the key came from the case itself.
    pub independent: bool,
    /// Records whose own signature verifies with the key.
    pub authenticated: u64,
    /// The last record with a valid signature.
    pub last_valid_signature: Option<u64>,
    /// Records without a valid signature (each is also a finding).
    pub unauthenticated: Vec<u64>,
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
    pub authenticity: Authenticity,
    pub manifest: Option<String>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
}

impl VerifyReport {
    /// No problem found: digests, chain, locks, and (with a key) every signature hold.
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// Intact and every record authenticated by a trusted key: what exit 0 means.
    pub fn verified(&self) -> bool {
        self.intact()
            && self.authenticity.key.is_some()
            && self.authenticity.unauthenticated.is_empty()
            && self.authenticity.authenticated == self.custody.records
    }

    pub fn verdict(&self) -> String {
        let locks =
            if self.locks_checked { ", Object Lock in force" } else { " (offline: locks not checked)" };
        let a = &self.authenticity;
        if !self.intact() {
            let mut v = format!("FAILED: {} problem(s) found", self.findings.len());
            if let (Some(key), false) = (&a.key, a.unauthenticated.is_empty()) {
                v.push_str(&format!(
                    "; custody record(s) {} not authenticated by {key} ({})",
                    ranges(&a.unauthenticated),
                    match a.last_valid_signature {
                        Some(s) => format!("the last valid signature is on record {s}"),
                        None => "no record carries a valid signature".into(),
                    }
                ));
            }
            return v;
        }
        let summary = format!(
            "{} evidence objects match their digests, {} custody records form one unbroken chain",
            self.items.len(),
            self.custody.records
        );
        match &a.key {
            None => format!(
                "NOT AUTHENTICATED (integrity only): {summary}{locks}, but {}: anyone who can write to the evidence bucket could have written them",
                a.source
            ),
            Some(key) if !a.independent => format!(
                "VERIFIED AGAINST THE CASE'S OWN KEY: {summary}, every record signed by {key}{locks}; that key is {}, so whoever could rewrite the case could have replaced it: give --public-key to authenticate independently",
                a.source
            ),
            Some(key) => format!("VERIFIED: {summary}, every record signed by {} ({key}){locks}", a.source),
        }
    }
}

/// `1-3, 7, 9-10`.
fn ranges(seqs: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let start = seqs[i];
        let mut end = start;
        while i + 1 < seqs.len() && seqs[i + 1] == end + 1 {
            i += 1;
            end = seqs[i];
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    out.join(", ")
}

/// One custody record as read: its original version.
#[derive(Debug, Clone)]
pub struct LoadedRecord {
    pub seq: u64,
    pub key: String,
    /// The version read: the original (oldest) one.
    pub version_id: Option<String>,
    /// How many versions the key holds (more than one: written over).
    pub versions: usize,
    /// None when it could not be read or parsed (a chain finding says why).
    pub record: Option<CustodyRecord>,
}

/// Everything read from a case, shared by verify, report and cases.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    pub case: CaseId,
    pub case_file: CaseFile,
    /// `sha256:` of case.json as read (its original version).
    pub case_file_sha256: String,
    pub case_file_version: Option<String>,
    /// By sequence number.
    pub records: Vec<LoadedRecord>,
    pub chain_findings: Vec<ChainFinding>,
    /// Objects among the custody records that are not records.
    pub other_keys: Vec<String>,
}

impl LoadedCase {
    pub fn chain(&self) -> impl Iterator<Item = &CustodyRecord> {
        self.records.iter().filter_map(|r| r.record.as_ref())
    }

    /// Items as recorded in `evidence_stored` records, by id (first record wins).
    pub fn items(&self) -> BTreeMap<String, ManifestItem> {
        let mut out = BTreeMap::new();
        for r in self.chain().filter(|r| r.action == Action::EvidenceStored) {
            if let Some(item) = stored_item(r) {
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

    /// Records `key` does not vouch for, with the reason (unreadable records included).
    pub fn unauthenticated(&self, key: &TrustedKey) -> Vec<(u64, String)> {
        self.records
            .iter()
            .filter_map(|r| match &r.record {
                None => Some((r.seq, "unreadable".to_owned())),
                Some(rec) => key.authenticate(&self.case, rec).err().map(|reason| (r.seq, reason)),
            })
            .collect()
    }

    /// Fingerprints named by record signatures, in order of first use.
    pub fn signing_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for sig in self.chain().filter_map(|r| r.signature.as_ref()) {
            if !out.contains(&sig.public_key_sha256) {
                out.push(sig.public_key_sha256.clone());
            }
        }
        out
    }
}

fn stored_item(r: &CustodyRecord) -> Option<ManifestItem> {
    r.details.get("item").and_then(|v| serde_json::from_value::<ManifestItem>(v.clone()).ok())
}

fn corrupt(case: &CaseId, key: &str, what: &'static str, problem: impl Into<String>) -> EvidenceError {
    EvidenceError::Corrupt { case: case.to_string(), key: key.into(), what, problem: problem.into() }
}

/// Why a read failed, as a finding's words.
fn unreadable(e: &StoreError, limit: usize) -> String {
    if e.is(StoreErrorKind::Other) && e.message.contains("larger than") {
        format!("larger than {limit} bytes, more than such an object can be: refused before reading it whole")
    } else {
        format!("unreadable: {} ({})", e.message, e.location)
    }
}

/// Reads case.json and every custody record (each from its original version),
/// checking each record's form, hash and links. Signatures are judged by the caller,
/// against a key it trusts ([`LoadedCase::unauthenticated`]).
pub async fn load_case(store: &dyn ObjectStore, case: &CaseId) -> Result<LoadedCase, EvidenceError> {
    let key = layout::case_file(case);
    let case_versions = store
        .list_versions(&key)
        .await
        .map_err(EvidenceError::store(format!("listing versions of {key}")))?;
    let Some((case_file_version, _)) = original_versions(&case_versions).remove(&key) else {
        return Err(EvidenceError::CaseMissing { case: case.to_string(), location: store.location() });
    };
    let bytes = match get_all(store, &key, case_file_version.as_deref(), CASE_FILE_LIMIT).await {
        Ok(b) => b,
        Err(e) if e.is(StoreErrorKind::NotFound) => {
            return Err(EvidenceError::CaseMissing { case: case.to_string(), location: store.location() });
        }
        Err(e) => return Err(EvidenceError::store(format!("reading {key}"))(e)),
    };
    let case_file: CaseFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(case, &key, "case file", e.to_string()))?;
    let versions = store
        .list_versions(&layout::custody_prefix(case))
        .await
        .map_err(EvidenceError::store("listing custody records"))?;
    let mut records = Vec::new();
    let mut chain_findings = Vec::new();
    let mut other_keys = Vec::new();
    for (k, (version_id, count)) in original_versions(&versions) {
        let Some(seq) = layout::custody_seq(case, &k) else {
            chain_findings.push(ChainFinding {
                seq: None,
                key: k.clone(),
                problem: "unexpected object among custody records (inserted)".into(),
            });
            other_keys.push(k);
            continue;
        };
        let record = match get_all(store, &k, version_id.as_deref(), MAX_RECORD_BYTES).await {
            Ok(bytes) => custody::check_record(case, &k, &bytes, &mut chain_findings),
            Err(e) if e.is(StoreErrorKind::Throttled) || e.is(StoreErrorKind::Unreachable) => {
                return Err(EvidenceError::store(format!("reading {k}"))(e));
            }
            Err(e) => {
                chain_findings.push(ChainFinding {
                    seq: Some(seq),
                    key: k.clone(),
                    problem: unreadable(&e, MAX_RECORD_BYTES),
                });
                None
            }
        };
        records.push(LoadedRecord { seq, key: k, version_id, versions: count, record });
    }
    records.sort_by_key(|r| r.seq);
    let links: Vec<(u64, Option<CustodyRecord>)> =
        records.iter().map(|r| (r.seq, r.record.clone())).collect();
    custody::check_links(case, &links, &mut chain_findings);
    let case_file_sha256 = sha256_tagged(&bytes);
    Ok(LoadedCase {
        case: case.clone(),
        case_file,
        case_file_sha256,
        case_file_version,
        records,
        chain_findings,
        other_keys,
    })
}

/// Something the chain as read did not account for, re-checked against records
/// written while the check ran before it is reported.
#[derive(Debug)]
enum Pending {
    /// A current object no record names.
    Object(String),
    /// A manifest version no `manifest_sealed` record names; `instead`: for the
    /// latest version, the last record that seals a manifest (seq, digest).
    ManifestVersion { version_id: Option<String>, digest: String, instead: Option<(u64, String)> },
}

/// Verifies `case` in `store`. Errors only when the case cannot be read at all;
/// every integrity or authenticity problem is a finding in the report.
pub async fn verify_case(
    store: &dyn ObjectStore,
    case: &CaseId,
    options: &VerifyOptions,
) -> Result<VerifyReport, EvidenceError> {
    let now = OffsetDateTime::now_utc();
    let locks = store.has_locks();
    // What the case holds, listed before the chain is read (see the module doc).
    let snapshot = store
        .list_versions(&layout::case_prefix(case))
        .await
        .map_err(EvidenceError::store("listing the case"))?;
    let loaded = load_case(store, case).await?;
    let mut findings: Vec<Finding> = loaded
        .chain_findings
        .iter()
        .map(|f| Finding { what: "custody", location: f.key.clone(), problem: f.problem.clone() })
        .collect();
    let mut notes = Vec::new();
    let expected_mode = loaded.case_file.retention.mode;
    let mut by_key: BTreeMap<&str, Vec<&Version>> = BTreeMap::new();
    for v in &snapshot {
        by_key.entry(v.key.as_str()).or_default().push(v);
    }

    // The key, then every record's signature against it.
    let key = resolve_key(store, &loaded, &options.trust, &mut findings, &mut notes).await?;
    let authenticity = authenticate(&loaded, key.as_ref(), &options.trust, &mut findings);

    // Versions: a locked version cannot change, but new versions and delete markers
    // can be added; each one is an event to report.
    if locks {
        for (key, vs) in &by_key {
            let kind = layout::kind(case, key);
            if matches!(kind, Some(Kind::Manifest | Kind::Report)) {
                continue; // versioned by design; checked below
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
                let (what, problem) = if matches!(kind, Some(Kind::Custody(_) | Kind::CaseFile)) {
                    (
                        "custody",
                        format!(
                            "has {objects} versions: the original (oldest) was checked; the later ones were written over it (tampering)"
                        ),
                    )
                } else {
                    (
                        "object",
                        format!(
                            "has {objects} versions; the tool writes each key once (a new version was written over it)"
                        ),
                    )
                };
                findings.push(Finding { what, location: key.to_string(), problem });
            }
        }
    } else {
        notes.push("offline folder: object versions, delete markers and Object Lock were not checked (check them in S3)".into());
    }

    // case.json must be the one the first record names.
    let case_k = layout::case_file(case);
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

    // Locks of case.json and every record, on the versions read.
    if locks {
        let version = loaded.case_file_version.as_deref();
        if let Some(p) = lock_problem(store, &case_k, version, expected_mode, None, now).await? {
            findings.push(Finding { what: "lock", location: case_k.clone(), problem: p });
        }
        for r in &loaded.records {
            if let Some(p) =
                lock_problem(store, &r.key, r.version_id.as_deref(), expected_mode, None, now).await?
            {
                findings.push(Finding { what: "lock", location: r.key.clone(), problem: p });
            }
        }
    }

    // Checkpoints: each must sign the record right before it, with the trusted key.
    let hashes: BTreeMap<u64, &str> = loaded.chain().map(|r| (r.seq, r.hash.as_str())).collect();
    let mut checkpoints_verified = 0;
    let mut last_checkpoint = None;
    let mut unjudged = 0;
    for r in loaded.chain().filter(|r| r.action == Action::CheckpointSigned) {
        let loc = layout::custody_record(case, r.seq);
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
        let previous = hashes.get(&(r.seq.saturating_sub(1))).copied();
        let problems = check_checkpoint(case, r.seq, &details, previous, key.as_ref());
        if problems.is_empty() {
            if key.is_some() {
                checkpoints_verified += 1;
                last_checkpoint = Some(r.seq);
            } else {
                unjudged += 1;
            }
        }
        for problem in problems {
            findings.push(Finding { what: "checkpoint", location: loc.clone(), problem });
        }
    }
    if unjudged > 0 {
        notes.push(format!("{unjudged} checkpoint signature(s) not checked: no trusted key"));
    }
    let head_seq = loaded.head().map_or(0, |h| h.seq);
    let records_after_last_checkpoint = head_seq - last_checkpoint.unwrap_or(0);
    if key.is_some() && last_checkpoint.is_some() && records_after_last_checkpoint > 0 {
        notes.push(format!(
            "{records_after_last_checkpoint} record(s) after the last checkpoint (record {}), each authenticated by its own signature",
            last_checkpoint.unwrap_or(0)
        ));
    }

    // The manifest: every version sealed by a record, the latest by the last one.
    let mut pending: Vec<Pending> = Vec::new();
    let manifest_k = layout::manifest(case);
    let chain_items = loaded.items();
    let manifest_status = check_manifest(
        store,
        &loaded,
        by_key.get(manifest_k.as_str()).map(Vec::as_slice).unwrap_or_default(),
        &chain_items,
        &hashes,
        &mut findings,
        &mut notes,
        &mut pending,
    )
    .await;

    // Every object must be accounted for by a custody record: an object no record
    // names was written outside the tool, its record was removed, or a crashed run
    // left it (a rerun adopts it).
    let named_keys: BTreeSet<String> = loaded
        .signing_keys()
        .iter()
        .chain(
            loaded
                .chain()
                .filter(|r| r.action == Action::CheckpointSigned)
                .filter_map(|r| {
                    r.details.get("public_key_sha256").and_then(|v| v.as_str()).map(str::to_owned)
                })
                .collect::<Vec<_>>()
                .iter(),
        )
        .filter_map(|fp| layout::public_key(case, fp))
        .collect();
    let referenced: BTreeSet<&str> =
        loaded.chain().flat_map(|r| r.evidence.iter().map(|e| e.s3_key.as_str())).collect();
    let current: BTreeSet<&str> =
        snapshot.iter().filter(|v| v.is_latest && !v.delete_marker).map(|v| v.key.as_str()).collect();
    for key_name in &current {
        match layout::kind(case, key_name) {
            // The operational journal is not evidence: no record names its objects.
            Some(Kind::CaseFile | Kind::Custody(_) | Kind::Manifest | Kind::Journal) => {}
            _ if loaded.other_keys.iter().any(|o| o == key_name) => {}
            Some(Kind::PublicKey) if named_keys.contains(*key_name) => {
                check_key_file(store, case, key_name, &mut findings).await;
            }
            _ if referenced.contains(key_name) => {}
            _ => pending.push(Pending::Object(key_name.to_string())),
        }
    }
    if !pending.is_empty() {
        recheck(store, &loaded, key.as_ref(), &mut pending, &mut notes).await?;
    }
    for p in pending {
        match p {
            Pending::Object(k) => findings.push(Finding {
                what: "object",
                location: k,
                problem: "no custody record accounts for this object (written outside the tool, its record removed, or left by a run that crashed before recording it: a rerun adopts it)".into(),
            }),
            Pending::ManifestVersion { version_id, digest, instead } => findings.push(Finding {
                what: "manifest",
                location: format!("{manifest_k} (version {})", version_id.as_deref().unwrap_or("none")),
                problem: match instead {
                    Some((seq, sealed)) => format!(
                        "latest manifest.json ({digest}) is not the one sealed in custody record {seq} ({sealed}): replaced"
                    ),
                    None => format!(
                        "{digest}: no manifest_sealed record seals this version (written outside the tool, or by a run that crashed before recording it)"
                    ),
                },
            }),
        }
    }

    // Evidence objects, re-hashed in parallel.
    let unauthenticated: BTreeSet<u64> = authenticity.unauthenticated.iter().copied().collect();
    // The record that stored each item (the first one, as `items()` takes it).
    let mut stored_by: BTreeMap<String, u64> = BTreeMap::new();
    for r in loaded.chain().filter(|r| r.action == Action::EvidenceStored) {
        if let Some(item) = stored_item(r) {
            stored_by.entry(item.id).or_insert(r.seq);
        }
    }
    let checks: Vec<Result<(ItemCheck, Vec<Finding>), EvidenceError>> =
        futures::stream::iter(chain_items.values())
            .map(|item| check_item(store, item, expected_mode, now))
            .buffer_unordered(VERIFY_CONCURRENCY)
            .collect()
            .await;
    let mut items = Vec::new();
    for c in checks {
        let (mut check, f) = c?;
        if stored_by.get(&check.id).is_some_and(|seq| unauthenticated.contains(seq)) {
            check.status = "UNAUTHENTICATED".into();
        }
        items.push(check);
        findings.extend(f);
    }
    items.sort_by(|a, b| a.id.cmp(&b.id));

    Ok(VerifyReport {
        case: case.to_string(),
        location: store.location(),
        checked_at: utc_ms(now),
        locks_checked: locks,
        items,
        custody: CustodyCheck {
            records: loaded.records.len() as u64,
            head: loaded.head(),
            checkpoints_verified,
            records_after_last_checkpoint,
        },
        authenticity,
        manifest: manifest_status,
        findings,
        notes,
    })
}

/// The key to check signatures with. `CaseKey` takes the one key the records name
/// and the case holds; several keys, or a file that is not the key its name says,
/// leave nothing to trust.
async fn resolve_key(
    store: &dyn ObjectStore,
    loaded: &LoadedCase,
    trust: &Trust,
    findings: &mut Vec<Finding>,
    notes: &mut Vec<String>,
) -> Result<Option<TrustedKey>, EvidenceError> {
    match trust {
        Trust::None => Ok(None),
        Trust::Key(k) => Ok(Some(k.clone())),
        Trust::CaseKey => {
            let case = &loaded.case;
            let named = loaded.signing_keys();
            let [fingerprint] = named.as_slice() else {
                if named.is_empty() {
                    notes.push(
                        "--trust-case-key: no record is signed, so there is no case key to trust".into(),
                    );
                } else {
                    findings.push(Finding {
                        what: "key",
                        location: layout::keys_prefix(case),
                        problem: format!(
                            "the records are signed by {} different keys ({}); the case's own key cannot be chosen: give --public-key",
                            named.len(),
                            named.join(", ")
                        ),
                    });
                }
                return Ok(None);
            };
            let Some(key_name) = layout::public_key(case, fingerprint) else {
                findings.push(Finding {
                    what: "key",
                    location: layout::keys_prefix(case),
                    problem: format!("the records name a key fingerprint of no valid form: {fingerprint}"),
                });
                return Ok(None);
            };
            let bytes = match get_all(store, &key_name, None, PUBLIC_KEY_LIMIT).await {
                Ok(b) => b,
                Err(e) => {
                    findings.push(Finding {
                        what: "key",
                        location: key_name,
                        problem: format!("the case key is {}", unreadable(&e, PUBLIC_KEY_LIMIT)),
                    });
                    return Ok(None);
                }
            };
            match TrustedKey::from_bytes(&bytes, KeySource::CaseFolder { key: key_name.clone() }) {
                Ok(k) if &k.fingerprint == fingerprint => Ok(Some(k)),
                Ok(k) => {
                    findings.push(Finding {
                        what: "key",
                        location: key_name,
                        problem: format!(
                            "holds key {}, not the key {fingerprint} its name and the records say",
                            k.fingerprint
                        ),
                    });
                    Ok(None)
                }
                Err(e) => {
                    findings.push(Finding { what: "key", location: key_name, problem: e });
                    Ok(None)
                }
            }
        }
    }
}

/// Checks every record's signature against `key`; a finding for each that fails.
fn authenticate(
    loaded: &LoadedCase,
    key: Option<&TrustedKey>,
    trust: &Trust,
    findings: &mut Vec<Finding>,
) -> Authenticity {
    let Some(key) = key else {
        let source = match trust {
            Trust::None => "no trusted public key was given (online: set forensics.signing_key_arn; offline: --public-key FILE, obtained out of band)".into(),
            _ => "no case key could be trusted (see the findings and notes)".into(),
        };
        return Authenticity { source, ..Authenticity::default() };
    };
    let mut a = Authenticity {
        key: Some(key.fingerprint.clone()),
        source: key.source.to_string(),
        independent: key.source.independent(),
        ..Authenticity::default()
    };
    let failed: BTreeMap<u64, String> = loaded.unauthenticated(key).into_iter().collect();
    for r in &loaded.records {
        match failed.get(&r.seq) {
            None => {
                a.authenticated += 1;
                a.last_valid_signature = Some(r.seq);
            }
            Some(reason) => {
                a.unauthenticated.push(r.seq);
                if r.record.is_some() {
                    findings.push(Finding {
                        what: "custody",
                        location: r.key.clone(),
                        problem: format!("not authenticated: {reason}"),
                    });
                }
            }
        }
    }
    if let Some(last) = a.last_valid_signature {
        let after: Vec<u64> = a.unauthenticated.iter().copied().filter(|s| *s > last).collect();
        if !after.is_empty() {
            findings.push(Finding {
                what: "custody",
                location: layout::custody_prefix(&loaded.case),
                problem: format!(
                    "records {} come after the last valid signature (record {last}) and are unauthenticated: anyone who can write to the bucket could have written them",
                    ranges(&after)
                ),
            });
        }
    }
    a
}

/// A key file named by the records must hold that key.
async fn check_key_file(store: &dyn ObjectStore, case: &CaseId, key_name: &str, findings: &mut Vec<Finding>) {
    let Some(named) = layout::public_key_fingerprint(case, key_name) else { return };
    let problem = match get_all(store, key_name, None, PUBLIC_KEY_LIMIT).await {
        Err(e) => Some(unreadable(&e, PUBLIC_KEY_LIMIT)),
        Ok(bytes) => match crate::evidence::signing::fingerprint(&bytes) {
            Ok(fp) if fp == named => None,
            Ok(fp) => Some(format!("holds key {fp}, not the key {named} its name says (replaced)")),
            Err(e) => Some(e),
        },
    };
    if let Some(problem) = problem {
        findings.push(Finding { what: "key", location: key_name.into(), problem });
    }
}

/// The latest manifest must be the one the last `manifest_sealed` record seals (by
/// version id online, by digest offline) and agree with the chain; every other
/// version must be sealed by some record. Unsealed versions become [`Pending`].
#[allow(clippy::too_many_arguments)]
async fn check_manifest(
    store: &dyn ObjectStore,
    loaded: &LoadedCase,
    versions: &[&Version],
    chain_items: &BTreeMap<String, ManifestItem>,
    hashes: &BTreeMap<u64, &str>,
    findings: &mut Vec<Finding>,
    notes: &mut Vec<String>,
    pending: &mut Vec<Pending>,
) -> Option<String> {
    let manifest_k = layout::manifest(&loaded.case);
    let sealed: Vec<(&CustodyRecord, &custody::EvidenceRef)> = loaded
        .chain()
        .filter(|r| r.action == Action::ManifestSealed)
        .filter_map(|r| r.evidence.first().map(|e| (r, e)))
        .collect();
    let objects: Vec<&&Version> = versions.iter().filter(|v| !v.delete_marker).collect();
    let latest = objects.iter().find(|v| v.is_latest).or(objects.first());
    let Some(latest) = latest else {
        if !sealed.is_empty() {
            findings.push(Finding {
                what: "manifest",
                location: manifest_k,
                problem: "missing, though the chain records a sealed manifest (deleted)".into(),
            });
        } else {
            notes.push("no manifest sealed yet: items are checked against the custody records".into());
        }
        return None;
    };
    let online = store.has_locks();
    if online {
        for v in objects.iter().filter(|v| v.version_id != latest.version_id) {
            if !sealed.iter().any(|(_, e)| e.version_id == v.version_id) {
                let digest =
                    match get_all(store, &manifest_k, v.version_id.as_deref(), SMALL_OBJECT_LIMIT).await {
                        Ok(b) => sha256_tagged(&b),
                        Err(e) => unreadable(&e, SMALL_OBJECT_LIMIT),
                    };
                pending.push(Pending::ManifestVersion {
                    version_id: v.version_id.clone(),
                    digest,
                    instead: None,
                });
            }
        }
    }
    let bytes = match get_all(store, &manifest_k, latest.version_id.as_deref(), SMALL_OBJECT_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            findings.push(Finding {
                what: "manifest",
                location: manifest_k,
                problem: unreadable(&e, SMALL_OBJECT_LIMIT),
            });
            return None;
        }
    };
    let digest = sha256_tagged(&bytes);
    let last_sealed = sealed.last();
    let sealed_by = if online {
        sealed.iter().find(|(_, e)| e.version_id == latest.version_id)
    } else {
        last_sealed.filter(|(_, e)| e.sha256 == digest)
    };
    match (sealed_by, last_sealed) {
        (None, None) => {
            // A manifest and no sealing record: in flight (re-checked) or planted.
            pending.push(Pending::ManifestVersion {
                version_id: latest.version_id.clone(),
                digest: digest.clone(),
                instead: None,
            });
            return Some(digest);
        }
        (None, Some((last, last_ref))) if online => {
            // Unsealed so far: a `report` sealing right now, or a replacement.
            pending.push(Pending::ManifestVersion {
                version_id: latest.version_id.clone(),
                digest: digest.clone(),
                instead: Some((last.seq, last_ref.sha256.clone())),
            });
        }
        (Some((r, e)), Some((last, _))) if e.sha256 == digest && r.seq == last.seq => {}
        (by, Some((last, last_ref))) => findings.push(Finding {
            what: "manifest",
            location: manifest_k.clone(),
            problem: format!(
                "latest manifest.json ({digest}{}) is not the one sealed in custody record {} ({}): replaced",
                by.map(|(r, _)| format!(", sealed by the older record {}", r.seq)).unwrap_or_default(),
                last.seq,
                last_ref.sha256
            ),
        }),
        (Some(_), None) => unreachable!("a version sealed by a record implies a last sealed record"),
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
                findings.push(Finding {
                    what: "custody",
                    location: manifest_k.clone(),
                    problem: format!(
                        "manifest names custody head {} {}, which the chain does not hold (truncated or rewritten)",
                        h.seq, h.hash
                    ),
                });
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

/// Reads the records written after `loaded`'s head (original versions, hash, link and
/// with a key signature checked; stops at the first that does not hold) and drops
/// every pending object or manifest version one of them accounts for.
async fn recheck(
    store: &dyn ObjectStore,
    loaded: &LoadedCase,
    key: Option<&TrustedKey>,
    pending: &mut Vec<Pending>,
    notes: &mut Vec<String>,
) -> Result<(), EvidenceError> {
    let case = &loaded.case;
    let versions = store
        .list_versions(&layout::custody_prefix(case))
        .await
        .map_err(EvidenceError::store("listing custody records"))?;
    let originals = original_versions(&versions);
    let mut head = loaded.head();
    let mut tail: Vec<CustodyRecord> = Vec::new();
    loop {
        let seq = head.as_ref().map_or(1, |h| h.seq + 1);
        let k = layout::custody_record(case, seq);
        let Some((version_id, _)) = originals.get(&k) else { break };
        let Ok(bytes) = get_all(store, &k, version_id.as_deref(), MAX_RECORD_BYTES).await else { break };
        let mut f = Vec::new();
        let Some(r) = custody::check_record(case, &k, &bytes, &mut f) else { break };
        let links = r.prev.as_deref() == head.as_ref().map(|h| h.hash.as_str());
        if !f.is_empty() || !links || key.is_some_and(|key| key.authenticate(case, &r).is_err()) {
            break;
        }
        head = Some(ChainHead { seq: r.seq, hash: r.hash.clone() });
        tail.push(r);
    }
    let before = pending.len();
    pending.retain(|p| match p {
        Pending::Object(k) => !tail.iter().any(|r| r.evidence.iter().any(|e| &e.s3_key == k)),
        Pending::ManifestVersion { version_id, digest, .. } => !tail.iter().any(|r| {
            r.action == Action::ManifestSealed
                && r.evidence.first().is_some_and(|e| &e.version_id == version_id && &e.sha256 == digest)
        }),
    });
    if let (Some(first), Some(last)) = (tail.first(), tail.last())
        && pending.len() < before
    {
        notes.push(format!(
            "{} object(s) were being recorded by another process while this check ran; custody records {}-{} account for them (not otherwise covered by this check: verify again to check them)",
            before - pending.len(),
            first.seq,
            last.seq
        ));
    }
    Ok(())
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

/// True for a store error that says something about the object (a finding), rather
/// than about the connection (an error: verify again).
fn about_the_object(e: &StoreError) -> bool {
    matches!(e.kind, StoreErrorKind::NotFound | StoreErrorKind::AccessDenied | StoreErrorKind::Other)
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
    let check = |status: &str, lock: String| ItemCheck {
        id: item.id.clone(),
        s3_key: item.s3_key.clone(),
        version_id: item.version_id.clone(),
        size: item.size,
        sha256: item.sha256.clone(),
        status: status.into(),
        lock,
    };
    let meta = match store.head(&item.s3_key, item.version_id.as_deref()).await {
        Ok(m) => m,
        Err(e) if about_the_object(&e) => {
            find("evidence", unreadable(&e, 0));
            return Ok((check("UNREADABLE", lock), f));
        }
        Err(e) => return Err(EvidenceError::store(format!("HEAD {}", item.s3_key))(e)),
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
            Err(EvidenceError::Store { source, .. }) if about_the_object(&source) => {
                find("evidence", unreadable(&source, 0));
                return Ok((check("UNREADABLE", lock), f));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_ranges_read_as_a_person_would_write_them() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }
}
