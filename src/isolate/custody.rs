//! The seam between containment and the evidence store: what containment needs from a
//! case (store a JSON evidence item, read it back, append a custody record), as a small
//! trait. `crate::evidence::Case` implements it; tests use [`MemoryCustody`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use crate::ids::AccountId;

// The evidence log's own types: containment records in the same closed list.
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
}

#[derive(Debug, thiserror::Error)]
#[error("evidence store: {0}")]
pub struct CustodyError(pub String);

#[async_trait]
pub trait CustodySink: Send + Sync {
    async fn record(&self, event: Event) -> Result<(), CustodyError>;
    /// Stores the item and records its EvidenceStored custody event (as the evidence
    /// store's case does); storing an id already stored returns it and writes nothing.
    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError>;
    /// The item stored under `id`, if any (the prior state read back by reruns and release).
    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError>;
}

/// An in-memory case for tests with the fake cloud.
#[derive(Default)]
pub struct MemoryCustody {
    pub events: Mutex<Vec<Event>>,
    pub items: Mutex<BTreeMap<String, (EvidenceRef, serde_json::Value)>>,
    /// Virtual time a store takes: (sequential S3 calls, latency of each).
    store_latency: Option<(u32, std::time::Duration)>,
}

impl MemoryCustody {
    /// Each store takes `calls` sequential round trips of `latency` (the evidence
    /// store's item write: PUT, read-back GET, HEAD, custody record PUT = 4).
    pub fn with_store_latency(calls: u32, latency: std::time::Duration) -> Self {
        Self { store_latency: Some((calls, latency)), ..Self::default() }
    }

    pub fn actions(&self) -> Vec<Action> {
        self.events.lock().expect("custody lock").iter().map(|e| e.action).collect()
    }
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("custody lock").clone()
    }
}

#[async_trait]
impl CustodySink for MemoryCustody {
    async fn record(&self, event: Event) -> Result<(), CustodyError> {
        self.events.lock().expect("custody lock").push(event);
        Ok(())
    }

    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError> {
        use sha2::Digest;
        if let Some((calls, latency)) = self.store_latency {
            tokio::time::sleep(latency * calls).await;
        }
        let mut items = self.items.lock().expect("custody lock");
        if let Some((r, _)) = items.get(&item.id) {
            return Ok(r.clone());
        }
        let bytes = serde_json::to_vec(value).map_err(|e| CustodyError(e.to_string()))?;
        let r = EvidenceRef {
            id: item.id.clone(),
            sha256: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
            s3_key: format!("memory/{}", item.id),
            version_id: None,
        };
        items.insert(item.id, (r.clone(), value.clone()));
        self.events.lock().expect("custody lock").push(Event {
            action: Action::EvidenceStored,
            subject: item.subject,
            evidence: vec![r.clone()],
            aws_request_ids: vec![],
            details: serde_json::json!({"name": item.name, "source": item.source, "method": item.method}),
        });
        Ok(r)
    }

    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError> {
        Ok(self.items.lock().expect("custody lock").get(id).cloned())
    }
}

/// The evidence store's case behind the seam.
pub struct CaseCustody(pub crate::evidence::Case);

fn fail(e: impl std::fmt::Display) -> CustodyError {
    CustodyError(e.to_string())
}

#[async_trait]
impl CustodySink for CaseCustody {
    async fn record(&self, event: Event) -> Result<(), CustodyError> {
        self.0.record(event).await.map(|_| ()).map_err(fail)
    }

    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError> {
        let new = crate::evidence::NewItem {
            id: item.id,
            account: item.account,
            subject: item.subject,
            name: item.name,
            source: item.source,
            method: item.method,
            derived_from: vec![],
        };
        self.0.store_json(new, value).await.map_err(fail)
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
}
