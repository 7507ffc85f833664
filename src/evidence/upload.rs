//! Writing evidence bytes: one PUT for small objects, a streaming multipart upload
//! (per-part SHA-256 checksums, parts in parallel, bounded memory) for large ones,
//! the three digests computed in the same pass, and always a read-back.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::digest::{self, Digests, MultiHasher, b64, composite_sha256, sha256_raw};
use super::error::EvidenceError;
use super::store::{ObjectLock, ObjectStore, Part, PutObject, StoreErrorKind, get_all};
use crate::progress::Reporter;

/// Up to this size an item is read into memory and sent in one PUT.
pub const SINGLE_PUT_MAX: u64 = 16 << 20;
/// Smallest part we send. S3's minimum is 5 MiB; 16 MiB keeps a 100 GiB image at
/// 6,400 parts (limit 10,000) and a part's retry cheap.
pub const MIN_PART_SIZE: u64 = 16 << 20;
/// S3 allows at most 10,000 parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest object we write: 5 TiB, the limit every region documents (REFERENCE.md notes
/// larger objects are announced; not relied on until checked). At 10,000 parts that
/// is 525 MiB parts, well under S3's 5 GiB part limit.
pub const MAX_OBJECT: u64 = 5 << 40;
/// Parts in flight at once. Memory is about (PART_CONCURRENCY + READ_AHEAD +
/// HASH_QUEUE + 1) parts: 4 + 1 + 2 + 1 = 8 x 16 MiB = 128 MiB at the default size.
pub const PART_CONCURRENCY: usize = 4;
const READ_AHEAD: usize = 1;
const HASH_QUEUE: usize = 2;
/// Reading back a big object is streamed; small case objects are read whole.
const READ_CHUNK_TARGET: usize = 1 << 20;

/// The outcome of writing one item.
#[derive(Debug, Clone)]
pub struct Stored {
    pub digests: Digests,
    pub version_id: Option<String>,
    /// What S3 keeps: base64 SHA-256, or `<b64>-<parts>` for multipart.
    pub s3_checksum: String,
    pub part_size: Option<u64>,
    pub request_ids: Vec<String>,
    /// The object was already there with the same bytes (a rerun after a crash).
    pub adopted: bool,
}

/// The part size for an object of `size` bytes: at least [`MIN_PART_SIZE`], whole MiB,
/// and few enough parts for S3.
pub fn part_size_for(size: u64) -> u64 {
    let need = size.div_ceil(MAX_PARTS);
    let mib = 1 << 20;
    need.div_ceil(mib).max(1).saturating_mul(mib).max(MIN_PART_SIZE)
}

pub(crate) async fn store_bytes(
    store: &dyn ObjectStore,
    id: &str,
    key: &str,
    body: Bytes,
    content_type: &'static str,
    lock: ObjectLock,
) -> Result<Stored, EvidenceError> {
    put_small(store, id, key, body, content_type, lock, true).await
}

/// A small object that may get new versions (reports): no `If-None-Match`.
pub(crate) async fn store_bytes_versioned(
    store: &dyn ObjectStore,
    id: &str,
    key: &str,
    body: Bytes,
    content_type: &'static str,
    lock: ObjectLock,
) -> Result<Stored, EvidenceError> {
    put_small(store, id, key, body, content_type, lock, false).await
}

async fn put_small(
    store: &dyn ObjectStore,
    id: &str,
    key: &str,
    body: Bytes,
    content_type: &'static str,
    lock: ObjectLock,
    if_absent: bool,
) -> Result<Stored, EvidenceError> {
    let digests = digest::digests_of(&body);
    match put(store, key, body.clone(), content_type, &lock, if_absent).await? {
        Some(stored) => {
            read_back(store, key, stored.version_id.as_deref(), &body).await?;
            Ok(stored)
        }
        None => {
            let existing = read_hash(store, key, None).await?;
            if existing.0.sha256 != digests.sha256 {
                return Err(EvidenceError::Conflict {
                    id: id.into(),
                    key: key.into(),
                    existing: existing.0.sha256,
                    new: digests.sha256,
                });
            }
            Ok(Stored {
                s3_checksum: b64(&sha256_raw(&body)),
                digests,
                version_id: existing.1,
                part_size: None,
                request_ids: vec![],
                adopted: true,
            })
        }
    }
}

/// One PUT of a new small object, `If-None-Match`, S3 checking its SHA-256; not read
/// back yet (see [`read_back`]). `None`: the key is taken.
pub(crate) async fn put_unread(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    content_type: &'static str,
    lock: &ObjectLock,
) -> Result<Option<Stored>, EvidenceError> {
    put(store, key, body, content_type, lock, true).await
}

async fn put(
    store: &dyn ObjectStore,
    key: &str,
    body: Bytes,
    content_type: &'static str,
    lock: &ObjectLock,
    if_absent: bool,
) -> Result<Option<Stored>, EvidenceError> {
    let digests = digest::digests_of(&body);
    let sha_b64 = b64(&sha256_raw(&body));
    let put = PutObject {
        key: key.into(),
        body,
        sha256_b64: sha_b64.clone(),
        content_type,
        lock: lock.clone(),
        if_absent,
    };
    match store.put(put).await {
        Ok(w) => {
            if let Some(stored) = &w.checksum_sha256
                && stored != &sha_b64
            {
                return Err(EvidenceError::ChecksumMismatch {
                    key: key.into(),
                    sent: sha_b64,
                    stored: stored.clone(),
                });
            }
            Ok(Some(Stored {
                digests,
                version_id: w.version_id,
                s3_checksum: sha_b64,
                part_size: None,
                request_ids: w.request_id.into_iter().collect(),
                adopted: false,
            }))
        }
        Err(e) if e.is(StoreErrorKind::PreconditionFailed) => Ok(None),
        Err(e) => Err(EvidenceError::store(format!("writing {key}"))(e)),
    }
}

/// Reads a version just written and compares it with what was sent.
pub(crate) async fn read_back(
    store: &dyn ObjectStore,
    key: &str,
    version_id: Option<&str>,
    sent: &[u8],
) -> Result<(), EvidenceError> {
    let back = get_all(store, key, version_id, sent.len() + 1)
        .await
        .map_err(EvidenceError::store(format!("reading back {key}")))?;
    if back != sent {
        return Err(EvidenceError::ReadBackMismatch {
            key: key.into(),
            version_id: version_id.map(str::to_owned),
            expected: digest::sha256_tagged(sent),
            found: digest::sha256_tagged(&back),
        });
    }
    Ok(())
}

/// Streams an object through the three digests (and part digests when `part_size`);
/// returns the digests, the version read, and the part digests.
pub(crate) async fn read_hash(
    store: &dyn ObjectStore,
    key: &str,
    version_id: Option<&str>,
) -> Result<(Digests, Option<String>), EvidenceError> {
    let meta = store.head(key, version_id).await.map_err(EvidenceError::store(format!("HEAD {key}")))?;
    let version = meta.and_then(|m| m.version_id).or(version_id.map(str::to_owned));
    let (d, _) = hash_stream(store, key, version.as_deref(), None).await?;
    Ok((d, version))
}

pub async fn hash_stream(
    store: &dyn ObjectStore,
    key: &str,
    version_id: Option<&str>,
    part_size: Option<u64>,
) -> Result<(Digests, Vec<Vec<u8>>), EvidenceError> {
    let mut body =
        store.get(key, version_id).await.map_err(EvidenceError::store(format!("reading {key}")))?;
    let mut hasher = MultiHasher::new();
    if let Some(p) = part_size {
        hasher = hasher.with_parts(p, 4);
    }
    let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK_TARGET);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(EvidenceError::store(format!("reading {key}")))?;
        buf.extend_from_slice(&chunk);
        if buf.len() >= READ_CHUNK_TARGET {
            hasher.update(buf.split().freeze()).await;
        }
    }
    if !buf.is_empty() {
        hasher.update(buf.freeze()).await;
    }
    Ok(hasher.finish_with_parts().await)
}

/// Hashes a local file (a rerun comparing with what is already stored).
async fn hash_file(path: &Path) -> Result<Digests, EvidenceError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f =
            std::fs::File::open(&path).map_err(|source| EvidenceError::Io { path: path.clone(), source })?;
        let mut h = MultiHasher::with_queue(HASH_QUEUE);
        loop {
            let mut buf = vec![0u8; 8 << 20];
            let n = read_full(&mut f, &mut buf)
                .map_err(|source| EvidenceError::Io { path: path.clone(), source })?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            h.update_blocking(Bytes::from(buf));
        }
        Ok(h.finish_blocking())
    })
    .await
    .expect("hashing task does not panic")
}

fn read_full(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

pub(crate) async fn store_file(
    store: Arc<dyn ObjectStore>,
    id: &str,
    key: &str,
    path: &Path,
    content_type: &'static str,
    lock: ObjectLock,
    reporter: &dyn Reporter,
) -> Result<Stored, EvidenceError> {
    let io = |source| EvidenceError::Io { path: path.to_owned(), source };
    let size = tokio::fs::metadata(path).await.map_err(io)?.len();
    if size > MAX_OBJECT {
        return Err(EvidenceError::TooLarge { path: path.to_owned(), size, max: MAX_OBJECT });
    }
    if size <= SINGLE_PUT_MAX {
        let body = tokio::fs::read(path).await.map_err(io)?;
        return store_bytes(store.as_ref(), id, key, body.into(), content_type, lock).await;
    }
    // Find before create: a rerun after a crash finds the object already there.
    if store.head(key, None).await.map_err(EvidenceError::store(format!("HEAD {key}")))?.is_some() {
        let ours = hash_file(path).await?;
        let (theirs, version_id) = read_hash(store.as_ref(), key, None).await?;
        if theirs.sha256 != ours.sha256 {
            return Err(EvidenceError::Conflict {
                id: id.into(),
                key: key.into(),
                existing: theirs.sha256,
                new: ours.sha256,
            });
        }
        let part_size = part_size_for(size);
        let (_, parts) = hash_stream(store.as_ref(), key, version_id.as_deref(), Some(part_size)).await?;
        return Ok(Stored {
            digests: ours,
            version_id,
            s3_checksum: composite_sha256(&parts),
            part_size: Some(part_size),
            request_ids: vec![],
            adopted: true,
        });
    }
    multipart(store, key, path, content_type, lock, reporter).await
}

/// A completed multipart upload, before any read-back.
#[derive(Debug, Clone)]
pub struct Sent {
    pub digests: Digests,
    pub part_digests: Vec<Vec<u8>>,
    pub composite: String,
    pub written: super::store::Written,
    pub part_size: u64,
}

/// Uploads `path` as one multipart object: parts read once, sent [`PART_CONCURRENCY`]
/// at a time with their SHA-256 checksums; with `digests`, the same parts also feed
/// the SHA-256/SHA-1/MD5 threads. No read-back: callers do that (the benchmark
/// compares this with and without `digests`).
pub async fn send_multipart(
    store: Arc<dyn ObjectStore>,
    key: &str,
    path: &Path,
    content_type: &'static str,
    lock: &ObjectLock,
    digests: bool,
    reporter: &dyn Reporter,
) -> Result<Sent, EvidenceError> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|source| EvidenceError::Io { path: path.to_owned(), source })?
        .len();
    let part_size = part_size_for(size);
    let upload_id = store
        .create_multipart(key, content_type, lock)
        .await
        .map_err(EvidenceError::store(format!("starting the upload of {key}")))?;
    let result = upload_parts(store.clone(), key, &upload_id, path, size, digests, reporter).await;
    let (digests, parts) = match result {
        Ok(r) => r,
        Err(e) => {
            if let Err(abort) = store.abort_multipart(key, &upload_id).await {
                reporter.warn(key, &format!("could not abort the failed upload {upload_id}: {abort}"));
            }
            return Err(e);
        }
    };
    let part_digests: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| {
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &p.sha256_b64)
                .unwrap_or_default()
        })
        .collect();
    let composite = composite_sha256(&part_digests);
    let written = match store.complete_multipart(key, &upload_id, &parts, true).await {
        Ok(w) => w,
        Err(e) => {
            if let Err(abort) = store.abort_multipart(key, &upload_id).await {
                reporter.warn(key, &format!("could not abort the failed upload {upload_id}: {abort}"));
            }
            return Err(EvidenceError::store(format!("completing the upload of {key}"))(e));
        }
    };
    Ok(Sent { digests, part_digests, composite, written, part_size })
}

async fn multipart(
    store: Arc<dyn ObjectStore>,
    key: &str,
    path: &Path,
    content_type: &'static str,
    lock: ObjectLock,
    reporter: &dyn Reporter,
) -> Result<Stored, EvidenceError> {
    let Sent { digests, part_digests, composite, written: w, part_size } =
        send_multipart(store.clone(), key, path, content_type, &lock, true, reporter).await?;
    if let Some(stored) = &w.checksum_sha256
        && stored != &composite
        && stored.split('-').next() != composite.split('-').next()
    {
        return Err(EvidenceError::ChecksumMismatch {
            key: key.into(),
            sent: composite,
            stored: stored.clone(),
        });
    }
    // Some stores (moto) ignore the lock given at CreateMultipartUpload: check the
    // version and set the retention explicitly when it is missing or short.
    if let Some((mode, until)) = lock.retention {
        let meta = store
            .head(key, w.version_id.as_deref())
            .await
            .map_err(EvidenceError::store(format!("HEAD {key}")))?;
        let held = meta.as_ref().and_then(|m| m.lock_mode.zip(m.retain_until));
        if held.is_none_or(|(m, u)| m != mode || u.unix_timestamp() < until.unix_timestamp()) {
            reporter.warn(
                key,
                "the store did not apply the requested retention at upload; setting it on the version",
            );
            store
                .set_retention(key, w.version_id.as_deref(), mode, until)
                .await
                .map_err(EvidenceError::store(format!("setting retention on {key}")))?;
        }
    }
    // Read back: the whole object, streamed, must hash to what we read from disk.
    reporter.step(key, "reading back");
    let (back, back_parts) =
        hash_stream(store.as_ref(), key, w.version_id.as_deref(), Some(part_size)).await?;
    if back.sha256 != digests.sha256 || back.size != digests.size || back_parts != part_digests {
        return Err(EvidenceError::ReadBackMismatch {
            key: key.into(),
            version_id: w.version_id,
            expected: digests.sha256,
            found: back.sha256,
        });
    }
    reporter.done(key, &format!("{} bytes stored and read back, {}", digests.size, digests.sha256));
    Ok(Stored {
        digests,
        version_id: w.version_id,
        s3_checksum: composite,
        part_size: Some(part_size),
        request_ids: w.request_id.into_iter().collect(),
        adopted: false,
    })
}

/// Reads the file on a plain thread (parts to the uploaders, the same parts to the
/// digest threads) while up to [`PART_CONCURRENCY`] parts upload.
async fn upload_parts(
    store: Arc<dyn ObjectStore>,
    key: &str,
    upload_id: &str,
    path: &Path,
    size: u64,
    digests: bool,
    reporter: &dyn Reporter,
) -> Result<(Digests, Vec<Part>), EvidenceError> {
    let part_size = part_size_for(size);
    let (tx, rx) = mpsc::channel::<(i32, Bytes)>(READ_AHEAD);
    let reader_path = path.to_owned();
    let reader = std::thread::Builder::new()
        .name("evidence-reader".into())
        .spawn(move || -> Result<Digests, EvidenceError> {
            let io = |source| EvidenceError::Io { path: reader_path.clone(), source };
            let mut f = std::fs::File::open(&reader_path).map_err(io)?;
            let mut hasher = digests.then(|| MultiHasher::with_queue(HASH_QUEUE));
            let mut read = 0u64;
            let mut number = 0i32;
            loop {
                let mut buf = vec![0u8; part_size as usize];
                let n = read_full(&mut f, &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                let part = Bytes::from(buf);
                read += part.len() as u64;
                if let Some(h) = hasher.as_mut() {
                    h.update_blocking(part.clone());
                }
                number += 1;
                if tx.blocking_send((number, part)).is_err() {
                    // The uploaders stopped (an error); they report why.
                    break;
                }
            }
            Ok(match hasher {
                Some(h) => h.finish_blocking(),
                None => {
                    Digests { size: read, sha256: String::new(), sha1: String::new(), md5: String::new() }
                }
            })
        })
        .expect("spawning the reader thread");

    let done = AtomicU64::new(0);
    let parts_stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
    // Stops at the first failed part: the rest would be wasted (the upload is aborted);
    // dropping the stream closes the channel, which stops the reader.
    let uploaded: Result<Vec<Part>, EvidenceError> = parts_stream
        .map(|(number, body)| {
            let store = store.clone();
            let done = &done;
            async move {
                let len = body.len() as u64;
                let hash_body = body.clone();
                let sha = tokio::task::spawn_blocking(move || b64(&sha256_raw(&hash_body)))
                    .await
                    .expect("part hashing does not panic");
                let part = store
                    .upload_part(key, upload_id, number, body, &sha)
                    .await
                    .map_err(EvidenceError::store(format!("uploading part {number} of {key}")))?;
                let now = done.fetch_add(len, Ordering::Relaxed) + len;
                reporter.bytes(key, now, Some(size));
                Ok(part)
            }
        })
        .buffer_unordered(PART_CONCURRENCY)
        .try_collect()
        .await;
    let digests = tokio::task::spawn_blocking(move || reader.join())
        .await
        .expect("join task does not panic")
        .map_err(|_| EvidenceError::Interrupted {
            key: key.into(),
            message: "the file reader panicked".into(),
        })??;
    let mut parts = uploaded?;
    if digests.size != size {
        return Err(EvidenceError::Interrupted {
            key: key.into(),
            message: format!(
                "the file changed while it was read: {size} bytes expected, {} read",
                digests.size
            ),
        });
    }
    parts.sort_by_key(|p| p.number);
    Ok((digests, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_respect_s3_limits() {
        assert_eq!(part_size_for(1), MIN_PART_SIZE);
        assert_eq!(part_size_for(4 << 30), MIN_PART_SIZE);
        let big = 1u64 << 40; // 1 TiB
        let p = part_size_for(big);
        assert!(big.div_ceil(p) <= MAX_PARTS && p % (1 << 20) == 0, "{p}");
    }
}
