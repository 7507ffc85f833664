//! A case: its `case.json`, its custody chain (appended fork-proof with conditional
//! writes, every record signed when the case has a signing key), and its evidence items.
//!
//! A case never extends a chain it cannot check: on opening, and whenever it catches
//! up with records other processes wrote, it reads the *original* (oldest) version of
//! each record (records are written with If-None-Match, so a later version is someone
//! writing over one), checks hash, link and signature against its own signing key, and
//! refuses to append after a record that does not hold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

use super::checkpoint::CheckpointDetails;
use super::custody::{
    self, Action, Actor, CLOCK_SOURCE, CustodyEvent, CustodyReceipt, CustodyRecord, EvidenceRef, HostInfo,
    MAX_RECORD_BYTES, SCHEMA, ToolInfo, canonical,
};
use super::digest::{self, Digests, b64, sha256_raw};
use super::error::EvidenceError;
use super::layout;
use super::signing::{ALGORITHM, CaseSigner, KeySource, Signed, Signer, TrustedKey, sign_checked};
use super::store::{LockMode, ObjectLock, ObjectStore, PutObject, StoreErrorKind, Version, get_all};
use super::upload;
use crate::ids::{AccountId, CaseId};
use crate::progress::Reporter;

/// Appending to the chain retries this often when other writers keep winning the
/// race for the next sequence number; each retry first reads what they wrote. Ten
/// concurrent writers of one case would be an unusual incident room.
const APPEND_ATTEMPTS: u32 = 16;
/// Records appended together at most: their signatures are asked for at once.
const BATCH_RECORDS: usize = 32;
/// case.json and the manifest are small; anything bigger is not ours. (A manifest
/// lists about 1 KiB per item: 64 MiB is some 60,000 items.)
pub(crate) const SMALL_OBJECT_LIMIT: usize = 64 << 20;
/// case.json is a few KiB (actor, host, tool, retention).
pub(crate) const CASE_FILE_LIMIT: usize = 1 << 20;
/// A PEM public key is under 200 bytes; 64 KiB leaves room for any key we accept.
pub(crate) const PUBLIC_KEY_LIMIT: usize = 64 << 10;

pub const CASE_SCHEMA: &str = "cleanroom.case/1";
pub const MANIFEST_SCHEMA: &str = "cleanroom.manifest/1";

/// How evidence objects are locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// `None`: the bucket's default retention applies (no explicit retain-until).
    pub mode: Option<LockMode>,
    pub days: Option<u32>,
    pub legal_hold: bool,
}

impl Retention {
    pub fn bucket_default() -> Self {
        Self { mode: None, days: None, legal_hold: false }
    }

    pub fn explicit(mode: LockMode, days: u32) -> Self {
        Self { mode: Some(mode), days: Some(days), legal_hold: false }
    }

    fn lock(&self, now: OffsetDateTime) -> ObjectLock {
        let retention = match (self.mode, self.days) {
            (Some(mode), Some(days)) => Some((mode, now + time::Duration::days(days.into()))),
            _ => None,
        };
        ObjectLock { retention, legal_hold: self.legal_hold }
    }
}

/// `cases/<case>/case.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseFile {
    pub schema: String,
    pub case: String,
    pub opened_at: String,
    pub clock: String,
    pub opened_by: Actor,
    pub host: HostInfo,
    pub tool: ToolInfo,
    pub config_digest: String,
    pub store: String,
    pub retention: Retention,
}

/// A new evidence item, before it is stored.
#[derive(Debug, Clone)]
pub struct NewItem {
    /// Stable across reruns, e.g. `123456789012/i-0abc/containment-prior-state`.
    pub id: String,
    pub account: AccountId,
    /// What it is about, e.g. an instance id.
    pub subject: String,
    /// File name, e.g. `containment-prior-state.json`; or one sub-folder and a file
    /// name for per-volume outputs, e.g. `vol-0def/image.raw` (see `layout::evidence`).
    pub name: String,
    /// What produced it, e.g. `ec2:DescribeInstances`.
    pub source: String,
    pub method: String,
    pub derived_from: Vec<String>,
}

/// One evidence item as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestItem {
    pub id: String,
    pub account: String,
    pub subject: String,
    pub name: String,
    pub source: String,
    pub method: String,
    pub derived_from: Vec<String>,
    pub acquired_at: String,
    pub size: u64,
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
    pub s3_key: String,
    pub version_id: Option<String>,
    /// S3's checksum as S3 keeps it (base64; `-N`: composite of N part checksums).
    pub s3_checksum_sha256: String,
    /// Part size of a multipart upload (needed to recompute the composite checksum).
    pub part_size: Option<u64>,
    pub lock_mode: Option<LockMode>,
    pub retain_until: Option<String>,
    pub legal_hold: bool,
}

impl ManifestItem {
    pub fn evidence_ref(&self) -> EvidenceRef {
        EvidenceRef {
            id: self.id.clone(),
            sha256: self.sha256.clone(),
            s3_key: self.s3_key.clone(),
            version_id: self.version_id.clone(),
        }
    }
}

/// The chain head at some point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

/// `cases/<case>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub case: String,
    pub sealed_at: String,
    pub custody_head: Option<ChainHead>,
    pub items: Vec<ManifestItem>,
}

/// UTC, RFC 3339, milliseconds, `Z`.
pub fn utc_ms(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t);
    let s = t.format(&Rfc3339).unwrap_or_default();
    // Rfc3339 drops trailing zero fractions: always write three digits.
    match s.find('.') {
        Some(dot) => {
            let (head, tail) = s.split_at(dot);
            let frac: String = tail[1..].trim_end_matches('Z').chars().chain("000".chars()).take(3).collect();
            format!("{head}.{frac}Z")
        }
        None => format!("{}.000Z", s.trim_end_matches('Z')),
    }
}

#[derive(Debug, Default)]
struct Chain {
    head: Option<ChainHead>,
    /// Read without the chain lock, which an append holds across its Sign and PUT.
    items: Arc<std::sync::Mutex<BTreeMap<String, ManifestItem>>>,
}

impl Chain {
    fn apply(&mut self, r: &CustodyRecord) {
        self.head = Some(ChainHead { seq: r.seq, hash: r.hash.clone() });
        if r.action == Action::EvidenceStored
            && let Some(item) =
                r.details.get("item").and_then(|v| serde_json::from_value::<ManifestItem>(v.clone()).ok())
        {
            self.items.lock().expect("items lock").entry(item.id.clone()).or_insert(item);
        }
    }
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    case: CaseId,
    actor: Actor,
    tool: ToolInfo,
    host: HostInfo,
    retention: Retention,
    /// None: records are written unsigned (integrity only, no authenticity).
    signing: Option<CaseSigner>,
    chain: Mutex<Chain>,
    /// The chain's items (the same map as `chain`'s).
    items: Arc<std::sync::Mutex<BTreeMap<String, ManifestItem>>>,
    behind: std::sync::Mutex<Behind>,
    /// Records queued and not yet settled (written and read back, or failed).
    pending: tokio::sync::watch::Sender<usize>,
}

/// A record written, and its read-back to run (none when it was already there).
type Appended = (CustodyReceipt, Option<ReadBack>);
type ReadBackCheck = futures::future::BoxFuture<'static, Result<(), EvidenceError>>;
type Done = tokio::sync::oneshot::Sender<Result<CustodyReceipt, EvidenceError>>;
type QueuedEvent = futures::future::BoxFuture<'static, Result<CustodyEvent, EvidenceError>>;

/// A record waiting for the writer.
struct Queued {
    event: QueuedEvent,
    /// `None`: written behind; a failure is kept for `flush`.
    done: Option<Done>,
}

/// The records waiting to be written, in order, and what the writer left.
#[derive(Default)]
struct Behind {
    queue: std::collections::VecDeque<Queued>,
    writing: bool,
    failures: Vec<String>,
    /// Why the `case_opened` record could not be written: no record may follow.
    unopened: Option<String>,
    /// Items stored whose records are queued, found by `known` meanwhile.
    items: BTreeMap<String, EvidenceRef>,
}

/// Runs `work` now, on a task of its own; its result when awaited (a task that stopped
/// is a failure of `what`).
fn spawned<T: Send + 'static>(
    case: &str,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, EvidenceError>> + Send + 'static,
) -> futures::future::BoxFuture<'static, Result<T, EvidenceError>> {
    let case = case.to_owned();
    tokio::spawn(work)
        .map(move |r| {
            r.unwrap_or_else(|e| {
                Err(EvidenceError::RecordsNotWritten { case, failures: vec![format!("{what} stopped: {e}")] })
            })
        })
        .boxed()
}

/// An item's Object Lock as the manifest lists it.
struct ItemLock {
    mode: Option<LockMode>,
    until: Option<String>,
    legal_hold: bool,
}

/// The manifest entry of a stored item and its `evidence_stored` record.
fn item_event(
    item: NewItem,
    key: String,
    stored: upload::Stored,
    lock: ItemLock,
) -> (EvidenceRef, CustodyEvent) {
    let Digests { size, sha256, sha1, md5 } = stored.digests;
    let manifest_item = ManifestItem {
        id: item.id.clone(),
        account: item.account.to_string(),
        subject: item.subject.clone(),
        name: item.name.clone(),
        source: item.source,
        method: item.method,
        derived_from: item.derived_from,
        acquired_at: utc_ms(OffsetDateTime::now_utc()),
        size,
        sha256,
        sha1,
        md5,
        s3_key: key,
        version_id: stored.version_id,
        s3_checksum_sha256: stored.s3_checksum,
        part_size: stored.part_size,
        lock_mode: lock.mode,
        retain_until: lock.until,
        legal_hold: lock.legal_hold,
    };
    let evidence = manifest_item.evidence_ref();
    let event = CustodyEvent {
        action: Action::EvidenceStored,
        subject: item.subject,
        evidence: vec![evidence.clone()],
        aws_request_ids: stored.request_ids,
        details: serde_json::json!({ "item": manifest_item, "adopted_existing_object": stored.adopted }),
    };
    (evidence, event)
}

/// A record written, to be read back (outside the chain lock).
struct ReadBack {
    key: String,
    version_id: Option<String>,
    bytes: bytes::Bytes,
}

impl ReadBack {
    async fn check(self, store: &dyn ObjectStore) -> Result<(), EvidenceError> {
        upload::read_back(store, &self.key, self.version_id.as_deref(), &self.bytes).await
    }
}

/// For each key under a listing, the original (oldest) version: S3 lists the
/// versions of a key newest first, so it is the last non-delete-marker entry.
pub(crate) fn original_versions(versions: &[Version]) -> BTreeMap<String, (Option<String>, usize)> {
    let mut out: BTreeMap<String, (Option<String>, usize)> = BTreeMap::new();
    for v in versions.iter().filter(|v| !v.delete_marker) {
        let entry = out.entry(v.key.clone()).or_insert((None, 0));
        entry.0 = v.version_id.clone();
        entry.1 += 1;
    }
    out
}

/// Every case this process opened: the binary waits for their records before it exits.
static OPENED: std::sync::Mutex<Vec<Case>> = std::sync::Mutex::new(Vec::new());

/// Waits for the records still being written behind in every case this process opened
/// (a command flushes its own; this is the last word before the process exits, so no
/// record is lost with it); what could not be written.
pub async fn flush_opened() -> Result<(), EvidenceError> {
    let cases = std::mem::take(&mut *OPENED.lock().expect("opened lock"));
    let mut failures = Vec::new();
    for case in cases {
        if let Err(e) = case.flush().await {
            failures.push(e.to_string());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(EvidenceError::RecordsNotWritten { case: "opened by this process".into(), failures })
    }
}

/// An open case: records custody and stores evidence. Cheap to clone, Send + Sync.
#[derive(Clone)]
pub struct Case {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("case", &self.inner.case)
            .field("store", &self.inner.store.location())
            .finish()
    }
}

impl Case {
    /// Opens `case`, creating `case.json` and the `case_opened` record when new, else
    /// loading (and checking) the chain so far: a rerun resumes.
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        case: &CaseId,
        actor: Actor,
        tool: ToolInfo,
        config_digest: String,
    ) -> Result<Case, EvidenceError> {
        Self::open_with(store, case, actor, tool, config_digest, Retention::bucket_default()).await
    }

    /// [`Case::open`] with an explicit retention for everything this process writes.
    /// Its records are not signed: see [`Case::open_signed`].
    pub async fn open_with(
        store: Arc<dyn ObjectStore>,
        case: &CaseId,
        actor: Actor,
        tool: ToolInfo,
        config_digest: String,
        retention: Retention,
    ) -> Result<Case, EvidenceError> {
        Self::open_inner(store, case, actor, tool, config_digest, retention, None).await
    }

    /// [`Case::open_with`], signing every record with `signer` (the KMS signing key)
    /// and refusing to extend a chain whose records that key does not vouch for. The
    /// public key is fetched once and stored in the case (`keys/<sha256>.pem`) for the
    /// hand-off; verification never trusts that copy by itself.
    pub async fn open_signed(
        store: Arc<dyn ObjectStore>,
        case: &CaseId,
        actor: Actor,
        tool: ToolInfo,
        config_digest: String,
        retention: Retention,
        signer: Arc<dyn Signer>,
    ) -> Result<Case, EvidenceError> {
        let signing = CaseSigner::new(signer).await?;
        Self::open_inner(store, case, actor, tool, config_digest, retention, Some(signing)).await
    }

    /// [`Case::open_signed`] with the signing key already read (or none).
    pub(crate) async fn open_inner(
        store: Arc<dyn ObjectStore>,
        case: &CaseId,
        actor: Actor,
        tool: ToolInfo,
        config_digest: String,
        retention: Retention,
        signing: Option<CaseSigner>,
    ) -> Result<Case, EvidenceError> {
        let host = HostInfo::current();
        let items = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let this = Case {
            inner: Arc::new(Inner {
                store,
                case: case.clone(),
                actor,
                tool,
                host,
                retention,
                signing,
                chain: Mutex::new(Chain { head: None, items: items.clone() }),
                items,
                behind: Default::default(),
                pending: tokio::sync::watch::Sender::new(0),
            }),
        };
        OPENED.lock().expect("opened lock").push(this.clone());
        // case.json, the public key and the chain so far, at once; a new case's
        // `case_opened` record waits behind (for case.json's read-back), not the caller.
        let (case_file, key, caught_up) =
            futures::join!(this.ensure_case_file(&config_digest), this.ensure_public_key(), async {
                let mut chain = this.inner.chain.lock().await;
                this.catch_up(&mut chain, None).await.map(|_| chain.head.is_none())
            });
        let (case_ref, case_check) = case_file?;
        let key_check = key?;
        let empty = caught_up?;
        let check: Option<ReadBackCheck> = match (case_check, key_check) {
            (None, None) => None,
            (a, b) => Some(
                async move {
                    for c in [a, b].into_iter().flatten() {
                        c.await?;
                    }
                    Ok(())
                }
                .boxed(),
            ),
        };
        let event = CustodyEvent {
            action: Action::CaseOpened,
            subject: format!("case:{case}"),
            evidence: vec![case_ref],
            aws_request_ids: vec![],
            details: serde_json::json!({ "config_digest": config_digest }),
        };
        match (empty, check) {
            (true, check) => this.enqueue(
                async move {
                    if let Some(check) = check {
                        check.await?;
                    }
                    Ok(event)
                }
                .boxed(),
                None,
            ),
            (false, Some(check)) => check.await?,
            (false, None) => {}
        }
        Ok(this)
    }

    pub fn id(&self) -> &CaseId {
        &self.inner.case
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    pub fn actor(&self) -> &Actor {
        &self.inner.actor
    }

    /// The chain head as this process knows it.
    pub async fn head(&self) -> Option<ChainHead> {
        self.inner.chain.lock().await.head.clone()
    }

    /// Every item stored so far, by id.
    pub async fn items(&self) -> Vec<ManifestItem> {
        self.inner.items.lock().expect("items lock").values().cloned().collect()
    }

    /// `sha256:` of the public key this case signs with, if it signs.
    pub fn signing_key_fingerprint(&self) -> Option<&str> {
        self.inner.signing.as_ref().map(|s| s.key.fingerprint.as_str())
    }

    fn case_str(&self) -> &str {
        self.inner.case.as_str()
    }

    /// Stores the signing key's public key as `keys/<sha256>.pem` unless it is there.
    /// Someone else's bytes under that name do not stop the case (verify reports them):
    /// the key that counts is the one KMS holds.
    async fn ensure_public_key(&self) -> Result<Option<ReadBackCheck>, EvidenceError> {
        let Some(signing) = &self.inner.signing else { return Ok(None) };
        let Some(key) = layout::public_key(&self.inner.case, &signing.key.fingerprint) else {
            return Ok(None);
        };
        let pem: bytes::Bytes = signing.key.pem().into_bytes().into();
        let store = self.inner.store.clone();
        match upload::put_unread(
            store.as_ref(),
            &key,
            pem.clone(),
            "application/x-pem-file",
            &self.lock_now(),
        )
        .await?
        {
            // Read back beside what comes next, as case.json is.
            Some(stored) => Ok(Some(spawned(self.case_str(), "reading back the public key", async move {
                upload::read_back(store.as_ref(), &key, stored.version_id.as_deref(), &pem).await
            }))),
            None => {
                let (existing, _) = upload::read_hash(store.as_ref(), &key, None).await?;
                if existing.sha256 != digest::sha256_tagged(&pem) {
                    tracing::warn!(
                        key,
                        existing = existing.sha256,
                        "the case already holds other bytes under the signing key's name; verify reports them"
                    );
                }
                Ok(None)
            }
        }
    }

    /// case.json created (its read-back returned, to await) or the one there read.
    async fn ensure_case_file(
        &self,
        config_digest: &str,
    ) -> Result<(EvidenceRef, Option<ReadBackCheck>), EvidenceError> {
        let store = &self.inner.store;
        let key = layout::case_file(&self.inner.case);
        let now = OffsetDateTime::now_utc();
        let file = CaseFile {
            schema: CASE_SCHEMA.into(),
            case: self.case_str().into(),
            opened_at: utc_ms(now),
            clock: CLOCK_SOURCE.into(),
            opened_by: self.inner.actor.clone(),
            host: self.inner.host.clone(),
            tool: self.inner.tool.clone(),
            config_digest: config_digest.into(),
            store: store.location(),
            retention: self.inner.retention.clone(),
        };
        let bytes = canonical(&file);
        let put = PutObject {
            key: key.clone(),
            sha256_b64: b64(&sha256_raw(&bytes)),
            body: bytes.clone().into(),
            content_type: "application/json",
            lock: self.inner.retention.lock(now),
            if_absent: true,
        };
        let version_id = match store.put(put).await {
            Ok(w) => {
                // Written now: read back (and parsed) beside whatever comes next.
                let r = EvidenceRef {
                    id: "case.json".into(),
                    sha256: digest::sha256_tagged(&bytes),
                    s3_key: key.clone(),
                    version_id: w.version_id.clone(),
                };
                let this = self.clone();
                let check = spawned(self.case_str(), "reading back case.json", async move {
                    upload::read_back(this.inner.store.as_ref(), &key, w.version_id.as_deref(), &bytes).await
                });
                return Ok((r, Some(check)));
            }
            Err(e) if e.is(StoreErrorKind::PreconditionFailed) => {
                // Another process (or an earlier run) created it: read its original
                // version, since a later one is someone writing over case.json.
                let versions = store
                    .list_versions(&key)
                    .await
                    .map_err(EvidenceError::store(format!("listing versions of {key}")))?;
                original_versions(&versions).remove(&key).and_then(|(v, _)| v)
            }
            Err(e) => return Err(EvidenceError::store(format!("creating {key}"))(e)),
        };
        let stored = get_all(store.as_ref(), &key, version_id.as_deref(), CASE_FILE_LIMIT)
            .await
            .map_err(EvidenceError::store(format!("reading back {key}")))?;
        let parsed: CaseFile = serde_json::from_slice(&stored).map_err(|e| EvidenceError::Corrupt {
            case: self.case_str().into(),
            key: key.clone(),
            what: "case file",
            problem: e.to_string(),
        })?;
        if parsed.case != self.case_str() {
            return Err(EvidenceError::Corrupt {
                case: self.case_str().into(),
                key,
                what: "case file",
                problem: format!("names case {:?}", parsed.case),
            });
        }
        Ok((
            EvidenceRef {
                id: "case.json".into(),
                sha256: digest::sha256_tagged(&stored),
                s3_key: key,
                version_id,
            },
            None,
        ))
    }

    /// Reads records after the known head until the first absent one, each from its
    /// original version, checking hash, link and (with a signing key) signature.
    /// `ours`: the hash of a record we tried to write at the next seq (a retried PUT
    /// that had succeeded reads back as ours).
    async fn catch_up(&self, chain: &mut Chain, ours: Option<&str>) -> Result<bool, EvidenceError> {
        let case = &self.inner.case;
        let store = self.inner.store.as_ref();
        let versions = store
            .list_versions(&layout::custody_prefix(case))
            .await
            .map_err(EvidenceError::store("listing custody records"))?;
        let originals = original_versions(&versions);
        let mut found_ours = false;
        loop {
            let seq = chain.head.as_ref().map_or(1, |h| h.seq + 1);
            let key = layout::custody_record(case, seq);
            let Some((version_id, count)) = originals.get(&key) else { return Ok(found_ours) };
            if *count > 1 {
                tracing::warn!(key, count, "custody record has later versions; its original is read");
            }
            let bytes = get_all(store, &key, version_id.as_deref(), MAX_RECORD_BYTES)
                .await
                .map_err(EvidenceError::store(format!("reading custody record {seq}")))?;
            let mut findings = Vec::new();
            let record = custody::check_record(case, &key, &bytes, &mut findings);
            if let Some(r) = &record
                && r.prev.as_deref() != chain.head.as_ref().map(|h| h.hash.as_str())
            {
                findings.push(custody::ChainFinding {
                    seq: Some(seq),
                    key: key.clone(),
                    problem: format!("prev {:?} does not link to the record before it", r.prev),
                });
            }
            let record = match record {
                Some(r) if findings.is_empty() => r,
                _ => return Err(EvidenceError::ChainBroken { case: case.to_string(), findings }),
            };
            self.check_authentic(seq, &record)?;
            if ours == Some(record.hash.as_str()) {
                found_ours = true;
            }
            chain.apply(&record);
        }
    }

    /// A signing case accepts only records its key vouches for; a case without a key
    /// refuses to add unsigned records after signed ones.
    fn check_authentic(&self, seq: u64, record: &CustodyRecord) -> Result<(), EvidenceError> {
        let case = &self.inner.case;
        match (&self.inner.signing, &record.signature) {
            (Some(signing), _) => {
                signing.key.authenticate(case, record).map_err(|reason| EvidenceError::Unauthenticated {
                    case: case.to_string(),
                    seq,
                    key: format!("{} ({})", signing.key.fingerprint, signing.signer.key_id()),
                    reason,
                })
            }
            (None, Some(sig)) => Err(EvidenceError::SigningKeyRequired {
                case: case.to_string(),
                seq,
                key_id: sig.key_id.clone(),
            }),
            (None, None) => Ok(()),
        }
    }

    /// Appends one custody record, signed when the case has a signing key, and returns
    /// once it is written and read back. Fork-proof: the record is written only if its
    /// key (its sequence number) is still free; when another process took it, this one
    /// reads that record, checks it, and retries at the next number. Records go through
    /// one queue per case, in the order they were asked for (see [`Case::record_behind`]).
    pub async fn record(&self, event: CustodyEvent) -> Result<CustodyReceipt, EvidenceError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(futures::future::ready(Ok(event)).boxed(), Some(tx));
        rx.await.unwrap_or_else(|_| Err(self.writer_gone()))
    }

    /// Takes the record's place in the chain now and writes it in the background: the
    /// caller goes on (a change waiting on nothing but evidence already stored).
    /// [`Case::flush`] waits for it and reports a record that could not be written.
    pub fn record_behind(&self, event: CustodyEvent) {
        self.enqueue(futures::future::ready(Ok(event)).boxed(), None);
    }

    /// Waits until every record asked for so far is written and read back; the ones
    /// written behind that failed, each once.
    pub async fn flush(&self) -> Result<(), EvidenceError> {
        let mut pending = self.inner.pending.subscribe();
        // The sender lives in `inner`, which outlives this borrow: wait_for cannot fail.
        let _ = pending.wait_for(|n| *n == 0).await;
        let failures = std::mem::take(&mut self.inner.behind.lock().expect("behind lock").failures);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(EvidenceError::RecordsNotWritten { case: self.case_str().into(), failures })
        }
    }

    fn writer_gone(&self) -> EvidenceError {
        EvidenceError::RecordsNotWritten {
            case: self.case_str().into(),
            failures: vec!["the custody writer stopped before writing this record".into()],
        }
    }

    /// Queues a record whose event is ready when `event` resolves (an item's record
    /// waits for its read-back, already running); starts the writer when idle.
    fn enqueue(&self, event: QueuedEvent, done: Option<Done>) {
        self.inner.pending.send_modify(|n| *n += 1);
        let start = {
            let mut b = self.inner.behind.lock().expect("behind lock");
            b.queue.push_back(Queued { event, done });
            !std::mem::replace(&mut b.writing, true)
        };
        if start {
            let case = self.clone();
            tokio::spawn(async move { case.write_queued().await });
        }
    }

    /// The writer: appends queued records one at a time, in order; each record's
    /// read-back runs beside the next record's PUT.
    async fn write_queued(&self) {
        loop {
            let Some(batch) = self.next_batch().await else { return };
            let (events, dones): (Vec<CustodyEvent>, Vec<Option<Done>>) = batch.into_iter().unzip();
            let opening = events.first().is_some_and(|e| e.action == Action::CaseOpened);
            let appended = self.append_batch(events).await;
            if opening {
                self.inner.behind.lock().expect("behind lock").unopened =
                    appended[0].as_ref().err().map(ToString::to_string);
            }
            for (done, appended) in dones.into_iter().zip(appended) {
                match appended {
                    Ok((receipt, read_back)) => {
                        let case = self.clone();
                        tokio::spawn(async move {
                            let checked = match read_back {
                                Some(r) => r.check(case.inner.store.as_ref()).await,
                                None => Ok(()),
                            };
                            case.settle(done, checked.map(|()| receipt));
                        });
                    }
                    Err(e) => self.settle(done, Err(e)),
                }
            }
        }
    }

    /// The next records to append together: the first queued one (waited for), and
    /// every one after it whose event is ready now (at most [`BATCH_RECORDS`]). An event
    /// that failed (its item's read-back) is settled here; `case_opened` goes alone.
    /// `None`: the queue is empty and the writer stops.
    async fn next_batch(&self) -> Option<Vec<(CustodyEvent, Option<Done>)>> {
        let mut batch = Vec::new();
        loop {
            let mut next = {
                let mut b = self.inner.behind.lock().expect("behind lock");
                match b.queue.pop_front() {
                    Some(q) => q,
                    None if batch.is_empty() => {
                        b.writing = false;
                        return None;
                    }
                    None => return Some(batch),
                }
            };
            let event = if batch.is_empty() {
                (&mut next.event).await
            } else {
                match (&mut next.event).now_or_never() {
                    Some(e) => e,
                    None => {
                        // Not ready: it leads the next batch.
                        self.inner.behind.lock().expect("behind lock").queue.push_front(next);
                        return Some(batch);
                    }
                }
            };
            let poisoned = self.inner.behind.lock().expect("behind lock").unopened.clone();
            match event {
                Ok(event) if event.action != Action::CaseOpened && poisoned.is_some() => self.settle(
                    next.done,
                    Err(EvidenceError::RecordsNotWritten {
                        case: self.case_str().into(),
                        failures: vec![format!(
                            "the case's opening record was not written, so no record may follow it: {}",
                            poisoned.unwrap_or_default()
                        )],
                    }),
                ),
                Ok(event) if event.action == Action::CaseOpened => {
                    if batch.is_empty() {
                        return Some(vec![(event, next.done)]);
                    }
                    self.inner.behind.lock().expect("behind lock").queue.push_front(Queued {
                        event: futures::future::ready(Ok(event)).boxed(),
                        done: next.done,
                    });
                    return Some(batch);
                }
                Ok(event) => batch.push((event, next.done)),
                Err(e) => self.settle(next.done, Err(e)),
            }
            if batch.len() >= BATCH_RECORDS {
                return Some(batch);
            }
        }
    }

    /// Appends `events` in order, each fork-proof as [`Case::record`] says: the records
    /// are built on the head as it is, all signed at once (one KMS round trip for the
    /// batch, not one per record), then written one at a time, each only if its sequence
    /// number is free. When another writer took one, or a write failed, the rest are built and
    /// signed again on the chain as it then is: nothing is written after a record that
    /// is not in the chain.
    async fn append_batch(&self, events: Vec<CustodyEvent>) -> Vec<Result<Appended, EvidenceError>> {
        let case = &self.inner.case;
        let mut chain = self.inner.chain.lock().await;
        let mut results: Vec<Option<Result<Appended, EvidenceError>>> = events.iter().map(|_| None).collect();
        let mut from = 0;
        let mut contended = 0;
        'build: while from < events.len() && contended < APPEND_ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let mut head = chain.head.clone();
            let mut built = Vec::new();
            for event in &events[from..] {
                if let (Action::CaseOpened, Some(h)) = (event.action, &head) {
                    // Another process opened the case first: nothing to add.
                    let receipt = CustodyReceipt {
                        seq: h.seq,
                        hash: h.hash.clone(),
                        s3_key: layout::custody_record(case, h.seq),
                        version_id: None,
                    };
                    built.push(Err(receipt));
                    continue;
                }
                let seq = head.as_ref().map_or(1, |h| h.seq + 1);
                // Error text reaches details (a failed step's message): no secret may
                // be locked into the record with it.
                let details = crate::redact::scrub_json(event.details.clone());
                let record = self.build_record(event, details, vec![], seq, head.as_ref(), now);
                head = Some(ChainHead { seq, hash: record.hash.clone() });
                built.push(Ok(record));
            }
            // Signed before written, so no record ever exists unsigned.
            let signatures = match &self.inner.signing {
                Some(signing) => {
                    futures::future::join_all(built.iter().map(|r| async move {
                        match r {
                            Ok(r) => signing.sign_record(case, r.seq, &r.hash).await.map(Some),
                            Err(_) => Ok(None),
                        }
                    }))
                    .await
                }
                None => built.iter().map(|_| Ok(None)).collect(),
            };
            for (k, (record, signature)) in built.into_iter().zip(signatures).enumerate() {
                let i = from + k;
                let mut record = match record {
                    Ok(r) => r,
                    Err(skipped) => {
                        results[i] = Some(Ok((skipped, None)));
                        continue;
                    }
                };
                match signature {
                    Ok(sig) => record.signature = sig,
                    Err(e) => {
                        results[i] = Some(Err(e));
                        from = i + 1;
                        continue 'build;
                    }
                }
                match self.put_record(&mut chain, &record, now).await {
                    Ok(Some(appended)) => results[i] = Some(Ok(appended)),
                    Ok(None) => {
                        contended += 1;
                        tracing::debug!(%case, seq = record.seq, "custody seq taken by another writer; caught up, building again");
                        from = i;
                        continue 'build;
                    }
                    Err(e) => {
                        results[i] = Some(Err(e));
                        from = i + 1;
                        continue 'build;
                    }
                }
            }
            break;
        }
        let seq = chain.head.as_ref().map_or(1, |h| h.seq + 1);
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(EvidenceError::ChainContended {
                        case: case.to_string(),
                        seq,
                        attempts: APPEND_ATTEMPTS,
                    })
                })
            })
            .collect()
    }

    /// The record of `event` at `seq`, after `prev`, sealed (hashed), not signed.
    fn build_record(
        &self,
        event: &CustodyEvent,
        details: serde_json::Value,
        request_ids: Vec<String>,
        seq: u64,
        prev: Option<&ChainHead>,
        now: OffsetDateTime,
    ) -> CustodyRecord {
        CustodyRecord {
            schema: SCHEMA.into(),
            seq,
            case: self.inner.case.to_string(),
            time: utc_ms(now),
            clock: CLOCK_SOURCE.into(),
            actor: self.inner.actor.clone(),
            host: self.inner.host.clone(),
            tool: self.inner.tool.clone(),
            action: event.action,
            subject: event.subject.clone(),
            evidence: event.evidence.clone(),
            aws_request_ids: event.aws_request_ids.iter().cloned().chain(request_ids).collect(),
            details,
            prev: prev.map(|h| h.hash.clone()),
            hash: String::new(),
            signature: None,
        }
        .seal()
        .0
    }

    /// Writes one built record if its sequence number is free and applies it to the
    /// chain. `None`: another writer took the number (the chain has caught up).
    async fn put_record(
        &self,
        chain: &mut Chain,
        record: &CustodyRecord,
        now: OffsetDateTime,
    ) -> Result<Option<Appended>, EvidenceError> {
        let case = &self.inner.case;
        let seq = record.seq;
        let bytes = record.to_bytes();
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(EvidenceError::RecordTooLarge {
                case: case.to_string(),
                seq,
                size: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let key = layout::custody_record(case, seq);
        let bytes = bytes::Bytes::from(bytes);
        let lock = self.inner.retention.lock(now);
        match upload::put_unread(self.inner.store.as_ref(), &key, bytes.clone(), "application/json", &lock)
            .await?
        {
            Some(stored) => {
                chain.apply(record);
                let read_back = ReadBack { key: key.clone(), version_id: stored.version_id.clone(), bytes };
                let receipt = CustodyReceipt {
                    seq,
                    hash: record.hash.clone(),
                    s3_key: key,
                    version_id: stored.version_id,
                };
                Ok(Some((receipt, Some(read_back))))
            }
            None => {
                if self.catch_up(chain, Some(&record.hash)).await? {
                    // Our own earlier attempt landed (a retried request).
                    let versions = self.inner.store.list_versions(&key).await.unwrap_or_default();
                    let version_id = original_versions(&versions).remove(&key).and_then(|(v, _)| v);
                    let receipt = CustodyReceipt { seq, hash: record.hash.clone(), s3_key: key, version_id };
                    return Ok(Some((receipt, None)));
                }
                Ok(None)
            }
        }
    }

    /// One queued record is done: its waiter told, or its failure kept for `flush`.
    fn settle(&self, done: Option<Done>, result: Result<CustodyReceipt, EvidenceError>) {
        match done {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => {
                if let Err(e) = result {
                    tracing::error!(case = %self.inner.case, "custody record not written: {e}");
                    self.inner.behind.lock().expect("behind lock").failures.push(e.to_string());
                }
            }
        }
        self.inner.pending.send_modify(|n| *n -= 1);
    }

    /// Appends the `checkpoint_signed` record over the head it follows (signed again
    /// for a new head when another writer takes the next number first). Its read-back
    /// is left to the caller.
    async fn append_checkpoint(
        &self,
        event: CustodyEvent,
        signer: &dyn Signer,
        key: &TrustedKey,
        public_key_s3_key: &str,
    ) -> Result<Appended, EvidenceError> {
        let case = &self.inner.case;
        let mut chain = self.inner.chain.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            let head = chain.head.clone().ok_or_else(|| EvidenceError::Signing {
                key: signer.key_id(),
                message: "the chain is empty: nothing to sign".into(),
            })?;
            let signed = Signed::checkpoint(case, head.seq, &head.hash);
            let (signature, request_id) = sign_checked(signer, key, &signed).await?;
            let details = CheckpointDetails {
                signed,
                key_id: signer.key_id(),
                algorithm: ALGORITHM.into(),
                message_type: "RAW".into(),
                signature,
                public_key_sha256: key.fingerprint.clone(),
                public_key_s3_key: public_key_s3_key.to_owned(),
            };
            let details = serde_json::to_value(&details).expect("details serialise");
            let now = OffsetDateTime::now_utc();
            let seq = head.seq + 1;
            let mut record =
                self.build_record(&event, details, request_id.into_iter().collect(), seq, Some(&head), now);
            // Signed before it is written, so no record ever exists unsigned.
            if let Some(signing) = &self.inner.signing {
                record.signature = Some(signing.sign_record(case, seq, &record.hash).await?);
            }
            if let Some(appended) = self.put_record(&mut chain, &record, now).await? {
                return Ok(appended);
            }
            tracing::debug!(%case, seq, "custody seq taken by another writer; caught up and retrying");
        }
        let seq = chain.head.as_ref().map_or(1, |h| h.seq + 1);
        Err(EvidenceError::ChainContended { case: case.to_string(), seq, attempts: APPEND_ATTEMPTS })
    }

    /// Signs the chain head with `signer` and records `checkpoint_signed` right after
    /// it: the checkpoint always covers the record before it, even when other writers
    /// append meanwhile (it is re-signed for the head it finally follows). A signing
    /// case checkpoints only with its own key.
    pub async fn checkpoint(&self, signer: &dyn Signer) -> Result<CustodyReceipt, EvidenceError> {
        let der = signer.public_key_der().await?;
        let key = TrustedKey::from_bytes(&der, KeySource::Signer { key_id: signer.key_id() })
            .map_err(|message| EvidenceError::Signing { key: signer.key_id(), message })?;
        if let Some(own) = &self.inner.signing
            && own.key.fingerprint != key.fingerprint
        {
            return Err(EvidenceError::Signing {
                key: signer.key_id(),
                message: format!(
                    "this case signs with key {}, not {}: a checkpoint must be signed with the case's key",
                    own.key.fingerprint, key.fingerprint
                ),
            });
        }
        let public_key_s3_key = layout::public_key(&self.inner.case, &key.fingerprint)
            .expect("a computed fingerprint has the sha256:<hex> form");
        if self.inner.signing.is_none() {
            // An unsigned case stores the checkpoint's key now (a signing one did at open).
            let stored = upload::store_bytes(
                self.inner.store.as_ref(),
                &public_key_s3_key,
                &public_key_s3_key,
                key.pem().into_bytes().into(),
                "application/x-pem-file",
                self.lock_now(),
            )
            .await;
            match stored {
                Ok(_) | Err(EvidenceError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let event = CustodyEvent {
            action: Action::CheckpointSigned,
            subject: signer.key_id(),
            evidence: vec![],
            aws_request_ids: vec![],
            details: serde_json::Value::Null,
        };
        self.flush().await?;
        let (receipt, read_back) = self.append_checkpoint(event, signer, &key, &public_key_s3_key).await?;
        if let Some(r) = read_back {
            r.check(self.inner.store.as_ref()).await?;
        }
        Ok(receipt)
    }

    /// The stored item with this id, if any (re-reads the chain tail first, so items
    /// stored by another process are found).
    pub async fn find_item(&self, id: &str) -> Result<Option<EvidenceRef>, EvidenceError> {
        let mut chain = self.inner.chain.lock().await;
        self.catch_up(&mut chain, None).await?;
        Ok(chain.items.lock().expect("items lock").get(id).map(ManifestItem::evidence_ref))
    }

    pub(crate) async fn known(&self, id: &str) -> Option<EvidenceRef> {
        if let Some(r) = self.inner.behind.lock().expect("behind lock").items.get(id) {
            return Some(r.clone());
        }
        self.inner.items.lock().expect("items lock").get(id).map(ManifestItem::evidence_ref)
    }

    fn evidence_key(&self, item: &NewItem) -> Result<String, EvidenceError> {
        if item.id.trim().is_empty() {
            return Err(EvidenceError::InvalidItem {
                id: item.id.clone(),
                field: "id",
                problem: "is empty".into(),
            });
        }
        layout::evidence(&self.inner.case, &item.account, &item.subject, &item.name).map_err(|e| {
            EvidenceError::InvalidItem { id: item.id.clone(), field: e.field, problem: e.problem.into() }
        })
    }

    /// Stores a JSON value as an evidence item (canonical bytes). On a rerun the item
    /// already recorded is returned without writing anything.
    pub async fn store_json(
        &self,
        item: NewItem,
        value: &serde_json::Value,
    ) -> Result<EvidenceRef, EvidenceError> {
        let key = self.evidence_key(&item)?;
        if let Some(r) = self.known(&item.id).await {
            return Ok(r);
        }
        let bytes = canonical(value);
        let lock = self.lock_now();
        let stored = upload::store_bytes(
            self.inner.store.as_ref(),
            &item.id,
            &key,
            bytes.into(),
            "application/json",
            lock.clone(),
        )
        .await?;
        let sent = (!stored.adopted).then_some(&lock);
        self.finish_item(item, key, stored, sent).await
    }

    /// Stores bytes held in memory as an evidence item (a decoded UserData, a
    /// screenshot). On a rerun the item already recorded is returned.
    pub async fn store_bytes(
        &self,
        item: NewItem,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<EvidenceRef, EvidenceError> {
        let key = self.evidence_key(&item)?;
        if let Some(r) = self.known(&item.id).await {
            return Ok(r);
        }
        let lock = self.lock_now();
        let stored = upload::store_bytes(
            self.inner.store.as_ref(),
            &item.id,
            &key,
            bytes.into(),
            content_type,
            lock.clone(),
        )
        .await?;
        let sent = (!stored.adopted).then_some(&lock);
        self.finish_item(item, key, stored, sent).await
    }

    /// Streams a file of any size into the case (multipart above 16 MiB, parallel
    /// parts, bounded memory), computing SHA-256, SHA-1 and MD5 in the same pass.
    pub async fn store_file(
        &self,
        item: NewItem,
        path: &Path,
        reporter: &dyn Reporter,
    ) -> Result<EvidenceRef, EvidenceError> {
        let key = self.evidence_key(&item)?;
        if let Some(r) = self.known(&item.id).await {
            return Ok(r);
        }
        let content_type =
            if item.name.ends_with(".json") { "application/json" } else { "application/octet-stream" };
        let stored = upload::store_file(
            self.inner.store.clone(),
            &item.id,
            &key,
            path,
            content_type,
            self.lock_now(),
            reporter,
        )
        .await?;
        self.finish_item(item, key, stored, None).await
    }

    /// Records an object another principal wrote at the item's key (the clean room's
    /// outputs) as an evidence item: the version its writer reported (`version_id`; the
    /// writer used `If-None-Match`, so it is the original; `verify` reports any later
    /// one), read back and hashed here, a check independent of the writer's, when it is
    /// at most `rehash_limit` bytes; larger ones keep the writer's digests (its two reads
    /// in the clean room) and `verify` re-hashes them later. Any difference from what
    /// the writer reported is refused.
    pub async fn adopt(
        &self,
        item: NewItem,
        version_id: Option<&str>,
        reported: &Digests,
        rehash_limit: u64,
    ) -> Result<(EvidenceRef, bool), EvidenceError> {
        let key = self.evidence_key(&item)?;
        if let Some(r) = self.known(&item.id).await {
            return Ok((r, false));
        }
        let store = self.inner.store.as_ref();
        let meta = store
            .head(&key, version_id)
            .await
            .map_err(EvidenceError::store(format!("HEAD {key}")))?
            .ok_or_else(|| EvidenceError::InvalidItem {
            id: item.id.clone(),
            field: "object",
            problem: format!("{key} (version {}) is not in the bucket", version_id.unwrap_or("latest")),
        })?;
        // Its writer's upload may have come without the lock the case asks for (a
        // multipart upload the bucket's default did not cover): the case's retention
        // is set on that version before it is recorded.
        let meta = match (meta.lock_mode, self.lock_now().retention) {
            (None, Some((mode, until))) => {
                store
                    .set_retention(&key, meta.version_id.as_deref(), mode, until)
                    .await
                    .map_err(EvidenceError::store(format!("locking {key}")))?;
                store
                    .head(&key, meta.version_id.as_deref())
                    .await
                    .map_err(EvidenceError::store(format!("HEAD {key}")))?
                    .unwrap_or(meta)
            }
            _ => meta,
        };
        let rehashed = meta.size <= rehash_limit;
        let digests = if rehashed {
            upload::read_hash(store, &key, meta.version_id.as_deref()).await?.0
        } else {
            reported.clone()
        };
        if digests != *reported || meta.size != reported.size {
            return Err(EvidenceError::ReadBackMismatch {
                key,
                version_id: meta.version_id,
                expected: format!(
                    "{} ({} bytes, {}, {})",
                    reported.sha256, reported.size, reported.sha1, reported.md5
                ),
                found: format!("{} ({} bytes, {}, {})", digests.sha256, meta.size, digests.sha1, digests.md5),
            });
        }
        let stored = upload::Stored {
            digests,
            version_id: meta.version_id.clone(),
            s3_checksum: meta.checksum_sha256.clone().unwrap_or_default(),
            part_size: None,
            request_ids: vec![],
            adopted: true,
        };
        Ok((self.finish_item(item, key, stored, None).await?, rehashed))
    }

    /// The lock of an object written now (the operational journal uses the case's).
    pub fn lock_now_for_journal(&self) -> ObjectLock {
        self.lock_now()
    }

    fn lock_now(&self) -> ObjectLock {
        self.inner.retention.lock(OffsetDateTime::now_utc())
    }

    /// Records a stored item (awaited). `sent`: the lock this process just wrote the
    /// version with, which is the lock it has (S3 refuses a PUT whose lock it cannot
    /// apply); otherwise a HEAD reads it.
    async fn finish_item(
        &self,
        item: NewItem,
        key: String,
        stored: upload::Stored,
        sent: Option<&ObjectLock>,
    ) -> Result<EvidenceRef, EvidenceError> {
        let lock = self.lock_of(&key, stored.version_id.as_deref(), sent).await?;
        let (evidence, event) = item_event(item, key, stored, lock);
        self.record(event).await?;
        Ok(evidence)
    }

    async fn lock_of(
        &self,
        key: &str,
        version_id: Option<&str>,
        sent: Option<&ObjectLock>,
    ) -> Result<ItemLock, EvidenceError> {
        if let Some(ObjectLock { retention: Some((mode, until)), legal_hold }) = sent {
            // S3 keeps retain-until in whole seconds, as it was sent.
            let until = until.replace_nanosecond(0).unwrap_or(*until);
            return Ok(ItemLock { mode: Some(*mode), until: Some(utc_ms(until)), legal_hold: *legal_hold });
        }
        let meta = self
            .inner
            .store
            .head(key, version_id)
            .await
            .map_err(EvidenceError::store(format!("HEAD {key}")))?;
        Ok(ItemLock {
            mode: meta.as_ref().and_then(|m| m.lock_mode),
            until: meta.as_ref().and_then(|m| m.retain_until).map(utc_ms),
            legal_hold: meta.as_ref().is_some_and(|m| m.legal_hold),
        })
    }

    /// [`Case::store_json`] that returns as soon as S3 holds the bytes (S3 checked their
    /// SHA-256 before answering): the read-back and the `evidence_stored` record follow
    /// behind, the record in its place in the queue, so nothing recorded after it can
    /// come before it. For the evidence a change must wait for (the prior state), not
    /// for the record of it. An object already at the key that no record names (a run
    /// stopped after writing it and before its record) is adopted as the item, recorded
    /// as recovered, and its bytes returned: it is the earlier observation.
    pub async fn store_json_early(
        &self,
        item: NewItem,
        value: &serde_json::Value,
    ) -> Result<(EvidenceRef, Option<bytes::Bytes>), EvidenceError> {
        self.store_bytes_early(item, canonical(value).into(), "application/json").await
    }

    /// [`Case::store_json_early`] for bytes held in memory (a decoded UserData, the
    /// console output).
    pub async fn store_bytes_early(
        &self,
        item: NewItem,
        bytes: bytes::Bytes,
        content_type: &'static str,
    ) -> Result<(EvidenceRef, Option<bytes::Bytes>), EvidenceError> {
        let key = self.evidence_key(&item)?;
        if let Some(r) = self.known(&item.id).await {
            return Ok((r, None));
        }
        let lock = self.lock_now();
        let store = self.inner.store.as_ref();
        let Some(stored) = upload::put_unread(store, &key, bytes.clone(), content_type, &lock).await? else {
            return self.recover(item, key, &bytes).await;
        };
        let evidence = EvidenceRef {
            id: item.id.clone(),
            sha256: stored.digests.sha256.clone(),
            s3_key: key.clone(),
            version_id: stored.version_id.clone(),
        };
        self.inner.behind.lock().expect("behind lock").items.insert(item.id.clone(), evidence.clone());
        let case = self.clone();
        let recorded = spawned(self.case_str(), "reading back an item", async move {
            let store = case.inner.store.as_ref();
            upload::read_back(store, &key, stored.version_id.as_deref(), &bytes).await?;
            let lock = case.lock_of(&key, stored.version_id.as_deref(), Some(&lock)).await?;
            Ok(item_event(item, key, stored, lock).1)
        });
        self.enqueue(recorded, None);
        Ok((evidence, None))
    }

    /// The item's key is taken: its original version is adopted (the same bytes: a
    /// retried PUT; other bytes: an interrupted run's, returned).
    async fn recover(
        &self,
        item: NewItem,
        key: String,
        ours: &[u8],
    ) -> Result<(EvidenceRef, Option<bytes::Bytes>), EvidenceError> {
        let store = self.inner.store.as_ref();
        let versions = store
            .list_versions(&key)
            .await
            .map_err(EvidenceError::store(format!("listing versions of {key}")))?;
        let version_id = original_versions(&versions).remove(&key).and_then(|(v, _)| v);
        let existing = get_all(store, &key, version_id.as_deref(), SMALL_OBJECT_LIMIT)
            .await
            .map_err(EvidenceError::store(format!("reading {key}")))?;
        let stored = upload::Stored {
            digests: digest::digests_of(&existing),
            version_id: version_id.clone(),
            s3_checksum: b64(&sha256_raw(&existing)),
            part_size: None,
            request_ids: vec![],
            adopted: true,
        };
        let recovered = existing != ours;
        let lock = self.lock_of(&key, version_id.as_deref(), None).await?;
        let (evidence, mut event) = item_event(item, key, stored, lock);
        if recovered {
            tracing::warn!(item = %evidence.id, "adopting the item an interrupted run stored (its record was not written)");
            event.details["recovered_after_interruption"] = serde_json::Value::Bool(true);
        }
        self.record(event).await?;
        Ok((evidence, recovered.then_some(existing)))
    }

    /// Writes `manifest.json` (a new version each time) listing every item and the
    /// custody head, and records `manifest_sealed` with its digest and version.
    pub async fn seal(&self) -> Result<(Manifest, EvidenceRef), EvidenceError> {
        self.flush().await?;
        let (items, head) = {
            let mut chain = self.inner.chain.lock().await;
            self.catch_up(&mut chain, None).await?;
            (
                chain.items.lock().expect("items lock").values().cloned().collect::<Vec<_>>(),
                chain.head.clone(),
            )
        };
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            case: self.case_str().into(),
            sealed_at: utc_ms(OffsetDateTime::now_utc()),
            custody_head: head,
            items,
        };
        let key = layout::manifest(&self.inner.case);
        let bytes = canonical(&manifest);
        let put = PutObject {
            key: key.clone(),
            sha256_b64: b64(&sha256_raw(&bytes)),
            body: bytes.clone().into(),
            content_type: "application/json",
            lock: self.lock_now(),
            if_absent: false,
        };
        let w = self.inner.store.put(put).await.map_err(EvidenceError::store(format!("writing {key}")))?;
        upload::read_back(self.inner.store.as_ref(), &key, w.version_id.as_deref(), &bytes).await?;
        let r = EvidenceRef {
            id: "manifest".into(),
            sha256: digest::sha256_tagged(&bytes),
            s3_key: key,
            version_id: w.version_id,
        };
        self.record(CustodyEvent {
            action: Action::ManifestSealed,
            subject: format!("case:{}", self.case_str()),
            evidence: vec![r.clone()],
            aws_request_ids: w.request_id.into_iter().collect(),
            details: serde_json::json!({
                "items": manifest.items.len(),
                "custody_head": manifest.custody_head,
            }),
        })
        .await?;
        Ok((manifest, r))
    }

    /// Stores the report in `format` (`html`, `md`, `json`: `report/report.<format>`),
    /// locked and read back; not an evidence item of the manifest, and versioned by
    /// design (each report is a new version). Returns its reference.
    pub async fn store_report(
        &self,
        extension: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<EvidenceRef, EvidenceError> {
        let key = layout::report(&self.inner.case, extension).map_err(|e| EvidenceError::InvalidItem {
            id: format!("report.{extension}"),
            field: e.field,
            problem: e.problem.into(),
        })?;
        let relative = layout::relative(&self.inner.case, &key).unwrap_or(&key).to_owned();
        let mut stored = upload::store_bytes_versioned(
            self.inner.store.as_ref(),
            &relative,
            &key,
            body.into(),
            content_type,
            self.lock_now(),
        )
        .await?;
        Ok(EvidenceRef {
            id: relative,
            sha256: std::mem::take(&mut stored.digests.sha256),
            s3_key: key,
            version_id: stored.version_id,
        })
    }

    /// Reads one item's bytes (by version id) into memory: for small items and tests.
    pub async fn read_item(&self, item: &ManifestItem) -> Result<Vec<u8>, EvidenceError> {
        let mut body = self
            .inner
            .store
            .get(&item.s3_key, item.version_id.as_deref())
            .await
            .map_err(EvidenceError::store(format!("reading {}", item.s3_key)))?;
        let mut out = Vec::new();
        while let Some(c) = body.next().await {
            out.extend_from_slice(&c.map_err(EvidenceError::store(format!("reading {}", item.s3_key)))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_always_have_three_fraction_digits() {
        let t = time::macros::datetime!(2026-01-02 03:04:05.1 UTC);
        assert_eq!(utc_ms(t), "2026-01-02T03:04:05.100Z");
        let t = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(utc_ms(t), "2026-01-02T03:04:05.000Z");
        let t = time::macros::datetime!(2026-01-02 03:04:05.123456 UTC);
        assert_eq!(utc_ms(t), "2026-01-02T03:04:05.123Z");
    }
}
