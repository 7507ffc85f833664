//! An in-memory case behind the custody seam, for stage tests with the fake cloud: it
//! keeps items and events, and can take virtual time per store so tests count round
//! trips.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::pipeline::custody::{Action, CustodyError, CustodySink, Event, EvidenceRef, Item};

/// An in-memory case for tests with the fake cloud.
#[derive(Default)]
pub struct MemoryCustody {
    pub events: Mutex<Vec<Event>>,
    pub items: Mutex<BTreeMap<String, (EvidenceRef, serde_json::Value)>>,
    /// Virtual time a store takes: (sequential S3 calls, latency of each).
    store_latency: Option<(u32, std::time::Duration)>,
    /// Crash after this many more writes (records and stores): every later write
    /// fails, as if the process had died there.
    crash: Mutex<Crash>,
}

/// The crash fault of a [`MemoryCustody`].
#[derive(Default)]
struct Crash {
    writes: usize,
    after: Option<usize>,
    /// Called once when the crash happens (a test kills its fake cloud with it).
    on_crash: Option<Box<dyn Fn() + Send + Sync>>,
}

impl MemoryCustody {
    /// Each store takes `calls` sequential round trips of `latency` (the evidence
    /// store's item write: PUT, read-back GET, HEAD, custody record PUT = 4).
    pub fn with_store_latency(calls: u32, latency: std::time::Duration) -> Self {
        Self { store_latency: Some((calls, latency)), ..Self::default() }
    }

    /// Every write after the next `writes` fails; `on_crash` runs when the first one
    /// does (so a test can kill its fake cloud at the same point: the process died).
    pub fn crash_after_writes(&self, writes: usize, on_crash: impl Fn() + Send + Sync + 'static) {
        let mut c = self.crash.lock().expect("crash lock");
        c.after = Some(c.writes + writes);
        c.on_crash = Some(Box::new(on_crash));
    }

    /// Clears the crash fault (a new process).
    pub fn heal(&self) {
        let mut c = self.crash.lock().expect("crash lock");
        c.after = None;
        c.on_crash = None;
    }

    /// Writes made so far (records and stores).
    pub fn writes(&self) -> usize {
        self.crash.lock().expect("crash lock").writes
    }

    /// Counts one write; fails it once the crash point is passed.
    fn write(&self) -> Result<(), CustodyError> {
        let mut c = self.crash.lock().expect("crash lock");
        c.writes += 1;
        if c.after.is_some_and(|k| c.writes > k) {
            if let Some(f) = c.on_crash.take() {
                f();
            }
            return Err(CustodyError("the process stopped here (fake crash)".into()));
        }
        Ok(())
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
        self.write()?;
        self.events.lock().expect("custody lock").push(event);
        Ok(())
    }

    async fn store_json(&self, item: Item, value: &serde_json::Value) -> Result<EvidenceRef, CustodyError> {
        let bytes = serde_json::to_vec(value).map_err(|e| CustodyError(e.to_string()))?;
        self.store_bytes(item, bytes, "application/json").await
    }

    async fn store_bytes(
        &self,
        item: Item,
        bytes: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<EvidenceRef, CustodyError> {
        use sha2::Digest;
        if let Some((calls, latency)) = self.store_latency {
            tokio::time::sleep(latency * calls).await;
        }
        if let Some((r, _)) = self.items.lock().expect("custody lock").get(&item.id) {
            return Ok(r.clone());
        }
        self.write()?;
        let mut items = self.items.lock().expect("custody lock");
        let r = EvidenceRef {
            id: item.id.clone(),
            sha256: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
            s3_key: format!("memory/{}", item.id),
            version_id: None,
        };
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        items.insert(item.id, (r.clone(), value));
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

    async fn seal(&self) -> Result<(EvidenceRef, usize), CustodyError> {
        let count = self.items.lock().expect("custody lock").len();
        let r = EvidenceRef {
            id: "manifest".into(),
            sha256: "sha256:memory".into(),
            s3_key: "memory/manifest".into(),
            version_id: None,
        };
        self.events.lock().expect("custody lock").push(Event {
            action: Action::ManifestSealed,
            subject: "case".into(),
            evidence: vec![r.clone()],
            aws_request_ids: vec![],
            details: serde_json::json!({"items": count}),
        });
        Ok((r, count))
    }

    async fn adopt(
        &self,
        item: Item,
        _version_id: Option<&str>,
        reported: &crate::evidence::digest::Digests,
        _rehash_limit: u64,
    ) -> Result<(EvidenceRef, bool), CustodyError> {
        let r = EvidenceRef {
            id: item.id.clone(),
            sha256: reported.sha256.clone(),
            s3_key: format!("memory/{}", item.id),
            version_id: None,
        };
        self.items.lock().expect("custody lock").insert(item.id, (r.clone(), serde_json::Value::Null));
        Ok((r, false))
    }

    async fn read_object(
        &self,
        _key: &str,
        _limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, CustodyError> {
        Ok(None)
    }

    async fn list(&self, _prefix: &str) -> Result<Vec<String>, CustodyError> {
        Ok(vec![])
    }

    async fn find(&self, id: &str) -> Result<Option<EvidenceRef>, CustodyError> {
        Ok(self.items.lock().expect("custody lock").get(id).map(|(r, _)| r.clone()))
    }
}
