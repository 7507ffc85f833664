//! S3: the evidence bucket behind [`ObjectStore`]. Every write carries an explicit
//! SHA-256 checksum (`x-amz-checksum-sha256`, which also satisfies S3's rule that a PUT
//! with Object Lock retention carries a checksum) and the lock the caller asked for.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::operation::RequestId;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart, ObjectLockLegalHoldStatus,
    ObjectLockMode,
};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::cloud::CloudError;
use crate::cloud::ErrorKind;
use crate::evidence::store::{
    ByteChunks, LockMode, ObjectLock, ObjectMeta, ObjectStore, Part, PutObject, StoreError, StoreErrorKind,
    Version, Written,
};
use crate::ids::BucketName;

/// The evidence bucket, through one S3 client.
#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    bucket: BucketName,
}

impl S3Store {
    pub fn new(client: Client, bucket: BucketName) -> Self {
        Self { client, bucket }
    }

    fn at(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn err<E, R>(&self, operation: &'static str, key: &str, e: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let aws = CloudError::from_sdk("s3", operation, e);
        let kind = match (aws.code.as_deref(), aws.kind) {
            (Some("PreconditionFailed" | "ConditionalRequestConflict"), _) => {
                StoreErrorKind::PreconditionFailed
            }
            (_, ErrorKind::NotFound) => StoreErrorKind::NotFound,
            (_, ErrorKind::AccessDenied) => StoreErrorKind::AccessDenied,
            (_, ErrorKind::Throttled) => StoreErrorKind::Throttled,
            (_, ErrorKind::Unreachable | ErrorKind::Credentials) => StoreErrorKind::Unreachable,
            _ => StoreErrorKind::Other,
        };
        let message = match &aws.code {
            Some(code) => format!("{code}: {}", aws.message),
            None => aws.message.clone(),
        };
        StoreError { kind, operation, location: self.at(key), message, request_id: aws.request_id }
    }

    fn missing(&self, operation: &'static str, key: &str, field: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::MissingField,
            operation,
            self.at(key),
            format!("response has no {field}"),
        )
    }
}

fn sdk_mode(mode: LockMode) -> ObjectLockMode {
    match mode {
        LockMode::Compliance => ObjectLockMode::Compliance,
        LockMode::Governance => ObjectLockMode::Governance,
    }
}

fn sdk_time(t: OffsetDateTime) -> DateTime {
    DateTime::from_secs(t.unix_timestamp())
}

fn domain_time(t: &DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.secs()).ok()
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn put(&self, req: PutObject) -> Result<Written, StoreError> {
        let mut call = self
            .client
            .put_object()
            .bucket(self.bucket.as_str())
            .key(&req.key)
            .content_type(req.content_type)
            .content_length(req.body.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&req.sha256_b64)
            .body(ByteStream::from(req.body));
        if let Some((mode, until)) = req.lock.retention {
            call = call.object_lock_mode(sdk_mode(mode)).object_lock_retain_until_date(sdk_time(until));
        }
        if req.lock.legal_hold {
            call = call.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
        }
        if req.if_absent {
            call = call.if_none_match("*");
        }
        let out = call.send().await.map_err(|e| self.err("PutObject", &req.key, e))?;
        Ok(Written {
            version_id: out.version_id().map(str::to_owned),
            checksum_sha256: out.checksum_sha256().map(str::to_owned),
            request_id: out.request_id().map(str::to_owned),
        })
    }

    async fn create_multipart(
        &self,
        key: &str,
        content_type: &'static str,
        lock: &ObjectLock,
    ) -> Result<String, StoreError> {
        let mut call = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket.as_str())
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        if let Some((mode, until)) = lock.retention {
            call = call.object_lock_mode(sdk_mode(mode)).object_lock_retain_until_date(sdk_time(until));
        }
        if lock.legal_hold {
            call = call.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
        }
        let out = call.send().await.map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| self.missing("CreateMultipartUpload", key, "UploadId"))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
        sha256_b64: &str,
    ) -> Result<Part, StoreError> {
        let out = self
            .client
            .upload_part()
            .bucket(self.bucket.as_str())
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(body.len() as i64)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256_b64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        let etag = out.e_tag().ok_or_else(|| self.missing("UploadPart", key, "ETag"))?;
        Ok(Part { number, etag: etag.to_owned(), sha256_b64: sha256_b64.to_owned() })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
        if_absent: bool,
    ) -> Result<Written, StoreError> {
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .checksum_sha256(&p.sha256_b64)
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let mut call = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket.as_str())
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed);
        if if_absent {
            call = call.if_none_match("*");
        }
        let out = call.send().await.map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        Ok(Written {
            version_id: out.version_id().map(str::to_owned),
            checksum_sha256: out.checksum_sha256().map(str::to_owned),
            request_id: out.request_id().map(str::to_owned),
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(self.bucket.as_str())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.err("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    async fn set_retention(
        &self,
        key: &str,
        version_id: Option<&str>,
        mode: LockMode,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let retention = aws_sdk_s3::types::ObjectLockRetention::builder()
            .mode(match mode {
                LockMode::Compliance => aws_sdk_s3::types::ObjectLockRetentionMode::Compliance,
                LockMode::Governance => aws_sdk_s3::types::ObjectLockRetentionMode::Governance,
            })
            .retain_until_date(sdk_time(until))
            .build();
        self.client
            .put_object_retention()
            .bucket(self.bucket.as_str())
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .retention(retention)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(|e| self.err("PutObjectRetention", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> Result<ByteChunks, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(self.bucket.as_str())
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
            .map_err(|e| self.err("GetObject", key, e))?;
        let location = self.at(key);
        let stream = futures::stream::unfold((out.body, location), |(mut body, location)| async move {
            match body.next().await {
                None => None,
                Some(Ok(b)) => Some((Ok(b), (body, location))),
                Some(Err(e)) => Some((
                    Err(StoreError::new(
                        StoreErrorKind::Unreachable,
                        "GetObject",
                        location.clone(),
                        e.to_string(),
                    )),
                    (body, location),
                )),
            }
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str, version_id: Option<&str>) -> Result<Option<ObjectMeta>, StoreError> {
        let out = match self
            .client
            .head_object()
            .bucket(self.bucket.as_str())
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let err = self.err("HeadObject", key, e);
                return if err.is(StoreErrorKind::NotFound) { Ok(None) } else { Err(err) };
            }
        };
        let size = out.content_length().ok_or_else(|| self.missing("HeadObject", key, "Content-Length"))?;
        Ok(Some(ObjectMeta {
            key: key.to_owned(),
            version_id: out.version_id().map(str::to_owned),
            size: u64::try_from(size)
                .map_err(|_| self.missing("HeadObject", key, "a valid Content-Length"))?,
            checksum_sha256: out.checksum_sha256().map(str::to_owned),
            lock_mode: out.object_lock_mode().and_then(|m| match m {
                ObjectLockMode::Compliance => Some(LockMode::Compliance),
                ObjectLockMode::Governance => Some(LockMode::Governance),
                _ => None,
            }),
            retain_until: out.object_lock_retain_until_date().and_then(domain_time),
            legal_hold: out.object_lock_legal_hold_status() == Some(&ObjectLockLegalHoldStatus::On),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut pages =
            self.client.list_objects_v2().bucket(self.bucket.as_str()).prefix(prefix).into_paginator().send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                keys.push(o.key().ok_or_else(|| self.missing("ListObjectsV2", prefix, "Key"))?.to_owned());
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn list_versions(&self, prefix: &str) -> Result<Vec<Version>, StoreError> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(self.bucket.as_str())
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.err("ListObjectVersions", prefix, e))?;
            for v in page.versions() {
                out.push(Version {
                    key: v.key().ok_or_else(|| self.missing("ListObjectVersions", prefix, "Key"))?.to_owned(),
                    version_id: v.version_id().map(str::to_owned),
                    is_latest: v.is_latest().unwrap_or(false),
                    delete_marker: false,
                    last_modified: v.last_modified().and_then(domain_time),
                });
            }
            for m in page.delete_markers() {
                out.push(Version {
                    key: m.key().ok_or_else(|| self.missing("ListObjectVersions", prefix, "Key"))?.to_owned(),
                    version_id: m.version_id().map(str::to_owned),
                    is_latest: m.is_latest().unwrap_or(false),
                    delete_marker: true,
                    last_modified: m.last_modified().and_then(domain_time),
                });
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_owned);
                version_marker = page.next_version_id_marker().map(str::to_owned);
                if key_marker.is_none() {
                    return Err(self.missing(
                        "ListObjectVersions",
                        prefix,
                        "NextKeyMarker on a truncated page",
                    ));
                }
            } else {
                return Ok(out);
            }
        }
    }
}
