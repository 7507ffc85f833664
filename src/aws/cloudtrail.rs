//! CloudTrail adapter: LookupEvents, page by page, each page kept raw.

use async_trait::async_trait;
use aws_sdk_cloudtrail::operation::RequestId;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_smithy_types::DateTime;
use time::OffsetDateTime;

use super::AccountClients;
use super::ec2::rfc3339;
use super::raw::captured;
use crate::cloud::{CloudResult, CloudTrail, Found, Lookup, TrailEvent, TrailResource};

/// LookupEvents answers at most 50 events a page.
const PAGE: i32 = 50;

fn key(l: &Lookup) -> LookupAttributeKey {
    match l {
        Lookup::ResourceName(_) => LookupAttributeKey::ResourceName,
        Lookup::AccessKeyId(_) => LookupAttributeKey::AccessKeyId,
        Lookup::Username(_) => LookupAttributeKey::Username,
        Lookup::EventName(_) => LookupAttributeKey::EventName,
    }
}

#[async_trait]
impl CloudTrail for AccountClients {
    async fn lookup_events(
        &self,
        lookup: &Lookup,
        start: OffsetDateTime,
        end: OffsetDateTime,
        limit: usize,
    ) -> CloudResult<Found> {
        let mut found = Found::default();
        let mut token: Option<String> = None;
        loop {
            let req = serde_json::json!({
                "LookupAttributes": [{"AttributeKey": lookup.key(), "AttributeValue": lookup.value()}],
                "StartTime": start.unix_timestamp(), "EndTime": end.unix_timestamp(), "NextToken": token,
            });
            let (out, raw) = captured(
                "cloudtrail",
                "LookupEvents",
                req,
                |o: &aws_sdk_cloudtrail::operation::lookup_events::LookupEventsOutput| {
                    o.request_id().map(str::to_owned)
                },
                |raw| {
                    self.cloudtrail
                        .lookup_events()
                        .lookup_attributes(
                            LookupAttribute::builder()
                                .attribute_key(key(lookup))
                                .attribute_value(lookup.value())
                                .build()
                                .expect("key and value are set"),
                        )
                        .start_time(DateTime::from_secs(start.unix_timestamp()))
                        .end_time(DateTime::from_secs(end.unix_timestamp()))
                        .max_results(PAGE)
                        .set_next_token(token.clone())
                        .customize()
                        .interceptor(raw)
                        .send()
                },
            )
            .await?;
            found.pages.push(raw);
            for e in out.events() {
                found.events.push(TrailEvent {
                    event_id: e.event_id().unwrap_or_default().to_owned(),
                    event_name: e.event_name().unwrap_or_default().to_owned(),
                    event_time: e.event_time().and_then(rfc3339).unwrap_or_default(),
                    event_source: e.event_source().map(str::to_owned),
                    username: e.username().map(str::to_owned),
                    access_key_id: e.access_key_id().map(str::to_owned),
                    resources: e
                        .resources()
                        .iter()
                        .map(|r| TrailResource {
                            resource_type: r.resource_type().map(str::to_owned),
                            name: r.resource_name().map(str::to_owned),
                        })
                        .collect(),
                    cloudtrail_event: e.cloud_trail_event().map(str::to_owned),
                });
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(found);
            }
            if found.events.len() >= limit {
                found.truncated = true;
                return Ok(found);
            }
        }
    }
}
