//! An in-memory case behind the custody seam, for stage tests with the fake cloud: it
//! keeps items and events, and can take virtual time per store so tests count round
//! trips.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::pipeline::custody::{Action, CustodyError, CustodySink, Early, Event, EvidenceRef, Item};

/// Where the memory case says an item lives.
fn memory_ref(id: &str, sha256: String) -> EvidenceRef {
    EvidenceRef { id: id.to_owned(), sha256, s3_key: format!("memory/{id}"), version_id: None }
}

/// An in-memory case for tests with the fake cloud.
#[derive(Default)]
pub struct MemoryCustody {
    pub events: Mutex<Vec<Event>>,
    pub items: Mutex<BTreeMap<String, (EvidenceRef, serde_json::Value)>>,
    /// What the store holds by item id, recorded or not (objects outlive a crash).
    objects: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Records written behind that failed, for `flush`.
    failures: Mutex<Vec<String>>,
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
    /// store's item write: PUT, read-back GET, HEAD, custody record PUT = 4); an early
    /// store, one (its PUT: the rest follows behind).
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

    /// Records an item's EvidenceStored event (the store already holds it).
    fn record_item(&self, item: Item, r: &EvidenceRef, value: serde_json::Value) {
        self.items.lock().expect("custody lock").insert(item.id, (r.clone(), value));
        self.events.lock().expect("custody lock").push(Event {
            action: Action::EvidenceStored,
            subject: item.subject,
            evidence: vec![r.clone()],
            aws_request_ids: vec![],
            details: serde_json::json!({"name": item.name, "source": item.source, "method": item.method}),
        });
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
        let r = memory_ref(&item.id, format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))));
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        self.objects.lock().expect("custody lock").insert(item.id.clone(), value.clone());
        self.record_item(item, &r, value);
        Ok(r)
    }

    /// Two writes, as the evidence store makes them: the object (the caller waits),
    /// then its record (behind: a failure is kept for `flush`, the caller goes on).
    async fn store_json_early(&self, item: Item, value: &serde_json::Value) -> Result<Early, CustodyError> {
        use sha2::Digest;
        if let Some((latency_calls, latency)) = self.store_latency {
            tokio::time::sleep(latency * latency_calls.min(1)).await;
        }
        if let Some((r, _)) = self.items.lock().expect("custody lock").get(&item.id) {
            return Ok(Early { evidence: r.clone(), recovered: None });
        }
        let digest = |v: &serde_json::Value| {
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(serde_json::to_vec(v).unwrap_or_default())))
        };
        let found = self.objects.lock().expect("custody lock").get(&item.id).cloned();
        if let Some(existing) = found {
            // Stored by a run that stopped before its record: adopted, recorded now.
            self.write()?;
            let r = memory_ref(&item.id, digest(&existing));
            let recovered = (existing != *value).then(|| existing.clone());
            self.record_item(item, &r, existing);
            return Ok(Early { evidence: r, recovered });
        }
        self.write()?;
        self.objects.lock().expect("custody lock").insert(item.id.clone(), value.clone());
        let r = memory_ref(&item.id, digest(value));
        match self.write() {
            Ok(()) => self.record_item(item, &r, value.clone()),
            Err(e) => self.failures.lock().expect("custody lock").push(e.0),
        }
        Ok(Early { evidence: r, recovered: None })
    }

    async fn record_behind(&self, event: Event) -> Result<(), CustodyError> {
        match self.write() {
            Ok(()) => self.events.lock().expect("custody lock").push(event),
            Err(e) => self.failures.lock().expect("custody lock").push(e.0),
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), CustodyError> {
        let failures = std::mem::take(&mut *self.failures.lock().expect("custody lock"));
        if failures.is_empty() { Ok(()) } else { Err(CustodyError(failures.join("; "))) }
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
        let r = memory_ref(&item.id, reported.sha256.clone());
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
