//! The operational journal of a case: what was asked of the cloud and what the case
//! created or found there (ids), so a rerun resumes without creating anything twice and
//! teardown removes only what the case created. Kept apart from the custody log, which
//! is evidence only.
//!
//! Where it lives, and why: in the evidence bucket under `cases/<case>/journal/`, one
//! small object per fact, written with `If-None-Match` and never rewritten. The bucket is
//! what every run of the case already reaches, from any machine, and it survives a crash
//! of the one that wrote it. Facts are keyed by what they say (stage, kind, resource), so
//! two runs writing the same fact do not conflict and order does not matter. Resources
//! are also tagged with the case in the call that creates them: a crash between a create
//! and its journal entry leaves a tagged resource that the rerun finds, adopts and
//! journals ("recovered"), instead of creating it again.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::Stage;
use crate::evidence::digest::{b64, sha256_raw};
use crate::evidence::store::{ObjectLock, ObjectStore, PutObject, StoreError, StoreErrorKind, get_all};
use crate::ids::CaseId;

pub const JOURNAL_SCHEMA: &str = "cleanroom.journal/1";
/// A journal entry is a few hundred bytes; anything much bigger is not ours.
const ENTRY_LIMIT: usize = 1 << 20;
/// Entries read at once when a case is resumed.
const READ_CONCURRENCY: usize = 16;

/// What a fact says about a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// A create is about to be asked (written before the call).
    Asked,
    /// The case created it.
    Created,
    /// It existed before the case (found, used, never to be removed by the case).
    Found,
    /// The case created it but the journal entry was lost in a crash; found by its tags.
    Recovered,
    /// Its stage's work on it is complete (a copy completed, a share removed).
    Completed,
    /// Removed by the case (teardown, a share taken back).
    Removed,
}

/// The kind of resource a fact is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// A snapshot of a suspect's volume, in the member account.
    SourceSnapshot,
    /// A copy of a source snapshot under the hand-off key, in the member account.
    RelayCopy,
    /// createVolumePermission for the forensics account on a member snapshot.
    Share,
    /// The copy in the forensics account under its key: the evidence.
    ForensicsCopy,
    SecurityGroup,
    AnalysisVolume,
    AnalysisInstance,
    Document,
    /// An SSM command run on an analysis instance (resumed, not sent again, on a rerun).
    Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub schema: String,
    pub case: String,
    /// UTC, RFC 3339, milliseconds (informative: facts are not ordered by time).
    pub time: String,
    pub stage: Stage,
    pub fact: Fact,
    pub kind: ResourceKind,
    /// The resource id (snapshot id, volume id...), or for `Asked` the request's key.
    pub id: String,
    pub account: String,
    pub region: String,
    /// The instance it belongs to, when it belongs to one.
    pub subject: Option<String>,
    pub details: serde_json::Value,
}

impl Entry {
    fn key(&self) -> String {
        let subject = self.subject.as_deref().unwrap_or("case");
        let entry = format!(
            "{}/{}-{}-{}-{}.{}",
            safe(subject),
            self.account,
            stage_name(self.stage),
            kind_name(self.kind),
            safe(&self.id),
            fact_name(self.fact)
        );
        let case: CaseId = self.case.parse().unwrap_or_else(|_| "invalid".parse().expect("a valid case id"));
        // Every segment is made of [A-Za-z0-9_.-] above, so the layout accepts it.
        crate::evidence::layout::journal(&case, &entry)
            .unwrap_or_else(|_| format!("cases/{case}/journal/invalid.json"))
    }
}

fn stage_name(s: Stage) -> &'static str {
    s.name()
}
fn kind_name(k: ResourceKind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}
fn fact_name(f: Fact) -> String {
    serde_json::to_value(f).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Ids and names in keys are ours or AWS's (validated ids), never attacker text; this
/// keeps a key a key whatever comes in.
fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal of case {case}: {source}")]
    Store { case: String, source: StoreError },
    #[error("journal entry {key} of case {case} is unreadable: {problem}")]
    Corrupt { case: String, key: String, problem: String },
}

/// A case's journal: the facts read at open, and new ones appended.
#[derive(Clone)]
pub struct Journal {
    store: Arc<dyn ObjectStore>,
    case: CaseId,
    lock: ObjectLock,
    facts: Arc<Mutex<Vec<Entry>>>,
    read_only: bool,
}

impl Journal {
    /// Reads every fact of the case (none for a new case).
    pub async fn open(
        store: Arc<dyn ObjectStore>,
        case: &CaseId,
        lock: ObjectLock,
    ) -> Result<Self, JournalError> {
        let prefix = crate::evidence::layout::journal_prefix(case);
        let err = |source| JournalError::Store { case: case.to_string(), source };
        let keys = store.list(&prefix).await.map_err(err)?;
        let reads = super::fleet::each(keys, READ_CONCURRENCY, |key| {
            let store = store.clone();
            async move {
                // The first version: an entry is never rewritten, a later version is not ours.
                let bytes = get_all(store.as_ref(), &key, None, ENTRY_LIMIT).await;
                (key, bytes)
            }
        })
        .await;
        let mut facts = Vec::new();
        for (key, bytes) in reads {
            let bytes = bytes.map_err(err)?;
            let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                case: case.to_string(),
                key: key.clone(),
                problem: e.to_string(),
            })?;
            if entry.case != case.as_str() || entry.key() != key {
                return Err(JournalError::Corrupt {
                    case: case.to_string(),
                    key,
                    problem: "names another case or resource than its key".into(),
                });
            }
            facts.push(entry);
        }
        Ok(Self { store, case: case.clone(), lock, facts: Arc::new(Mutex::new(facts)), read_only: false })
    }

    /// The journal as it is, for `--plan`: appending is refused.
    pub async fn open_read_only(store: Arc<dyn ObjectStore>, case: &CaseId) -> Result<Self, JournalError> {
        let mut j = Self::open(store, case, ObjectLock { retention: None, legal_hold: false }).await?;
        j.read_only = true;
        Ok(j)
    }

    /// Appends a fact (idempotent: the same fact written twice is one).
    pub async fn write(&self, entry: NewFact) -> Result<(), JournalError> {
        let entry = Entry {
            schema: JOURNAL_SCHEMA.into(),
            case: self.case.to_string(),
            time: crate::evidence::case::utc_ms(time::OffsetDateTime::now_utc()),
            stage: entry.stage,
            fact: entry.fact,
            kind: entry.kind,
            id: entry.id,
            account: entry.account,
            region: entry.region,
            subject: entry.subject,
            details: entry.details,
        };
        if self.read_only {
            tracing::debug!("plan: would journal {}", entry.key());
            return Ok(());
        }
        let key = entry.key();
        let bytes = serde_json::to_vec(&entry).expect("journal entries serialise");
        let put = PutObject {
            key: key.clone(),
            sha256_b64: b64(&sha256_raw(&bytes)),
            body: bytes.into(),
            content_type: "application/json",
            lock: self.lock.clone(),
            if_absent: true,
        };
        match self.store.put(put).await {
            Ok(_) => {}
            Err(e) if e.is(StoreErrorKind::PreconditionFailed) => {}
            Err(source) => return Err(JournalError::Store { case: self.case.to_string(), source }),
        }
        let mut facts = self.facts.lock().await;
        if !facts.iter().any(|f| f.key() == key) {
            facts.push(entry);
        }
        Ok(())
    }

    /// Every fact, as read and written by this process.
    pub async fn facts(&self) -> Vec<Entry> {
        self.facts.lock().await.clone()
    }

    /// The latest fact per resource of `kind` for `subject` (None: any subject), by id.
    pub async fn resources(&self, kind: ResourceKind, subject: Option<&str>) -> BTreeMap<String, Vec<Entry>> {
        let mut out: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for f in self.facts.lock().await.iter() {
            if f.kind == kind
                && f.fact != Fact::Asked
                && subject.is_none_or(|s| f.subject.as_deref() == Some(s))
            {
                out.entry(f.id.clone()).or_default().push(f.clone());
            }
        }
        out
    }

    /// Ids of resources of `kind` the case created (or recovered) and has not removed.
    pub async fn created(&self, kind: ResourceKind, subject: Option<&str>) -> Vec<Entry> {
        self.resources(kind, subject)
            .await
            .into_values()
            .filter(|facts| {
                facts.iter().any(|f| matches!(f.fact, Fact::Created | Fact::Recovered))
                    && !facts.iter().any(|f| f.fact == Fact::Removed)
            })
            .filter_map(|facts| facts.into_iter().find(|f| matches!(f.fact, Fact::Created | Fact::Recovered)))
            .collect()
    }

    /// True when a `fact` is recorded for resource `id` of `kind`.
    pub async fn has(&self, kind: ResourceKind, id: &str, fact: Fact) -> bool {
        self.facts.lock().await.iter().any(|f| f.kind == kind && f.id == id && f.fact == fact)
    }
}

/// A fact to write.
#[derive(Debug, Clone)]
pub struct NewFact {
    pub stage: Stage,
    pub fact: Fact,
    pub kind: ResourceKind,
    pub id: String,
    pub account: String,
    pub region: String,
    pub subject: Option<String>,
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::store::MemoryStore;

    fn fact(id: &str, fact: Fact) -> NewFact {
        NewFact {
            stage: Stage::Snapshot,
            fact,
            kind: ResourceKind::SourceSnapshot,
            id: id.into(),
            account: "111122223333".into(),
            region: "eu-west-1".into(),
            subject: Some("i-0123456789abcdef0".into()),
            details: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn facts_survive_a_reopen_and_are_written_once() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new("mem"));
        let case: CaseId = "IR-1".parse().unwrap();
        let lock = ObjectLock { retention: None, legal_hold: false };
        let j = Journal::open(store.clone(), &case, lock.clone()).await.unwrap();
        j.write(fact("snap-0123456789abcdef0", Fact::Created)).await.unwrap();
        j.write(fact("snap-0123456789abcdef0", Fact::Created)).await.unwrap();
        j.write(fact("snap-0123456789abcdef1", Fact::Created)).await.unwrap();
        j.write(fact("snap-0123456789abcdef1", Fact::Removed)).await.unwrap();
        let again = Journal::open(store.clone(), &case, lock).await.unwrap();
        assert_eq!(again.facts().await.len(), 3);
        let live = again.created(ResourceKind::SourceSnapshot, Some("i-0123456789abcdef0")).await;
        assert_eq!(live.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["snap-0123456789abcdef0"]);
    }

    #[tokio::test]
    async fn a_read_only_journal_writes_nothing() {
        let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new("mem"));
        let case: CaseId = "IR-1".parse().unwrap();
        let j = Journal::open_read_only(store.clone(), &case).await.unwrap();
        j.write(fact("snap-0123456789abcdef0", Fact::Created)).await.unwrap();
        assert!(store.list("cases/").await.unwrap().is_empty());
    }
}
