//! The narrow object-store interface the evidence layer writes through, in domain
//! types only. Implemented by the S3 adapter (`crate::aws::s3::S3Store`), by an
//! in-memory fake with fault injection (`crate::fake::store::MemoryStore`) and by a
//! read-only local folder (`crate::evidence::folder::FolderStore`, offline verify).

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use time::OffsetDateTime;

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockMode {
    Compliance,
    Governance,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        })
    }
}

/// The lock asked for on a new object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    /// `None`: the bucket's default retention applies.
    pub retention: Option<(LockMode, OffsetDateTime)>,
    pub legal_hold: bool,
}

/// A new object written in one request.
#[derive(Debug, Clone)]
pub struct PutObject {
    pub key: String,
    pub body: Bytes,
    /// Base64 SHA-256 of `body`, sent as `x-amz-checksum-sha256`.
    pub sha256_b64: String,
    pub content_type: &'static str,
    pub lock: ObjectLock,
    /// `If-None-Match: *`: refuse (PreconditionFailed) when the key already exists.
    pub if_absent: bool,
}

/// What the store answered for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub version_id: Option<String>,
    /// The checksum S3 stored, as S3 writes it (base64; `-N` suffix for multipart).
    pub checksum_sha256: Option<String>,
    pub request_id: Option<String>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub etag: String,
    pub sha256_b64: String,
}

/// What a HEAD tells about an object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub version_id: Option<String>,
    pub size: u64,
    pub checksum_sha256: Option<String>,
    pub lock_mode: Option<LockMode>,
    pub retain_until: Option<OffsetDateTime>,
    pub legal_hold: bool,
}

/// One entry of a version listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub version_id: Option<String>,
    pub is_latest: bool,
    pub delete_marker: bool,
    pub last_modified: Option<OffsetDateTime>,
}

/// A body streamed in chunks.
pub type ByteChunks = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// Why a store call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// A conditional write found the key already there.
    PreconditionFailed,
    NotFound,
    AccessDenied,
    Throttled,
    /// The request did not complete (connection, timeout, body stream).
    Unreachable,
    /// The store answered without a field it must send.
    MissingField,
    /// This store cannot do that (a read-only folder asked to write).
    Unsupported,
    Other,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} {location} failed: {message}{}", request_id.as_ref().map(|r| format!(" (request id {r})")).unwrap_or_default())]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub operation: &'static str,
    /// bucket/key (or folder path) the call was about.
    pub location: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl StoreError {
    pub fn new(
        kind: StoreErrorKind,
        operation: &'static str,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self { kind, operation, location: location.into(), message: message.into(), request_id: None }
    }

    pub fn is(&self, kind: StoreErrorKind) -> bool {
        self.kind == kind
    }
}

/// Where evidence objects live. Keys are full keys (`cases/<case>/...`).
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Human-readable location, e.g. `s3://bucket` or a folder path.
    fn location(&self) -> String;
    /// True when the store can report Object Lock state (S3, the fake; not a folder).
    fn has_locks(&self) -> bool {
        true
    }
    async fn put(&self, req: PutObject) -> Result<Written, StoreError>;
    async fn create_multipart(
        &self,
        key: &str,
        content_type: &'static str,
        lock: &ObjectLock,
    ) -> Result<String, StoreError>;
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        sha256_b64: &str,
    ) -> Result<Part, StoreError>;
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        if_absent: bool,
    ) -> Result<Written, StoreError>;
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError>;
    /// Sets the retention of one object version (PutObjectRetention). Used after a
    /// multipart upload when the store did not apply the lock asked for at creation.
    async fn set_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        mode: LockMode,
        until: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// The object's bytes (`version_id` None: the latest). NotFound when absent.
    async fn get(&self, key: &str, version_id: Option<&str>) -> Result<ByteChunks, StoreError>;
    /// The object's metadata, None when absent (or the latest is a delete marker).
    async fn head(&self, key: &str, version_id: Option<&str>) -> Result<Option<ObjectMeta>, StoreError>;
    /// Keys of current objects under `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Every version and delete marker under `prefix`, keys in order and the
    /// versions of each key newest first, as S3 lists them (the original version of a
    /// key is its last non-delete-marker entry).
    async fn list_versions(&self, prefix: &str) -> Result<Vec<Version>, StoreError>;
}

/// Reads a whole (small) object into memory, refusing more than `limit` bytes.
pub async fn get_all(
    store: &dyn ObjectStore,
    key: &str,
    version_id: Option<&str>,
    limit: usize,
) -> Result<Bytes, StoreError> {
    use futures::StreamExt;
    let mut body = store.get(key, version_id).await?;
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(StoreError::new(
                StoreErrorKind::Other,
                "GetObject",
                key,
                format!("object is larger than the {limit} bytes expected of it"),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}
