//! Snapshot: one `CreateSnapshots` over every EBS volume of the instance, so all its
//! disks share one point in time (crash-consistent), tagged with the case and the
//! source in the same call. The point in time is fixed when the call returns, so
//! isolation follows at once; the snapshots complete while it runs, and the share stage
//! waits for them. Instance-store disks cannot be snapshotted: they are listed as not
//! captured, in custody and in the summary.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::cloud::{Cloud, CloudError, Snapshot, SnapshotState, TAG_CASE, TAG_PURPOSE, retry};
use crate::ids::{InstanceId, SnapshotId, VolumeId};
use crate::pipeline::custody::{Action, Event};
use crate::pipeline::journal::{Fact, NewFact, ResourceKind};
use crate::pipeline::{Check, MAX_POLL, Run, Stage, StageWork, TargetState, for_each_live};

pub const TAG_SOURCE_ACCOUNT: &str = "cleanroom:source-account";
pub const TAG_SOURCE_INSTANCE: &str = "cleanroom:source-instance";
pub const TAG_SOURCE_VOLUME: &str = "cleanroom:source-volume";
pub const TAG_SOURCE_SNAPSHOT: &str = "cleanroom:source-snapshot";
/// `cleanroom:purpose` of the snapshots of a suspect's volumes.
pub const PURPOSE_SOURCE: &str = "evidence-source";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("CreateSnapshots of {instance}: {source}")]
    Create { instance: InstanceId, source: CloudError },
    #[error("reading snapshots {ids}: {source}")]
    Read { ids: String, source: CloudError },
    #[error(
        "snapshot {snapshot} of volume {volume} ended in error twice ({message}); the volume is not preserved by snapshot\nfix: check the volume's state in the console and rerun; AWS may need a support case"
    )]
    FailedTwice { snapshot: SnapshotId, volume: String, message: String },
    #[error(
        "snapshots {ids} did not complete within {minutes} minutes (last: {progress}); rerun to keep waiting"
    )]
    Timeout { ids: String, minutes: u64, progress: String },
    #[error("journal: {0}")]
    Journal(#[from] crate::pipeline::journal::JournalError),
    #[error(transparent)]
    Custody(#[from] crate::pipeline::custody::CustodyError),
}

fn tags(run: &Run, t: &TargetState) -> BTreeMap<String, String> {
    [
        (TAG_CASE.to_owned(), run.case.to_string()),
        (TAG_PURPOSE.to_owned(), PURPOSE_SOURCE.to_owned()),
        (TAG_SOURCE_ACCOUNT.to_owned(), t.target.side.account.to_string()),
        (TAG_SOURCE_INSTANCE.to_owned(), t.target.id.to_string()),
        ("Name".to_owned(), format!("cleanroom {} {}", run.case, t.target.id)),
    ]
    .into()
}

fn description(run: &Run, id: &InstanceId) -> String {
    format!("cleanroom case {}: evidence snapshot of {id} (crash-consistent set)", run.case)
}

fn joined(ids: &[SnapshotId]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn fact(_run: &Run, t: &TargetState, fact: Fact, id: &str, details: serde_json::Value) -> NewFact {
    NewFact {
        stage: Stage::Snapshot,
        fact,
        kind: ResourceKind::SourceSnapshot,
        id: id.to_owned(),
        account: t.target.side.account.to_string(),
        region: t.target.side.region.to_string(),
        subject: Some(t.target.id.to_string()),
        details,
    }
}

/// The snapshots of the target this case already has: from the journal, else found by
/// their tags (a crash between the create and its journal entry).
async fn existing(run: &Run, t: &TargetState) -> Result<Vec<Snapshot>, SnapshotError> {
    let cloud = t.target.side.cloud.as_ref();
    let journaled: Vec<SnapshotId> = run
        .journal
        .created(ResourceKind::SourceSnapshot, Some(t.target.id.as_str()))
        .await
        .into_iter()
        .filter_map(|e| e.id.parse().ok())
        .collect();
    if !journaled.is_empty() {
        return retry(|| cloud.snapshots(&journaled))
            .await
            .map_err(|source| SnapshotError::Read { ids: joined(&journaled), source });
    }
    let wanted = [
        (TAG_CASE.to_owned(), run.case.to_string()),
        (TAG_SOURCE_INSTANCE.to_owned(), t.target.id.to_string()),
        (TAG_PURPOSE.to_owned(), PURPOSE_SOURCE.to_owned()),
    ];
    let found = retry(|| cloud.find_snapshots(&wanted))
        .await
        .map_err(|source| SnapshotError::Read { ids: "by case tag".into(), source })?;
    for s in &found {
        let details = serde_json::json!({"volume": s.volume, "recovered_by": "case tags"});
        run.journal.write(fact(run, t, Fact::Recovered, s.id.as_str(), details)).await?;
    }
    Ok(found)
}

/// Takes (or finds) the target's snapshot set.
async fn take(run: &Run, t: &mut TargetState) -> Result<(), SnapshotError> {
    let cloud = t.target.side.cloud.clone();
    let have = existing(run, t).await?;
    if !have.is_empty() {
        t.snapshots = have;
        return Ok(());
    }
    let asked = format!("create-snapshots-{}", t.target.id);
    run.journal
        .write(fact(run, t, Fact::Asked, &asked, serde_json::json!({"operation": "ec2:CreateSnapshots"})))
        .await?;
    let tags = tags(run, t);
    let text = description(run, &t.target.id);
    let (snapshots, call) = retry(|| cloud.create_snapshots(&t.target.id, &text, &tags))
        .await
        .map_err(|source| SnapshotError::Create { instance: t.target.id.clone(), source })?;
    for s in &snapshots {
        let details = serde_json::json!({"volume": s.volume, "start_time": s.start_time, "request_id": call.request_id});
        run.journal.write(fact(run, t, Fact::Created, s.id.as_str(), details)).await?;
    }
    let not_captured = t.capture.as_ref().and_then(|c| c.instance_store.clone());
    run.custody
        .record(Event {
            action: Action::SnapshotsCreated,
            subject: t.target.arn(),
            evidence: vec![],
            aws_request_ids: call.request_id.iter().cloned().collect(),
            details: serde_json::json!({
                "operation": call.operation,
                "crash_consistent": true,
                "point_in_time": snapshots.iter().filter_map(|s| s.start_time.clone()).min(),
                "snapshots": snapshots.iter().map(|s| serde_json::json!({
                    "snapshot": s.id, "volume": s.volume, "encrypted": s.encrypted, "start_time": s.start_time})).collect::<Vec<_>>(),
                "tags": tags,
                "instance_store_not_captured": not_captured,
            }),
        })
        .await?;
    t.snapshots = snapshots;
    Ok(())
}

/// Waits until every snapshot of `ids` in `cloud` has completed, with doubling polls up
/// to [`MAX_POLL`] and a progress line per snapshot; `Err` on timeout. Snapshots in
/// `error` are returned as they are, for the caller to decide.
pub async fn wait(
    run: &Run,
    cloud: &dyn Cloud,
    ids: &[SnapshotId],
    label: &str,
) -> Result<Vec<Snapshot>, SnapshotError> {
    let started = tokio::time::Instant::now();
    let mut delay = run.settings.first_poll;
    loop {
        let now = retry(|| cloud.snapshots(ids))
            .await
            .map_err(|source| SnapshotError::Read { ids: joined(ids), source })?;
        for s in &now {
            run.reporter.percent(&format!("{label} {}", s.id), s.percent().unwrap_or(0));
        }
        if now.iter().all(|s| s.state != SnapshotState::Pending) {
            for s in &now {
                run.reporter.done(&format!("{label} {}", s.id), &format!("{:?}", s.state).to_lowercase());
            }
            return Ok(now);
        }
        if started.elapsed() >= run.settings.snapshot_timeout {
            let progress = now
                .iter()
                .map(|s| format!("{} {}", s.id, s.progress.as_deref().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SnapshotError::Timeout {
                ids: joined(ids),
                minutes: run.settings.snapshot_timeout.as_secs() / 60,
                progress,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// Waits for the target's snapshots; a snapshot that ends in `error` is taken again
/// once (alone: not crash-consistent with the others, and custody says so).
pub async fn complete(run: &Run, t: &mut TargetState) -> Result<(), SnapshotError> {
    let cloud = t.target.side.cloud.clone();
    let ids: Vec<SnapshotId> = t.snapshots.iter().map(|s| s.id.clone()).collect();
    let mut done = wait(run, cloud.as_ref(), &ids, "snapshot").await?;
    let failed: Vec<Snapshot> = done.iter().filter(|s| s.state == SnapshotState::Error).cloned().collect();
    for bad in failed {
        let volume: Option<VolumeId> = bad.volume.clone();
        let retried = run
            .journal
            .resources(ResourceKind::SourceSnapshot, Some(t.target.id.as_str()))
            .await
            .values()
            .flatten()
            .any(|e| e.details.get("retry_of").and_then(|v| v.as_str()) == Some(bad.id.as_str()));
        let Some(volume) = volume.filter(|_| !retried) else {
            return Err(SnapshotError::FailedTwice {
                snapshot: bad.id.clone(),
                volume: bad.volume.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
                message: bad.state_message.unwrap_or_default(),
            });
        };
        run.reporter.warn(
            t.target.id.as_str(),
            &format!("snapshot {} of {volume} ended in error; taking it again", bad.id),
        );
        run.journal
            .write(fact(
                run,
                t,
                Fact::Removed,
                bad.id.as_str(),
                serde_json::json!({"state": "error", "message": bad.state_message}),
            ))
            .await?;
        let tags = tags(run, t);
        let text = description(run, &t.target.id);
        let (again, call) = retry(|| cloud.create_snapshot(&volume, &text, &tags))
            .await
            .map_err(|source| SnapshotError::Create { instance: t.target.id.clone(), source })?;
        run.journal
            .write(fact(
                run,
                t,
                Fact::Created,
                again.id.as_str(),
                serde_json::json!({"volume": volume, "retry_of": bad.id}),
            ))
            .await?;
        run.custody
            .record(Event {
                action: Action::SnapshotFailed,
                subject: t.target.arn(),
                evidence: vec![],
                aws_request_ids: call.request_id.iter().cloned().collect(),
                details: serde_json::json!({
                    "failed_snapshot": bad.id, "volume": volume, "state_message": bad.state_message,
                    "retried_as": again.id, "crash_consistent_with_the_others": false,
                    "deviation": "the retry is a single-volume snapshot taken later than the set; its point in time differs",
                }),
            })
            .await?;
        let after = wait(run, cloud.as_ref(), std::slice::from_ref(&again.id), "snapshot").await?;
        if let Some(s) = after.into_iter().next() {
            if s.state == SnapshotState::Error {
                return Err(SnapshotError::FailedTwice {
                    snapshot: s.id,
                    volume: volume.to_string(),
                    message: s.state_message.unwrap_or_default(),
                });
            }
            done.retain(|d| d.id != bad.id);
            done.push(s);
        }
    }
    t.snapshots = done;
    Ok(())
}

/// The snapshot stage of acquire.
pub struct SnapshotStage;

#[async_trait]
impl StageWork for SnapshotStage {
    fn stage(&self) -> Stage {
        Stage::Snapshot
    }

    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String> {
        if !run.journal.created(ResourceKind::SourceSnapshot, Some(state.target.id.as_str())).await.is_empty()
        {
            return vec!["snapshots already taken: nothing to create".into()];
        }
        vec![format!(
            "ec2:CreateSnapshots InstanceSpecification={{InstanceId={},ExcludeBootVolume=false}} TagSpecifications={TAG_CASE}={} ({} volume(s))",
            state.target.id,
            run.case,
            state.instance.volumes.len()
        )]
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        for_each_live(run, targets, |run, t| Box::pin(snapshot_one(run, t))).await;
    }

    async fn check(&self, _run: &Run, state: &TargetState) -> Vec<Check> {
        let volumes: Vec<String> = state.instance.volumes.iter().map(|v| v.volume.to_string()).collect();
        let covered: Vec<String> =
            state.snapshots.iter().filter_map(|s| s.volume.as_ref().map(|v| v.to_string())).collect();
        let missing: Vec<&String> = volumes.iter().filter(|v| !covered.contains(v)).collect();
        vec![Check::new(
            "snapshots",
            missing.is_empty(),
            if missing.is_empty() {
                format!("{} volume(s) in one crash-consistent set", volumes.len())
            } else {
                format!("no snapshot of {missing:?}")
            },
        )]
    }
}

async fn snapshot_one(run: &Run, t: &mut TargetState) {
    run.reporter.step(t.target.id.as_str(), "snapshotting");
    if let Err(e) = take(run, t).await {
        t.fail(Stage::Snapshot, e);
    }
}
