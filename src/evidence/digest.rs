//! Digests as evidence writes them: `sha256:<lowercase hex>`, and the three-digest pass
//! (SHA-256 primary; SHA-1 and MD5 for tools that know only those, such as E01) with
//! each algorithm on its own thread, fed the same chunks, so the pass runs at the
//! speed of the slowest digest rather than the sum of all three.

use std::thread::JoinHandle;

use base64::Engine;
use bytes::Bytes;
// md-5 0.10 (for its assembly core) implements the previous `digest` trait version.
use md5::{Digest as _, Md5};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Chunks queued per digest thread. With 8 MiB chunks this bounds what a slow digest
/// holds to 32 MiB (chunks are shared `Bytes`, not copies).
const QUEUE_CHUNKS: usize = 4;

/// The full-object digests of one evidence item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digests {
    pub size: u64,
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
}

pub fn sha256_raw(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_tagged(bytes: &[u8]) -> String {
    tagged("sha256", &sha256_raw(bytes))
}

pub fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(raw)
}

pub fn tagged(algorithm: &str, raw: &[u8]) -> String {
    format!("{algorithm}:{}", hex::encode(raw))
}

/// The raw bytes of a `sha256:<hex>` digest.
pub fn untag_sha256(tagged: &str) -> Option<Vec<u8>> {
    let hex = tagged.strip_prefix("sha256:")?;
    let raw = hex::decode(hex).ok()?;
    (raw.len() == 32 && hex.bytes().all(|b| !b.is_ascii_uppercase())).then_some(raw)
}

/// All three digests of an in-memory body.
pub fn digests_of(bytes: &[u8]) -> Digests {
    Digests {
        size: bytes.len() as u64,
        sha256: tagged("sha256", &Sha256::digest(bytes)),
        sha1: tagged("sha1", &Sha1::digest(bytes)),
        md5: tagged("md5", &Md5::digest(bytes)),
    }
}

/// S3's checksum of a multipart object uploaded with SHA-256 part checksums: the
/// SHA-256 of the concatenated raw part digests, base64, then `-<part count>`.
pub fn composite_sha256(part_digests: &[Vec<u8>]) -> String {
    let mut h = Sha256::new();
    for d in part_digests {
        h.update(d);
    }
    format!("{}-{}", b64(&h.finalize()), part_digests.len())
}

/// The thread computing per-part SHA-256 digests, and its queue.
type PartHasher = (mpsc::Sender<Bytes>, JoinHandle<Vec<Vec<u8>>>);

/// SHA-256, SHA-1 and MD5 over one stream, each on its own thread.
pub struct MultiHasher {
    senders: Vec<mpsc::Sender<Bytes>>,
    threads: Vec<JoinHandle<String>>,
    parts: Option<PartHasher>,
    size: u64,
}

/// One streaming digest, whichever `digest` trait version its crate implements.
pub trait StreamDigest: Send + 'static {
    fn start() -> Self;
    fn feed(&mut self, bytes: &[u8]);
    fn finish(self) -> Vec<u8>;
}

macro_rules! stream_digest {
    ($t:ty, $trait:path) => {
        impl StreamDigest for $t {
            fn start() -> Self {
                <$t as $trait>::new()
            }
            fn feed(&mut self, bytes: &[u8]) {
                <$t as $trait>::update(self, bytes)
            }
            fn finish(self) -> Vec<u8> {
                <$t as $trait>::finalize(self).to_vec()
            }
        }
    };
}
stream_digest!(Sha256, Digest);
stream_digest!(Sha1, Digest);
stream_digest!(Md5, md5::Digest);

fn spawn<D: StreamDigest>(name: &'static str, queue: usize) -> (mpsc::Sender<Bytes>, JoinHandle<String>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(queue);
    let handle = std::thread::Builder::new()
        .name(format!("digest-{name}"))
        .spawn(move || {
            let mut d = D::start();
            while let Some(chunk) = rx.blocking_recv() {
                d.feed(&chunk);
            }
            tagged(name, &d.finish())
        })
        .expect("spawning a digest thread");
    (tx, handle)
}

impl Default for MultiHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl MultiHasher {
    pub fn new() -> Self {
        Self::with_queue(QUEUE_CHUNKS)
    }

    /// `queue` chunks may wait per digest thread (bounds memory with large chunks).
    pub fn with_queue(queue: usize) -> Self {
        let (s1, t1) = spawn::<Sha256>("sha256", queue);
        let (s2, t2) = spawn::<Sha1>("sha1", queue);
        let (s3, t3) = spawn::<Md5>("md5", queue);
        Self { senders: vec![s1, s2, s3], threads: vec![t1, t2, t3], parts: None, size: 0 }
    }

    /// Also computes the SHA-256 of every `part_size` slice of the stream, on a fourth
    /// thread, to recompute S3's composite checksum of a multipart object.
    pub fn with_parts(mut self, part_size: u64, queue: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Bytes>(queue);
        let handle = std::thread::Builder::new()
            .name("digest-parts".into())
            .spawn(move || {
                let mut parts = Vec::new();
                let mut d = Sha256::new();
                let mut filled = 0u64;
                while let Some(mut chunk) = rx.blocking_recv() {
                    while !chunk.is_empty() {
                        let take = (part_size - filled).min(chunk.len() as u64) as usize;
                        d.update(&chunk[..take]);
                        filled += take as u64;
                        chunk = chunk.slice(take..);
                        if filled == part_size {
                            parts.push(d.finalize_reset().to_vec());
                            filled = 0;
                        }
                    }
                }
                if filled > 0 {
                    parts.push(d.finalize().to_vec());
                }
                parts
            })
            .expect("spawning a digest thread");
        self.parts = Some((tx, handle));
        self
    }

    /// The part digests (when built `with_parts`) and the full digests.
    pub fn finish_with_parts_blocking(mut self) -> (Digests, Vec<Vec<u8>>) {
        let parts = self.parts.take().map(|(tx, h)| {
            drop(tx);
            h.join().expect("digest thread does not panic")
        });
        (self.finish_blocking(), parts.unwrap_or_default())
    }

    pub async fn finish_with_parts(self) -> (Digests, Vec<Vec<u8>>) {
        tokio::task::spawn_blocking(move || self.finish_with_parts_blocking())
            .await
            .expect("digest join does not panic")
    }

    /// Feeds a chunk from async code (waits while the slowest digest catches up).
    pub async fn update(&mut self, chunk: Bytes) {
        self.size += chunk.len() as u64;
        for s in self.senders.iter().chain(self.parts.as_ref().map(|p| &p.0)) {
            // A send fails only if the thread died, which `finish` reports.
            let _ = s.send(chunk.clone()).await;
        }
    }

    /// Feeds a chunk from a plain (non-async) thread.
    pub fn update_blocking(&mut self, chunk: Bytes) {
        self.size += chunk.len() as u64;
        for s in self.senders.iter().chain(self.parts.as_ref().map(|p| &p.0)) {
            let _ = s.blocking_send(chunk.clone());
        }
    }

    /// The digests; blocks until the threads have hashed everything queued.
    pub fn finish_blocking(mut self) -> Digests {
        drop(self.parts.take());
        drop(std::mem::take(&mut self.senders));
        let mut out = std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().expect("digest thread does not panic"));
        let sha256 = out.next().unwrap_or_default();
        let sha1 = out.next().unwrap_or_default();
        let md5 = out.next().unwrap_or_default();
        Digests { size: self.size, sha256, sha1, md5 }
    }

    pub async fn finish(self) -> Digests {
        tokio::task::spawn_blocking(move || self.finish_blocking()).await.expect("digest join does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_abc() {
        let d = digests_of(b"abc");
        assert_eq!(d.sha256, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(d.sha1, "sha1:a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(d.md5, "md5:900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn threaded_pass_equals_one_shot() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = MultiHasher::new();
        for c in data.chunks(1 << 20) {
            h.update_blocking(Bytes::copy_from_slice(c));
        }
        assert_eq!(h.finish_blocking(), digests_of(&data));
    }

    #[test]
    fn part_digests_follow_part_boundaries_not_chunks() {
        let data: Vec<u8> = (0..100u32).map(|i| i as u8).collect();
        let mut h = MultiHasher::new().with_parts(30, 2);
        for c in data.chunks(7) {
            h.update_blocking(Bytes::copy_from_slice(c));
        }
        let (_, parts) = h.finish_with_parts_blocking();
        let expected: Vec<Vec<u8>> = data.chunks(30).map(sha256_raw).collect();
        assert_eq!(parts, expected);
    }

    #[test]
    fn untag_refuses_uppercase_and_short() {
        assert!(untag_sha256(&sha256_tagged(b"x")).is_some());
        assert!(untag_sha256(&sha256_tagged(b"x").to_uppercase()).is_none());
        assert!(untag_sha256("sha256:abcd").is_none());
    }
}
