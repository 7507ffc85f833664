//! The seam between containment and the evidence store: what containment needs from a
//! case (store a JSON evidence item, read it back, append a custody record), as a small
//! trait. `crate::evidence::Case` implements it; tests use [`MemoryCustody`].

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use crate::ids::AccountId;

/// The custody actions containment records (a subset of the evidence log's closed list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    EvidenceStored,
    InstanceProtected,
    ServiceDetached,
    NetworkIsolated,
    CredentialsRevoked,
    ContainmentVerified,
    ContainmentFailed,
    Released,
}

/// A stored evidence item, as the custody log references it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceRef {
    pub id: String,
    pub sha256: String,
    pub s3_key: String,
    pub version_id: Option<String>,
}

/// One custody event: what was done to which resource, with which AWS requests.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub action: Action,
    /// The ARN of the resource acted on.
    pub subject: String,
    pub evidence: Vec<EvidenceRef>,
    pub aws_request_ids: Vec<String>,
    pub details: serde_json::Value,
}

/// A new evidence item (its id is stable across reruns: storing it again is a no-op).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: String,
    pub account: AccountId,
    pub subject: String,
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
    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError>;
    /// The item stored under `id`, if any (the prior state read back by reruns and release).
    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError>;
}

/// An in-memory case for tests with the fake cloud.
#[derive(Default)]
pub struct MemoryCustody {
    pub events: Mutex<Vec<Event>>,
    pub items: Mutex<BTreeMap<String, (EvidenceRef, serde_json::Value)>>,
}

impl MemoryCustody {
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
        Ok(r)
    }

    async fn load_json(&self, id: &str) -> Result<Option<(EvidenceRef, serde_json::Value)>, CustodyError> {
        Ok(self.items.lock().expect("custody lock").get(id).cloned())
    }
}
