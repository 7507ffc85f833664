//! A downloaded case folder as a read-only [`ObjectStore`], for offline verification
//! (`aws s3 cp --recursive s3://<bucket>/cases/<case>/ <dir>` gives that folder).
//! A folder has no versions and no Object Lock: verify says those checks were not
//! possible offline instead of passing them.
//!
//! The folder came from someone else: it is read as data only. A symbolic link (to a
//! file or a folder) is never followed: it could point anywhere on this machine, and
//! hashing `/dev/zero` or `/etc/shadow` as "evidence" is not verifying the case. The
//! same goes for anything that is not a regular file (a FIFO would block forever).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::layout;
use super::store::{
    ByteChunks, ObjectLock, ObjectMeta, ObjectStore, Part, PutObject, StoreError, StoreErrorKind, Version,
    Written,
};
use crate::ids::CaseId;

/// Chunk size when streaming a file from the folder.
const CHUNK: usize = 1 << 20;

pub struct FolderStore {
    root: PathBuf,
    prefix: String,
}

impl FolderStore {
    /// `dir` holds the case's objects (`case.json`, `custody/`, ...), or holds
    /// `cases/<case>/` below it.
    pub fn new(dir: &Path, case: &CaseId) -> Self {
        let nested = dir.join("cases").join(case.as_str());
        let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
        let root = if is_dir(&dir.join("cases")) && is_dir(&nested) { nested } else { dir.to_owned() };
        Self { root, prefix: layout::case_prefix(case) }
    }

    /// The path of `key` below the root, every component of it checked not to be a
    /// symbolic link (so nothing resolves outside the folder), the last a regular file.
    fn path(&self, op: &'static str, key: &str) -> Result<PathBuf, StoreError> {
        let not_found = || StoreError::new(StoreErrorKind::NotFound, op, key, "not in this case folder");
        let rel = key.strip_prefix(&self.prefix).ok_or_else(not_found)?;
        if rel.split('/').any(|c| c == ".." || c == "." || c.is_empty()) {
            return Err(not_found());
        }
        let mut path = self.root.clone();
        let components: Vec<&str> = rel.split('/').collect();
        for (i, component) in components.iter().enumerate() {
            path.push(component);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Other,
                        op,
                        path.display().to_string(),
                        e.to_string(),
                    ));
                }
            };
            let last = i + 1 == components.len();
            if meta.file_type().is_symlink() {
                return Err(refused(
                    op,
                    &path,
                    "is a symbolic link; offline verify does not follow links out of the case folder",
                ));
            }
            if last && !meta.is_file() {
                return Err(refused(op, &path, "is not a regular file"));
            }
            if !last && !meta.is_dir() {
                return Err(not_found());
            }
        }
        Ok(path)
    }

    fn read_only(&self, op: &'static str, key: &str) -> StoreError {
        StoreError::new(StoreErrorKind::Unsupported, op, key, "a case folder is read-only")
    }

    /// Every entry below `dir` that is not a real folder, as a key: files, and also
    /// links and other oddities, so verify sees them (and reading them is refused).
    /// `file_type()` of a directory entry does not follow links: a link to a folder
    /// is listed, not walked into.
    fn walk(&self, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
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

fn refused(op: &'static str, path: &Path, why: &str) -> StoreError {
    StoreError::new(StoreErrorKind::AccessDenied, op, path.display().to_string(), why)
}

/// Opens `path`, checked to be the same regular file that was looked at (not swapped
/// for a link in between).
async fn open_checked(op: &'static str, path: &Path) -> Result<tokio::fs::File, StoreError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            StoreErrorKind::NotFound
        } else {
            StoreErrorKind::Other
        };
        StoreError::new(kind, op, path.display().to_string(), e.to_string())
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let opened = file.metadata().await.map_err(|e| {
            StoreError::new(StoreErrorKind::Other, op, path.display().to_string(), e.to_string())
        })?;
        let looked = std::fs::symlink_metadata(path).map_err(|e| {
            StoreError::new(StoreErrorKind::Other, op, path.display().to_string(), e.to_string())
        })?;
        if !opened.is_file() || opened.dev() != looked.dev() || opened.ino() != looked.ino() {
            return Err(refused(op, path, "changed into a link or another file while it was opened"));
        }
    }
    Ok(file)
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
        let path = self.path("read", key)?;
        let file = open_checked("read", &path).await?;
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
        let path = match self.path("stat", key) {
            Ok(p) => p,
            Err(e) if e.is(StoreErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        match tokio::fs::symlink_metadata(&path).await {
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
