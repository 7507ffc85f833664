//! CloudTrail event history (LookupEvents): who launched an instance, with which
//! access key, and what else that key did.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{CloudResult, Raw};

/// One lookup attribute (LookupEvents takes exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lookup {
    ResourceName(String),
    AccessKeyId(String),
    Username(String),
    EventName(String),
}

impl Lookup {
    pub fn key(&self) -> &'static str {
        match self {
            Lookup::ResourceName(_) => "ResourceName",
            Lookup::AccessKeyId(_) => "AccessKeyId",
            Lookup::Username(_) => "Username",
            Lookup::EventName(_) => "EventName",
        }
    }
    pub fn value(&self) -> &str {
        match self {
            Lookup::ResourceName(v) | Lookup::AccessKeyId(v) | Lookup::Username(v) | Lookup::EventName(v) => {
                v
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailResource {
    pub resource_type: Option<String>,
    pub name: Option<String>,
}

/// One event of the history, with the fields the pipeline decides on. The whole event
/// (`cloudtrail_event`, the JSON document CloudTrail keeps) is kept as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailEvent {
    pub event_id: String,
    pub event_name: String,
    /// UTC, RFC 3339.
    pub event_time: String,
    pub event_source: Option<String>,
    pub username: Option<String>,
    pub access_key_id: Option<String>,
    pub resources: Vec<TrailResource>,
    /// The full event record, a JSON string as CloudTrail returns it (attacker-controlled
    /// fields such as the user agent included).
    pub cloudtrail_event: Option<String>,
}

impl TrailEvent {
    /// A field of the full record, e.g. `sourceIPAddress` or `userAgent`.
    pub fn field(&self, name: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.cloudtrail_event.as_deref()?).ok()?;
        v.get(name).and_then(|x| x.as_str()).map(str::to_owned)
    }
}

/// What a lookup found: the events (newest first), the raw pages, and whether it
/// stopped at the limit before the last page.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub events: Vec<TrailEvent>,
    pub pages: Vec<Raw>,
    pub truncated: bool,
}

#[async_trait]
pub trait CloudTrail: Send + Sync {
    /// Events matching `lookup` between `start` and `end`, page by page, up to `limit`
    /// events (LookupEvents allows 2 calls a second per account and region: a busy key's
    /// history is bounded, and the bound is reported).
    async fn lookup_events(
        &self,
        lookup: &Lookup,
        start: OffsetDateTime,
        end: OffsetDateTime,
        limit: usize,
    ) -> CloudResult<Found>;
}
