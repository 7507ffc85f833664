//! The seam between the stages and the evidence store: what a stage needs from a case
//! (store an evidence item, read one back, append a custody record), as a small trait.
//! `crate::evidence::Case` implements it ([`CaseCustody`]); [`ReadOnlyCase`] serves
//! `--plan` from the real case without writing; tests use the fake's memory case.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::ids::AccountId;

// The evidence log's own types: stages record in the same closed list.
pub use crate::evidence::{Action, CustodyEvent as Event, EvidenceRef};

/// A new evidence item (its id is stable across reruns: storing it again is a no-op).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: String,
    pub account: AccountId,
    /// What it is about: the instance id (a path segment of its S3 key).
    pub subject: String,
    /// File name, e.g. `containment-prior-state.json`.
    pub name: String,
    pub source: String,
    pub method: String,
    /// Ids of the items it was derived from.
    pub derived_from: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("evidence store: {0}")]
pub struct CustodyError(pub String);

/// What [`CustodySink::store_json_early`] stored.
#[derive(Debug, Clone)]
pub struct Early {
    pub evidence: EvidenceRef,
    /// The item was already in the store, written by a run that stopped before its
    /// record: adopted (and now recorded) as the item; this is what it holds.
    pub recovered: Option<serde_json::Value>,
}

#[async_trait]
pub trait CustodySink: Send + Sync {
    async fn record(&self, event: Event) -> Result<(), CustodyError>;
    /// Takes the record's place in the order now, and writes it without the caller
    /// waiting; [`CustodySink::flush`] reports it if it could not be written.
    async fn record_behind(&self, event: Event) -> Result<(), CustodyError> {
        self.record(event).await
    }
    /// Stores the item and returns once the store holds it; its read-back and its
    /// record follow behind, in order (the evidence a change waits for, not its record).
    async fn store_json_early(&self, item: Item, value: &serde_json::Value) -> Result<Early, CustodyError> {
        self.store_json(item, value).await.map(|evidence| Early { evidence, recovered: None })
    }
    /// [`CustodySink::store_json_early`] for bytes; what a recovered item holds.
    async fn store_bytes_early(
        &self,
        item: Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(EvidenceRef, Option<Vec<u8>>), CustodyError> {
        self.store_bytes(item, bytes, content_type).await.map(|r| (r, None))
    }
    /// Waits for everything written behind; what could not be written.
    async fn flush(&self) -> Result<(), CustodyError> {
        Ok(())
    }
    /// Stores the item and records its EvidenceStored custody event (as the evidence
    /// store's case does); storing an id already stored returns it and writes nothing.
    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError>;
    /// The same for bytes held in memory (a decoded UserData, a screenshot).
    async fn store_bytes(
        &self,
        item: Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<EvidenceRef, CustodyError>;
    /// The item stored under `id`, if any (the prior state read back by reruns and release).
    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError>;
    /// The stored item with this id, if any, without reading its bytes.
    async fn find(&self, id: &str) -> Result<Option<EvidenceRef>, CustodyError>;
    /// Writes the manifest of every item and records it; returns the manifest's ref and
    /// the number of items.
    async fn seal(&self) -> Result<(EvidenceRef, usize), CustodyError>;
    /// Records an object another principal wrote at the item's key (the clean room's
    /// outputs), version `version_id` (its writer's), read back and hashed here up to
    /// `rehash_limit` bytes, refused when it differs from `reported`. True when it was
    /// re-hashed.
    async fn adopt(
        &self,
        item: Item,
        version_id: Option<&str>,
        reported: &crate::evidence::digest::Digests,
        rehash_limit: u64,
    ) -> Result<(EvidenceRef, bool), CustodyError>;
    /// A small object of the case's bucket: its bytes and version (`None` when absent).
    async fn read_object(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, CustodyError>;
    /// Keys under `prefix` in the case's bucket.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, CustodyError>;
}

/// The current version of a small object of `store`, and its version id.
async fn read_current(
    store: &dyn crate::evidence::ObjectStore,
    key: &str,
    limit: usize,
) -> Result<Option<(Vec<u8>, Option<String>)>, CustodyError> {
    let Some(meta) = store.head(key, None).await.map_err(fail)? else {
        return Ok(None);
    };
    let bytes =
        crate::evidence::store::get_all(store, key, meta.version_id.as_deref(), limit).await.map_err(fail)?;
    Ok(Some((bytes.to_vec(), meta.version_id)))
}

/// The evidence store's case behind the seam.
pub struct CaseCustody(pub crate::evidence::Case);

fn fail(e: impl std::fmt::Display) -> CustodyError {
    CustodyError(e.to_string())
}

fn new_item(item: Item) -> crate::evidence::NewItem {
    crate::evidence::NewItem {
        id: item.id,
        account: item.account,
        subject: item.subject,
        name: item.name,
        source: item.source,
        method: item.method,
        derived_from: item.derived_from,
    }
}

#[async_trait]
impl CustodySink for CaseCustody {
    async fn record(&self, event: Event) -> Result<(), CustodyError> {
        self.0.record(event).await.map(|_| ()).map_err(fail)
    }

    async fn record_behind(&self, event: Event) -> Result<(), CustodyError> {
        self.0.record_behind(event);
        Ok(())
    }

    async fn store_json_early(&self, item: Item, value: &serde_json::Value) -> Result<Early, CustodyError> {
        let (evidence, existing) = self.0.store_json_early(new_item(item), value).await.map_err(fail)?;
        let recovered = existing
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| CustodyError(format!("item {} found in the store is not JSON: {e}", evidence.id)))?;
        Ok(Early { evidence, recovered })
    }

    async fn store_bytes_early(
        &self,
        item: Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(EvidenceRef, Option<Vec<u8>>), CustodyError> {
        let (r, existing) =
            self.0.store_bytes_early(new_item(item), bytes.into(), content_type).await.map_err(fail)?;
        Ok((r, existing.map(|b| b.to_vec())))
    }

    async fn flush(&self) -> Result<(), CustodyError> {
        self.0.flush().await.map_err(fail)
    }

    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError> {
        self.0.store_json(new_item(item), value).await.map_err(fail)
    }

    async fn store_bytes(
        &self,
        item: Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<EvidenceRef, CustodyError> {
        self.0.store_bytes(new_item(item), bytes, content_type).await.map_err(fail)
    }

    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError> {
        // The chain was read when the case was opened: look the item up in memory
        // rather than re-reading the chain tail once per instance of a fleet.
        let Some(item) = self.0.items().await.into_iter().find(|i| i.id == id) else {
            return Ok(None);
        };
        let r = item.evidence_ref();
        let bytes = self.0.read_item(&item).await.map_err(fail)?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| CustodyError(format!("item {id} is not JSON: {e}")))?;
        Ok(Some((r, value)))
    }

    async fn find(&self, id: &str) -> Result<Option<EvidenceRef>, CustodyError> {
        Ok(self.0.items().await.into_iter().find(|i| i.id == id).map(|i| i.evidence_ref()))
    }

    async fn seal(&self) -> Result<(EvidenceRef, usize), CustodyError> {
        self.0.seal().await.map(|(m, r)| (r, m.items.len())).map_err(fail)
    }

    async fn adopt(
        &self,
        item: Item,
        version_id: Option<&str>,
        reported: &crate::evidence::digest::Digests,
        rehash_limit: u64,
    ) -> Result<(EvidenceRef, bool), CustodyError> {
        self.0.adopt(new_item(item), version_id, reported, rehash_limit).await.map_err(fail)
    }

    async fn read_object(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, CustodyError> {
        read_current(self.0.store().as_ref(), key, limit).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, CustodyError> {
        self.0.store().list(prefix).await.map_err(fail)
    }
}

/// A case as it is stored, for `--plan`: reads answer from the real case (or nothing,
/// when it does not exist yet); writes are refused, so a plan cannot change the case.
pub struct ReadOnlyCase {
    loaded: Option<crate::verify::LoadedCase>,
    store: std::sync::Arc<dyn crate::evidence::ObjectStore>,
}

impl ReadOnlyCase {
    pub async fn open(
        store: std::sync::Arc<dyn crate::evidence::ObjectStore>,
        case: &crate::ids::CaseId,
    ) -> Result<Self, CustodyError> {
        let exists =
            store.head(&crate::evidence::layout::case_file(case), None).await.map_err(fail)?.is_some();
        let loaded = if exists {
            Some(crate::verify::load_case(store.as_ref(), case).await.map_err(fail)?)
        } else {
            None
        };
        Ok(Self { loaded, store })
    }

    fn refuse(&self) -> CustodyError {
        CustodyError("this is a plan: the case is read only and nothing is written".into())
    }
}

#[async_trait]
impl CustodySink for ReadOnlyCase {
    async fn record(&self, _: Event) -> Result<(), CustodyError> {
        Err(self.refuse())
    }

    async fn store_json(&self, _: Item, _: &serde_json::Value) -> Result<EvidenceRef, CustodyError> {
        Err(self.refuse())
    }

    async fn store_bytes(&self, _: Item, _: Vec<u8>, _: &'static str) -> Result<EvidenceRef, CustodyError> {
        Err(self.refuse())
    }

    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError> {
        let Some(item) = self.loaded.as_ref().and_then(|l| l.items().get(id).cloned()) else {
            return Ok(None);
        };
        let bytes = crate::evidence::store::get_all(
            self.store.as_ref(),
            &item.s3_key,
            item.version_id.as_deref(),
            crate::evidence::case::SMALL_OBJECT_LIMIT,
        )
        .await
        .map_err(fail)?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| CustodyError(format!("item {id} is not JSON: {e}")))?;
        Ok(Some((item.evidence_ref(), value)))
    }

    async fn find(&self, id: &str) -> Result<Option<EvidenceRef>, CustodyError> {
        Ok(self.loaded.as_ref().and_then(|l| l.items().get(id).map(|i| i.evidence_ref())))
    }

    async fn seal(&self) -> Result<(EvidenceRef, usize), CustodyError> {
        Err(self.refuse())
    }

    async fn adopt(
        &self,
        _: Item,
        _: Option<&str>,
        _: &crate::evidence::digest::Digests,
        _: u64,
    ) -> Result<(EvidenceRef, bool), CustodyError> {
        Err(self.refuse())
    }

    async fn read_object(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, CustodyError> {
        read_current(self.store.as_ref(), key, limit).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, CustodyError> {
        self.store.list(prefix).await.map_err(fail)
    }
}

/// A case still opening: every call waits for it to open, so the stages' first reads
/// (which need no case) overlap with the case's own round trips.
pub struct OpeningCase {
    case: futures::future::Shared<futures::future::BoxFuture<'static, Result<Arc<dyn CustodySink>, String>>>,
}

impl OpeningCase {
    /// Starts opening now (a task of its own); `open`'s error is for the caller to keep.
    pub fn start(
        open: impl std::future::Future<Output = Result<Arc<dyn CustodySink>, String>> + Send + 'static,
    ) -> Self {
        use futures::FutureExt;
        let task = tokio::spawn(open);
        let case =
            async move { task.await.unwrap_or_else(|e| Err(format!("opening the case stopped: {e}"))) }
                .boxed()
                .shared();
        Self { case }
    }

    async fn get(&self) -> Result<Arc<dyn CustodySink>, CustodyError> {
        self.case.clone().await.map_err(|e| CustodyError(format!("the case did not open: {e}")))
    }
}

#[async_trait]
impl CustodySink for OpeningCase {
    async fn record(&self, event: Event) -> Result<(), CustodyError> {
        self.get().await?.record(event).await
    }
    async fn record_behind(&self, event: Event) -> Result<(), CustodyError> {
        self.get().await?.record_behind(event).await
    }
    async fn store_json_early(&self, item: Item, value: &serde_json::Value) -> Result<Early, CustodyError> {
        self.get().await?.store_json_early(item, value).await
    }
    async fn store_bytes_early(
        &self,
        item: Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<(EvidenceRef, Option<Vec<u8>>), CustodyError> {
        self.get().await?.store_bytes_early(item, bytes, content_type).await
    }
    async fn flush(&self) -> Result<(), CustodyError> {
        self.get().await?.flush().await
    }
    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError> {
        self.get().await?.store_json(item, value).await
    }
    async fn store_bytes(
        &self,
        item: Item,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<EvidenceRef, CustodyError> {
        self.get().await?.store_bytes(item, bytes, content_type).await
    }
    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError> {
        self.get().await?.load_json(id).await
    }
    async fn find(&self, id: &str) -> Result<Option<EvidenceRef>, CustodyError> {
        self.get().await?.find(id).await
    }
    async fn seal(&self) -> Result<(EvidenceRef, usize), CustodyError> {
        self.get().await?.seal().await
    }
    async fn adopt(
        &self,
        item: Item,
        version_id: Option<&str>,
        reported: &crate::evidence::digest::Digests,
        rehash_limit: u64,
    ) -> Result<(EvidenceRef, bool), CustodyError> {
        self.get().await?.adopt(item, version_id, reported, rehash_limit).await
    }
    async fn read_object(
        &self,
        key: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, CustodyError> {
        self.get().await?.read_object(key, limit).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, CustodyError> {
        self.get().await?.list(prefix).await
    }
}
