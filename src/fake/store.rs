//! An in-memory versioned, Object-Lock-enforcing object store behind
//! [`ObjectStore`], with fault injection for what no emulator produces: the Nth write
//! failing, a crash (every call failing from some write on, as if the process died),
//! throttling, and tampering AWS would never allow (for the verify tamper suite).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::evidence::digest::{b64, composite_sha256, sha256_raw};
use crate::evidence::store::{
    ByteChunks, LockMode, ObjectLock, ObjectMeta, ObjectStore, Part, PutObject, StoreError, StoreErrorKind,
    Version, Written,
};

#[derive(Debug, Clone)]
struct Obj {
    version_id: String,
    body: Option<Bytes>, // None: delete marker
    checksum: Option<String>,
    lock: Option<(LockMode, OffsetDateTime)>,
    legal_hold: bool,
}

#[derive(Debug, Default)]
struct Upload {
    key: String,
    lock: Option<ObjectLock>,
    parts: BTreeMap<i32, (Bytes, String)>,
}

/// Faults to inject; counts are over write calls (PUT, UploadPart, Complete).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// The Nth write (1-based) fails once with a connection error.
    pub fail_write: Option<u64>,
    /// From the Nth write on, every call fails: the process "died" there.
    pub crash_at_write: Option<u64>,
    /// The next N calls of any kind answer throttled.
    pub throttle_calls: u64,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Vec<Obj>>,
    uploads: BTreeMap<String, Upload>,
    next_version: u64,
    writes: u64,
    calls: u64,
    faults: Faults,
    peak_part_bytes_in_flight: u64,
}

/// The in-memory store. `bucket_default`: the retention applied when a write asks
/// for none (the bucket's default rule).
#[derive(Debug)]
pub struct MemoryStore {
    name: String,
    bucket_default: Option<(LockMode, time::Duration)>,
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), bucket_default: None, state: Mutex::new(State::default()) }
    }

    /// A store whose bucket default locks every object in `mode` for `days`.
    pub fn with_default_lock(name: &str, mode: LockMode, days: i64) -> Self {
        Self {
            name: name.into(),
            bucket_default: Some((mode, time::Duration::days(days))),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake store lock")
    }

    pub fn set_faults(&self, faults: Faults) {
        let mut s = self.state();
        s.faults = faults;
        s.writes = 0;
    }

    /// Write calls so far (since the last `set_faults`).
    pub fn writes(&self) -> u64 {
        self.state().writes
    }

    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// Open multipart uploads (a crash leaves them; S3's lifecycle rule aborts them).
    pub fn open_uploads(&self) -> usize {
        self.state().uploads.len()
    }

    fn call(&self, op: &'static str, key: &str, write: bool) -> Result<(), StoreError> {
        let mut s = self.state();
        s.calls += 1;
        if write {
            s.writes += 1;
        }
        let loc = format!("{}/{key}", self.name);
        if let Some(n) = s.faults.crash_at_write
            && s.writes >= n
        {
            return Err(StoreError::new(
                StoreErrorKind::Unreachable,
                op,
                loc,
                "injected crash: the process is gone",
            ));
        }
        if s.faults.throttle_calls > 0 {
            s.faults.throttle_calls -= 1;
            return Err(StoreError::new(StoreErrorKind::Throttled, op, loc, "SlowDown (injected)"));
        }
        if write && s.faults.fail_write == Some(s.writes) {
            return Err(StoreError::new(StoreErrorKind::Unreachable, op, loc, "injected connection reset"));
        }
        Ok(())
    }

    fn latest(s: &State, key: &str) -> Option<Obj> {
        s.objects.get(key).and_then(|v| v.last()).cloned()
    }

    fn insert(&self, s: &mut State, key: &str, body: Bytes, checksum: String, lock: &ObjectLock) -> String {
        s.next_version += 1;
        let version_id = format!("v{:06}", s.next_version);
        let now = OffsetDateTime::now_utc();
        let lock_value = lock.retention.or(self.bucket_default.map(|(m, d)| (m, now + d)));
        s.objects.entry(key.into()).or_default().push(Obj {
            version_id: version_id.clone(),
            body: Some(body),
            checksum: Some(checksum),
            lock: lock_value,
            legal_hold: lock.legal_hold,
        });
        version_id
    }

    // --- Tampering: what an attacker with write access (or AWS without COMPLIANCE) could do.

    /// Puts a new version of `key` (allowed by Object Lock: versions are added).
    pub fn tamper_new_version(&self, key: &str, body: Vec<u8>) {
        let mut s = self.state();
        let checksum = b64(&sha256_raw(&body));
        self.insert(&mut s, key, body.into(), checksum, &ObjectLock { retention: None, legal_hold: false });
    }

    /// Replaces the bytes of the latest version in place (impossible on S3; models a
    /// forged copy in a downloaded folder or a compromised store).
    pub fn tamper_rewrite(&self, key: &str, body: Vec<u8>) {
        let mut s = self.state();
        if let Some(o) = s.objects.get_mut(key).and_then(|v| v.last_mut()) {
            o.checksum = Some(b64(&sha256_raw(&body)));
            o.body = Some(body.into());
        }
    }

    /// Removes every version of `key` (impossible under COMPLIANCE).
    pub fn tamper_delete(&self, key: &str) {
        self.state().objects.remove(key);
    }

    /// Removes the retention of every version of `key` (impossible under COMPLIANCE).
    pub fn tamper_remove_retention(&self, key: &str) {
        if let Some(v) = self.state().objects.get_mut(key) {
            for o in v {
                o.lock = None;
            }
        }
    }

    /// The bytes of the latest version.
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        Self::latest(&self.state(), key).and_then(|o| o.body).map(|b| b.to_vec())
    }

    /// Largest total of part bytes held at once (bounded-memory checks).
    pub fn peak_part_bytes(&self) -> u64 {
        self.state().peak_part_bytes_in_flight
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn location(&self) -> String {
        format!("memory://{}", self.name)
    }

    async fn put(&self, req: PutObject) -> Result<Written, StoreError> {
        self.call("PutObject", &req.key, true)?;
        let mut s = self.state();
        let computed = b64(&sha256_raw(&req.body));
        if computed != req.sha256_b64 {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "PutObject",
                &req.key,
                "BadDigest: checksum does not match",
            ));
        }
        if req.if_absent && Self::latest(&s, &req.key).is_some_and(|o| o.body.is_some()) {
            return Err(StoreError::new(
                StoreErrorKind::PreconditionFailed,
                "PutObject",
                &req.key,
                "PreconditionFailed",
            ));
        }
        let version_id = self.insert(&mut s, &req.key, req.body, computed.clone(), &req.lock);
        Ok(Written {
            version_id: Some(version_id),
            checksum_sha256: Some(computed),
            request_id: Some(format!("fake-{}", s.calls)),
        })
    }

    async fn create_multipart(
        &self,
        key: &str,
        _: &'static str,
        lock: &ObjectLock,
    ) -> Result<String, StoreError> {
        self.call("CreateMultipartUpload", key, false)?;
        let mut s = self.state();
        s.next_version += 1;
        let id = format!("upload-{}", s.next_version);
        s.uploads
            .insert(id.clone(), Upload { key: key.into(), lock: Some(lock.clone()), parts: BTreeMap::new() });
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        sha256_b64: &str,
    ) -> Result<Part, StoreError> {
        self.call("UploadPart", key, true)?;
        let mut s = self.state();
        if b64(&sha256_raw(&body)) != sha256_b64 {
            return Err(StoreError::new(StoreErrorKind::Other, "UploadPart", key, "BadDigest"));
        }
        let held: u64 = s.uploads.values().flat_map(|u| u.parts.values()).map(|(b, _)| b.len() as u64).sum();
        s.peak_part_bytes_in_flight = s.peak_part_bytes_in_flight.max(held + body.len() as u64);
        let up = s
            .uploads
            .get_mut(upload_id)
            .ok_or_else(|| StoreError::new(StoreErrorKind::NotFound, "UploadPart", key, "NoSuchUpload"))?;
        let etag = format!("\"etag-{number}\"");
        up.parts.insert(number, (body, sha256_b64.into()));
        Ok(Part { number, etag, sha256_b64: sha256_b64.into() })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        if_absent: bool,
    ) -> Result<Written, StoreError> {
        self.call("CompleteMultipartUpload", key, true)?;
        let mut s = self.state();
        if if_absent && Self::latest(&s, key).is_some_and(|o| o.body.is_some()) {
            return Err(StoreError::new(
                StoreErrorKind::PreconditionFailed,
                "CompleteMultipartUpload",
                key,
                "PreconditionFailed",
            ));
        }
        let up = s.uploads.remove(upload_id).ok_or_else(|| {
            StoreError::new(StoreErrorKind::NotFound, "CompleteMultipartUpload", key, "NoSuchUpload")
        })?;
        if up.key != key {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                "CompleteMultipartUpload",
                key,
                "NoSuchUpload for this key",
            ));
        }
        let mut body = Vec::new();
        let mut digests = Vec::new();
        for p in parts {
            let (b, sha) = up.parts.get(&p.number).ok_or_else(|| {
                StoreError::new(
                    StoreErrorKind::Other,
                    "CompleteMultipartUpload",
                    key,
                    format!("InvalidPart {}", p.number),
                )
            })?;
            if sha != &p.sha256_b64 {
                return Err(StoreError::new(
                    StoreErrorKind::Other,
                    "CompleteMultipartUpload",
                    key,
                    "InvalidPart checksum",
                ));
            }
            digests.push(sha256_raw(b));
            body.extend_from_slice(b);
        }
        let composite = composite_sha256(&digests);
        let lock = up.lock.unwrap_or(ObjectLock { retention: None, legal_hold: false });
        let version_id = self.insert(&mut s, key, body.into(), composite.clone(), &lock);
        Ok(Written {
            version_id: Some(version_id),
            checksum_sha256: Some(composite),
            request_id: Some(format!("fake-{}", s.calls)),
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.call("AbortMultipartUpload", key, false)?;
        self.state().uploads.remove(upload_id);
        Ok(())
    }

    async fn set_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        mode: LockMode,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.call("PutObjectRetention", key, true)?;
        let mut s = self.state();
        let obj = s
            .objects
            .get_mut(key)
            .and_then(|vs| vs.iter_mut().rev().find(|o| version_id.is_none_or(|v| o.version_id == v)))
            .ok_or_else(|| {
                StoreError::new(StoreErrorKind::NotFound, "PutObjectRetention", key, "NoSuchVersion")
            })?;
        if let Some((LockMode::Compliance, old)) = obj.lock
            && (old > until || mode != LockMode::Compliance)
        {
            return Err(StoreError::new(
                StoreErrorKind::AccessDenied,
                "PutObjectRetention",
                key,
                "AccessDenied: COMPLIANCE retention cannot be shortened",
            ));
        }
        obj.lock = Some((mode, until));
        Ok(())
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> Result<ByteChunks, StoreError> {
        self.call("GetObject", key, false)?;
        let s = self.state();
        let obj = match version_id {
            Some(v) => s.objects.get(key).and_then(|vs| vs.iter().find(|o| o.version_id == v)).cloned(),
            None => Self::latest(&s, key),
        };
        let body = obj
            .and_then(|o| o.body)
            .ok_or_else(|| StoreError::new(StoreErrorKind::NotFound, "GetObject", key, "NoSuchKey"))?;
        // Chunked like a network body.
        let chunks: Vec<Result<Bytes, StoreError>> = (0..body.len())
            .step_by(256 << 10)
            .map(|i| Ok(body.slice(i..(i + (256 << 10)).min(body.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn head(&self, key: &str, version_id: Option<&str>) -> Result<Option<ObjectMeta>, StoreError> {
        self.call("HeadObject", key, false)?;
        let s = self.state();
        let obj = match version_id {
            Some(v) => s.objects.get(key).and_then(|vs| vs.iter().find(|o| o.version_id == v)).cloned(),
            None => Self::latest(&s, key),
        };
        Ok(obj.and_then(|o| {
            o.body.as_ref().map(|b| ObjectMeta {
                key: key.into(),
                version_id: Some(o.version_id.clone()),
                size: b.len() as u64,
                checksum_sha256: o.checksum.clone(),
                lock_mode: o.lock.map(|l| l.0),
                retain_until: o.lock.map(|l| l.1),
                legal_hold: o.legal_hold,
            })
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.call("ListObjectsV2", prefix, false)?;
        let s = self.state();
        Ok(s.objects
            .iter()
            .filter(|(k, v)| k.starts_with(prefix) && v.last().is_some_and(|o| o.body.is_some()))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<Version>, StoreError> {
        self.call("ListObjectVersions", prefix, false)?;
        let s = self.state();
        let mut out = Vec::new();
        for (k, vs) in s.objects.iter().filter(|(k, _)| k.starts_with(prefix)) {
            // Newest first, as S3 lists the versions of a key.
            for (i, o) in vs.iter().enumerate().rev() {
                out.push(Version {
                    key: k.clone(),
                    version_id: Some(o.version_id.clone()),
                    is_latest: i + 1 == vs.len(),
                    delete_marker: o.body.is_none(),
                    last_modified: None,
                });
            }
        }
        Ok(out)
    }
}
