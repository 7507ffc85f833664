//! A case: its `case.json`, its custody chain (appended fork-proof with conditional
//! writes), and its evidence items.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

use super::custody::{
    self, Action, Actor, CLOCK_SOURCE, CustodyEvent, CustodyReceipt, CustodyRecord, EvidenceRef, HostInfo,
    SCHEMA, ToolInfo, canonical, record_key,
};
use super::digest::{self, Digests, b64, sha256_raw};
use super::error::EvidenceError;
use super::store::{LockMode, ObjectLock, ObjectStore, PutObject, StoreErrorKind, get_all};
use super::upload;
use crate::ids::{AccountId, CaseId};
use crate::progress::Reporter;

/// Appending to the chain retries this often when other writers keep winning the
/// race for the next sequence number; each retry first reads what they wrote. Ten
/// concurrent writers of one case would be an unusual incident room.
const APPEND_ATTEMPTS: u32 = 16;
/// case.json, custody records and the manifest are small; anything bigger is not ours.
pub(crate) const SMALL_OBJECT_LIMIT: usize = 64 << 20;

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
    /// File name, e.g. `containment-prior-state.json`.
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

pub fn case_prefix(case: &str) -> String {
    format!("cases/{case}/")
}
pub fn case_key(case: &str) -> String {
    format!("cases/{case}/case.json")
}
pub fn manifest_key(case: &str) -> String {
    format!("cases/{case}/manifest.json")
}
pub fn custody_prefix(case: &str) -> String {
    format!("cases/{case}/custody/")
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
    items: BTreeMap<String, ManifestItem>,
}

impl Chain {
    fn apply(&mut self, r: &CustodyRecord) {
        self.head = Some(ChainHead { seq: r.seq, hash: r.hash.clone() });
        if r.action == Action::EvidenceStored
            && let Some(item) =
                r.details.get("item").and_then(|v| serde_json::from_value::<ManifestItem>(v.clone()).ok())
        {
            self.items.entry(item.id.clone()).or_insert(item);
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
    chain: Mutex<Chain>,
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
    pub async fn open_with(
        store: Arc<dyn ObjectStore>,
        case: &CaseId,
        actor: Actor,
        tool: ToolInfo,
        config_digest: String,
        retention: Retention,
    ) -> Result<Case, EvidenceError> {
        let host = HostInfo::current();
        let this = Case {
            inner: Arc::new(Inner {
                store,
                case: case.clone(),
                actor,
                tool,
                host,
                retention,
                chain: Mutex::new(Chain::default()),
            }),
        };
        let case_ref = this.ensure_case_file(&config_digest).await?;
        let mut chain = this.inner.chain.lock().await;
        this.catch_up(&mut chain, None).await?;
        let empty = chain.head.is_none();
        drop(chain);
        if empty {
            this.record(CustodyEvent {
                action: Action::CaseOpened,
                subject: format!("case:{case}"),
                evidence: vec![case_ref],
                aws_request_ids: vec![],
                details: serde_json::json!({ "config_digest": config_digest }),
            })
            .await?;
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
        self.inner.chain.lock().await.items.values().cloned().collect()
    }

    fn case_str(&self) -> &str {
        self.inner.case.as_str()
    }

    async fn ensure_case_file(&self, config_digest: &str) -> Result<EvidenceRef, EvidenceError> {
        let store = &self.inner.store;
        let key = case_key(self.case_str());
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
            Ok(w) => w.version_id,
            Err(e) if e.is(StoreErrorKind::PreconditionFailed) => None,
            Err(e) => return Err(EvidenceError::store(format!("creating {key}"))(e)),
        };
        // Read back what is there (ours, or the one another process wrote first).
        let stored = get_all(store.as_ref(), &key, version_id.as_deref(), SMALL_OBJECT_LIMIT)
            .await
            .map_err(EvidenceError::store(format!("reading back {key}")))?;
        if version_id.is_some() && stored != bytes {
            return Err(EvidenceError::ReadBackMismatch {
                key,
                version_id,
                expected: digest::sha256_tagged(&bytes),
                found: digest::sha256_tagged(&stored),
            });
        }
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
        let version_id = match version_id {
            Some(v) => Some(v),
            None => store
                .head(&key, None)
                .await
                .map_err(EvidenceError::store(format!("HEAD {key}")))?
                .and_then(|m| m.version_id),
        };
        Ok(EvidenceRef {
            id: "case.json".into(),
            sha256: digest::sha256_tagged(&stored),
            s3_key: key,
            version_id,
        })
    }

    /// Reads records after the known head until the first absent one, checking each
    /// one's hash and link. `ours`: the hash of a record we tried to write at the next
    /// seq (a retried PUT that had succeeded reads back as ours).
    async fn catch_up(&self, chain: &mut Chain, ours: Option<&str>) -> Result<bool, EvidenceError> {
        let case = self.case_str();
        let mut found_ours = false;
        loop {
            let seq = chain.head.as_ref().map_or(1, |h| h.seq + 1);
            let key = record_key(case, seq);
            let bytes = match get_all(self.inner.store.as_ref(), &key, None, SMALL_OBJECT_LIMIT).await {
                Ok(b) => b,
                Err(e) if e.is(StoreErrorKind::NotFound) => return Ok(found_ours),
                Err(e) => return Err(EvidenceError::store(format!("reading custody record {seq}"))(e)),
            };
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
            match record {
                Some(r) if findings.is_empty() => {
                    if ours == Some(r.hash.as_str()) {
                        found_ours = true;
                    }
                    chain.apply(&r);
                }
                _ => return Err(EvidenceError::ChainBroken { case: case.into(), findings }),
            }
        }
    }

    /// Appends one custody record. Fork-proof: the record is written only if its key
    /// (its sequence number) is still free; when another process took it, this one
    /// reads that record, checks it, and retries at the next number.
    pub async fn record(&self, event: CustodyEvent) -> Result<CustodyReceipt, EvidenceError> {
        let case = self.case_str();
        let mut chain = self.inner.chain.lock().await;
        for _ in 0..APPEND_ATTEMPTS {
            let seq = chain.head.as_ref().map_or(1, |h| h.seq + 1);
            let now = OffsetDateTime::now_utc();
            let (record, bytes) = CustodyRecord {
                schema: SCHEMA.into(),
                seq,
                case: case.into(),
                time: utc_ms(now),
                clock: CLOCK_SOURCE.into(),
                actor: self.inner.actor.clone(),
                host: self.inner.host.clone(),
                tool: self.inner.tool.clone(),
                action: event.action,
                subject: event.subject.clone(),
                evidence: event.evidence.clone(),
                aws_request_ids: event.aws_request_ids.clone(),
                details: event.details.clone(),
                prev: chain.head.as_ref().map(|h| h.hash.clone()),
                hash: String::new(),
            }
            .seal();
            let key = record_key(case, seq);
            let put = PutObject {
                key: key.clone(),
                sha256_b64: b64(&sha256_raw(&bytes)),
                body: bytes.clone().into(),
                content_type: "application/json",
                lock: self.inner.retention.lock(now),
                if_absent: true,
            };
            match self.inner.store.put(put).await {
                Ok(w) => {
                    let back =
                        get_all(self.inner.store.as_ref(), &key, w.version_id.as_deref(), SMALL_OBJECT_LIMIT)
                            .await
                            .map_err(EvidenceError::store(format!("reading back custody record {seq}")))?;
                    if back != bytes {
                        return Err(EvidenceError::ReadBackMismatch {
                            key,
                            version_id: w.version_id,
                            expected: record.hash.clone(),
                            found: digest::sha256_tagged(&back),
                        });
                    }
                    chain.apply(&record);
                    return Ok(CustodyReceipt {
                        seq,
                        hash: record.hash,
                        s3_key: key,
                        version_id: w.version_id,
                    });
                }
                Err(e) if e.is(StoreErrorKind::PreconditionFailed) => {
                    if self.catch_up(&mut chain, Some(&record.hash)).await? {
                        // Our own earlier attempt landed (a retried request).
                        let version_id =
                            self.inner.store.head(&key, None).await.ok().flatten().and_then(|m| m.version_id);
                        return Ok(CustodyReceipt { seq, hash: record.hash, s3_key: key, version_id });
                    }
                    tracing::debug!(case, seq, "custody seq taken by another writer; caught up and retrying");
                }
                Err(e) => return Err(EvidenceError::store(format!("writing custody record {seq}"))(e)),
            }
        }
        let seq = chain.head.as_ref().map_or(1, |h| h.seq + 1);
        Err(EvidenceError::ChainContended { case: case.into(), seq, attempts: APPEND_ATTEMPTS })
    }

    /// The stored item with this id, if any (re-reads the chain tail first, so items
    /// stored by another process are found).
    pub async fn find_item(&self, id: &str) -> Result<Option<EvidenceRef>, EvidenceError> {
        let mut chain = self.inner.chain.lock().await;
        self.catch_up(&mut chain, None).await?;
        Ok(chain.items.get(id).map(ManifestItem::evidence_ref))
    }

    pub(crate) async fn known(&self, id: &str) -> Option<EvidenceRef> {
        self.inner.chain.lock().await.items.get(id).map(ManifestItem::evidence_ref)
    }

    fn evidence_key(&self, item: &NewItem) -> Result<String, EvidenceError> {
        let bad = |field: &'static str, problem: &str| EvidenceError::InvalidItem {
            id: item.id.clone(),
            field,
            problem: problem.into(),
        };
        if item.id.trim().is_empty() {
            return Err(bad("id", "is empty"));
        }
        for (field, value) in [("subject", &item.subject), ("name", &item.name)] {
            if value.is_empty() || value.len() > 200 {
                return Err(bad(field, "must be 1 to 200 characters"));
            }
            if value == "." || value == ".." || value.contains('/') || value.contains('\\') {
                return Err(bad(field, "must not be '.', '..' or contain a path separator"));
            }
            if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:+=@,".contains(&b)) {
                return Err(bad(field, "may contain only letters, digits and ._-:+=@,"));
            }
        }
        Ok(format!("cases/{}/evidence/{}/{}/{}", self.case_str(), item.account, item.subject, item.name))
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
        let stored = upload::store_bytes(
            self.inner.store.as_ref(),
            &item.id,
            &key,
            bytes.into(),
            "application/json",
            self.lock_now(),
        )
        .await?;
        self.finish_item(item, key, stored).await
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
        let stored = upload::store_bytes(
            self.inner.store.as_ref(),
            &item.id,
            &key,
            bytes.into(),
            content_type,
            self.lock_now(),
        )
        .await?;
        self.finish_item(item, key, stored).await
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
        self.finish_item(item, key, stored).await
    }

    /// The lock of an object written now (the operational journal uses the case's).
    pub fn lock_now_for_journal(&self) -> ObjectLock {
        self.lock_now()
    }

    pub(crate) fn lock_now_pub(&self) -> ObjectLock {
        self.lock_now()
    }

    fn lock_now(&self) -> ObjectLock {
        self.inner.retention.lock(OffsetDateTime::now_utc())
    }

    async fn finish_item(
        &self,
        item: NewItem,
        key: String,
        stored: upload::Stored,
    ) -> Result<EvidenceRef, EvidenceError> {
        let meta = self
            .inner
            .store
            .head(&key, stored.version_id.as_deref())
            .await
            .map_err(EvidenceError::store(format!("HEAD {key}")))?;
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
            s3_key: key.clone(),
            version_id: stored.version_id.clone(),
            s3_checksum_sha256: stored.s3_checksum,
            part_size: stored.part_size,
            lock_mode: meta.as_ref().and_then(|m| m.lock_mode),
            retain_until: meta.as_ref().and_then(|m| m.retain_until).map(utc_ms),
            legal_hold: meta.as_ref().is_some_and(|m| m.legal_hold),
        };
        let evidence = manifest_item.evidence_ref();
        self.record(CustodyEvent {
            action: Action::EvidenceStored,
            subject: item.subject,
            evidence: vec![evidence.clone()],
            aws_request_ids: stored.request_ids,
            details: serde_json::json!({ "item": manifest_item, "adopted_existing_object": stored.adopted }),
        })
        .await?;
        Ok(evidence)
    }

    /// Writes `manifest.json` (a new version each time) listing every item and the
    /// custody head, and records `manifest_sealed` with its digest and version.
    pub async fn seal(&self) -> Result<(Manifest, EvidenceRef), EvidenceError> {
        let (items, head) = {
            let mut chain = self.inner.chain.lock().await;
            self.catch_up(&mut chain, None).await?;
            (chain.items.values().cloned().collect::<Vec<_>>(), chain.head.clone())
        };
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA.into(),
            case: self.case_str().into(),
            sealed_at: utc_ms(OffsetDateTime::now_utc()),
            custody_head: head,
            items,
        };
        let key = manifest_key(self.case_str());
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
        let back = get_all(self.inner.store.as_ref(), &key, w.version_id.as_deref(), SMALL_OBJECT_LIMIT)
            .await
            .map_err(EvidenceError::store(format!("reading back {key}")))?;
        if back != bytes {
            return Err(EvidenceError::ReadBackMismatch {
                key,
                version_id: w.version_id,
                expected: digest::sha256_tagged(&bytes),
                found: digest::sha256_tagged(&back),
            });
        }
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

    /// Stores a small non-JSON object of the case (e.g. a report), locked and read
    /// back; not an evidence item of the manifest. Returns its reference.
    pub async fn store_case_object(
        &self,
        relative: &str,
        body: Vec<u8>,
        content_type: &'static str,
    ) -> Result<EvidenceRef, EvidenceError> {
        let key = format!("cases/{}/{relative}", self.case_str());
        let mut stored = upload::store_bytes_versioned(
            self.inner.store.as_ref(),
            relative,
            &key,
            body.into(),
            content_type,
            self.lock_now(),
        )
        .await?;
        Ok(EvidenceRef {
            id: relative.into(),
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
