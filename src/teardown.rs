//! Teardown: removes the analysis volumes and instances the case created, and nothing
//! else. The journal says which resources the case created (a resource it found is
//! never removed); each removal is a custody record with its request id. The evidence,
//! the forensics snapshot copies and the case's records stay, and so do the relay copies
//! in member accounts (the member role may not delete snapshots: evidence is never
//! destroyed by the tool; the README says how to remove them by hand once verified).

use std::time::Duration;

use serde::Serialize;

use crate::analyze::{PURPOSE_ANALYSIS, TAG_CLIENT_TOKEN};
use crate::cloud::{Accounts, CloudError, ErrorKind, Side, TAG_CASE, TAG_PURPOSE, retry};
use crate::ids::{InstanceId, VolumeId};
use crate::pipeline::custody::{Action, CustodySink, Event};
use crate::pipeline::journal::{Entry, Fact, Journal, NewFact, ResourceKind};
use crate::pipeline::{MAX_POLL, Stage};
use crate::progress::Reporter;
use crate::snapshot::TAG_SOURCE_SNAPSHOT;

/// Longest wait for a volume to detach.
const DETACH_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub kind: ResourceKind,
    pub id: String,
    pub account: String,
    pub region: String,
    /// False when it was already gone.
    pub removed_now: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub removed: Vec<Removed>,
    pub errors: Vec<String>,
}

async fn record(
    journal: &Journal,
    custody: &dyn CustodySink,
    side: &Side,
    e: &Entry,
    request_id: Option<String>,
    now: bool,
) -> Result<(), String> {
    journal
        .write(NewFact {
            stage: Stage::Analyze,
            fact: Fact::Removed,
            kind: e.kind,
            id: e.id.clone(),
            account: e.account.clone(),
            region: e.region.clone(),
            subject: e.subject.clone(),
            details: serde_json::json!({"by": "teardown", "was_present": now}),
        })
        .await
        .map_err(|e| e.to_string())?;
    if now {
        let (resource, account) = match e.kind {
            ResourceKind::AnalysisInstance => ("instance", Some(&side.account)),
            ResourceKind::AnalysisVolume => ("volume", Some(&side.account)),
            _ => ("snapshot", None),
        };
        custody
            .record(Event {
                action: Action::ResourceRemoved,
                subject: crate::ids::ec2_arn(&side.region, account, resource, &e.id),
                evidence: vec![],
                aws_request_ids: request_id.into_iter().collect(),
                details: serde_json::json!({"kind": e.kind, "id": e.id, "why": "teardown: an analysis resource the case created"}),
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn remove_volume(
    side: &Side,
    id: &VolumeId,
    first_poll: Duration,
) -> Result<(bool, Option<String>), CloudError> {
    let found = match retry(|| side.cloud.volumes(std::slice::from_ref(id))).await {
        Ok(v) => v,
        Err(e) if e.is(ErrorKind::NotFound) => return Ok((false, None)),
        Err(e) => return Err(e),
    };
    let Some(v) = found.into_iter().next() else { return Ok((false, None)) };
    if !v.attachments.is_empty() {
        for (instance, _) in &v.attachments {
            retry(|| side.cloud.detach_volume(id, instance)).await?;
        }
        let started = tokio::time::Instant::now();
        let mut delay = first_poll;
        loop {
            let now = retry(|| side.cloud.volumes(std::slice::from_ref(id))).await?;
            if now.first().is_none_or(|v| v.attachments.is_empty() && v.state == "available") {
                break;
            }
            if started.elapsed() > DETACH_TIMEOUT {
                return Err(CloudError::new(
                    "ec2",
                    "DetachVolume",
                    ErrorKind::Other,
                    format!("{id} is still attached after {} s", DETACH_TIMEOUT.as_secs()),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_POLL);
        }
    }
    let call = retry(|| side.cloud.delete_volume(id)).await?;
    Ok((true, call.request_id))
}

async fn remove_instance(side: &Side, id: &InstanceId) -> Result<(bool, Option<String>), CloudError> {
    match retry(|| side.cloud.describe_instance(id)).await? {
        None => Ok((false, None)),
        Some(i) if i.state == "terminated" => Ok((false, None)),
        Some(_) => Ok((true, retry(|| side.cloud.terminate_instance(id)).await?.request_id)),
    }
}

/// Creates whose answer was lost (an `Asked` fact and no resource journaled for it: the
/// process was killed, or the response never came back). If AWS made the resource, it
/// carries the case's tags (an instance also its client token); it is journaled
/// `Recovered`, so it is removed below like any other the case made. Only tags the case
/// set at creation are searched: nothing the case did not make is ever found.
async fn recover_lost_creates(journal: &Journal, side: &Side, out: &mut Outcome) {
    let facts = journal.facts().await;
    let mut known: std::collections::HashSet<String> =
        facts.iter().filter(|f| f.fact != Fact::Asked).map(|f| f.id.clone()).collect();
    for asked in facts.iter().filter(|f| f.fact == Fact::Asked) {
        let case = (TAG_CASE.to_owned(), asked.case.clone());
        let found: Result<Vec<String>, CloudError> = match asked.kind {
            ResourceKind::AnalysisInstance => {
                let Some(token) = asked.details.get("client_token").and_then(|v| v.as_str()) else {
                    continue;
                };
                let wanted = [case, (TAG_CLIENT_TOKEN.to_owned(), token.to_owned())];
                retry(|| side.cloud.find_instances(&wanted))
                    .await
                    .map(|ids| ids.into_iter().map(|i| i.to_string()).collect())
            }
            ResourceKind::AnalysisVolume => {
                let Some(snapshot) = asked.id.strip_prefix("from-") else { continue };
                let wanted = [
                    case,
                    (TAG_PURPOSE.to_owned(), PURPOSE_ANALYSIS.to_owned()),
                    (TAG_SOURCE_SNAPSHOT.to_owned(), snapshot.to_owned()),
                ];
                retry(|| side.cloud.find_volumes(&wanted))
                    .await
                    .map(|vs| vs.into_iter().map(|v| v.id.to_string()).collect())
            }
            _ => continue,
        };
        let ids = match found {
            Ok(ids) => ids,
            Err(e) => {
                out.errors.push(format!("looking for the {:?} asked as {}: {e}", asked.kind, asked.id));
                continue;
            }
        };
        for id in ids {
            if !known.insert(id.clone()) {
                continue;
            }
            let mut details = serde_json::json!({
                "recovered_by": "teardown: the case's tags (the answer to the create was lost)",
                "asked_as": asked.id,
            });
            if let Some(snapshot) = asked.id.strip_prefix("from-") {
                details["forensics_snapshot"] = serde_json::json!(snapshot);
            }
            let written = journal
                .write(NewFact {
                    stage: Stage::Analyze,
                    fact: Fact::Recovered,
                    kind: asked.kind,
                    id: id.clone(),
                    account: asked.account.clone(),
                    region: asked.region.clone(),
                    subject: asked.subject.clone(),
                    details,
                })
                .await;
            if let Err(e) = written {
                out.errors.push(format!("{id}: {e}"));
            }
        }
    }
}

/// Removes every resource of `kind` the case created with `remove` (None: not an id of
/// that kind), each removal recorded; problems are collected in `out`.
async fn remove_each<F, Fut>(
    (journal, custody, side, reporter): (&Journal, &dyn CustodySink, &Side, &dyn Reporter),
    kind: ResourceKind,
    doing: &str,
    out: &mut Outcome,
    remove: F,
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Option<Result<(bool, Option<String>), CloudError>>>,
{
    for e in journal.created(kind, None).await {
        reporter.step(&e.id, doing);
        let Some(removed) = remove(e.id.clone()).await else { continue };
        match removed {
            Ok((now, request)) => match record(journal, custody, side, &e, request, now).await {
                Ok(()) => out.removed.push(Removed {
                    kind: e.kind,
                    id: e.id.clone(),
                    account: e.account.clone(),
                    region: e.region.clone(),
                    removed_now: now,
                }),
                Err(err) => out.errors.push(format!("{}: {err}", e.id)),
            },
            Err(err) => out.errors.push(format!("{doing} {}: {err}", e.id)),
        }
    }
}

/// Removes what the case created for analysis.
pub async fn teardown(
    accounts: &dyn Accounts,
    journal: &Journal,
    custody: &dyn CustodySink,
    first_poll: Duration,
    reporter: &dyn Reporter,
) -> Outcome {
    let mut out = Outcome::default();
    let forensics = match accounts.forensics().await {
        Ok(f) => f,
        Err(e) => {
            out.errors.push(format!("cannot reach the forensics account: {e}"));
            return out;
        }
    };
    recover_lost_creates(journal, &forensics, &mut out).await;
    // Volumes first (detached, then deleted), then the instances they were on.
    let side = &forensics;
    let ctx = (journal, custody, side, reporter);
    remove_each(
        ctx,
        ResourceKind::AnalysisVolume,
        "removing the analysis volume",
        &mut out,
        |id| async move {
            let id = id.parse::<VolumeId>().ok()?;
            Some(remove_volume(side, &id, first_poll).await)
        },
    )
    .await;
    remove_each(
        ctx,
        ResourceKind::AnalysisInstance,
        "terminating the analysis instance",
        &mut out,
        |id| async move {
            let id = id.parse::<InstanceId>().ok()?;
            Some(remove_instance(side, &id).await)
        },
    )
    .await;
    out
}
