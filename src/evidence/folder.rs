//! A downloaded case folder as a read-only [`ObjectStore`], for offline verification
//! (`aws s3 cp --recursive s3://<bucket>/cases/<case>/ <dir>` gives that folder).
//! A folder has no versions and no Object Lock: verify says those checks were not
//! possible offline instead of passing them.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::store::{
    ByteChunks, ObjectLock, ObjectMeta, ObjectStore, Part, PutObject, StoreError, StoreErrorKind, Version,
    Written,
};

/// Chunk size when streaming a file from the folder.
const CHUNK: usize = 1 << 20;

pub struct FolderStore {
    root: PathBuf,
    prefix: String,
}

impl FolderStore {
    /// `dir` holds the case's objects (`case.json`, `custody/`, ...), or holds
    /// `cases/<case>/` below it.
    pub fn new(dir: &Path, case: &str) -> Self {
        let nested = dir.join("cases").join(case);
        let root = if nested.join("case.json").exists() { nested } else { dir.to_owned() };
        Self { root, prefix: format!("cases/{case}/") }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let rel = key.strip_prefix(&self.prefix)?;
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return None;
        }
        Some(self.root.join(rel))
    }

    fn read_only(&self, op: &'static str, key: &str) -> StoreError {
        StoreError::new(StoreErrorKind::Unsupported, op, key, "a case folder is read-only")
    }

    fn walk(&self, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        if !dir.exists() {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                self.walk(&path, out)?;
            } else if let Ok(rel) = path.strip_prefix(&self.root) {
                out.push(format!("{}{}", self.prefix, rel.to_string_lossy()));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FolderStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }
    fn has_locks(&self) -> bool {
        false
    }
    async fn put(&self, req: PutObject) -> Result<Written, StoreError> {
        Err(self.read_only("PutObject", &req.key))
    }
    async fn create_multipart(
        &self,
        key: &str,
        _: &'static str,
        _: &ObjectLock,
    ) -> Result<String, StoreError> {
        Err(self.read_only("CreateMultipartUpload", key))
    }
    async fn upload_part(&self, key: &str, _: &str, _: i32, _: Bytes, _: &str) -> Result<Part, StoreError> {
        Err(self.read_only("UploadPart", key))
    }
    async fn complete_multipart(
        &self,
        key: &str,
        _: &str,
        _: &[Part],
        _: bool,
    ) -> Result<Written, StoreError> {
        Err(self.read_only("CompleteMultipartUpload", key))
    }
    async fn abort_multipart(&self, key: &str, _: &str) -> Result<(), StoreError> {
        Err(self.read_only("AbortMultipartUpload", key))
    }
    async fn set_retention(
        &self,
        key: &str,
        _: Option<&str>,
        _: super::store::LockMode,
        _: time::OffsetDateTime,
    ) -> Result<(), StoreError> {
        Err(self.read_only("PutObjectRetention", key))
    }
    async fn get(&self, key: &str, _version_id: Option<&str>) -> Result<ByteChunks, StoreError> {
        let path = self.path(key).ok_or_else(|| {
            StoreError::new(StoreErrorKind::NotFound, "read", key, "not in this case folder")
        })?;
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                StoreErrorKind::NotFound
            } else {
                StoreErrorKind::Other
            };
            StoreError::new(kind, "read", path.display().to_string(), e.to_string())
        })?;
        let location = path.display().to_string();
        let stream = futures::stream::unfold((file, location), |(mut file, location)| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, location)))
                }
                Err(e) => Some((
                    Err(StoreError::new(StoreErrorKind::Other, "read", location.clone(), e.to_string())),
                    (file, location),
                )),
            }
        });
        Ok(Box::pin(stream))
    }
    async fn head(&self, key: &str, _version_id: Option<&str>) -> Result<Option<ObjectMeta>, StoreError> {
        let Some(path) = self.path(key) else { return Ok(None) };
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(ObjectMeta {
                key: key.into(),
                version_id: None,
                size: m.len(),
                checksum_sha256: None,
                lock_mode: None,
                retain_until: None,
                legal_hold: false,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(StoreError::new(StoreErrorKind::Other, "stat", path.display().to_string(), e.to_string()))
            }
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        self.walk(&self.root, &mut out).map_err(|e| {
            StoreError::new(StoreErrorKind::Other, "list", self.root.display().to_string(), e.to_string())
        })?;
        out.retain(|k| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }
    async fn list_versions(&self, prefix: &str) -> Result<Vec<Version>, StoreError> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|key| Version {
                key,
                version_id: None,
                is_latest: true,
                delete_marker: false,
                last_modified: None,
            })
            .collect())
    }
}
