//! Share: move each disk out of the attacker's reach. A snapshot under the default
//! aws/ebs key cannot be shared, and one under another key of the suspect's account may
//! not be usable by the forensics account: both are first copied under the hand-off key
//! (a customer-managed key of the member account that the forensics account may use).
//! The snapshot (or its relay copy) is shared with the forensics account, copied there
//! under the forensics key, and the share is taken back. The forensics copies are the
//! evidence: the attacker may control the source account.
//!
//! Every resource is tagged with the case in the call that creates it and journaled, so
//! a rerun after any interruption finds what exists and makes nothing twice.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::cloud::{
    CloudError, CopyRequest, KeyInfo, Side, Snapshot, SnapshotState, TAG_CASE, TAG_PURPOSE, retry,
};
use crate::ids::{AccountId, SnapshotId};
use crate::pipeline::custody::{Action, Event, EvidenceRef, Item};
use crate::pipeline::journal::{Fact, NewFact, ResourceKind};
use crate::pipeline::{Check, Run, Stage, StageWork, TargetState, for_each_live};
use crate::snapshot::{TAG_SOURCE_ACCOUNT, TAG_SOURCE_INSTANCE, TAG_SOURCE_SNAPSHOT, TAG_SOURCE_VOLUME};

pub const PURPOSE_RELAY: &str = "relay";
pub const PURPOSE_EVIDENCE: &str = "evidence";
pub const HANDED_OFF_SCHEMA: &str = "cleanroom.forensics-copy/1";

/// One disk in the forensics account: the evidence item that says where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedOff {
    pub schema: String,
    pub case: String,
    pub source_account: String,
    pub source_region: String,
    pub instance: String,
    pub volume: Option<String>,
    pub source_snapshot: SnapshotId,
    pub source_start_time: Option<String>,
    pub source_encrypted: bool,
    pub source_key: Option<String>,
    pub relay_copy: Option<SnapshotId>,
    pub handoff_key: Option<String>,
    pub forensics_account: String,
    pub forensics_region: String,
    pub forensics_snapshot: SnapshotId,
    pub forensics_key: Option<String>,
    pub size_gib: Option<i32>,
    pub aws_request_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error(
        "hand-off key {key} not found in account {account}, region {region}\nfix: deploy cloudformation/member-account.yaml there (it creates the key and its alias), or name an existing customer-managed key in `member.handoff_key`"
    )]
    NoHandoffKey { key: String, account: AccountId, region: String },
    #[error(
        "hand-off key {key} in account {account} is {what}: snapshots under it cannot be given to the forensics account\nfix: use the customer-managed key of cloudformation/member-account.yaml (`member.handoff_key`)"
    )]
    BadHandoffKey { key: String, account: AccountId, what: String },
    #[error("{step} of snapshot {snapshot}: {source}{}", hint(source))]
    Call { step: &'static str, snapshot: SnapshotId, source: CloudError },
    #[error("the copy {copy} of {snapshot} ended in error in account {account}: {message}\nfix: {fix}")]
    CopyFailed { copy: SnapshotId, snapshot: SnapshotId, account: String, message: String, fix: String },
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error("journal: {0}")]
    Journal(#[from] crate::pipeline::journal::JournalError),
    #[error(transparent)]
    Custody(#[from] crate::pipeline::custody::CustodyError),
}

fn hint(e: &CloudError) -> &'static str {
    match e.kind {
        crate::cloud::ErrorKind::AccessDenied => {
            "\nfix: the role used there lacks the permission; deploy the policies of cloudformation/ (or grant the call named above)"
        }
        _ => "",
    }
}

fn item_id(t: &TargetState, source: &SnapshotId) -> String {
    format!("{}/{}/disk/forensics-copy-{source}.json", t.target.side.account, t.target.id)
}

fn journal(
    run: &Run,
    t: &TargetState,
    side: &Side,
    fact: Fact,
    kind: ResourceKind,
    id: &str,
    details: serde_json::Value,
) -> NewFact {
    let _ = run;
    NewFact {
        stage: Stage::Share,
        fact,
        kind,
        id: id.to_owned(),
        account: side.account.to_string(),
        region: side.region.to_string(),
        subject: Some(t.target.id.to_string()),
        details,
    }
}

fn base_tags(run: &Run, t: &TargetState, source: &Snapshot, purpose: &str) -> BTreeMap<String, String> {
    let mut tags: BTreeMap<String, String> = [
        (TAG_CASE.to_owned(), run.case.to_string()),
        (TAG_PURPOSE.to_owned(), purpose.to_owned()),
        (TAG_SOURCE_ACCOUNT.to_owned(), t.target.side.account.to_string()),
        (TAG_SOURCE_INSTANCE.to_owned(), t.target.id.to_string()),
        (TAG_SOURCE_SNAPSHOT.to_owned(), source.id.to_string()),
        ("Name".to_owned(), format!("cleanroom {} {} {purpose}", run.case, source.id)),
    ]
    .into();
    if let Some(v) = &source.volume {
        tags.insert(TAG_SOURCE_VOLUME.to_owned(), v.to_string());
    }
    tags
}

/// The hand-off key of the member account, checked usable for the purpose.
async fn handoff_key(run: &Run, side: &Side) -> Result<KeyInfo, ShareError> {
    let key = &run.settings.handoff_key;
    let info = retry(|| side.cloud.describe_key(key))
        .await
        .map_err(|source| ShareError::Call {
            step: "kms:DescribeKey of the hand-off key",
            snapshot: "snap-00000000".parse().expect("id"),
            source,
        })?
        .ok_or_else(|| ShareError::NoHandoffKey {
            key: key.clone(),
            account: side.account.clone(),
            region: side.region.to_string(),
        })?;
    if info.is_aws_managed() {
        return Err(ShareError::BadHandoffKey {
            key: key.clone(),
            account: side.account.clone(),
            what: "an AWS managed key".into(),
        });
    }
    if info.state != "Enabled" {
        return Err(ShareError::BadHandoffKey {
            key: key.clone(),
            account: side.account.clone(),
            what: format!("{} (not Enabled)", info.state),
        });
    }
    Ok(info)
}

/// A copy this case made (journal) or that carries its tags (crash before the journal),
/// not ended in error.
async fn find_copy(
    run: &Run,
    t: &TargetState,
    side: &Side,
    kind: ResourceKind,
    purpose: &str,
    source: &SnapshotId,
) -> Result<Option<Snapshot>, ShareError> {
    let journaled: Vec<SnapshotId> = run
        .journal
        .created(kind, Some(t.target.id.as_str()))
        .await
        .into_iter()
        .filter(|e| e.details.get("source_snapshot").and_then(|v| v.as_str()) == Some(source.as_str()))
        .filter_map(|e| e.id.parse().ok())
        .collect();
    let mut candidates = if journaled.is_empty() {
        Vec::new()
    } else {
        retry(|| side.cloud.snapshots(&journaled)).await.map_err(|e| ShareError::Call {
            step: "ec2:DescribeSnapshots",
            snapshot: source.clone(),
            source: e,
        })?
    };
    if candidates.is_empty() {
        let wanted = [
            (TAG_CASE.to_owned(), run.case.to_string()),
            (TAG_PURPOSE.to_owned(), purpose.to_owned()),
            (TAG_SOURCE_SNAPSHOT.to_owned(), source.to_string()),
        ];
        candidates = retry(|| side.cloud.find_snapshots(&wanted)).await.map_err(|e| ShareError::Call {
            step: "ec2:DescribeSnapshots",
            snapshot: source.clone(),
            source: e,
        })?;
        for c in candidates.iter().filter(|c| c.state != SnapshotState::Error) {
            let details = serde_json::json!({"source_snapshot": source, "recovered_by": "case tags"});
            run.journal.write(journal(run, t, side, Fact::Recovered, kind, c.id.as_str(), details)).await?;
        }
    }
    Ok(candidates.into_iter().find(|c| c.state != SnapshotState::Error))
}

/// Copies `source` (visible in `side`'s region or shared to it) into `side` under `key`.
#[allow(clippy::too_many_arguments)]
async fn copy(
    run: &Run,
    t: &TargetState,
    side: &Side,
    kind: ResourceKind,
    purpose: &str,
    original: &Snapshot,
    from: &SnapshotId,
    from_region: &str,
    key: &str,
) -> Result<(SnapshotId, Option<String>), ShareError> {
    let asked =
        format!("copy-{}-{from}", if kind == ResourceKind::RelayCopy { "relay" } else { "forensics" });
    run.journal
        .write(journal(
            run,
            t,
            side,
            Fact::Asked,
            kind,
            &asked,
            serde_json::json!({"source_snapshot": original.id}),
        ))
        .await?;
    let request = CopyRequest {
        source: from.clone(),
        source_region: from_region.parse().expect("a region of the run"),
        kms_key: Some(key.to_owned()),
        description: format!(
            "cleanroom case {}: {purpose} copy of {} ({})",
            run.case, original.id, t.target.id
        ),
        tags: base_tags(run, t, original, purpose),
    };
    let (id, call) = retry(|| side.cloud.copy_snapshot(&request))
        .await
        .map_err(|source| ShareError::Call { step: "ec2:CopySnapshot", snapshot: from.clone(), source })?;
    let details = serde_json::json!({"source_snapshot": original.id, "copied_from": from, "key": key, "request_id": call.request_id});
    run.journal.write(journal(run, t, side, Fact::Created, kind, id.as_str(), details)).await?;
    Ok((id, call.request_id))
}

/// Waits for a copy; an error state is journaled (so a rerun copies again) and reported.
async fn wait_copy(
    run: &Run,
    t: &TargetState,
    side: &Side,
    kind: ResourceKind,
    copy: &SnapshotId,
    of: &SnapshotId,
    fix: String,
) -> Result<Snapshot, ShareError> {
    let done = crate::snapshot::wait(run, side.cloud.as_ref(), std::slice::from_ref(copy), "copy").await?;
    let s = done.into_iter().next().ok_or_else(|| ShareError::CopyFailed {
        copy: copy.clone(),
        snapshot: of.clone(),
        account: side.account.to_string(),
        message: "the copy is gone".into(),
        fix: fix.clone(),
    })?;
    if s.state == SnapshotState::Error {
        let message = s.state_message.clone().unwrap_or_else(|| "no message".into());
        run.journal
            .write(journal(
                run,
                t,
                side,
                Fact::Removed,
                kind,
                copy.as_str(),
                serde_json::json!({"state": "error", "message": message}),
            ))
            .await?;
        run.custody
            .record(Event {
                action: Action::HandOffFailed,
                subject: t.target.arn(),
                evidence: vec![],
                aws_request_ids: vec![],
                details: serde_json::json!({"copy": copy, "of": of, "account": side.account, "state_message": message, "fix": fix}),
            })
            .await?;
        return Err(ShareError::CopyFailed {
            copy: copy.clone(),
            snapshot: of.clone(),
            account: side.account.to_string(),
            message,
            fix,
        });
    }
    Ok(s)
}

/// Takes the share back if the forensics account still has it.
async fn unshare(
    run: &Run,
    t: &TargetState,
    shared: &SnapshotId,
    forensics: &AccountId,
    ids: &mut Vec<String>,
) -> Result<(), ShareError> {
    let member = &t.target.side;
    let shares = retry(|| member.cloud.snapshot_shares(shared)).await.map_err(|source| ShareError::Call {
        step: "ec2:DescribeSnapshotAttribute",
        snapshot: shared.clone(),
        source,
    })?;
    if !shares.iter().any(|s| s == forensics.as_str()) {
        return Ok(());
    }
    let call = retry(|| member.cloud.unshare_snapshot(shared, forensics)).await.map_err(|source| {
        ShareError::Call { step: "ec2:ModifySnapshotAttribute (remove)", snapshot: shared.clone(), source }
    })?;
    ids.extend(call.request_id.clone());
    run.journal
        .write(journal(
            run,
            t,
            member,
            Fact::Removed,
            ResourceKind::Share,
            shared.as_str(),
            serde_json::json!({"account": forensics}),
        ))
        .await?;
    run.custody
        .record(Event {
            action: Action::ShareRemoved,
            subject: t.target.arn(),
            evidence: vec![],
            aws_request_ids: call.request_id.into_iter().collect(),
            details: serde_json::json!({"snapshot": shared, "account": forensics}),
        })
        .await?;
    Ok(())
}

/// Hands one source snapshot off to the forensics account; idempotent.
async fn hand_off(
    run: &Run,
    t: &TargetState,
    forensics: &Side,
    source: &Snapshot,
) -> Result<(HandedOff, EvidenceRef), ShareError> {
    let item = item_id(t, &source.id);
    let member = &t.target.side;
    let mut ids = Vec::new();
    if let Some((r, v)) = run.custody.load_json(&item).await? {
        let done: HandedOff = serde_json::from_value(v)
            .map_err(|e| crate::pipeline::custody::CustodyError(format!("{item}: {e}")))?;
        // A crash after the item but before the share was taken back.
        unshare(
            run,
            t,
            done.relay_copy.as_ref().unwrap_or(&done.source_snapshot),
            &forensics.account,
            &mut ids,
        )
        .await?;
        return Ok((done, r));
    }
    // What the forensics account may be given: the snapshot itself, or a relay copy.
    let needs_relay = source.encrypted;
    let mut handoff = None;
    let mut relay_id = None;
    let shared = if needs_relay {
        let key = handoff_key(run, member).await?;
        if source.kms_key.as_deref() == Some(key.arn.as_str()) {
            handoff = Some(key.arn);
            source.id.clone()
        } else {
            let relay = match find_copy(run, t, member, ResourceKind::RelayCopy, PURPOSE_RELAY, &source.id)
                .await?
            {
                Some(r) => r.id,
                None => {
                    let (id, request) = copy(
                        run,
                        t,
                        member,
                        ResourceKind::RelayCopy,
                        PURPOSE_RELAY,
                        source,
                        &source.id,
                        member.region.as_str(),
                        &key.arn,
                    )
                    .await?;
                    ids.extend(request.clone());
                    run.custody
                        .record(Event {
                            action: Action::RelayCopyCreated,
                            subject: t.target.arn(),
                            evidence: vec![],
                            aws_request_ids: request.into_iter().collect(),
                            details: serde_json::json!({
                                "source_snapshot": source.id, "source_key": source.kms_key, "relay_copy": id, "handoff_key": key.arn,
                                "why": "a snapshot under aws/ebs or another key of the suspect's account cannot be given to the forensics account as it is",
                            }),
                        })
                        .await?;
                    id
                }
            };
            let fix = format!(
                "the hand-off key {} must be usable in account {} (kms:Decrypt, CreateGrant, GenerateDataKeyWithoutPlaintext, ReEncrypt*) and the source key {} by the member role",
                key.arn,
                member.account,
                source.kms_key.as_deref().unwrap_or("?")
            );
            wait_copy(run, t, member, ResourceKind::RelayCopy, &relay, &source.id, fix).await?;
            handoff = Some(key.arn);
            relay_id = Some(relay.clone());
            relay
        }
    } else {
        source.id.clone()
    };

    let copy_snapshot = match find_copy(
        run,
        t,
        forensics,
        ResourceKind::ForensicsCopy,
        PURPOSE_EVIDENCE,
        &source.id,
    )
    .await?
    {
        Some(c) => c.id,
        None => {
            let shares =
                retry(|| member.cloud.snapshot_shares(&shared)).await.map_err(|e| ShareError::Call {
                    step: "ec2:DescribeSnapshotAttribute",
                    snapshot: shared.clone(),
                    source: e,
                })?;
            if !shares.iter().any(|s| s == forensics.account.as_str()) {
                let call = retry(|| member.cloud.share_snapshot(&shared, &forensics.account)).await.map_err(
                    |e| ShareError::Call {
                        step: "ec2:ModifySnapshotAttribute (createVolumePermission add)",
                        snapshot: shared.clone(),
                        source: e,
                    },
                )?;
                ids.extend(call.request_id.clone());
                run.journal
                    .write(journal(
                        run,
                        t,
                        member,
                        Fact::Created,
                        ResourceKind::Share,
                        shared.as_str(),
                        serde_json::json!({"account": forensics.account, "source_snapshot": source.id}),
                    ))
                    .await?;
                run.custody
                    .record(Event {
                        action: Action::SnapshotShared,
                        subject: t.target.arn(),
                        evidence: vec![],
                        aws_request_ids: call.request_id.into_iter().collect(),
                        details: serde_json::json!({"snapshot": shared, "account": forensics.account, "source_snapshot": source.id}),
                    })
                    .await?;
            }
            let (id, request) = copy(
                run,
                t,
                forensics,
                ResourceKind::ForensicsCopy,
                PURPOSE_EVIDENCE,
                source,
                &shared,
                member.region.as_str(),
                &run.settings.forensics_key,
            )
            .await?;
            ids.extend(request);
            id
        }
    };
    let fix = format!(
        "the key of the shared snapshot ({}) must let account {} use it (kms:Decrypt, CreateGrant, ReEncryptFrom), and {} must be usable by the forensics role",
        handoff.as_deref().or(source.kms_key.as_deref()).unwrap_or("none"),
        forensics.account,
        run.settings.forensics_key
    );
    let done =
        wait_copy(run, t, forensics, ResourceKind::ForensicsCopy, &copy_snapshot, &source.id, fix).await?;
    unshare(run, t, &shared, &forensics.account, &mut ids).await?;

    let handed = HandedOff {
        schema: HANDED_OFF_SCHEMA.into(),
        case: run.case.to_string(),
        source_account: member.account.to_string(),
        source_region: member.region.to_string(),
        instance: t.target.id.to_string(),
        volume: source.volume.as_ref().map(|v| v.to_string()),
        source_snapshot: source.id.clone(),
        source_start_time: source.start_time.clone(),
        source_encrypted: source.encrypted,
        source_key: source.kms_key.clone(),
        relay_copy: relay_id,
        handoff_key: handoff,
        forensics_account: forensics.account.to_string(),
        forensics_region: forensics.region.to_string(),
        forensics_snapshot: done.id.clone(),
        forensics_key: done.kms_key.clone(),
        size_gib: done.size_gib.or(source.size_gib),
        aws_request_ids: ids.clone(),
    };
    let evidence = run
        .custody
        .store_json(
            Item {
                id: item,
                account: member.account.clone(),
                subject: t.target.id.to_string(),
                name: format!("forensics-copy-{}.json", source.id),
                source: "ec2:CreateSnapshots, CopySnapshot, ModifySnapshotAttribute, DescribeSnapshots".into(),
                method: "cleanroom share: the snapshot (or its relay copy under the hand-off key) shared with the forensics account, copied there under its key, share removed".into(),
                derived_from: vec![],
            },
            &serde_json::to_value(&handed).expect("hand-off serialises"),
        )
        .await?;
    run.custody
        .record(Event {
            action: Action::ForensicsCopyCompleted,
            subject: crate::ids::snapshot_arn(&forensics.region, &done.id),
            evidence: vec![evidence.clone()],
            aws_request_ids: ids,
            details: serde_json::json!({"source_snapshot": source.id, "volume": source.volume, "forensics_snapshot": done.id, "key": done.kms_key}),
        })
        .await?;
    run.journal
        .write(journal(
            run,
            t,
            forensics,
            Fact::Completed,
            ResourceKind::ForensicsCopy,
            done.id.as_str(),
            serde_json::json!({"source_snapshot": source.id}),
        ))
        .await?;
    Ok((handed, evidence))
}

/// The share stage of acquire.
pub struct ShareStage;

#[async_trait]
impl StageWork for ShareStage {
    fn stage(&self) -> Stage {
        Stage::Share
    }

    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String> {
        let mut calls = vec!["ec2:DescribeSnapshots (wait until completed)".to_owned()];
        for v in &state.instance.volumes {
            calls.push(format!(
                "{}: if encrypted under another key than {}: ec2:CopySnapshot KmsKeyId={} (relay copy in the member account)",
                v.volume, run.settings.handoff_key, run.settings.handoff_key
            ));
            calls.push(format!(
                "{}: ec2:ModifySnapshotAttribute createVolumePermission Add=forensics account",
                v.volume
            ));
            calls.push(format!(
                "{}: ec2:CopySnapshot in the forensics account KmsKeyId={}",
                v.volume, run.settings.forensics_key
            ));
            calls.push(format!(
                "{}: ec2:ModifySnapshotAttribute createVolumePermission Remove=forensics account",
                v.volume
            ));
        }
        calls
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        let forensics = match run.accounts.forensics().await {
            Ok(f) => f,
            Err(e) => {
                for t in targets.iter_mut().filter(|t| t.failed.is_none()) {
                    t.fail(Stage::Share, format!("cannot act in the forensics account: {e}"));
                }
                return;
            }
        };
        let forensics = &forensics;
        for_each_live(run, targets, |run, t| Box::pin(share_one(run, t, forensics))).await;
    }

    async fn check(&self, run: &Run, state: &TargetState) -> Vec<Check> {
        let mut checks = Vec::new();
        let Ok(forensics) = run.accounts.forensics().await else {
            return vec![Check::new("forensics copies", false, "cannot reach the forensics account")];
        };
        for h in &state.copies {
            let copy = retry(|| forensics.cloud.snapshots(std::slice::from_ref(&h.forensics_snapshot))).await;
            let ok =
                copy.as_ref().is_ok_and(|c| c.first().is_some_and(|s| s.state == SnapshotState::Completed));
            checks.push(Check::new(
                format!("forensics copy of {}", h.volume.as_deref().unwrap_or("?")),
                ok,
                format!(
                    "{} in {} ({})",
                    h.forensics_snapshot,
                    h.forensics_account,
                    if ok { "completed" } else { "NOT completed" }
                ),
            ));
            let shared = h.relay_copy.as_ref().unwrap_or(&h.source_snapshot);
            let shares = retry(|| state.target.side.cloud.snapshot_shares(shared)).await;
            let ok = shares
                .as_ref()
                .is_ok_and(|s| !s.iter().any(|a| a == forensics.account.as_str() || a == "all"));
            checks.push(Check::new(
                format!("share of {shared} removed"),
                ok,
                if ok { "no share left" } else { "still shared" },
            ));
        }
        checks
    }
}

async fn share_one(run: &Run, t: &mut TargetState, forensics: &Side) {
    run.reporter.step(t.target.id.as_str(), "waiting for snapshots");
    if let Err(e) = crate::snapshot::complete(run, t).await {
        return t.fail(Stage::Share, e);
    }
    run.reporter.step(t.target.id.as_str(), "handing off to the forensics account");
    let sources = t.snapshots.clone();
    let results = futures::future::join_all(sources.iter().map(|s| hand_off(run, t, forensics, s))).await;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok((h, e)) => {
                t.copies.push(h);
                t.evidence.push(e);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        t.fail(Stage::Share, errors.join("\n"));
    }
}
