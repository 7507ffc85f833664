//! CloudTrail's part of capture: who launched the instance (RunInstances: the user, the
//! access key, the source IP and user agent), and what else that key did in the same
//! window. The seeds' playbooks ask exactly this of a leaked credential.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Gap;
use crate::cloud::{Cloud, Lookup, Raw, TrailEvent, retry};
use crate::ids::InstanceId;

/// CloudTrail's event history keeps 90 days.
const HISTORY_DAYS: i64 = 90;
/// Launch events are looked for from this long before the instance's launch time
/// (clock skew and API latency between the call and the recorded launch).
const BEFORE_LAUNCH: time::Duration = time::Duration::hours(1);
/// Events kept per lookup. LookupEvents answers 50 a page and allows 2 calls a second
/// per account and region: 1,000 events is 20 pages, about 10 s at worst.
pub const EVENT_LIMIT: usize = 1000;

/// The time range of the lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

impl Window {
    /// From an hour before the launch (or 90 days back when the launch time is
    /// unknown or older) until now.
    pub fn around_launch(launch_time: Option<&str>, now: OffsetDateTime) -> Self {
        let oldest = now - time::Duration::days(HISTORY_DAYS);
        let start = launch_time
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(|t| t - BEFORE_LAUNCH)
            .filter(|t| *t > oldest)
            .unwrap_or(oldest);
        Self { start, end: now }
    }
}

/// Who launched the instance, from its RunInstances event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub event_id: String,
    pub event_time: String,
    pub username: Option<String>,
    pub access_key_id: Option<String>,
    pub principal_arn: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
}

/// One event of the launching key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEvent {
    pub event_id: String,
    pub event_time: String,
    pub event_name: String,
    pub event_source: Option<String>,
    pub resources: Vec<String>,
    pub source_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrailSummary {
    pub window_start: String,
    pub window_end: String,
    pub instance_events: usize,
    pub launched_by: Option<Launch>,
    pub key_events: Vec<KeyEvent>,
    pub gaps: Vec<Gap>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub fn launch_of(e: &TrailEvent) -> Launch {
    let record: Option<serde_json::Value> =
        e.cloudtrail_event.as_deref().and_then(|s| serde_json::from_str(s).ok());
    let identity = record.as_ref().and_then(|r| r.get("userIdentity"));
    let text = |v: Option<&serde_json::Value>| v.and_then(|x| x.as_str()).map(str::to_owned);
    Launch {
        event_id: e.event_id.clone(),
        event_time: e.event_time.clone(),
        username: e.username.clone(),
        access_key_id: e.access_key_id.clone().or_else(|| text(identity.and_then(|i| i.get("accessKeyId")))),
        principal_arn: text(identity.and_then(|i| i.get("arn"))),
        source_ip: e.field("sourceIPAddress"),
        user_agent: e.field("userAgent"),
    }
}

fn key_event(e: &TrailEvent) -> KeyEvent {
    KeyEvent {
        event_id: e.event_id.clone(),
        event_time: e.event_time.clone(),
        event_name: e.event_name.clone(),
        event_source: e.event_source.clone(),
        resources: e.resources.iter().filter_map(|r| r.name.clone()).collect(),
        source_ip: e.field("sourceIPAddress"),
    }
}

/// The instance's events, its launch, and the launching key's events. Failures are gaps.
pub async fn read(cloud: &dyn Cloud, id: &InstanceId, window: &Window) -> (TrailSummary, Vec<Raw>) {
    let mut summary = TrailSummary {
        window_start: rfc3339(window.start),
        window_end: rfc3339(window.end),
        ..TrailSummary::default()
    };
    let mut pages = Vec::new();
    let lookup = Lookup::ResourceName(id.to_string());
    let found = match retry(|| cloud.lookup_events(&lookup, window.start, window.end, EVENT_LIMIT)).await {
        Ok(f) => f,
        Err(e) => {
            summary.gaps.push(Gap { what: format!("CloudTrail events of {id}"), error: e.to_string() });
            return (summary, pages);
        }
    };
    pages.extend(found.pages);
    summary.instance_events = found.events.len();
    if found.truncated {
        summary.gaps.push(Gap {
            what: format!("CloudTrail events of {id}"),
            error: format!("more than {EVENT_LIMIT} events; the oldest were not read"),
        });
    }
    // The oldest RunInstances naming the instance is its launch.
    let launch = found.events.iter().rev().find(|e| e.event_name == "RunInstances").map(launch_of);
    if launch.is_none() {
        summary.gaps.push(Gap {
            what: "launch event".into(),
            error: "no RunInstances event names the instance in this region's 90-day history".into(),
        });
    }
    if let Some(key) = launch.as_ref().and_then(|l| l.access_key_id.clone()) {
        let lookup = Lookup::AccessKeyId(key.clone());
        match retry(|| cloud.lookup_events(&lookup, window.start, window.end, EVENT_LIMIT)).await {
            Ok(f) => {
                pages.extend(f.pages);
                if f.truncated {
                    summary.gaps.push(Gap {
                        what: format!("CloudTrail events of access key {key}"),
                        error: format!("more than {EVENT_LIMIT} events; the oldest were not read"),
                    });
                }
                summary.key_events = f.events.iter().map(key_event).collect();
            }
            Err(e) => summary
                .gaps
                .push(Gap { what: format!("CloudTrail events of access key {key}"), error: e.to_string() }),
        }
    }
    summary.launched_by = launch;
    (summary, pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_an_hour_before_launch_within_ninety_days() {
        let now = time::macros::datetime!(2026-12-02 10:00 UTC);
        let w = Window::around_launch(Some("2026-12-01T08:30:00Z"), now);
        assert_eq!(w.start, time::macros::datetime!(2026-12-01 07:30 UTC));
        let old = Window::around_launch(Some("2025-01-01T00:00:00Z"), now);
        assert_eq!(old.start, now - time::Duration::days(90));
        assert_eq!(Window::around_launch(None, now).start, now - time::Duration::days(90));
    }

    #[test]
    fn the_launch_names_key_ip_and_agent() {
        let e = TrailEvent {
            event_id: "e1".into(),
            event_name: "RunInstances".into(),
            event_time: "2026-12-01T08:30:00Z".into(),
            event_source: Some("ec2.amazonaws.com".into()),
            username: Some("dev-ci".into()),
            access_key_id: None,
            resources: vec![],
            cloudtrail_event: Some(
                r#"{"sourceIPAddress":"203.0.113.66","userAgent":"curl/8 <script>","userIdentity":{"accessKeyId":"AKIAEXAMPLE","arn":"arn:aws:iam::1:user/dev-ci"}}"#.into(),
            ),
        };
        let l = launch_of(&e);
        assert_eq!(l.access_key_id.as_deref(), Some("AKIAEXAMPLE"));
        assert_eq!(l.source_ip.as_deref(), Some("203.0.113.66"));
        assert_eq!(l.user_agent.as_deref(), Some("curl/8 <script>"));
    }
}
