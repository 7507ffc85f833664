//! The capture stage of acquire: for each target, the containment prior state first
//! (what release restores; stored before anything changes), then everything else
//! capture reads, stored as evidence items. A target captured by an earlier run is
//! read back, not captured again: the first capture is the one from before any change.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{Summary, item_id, read, store, trail::Window};
use crate::isolate::observe::store_prior_state;
use crate::pipeline::custody::{Action, Event};
use crate::pipeline::{Check, Run, Stage, StageWork, TargetState, for_each_live};

/// The id of a target's capture summary: its presence means capture is done.
fn summary_id(t: &TargetState) -> String {
    item_id(&t.target.side.account, &t.target.id, "capture-summary.json")
}

async fn capture(run: &Run, t: &mut TargetState) -> Result<(), String> {
    let side = t.target.side.clone();
    let id = t.target.id.clone();
    if let Some((_, v)) = run.custody.load_json(&summary_id(t)).await.map_err(|e| e.to_string())? {
        t.capture = Some(
            serde_json::from_value::<Summary>(v)
                .map_err(|e| format!("stored capture summary of {id}: {e}"))?,
        );
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let now_text = crate::evidence::case::utc_ms(now);
    run.reporter.step(id.as_str(), "capturing (prior state)");
    let prior = store_prior_state(
        side.cloud.as_ref(),
        run.custody.as_ref(),
        &side.account,
        &side.region,
        &id,
        &now_text,
    )
    .await
    .map_err(|e| format!("prior state: {e}"))?;
    run.reporter.step(id.as_str(), "capturing (instance, IAM, console, CloudTrail)");
    let window = Window::around_launch(t.instance.details.launch_time.as_deref(), now);
    let reading = read(side.cloud.as_ref(), &t.instance, now, &window).await.map_err(|e| e.to_string())?;
    let stored = store(run.custody.as_ref(), &side.account, &side.region, &reading)
        .await
        .map_err(|e| e.to_string())?;
    for g in &stored.summary.gaps {
        run.reporter.warn(
            id.as_str(),
            &format!("not captured: {}: {}", g.what, crate::text::sanitize_lines(&g.error)),
        );
    }
    run.custody
        .record(Event {
            action: Action::CaptureCompleted,
            subject: t.target.arn(),
            evidence: std::iter::once(prior.clone()).chain(stored.items.iter().cloned()).collect(),
            aws_request_ids: vec![],
            details: serde_json::json!({
                "items": stored.items.len() + 1,
                "gaps": stored.summary.gaps,
                "launched_by": stored.summary.trail.launched_by,
                "instance_store_not_captured": stored.summary.instance_store,
            }),
        })
        .await
        .map_err(|e| e.to_string())?;
    t.evidence.push(prior);
    t.evidence.extend(stored.items);
    t.capture = Some(stored.summary);
    Ok(())
}

pub struct CaptureStage;

#[async_trait]
impl StageWork for CaptureStage {
    fn stage(&self) -> Stage {
        Stage::Capture
    }

    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String> {
        if run.custody.find(&summary_id(state)).await.ok().flatten().is_some() {
            return vec!["already captured: the stored capture is kept".into()];
        }
        let id = &state.target.id;
        vec![
            format!("ec2:DescribeInstances, DescribeInstanceAttribute (16 attributes, userData included) {id}"),
            format!("ec2:DescribeNetworkInterfaces, DescribeSecurityGroups, DescribeVolumes, DescribeIamInstanceProfileAssociations {id}"),
            format!("ec2:GetConsoleOutput Latest=true, GetConsoleScreenshot {id}"),
            "iam:GetInstanceProfile, GetRole, ListAttachedRolePolicies, GetPolicy(Version), ListRolePolicies, GetRolePolicy".into(),
            format!("cloudtrail:LookupEvents ResourceName={id}, then AccessKeyId=<the key that launched it>"),
            "s3:PutObject the prior state, the raw responses, decoded UserData and console, the summary".into(),
        ]
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        for_each_live(run, targets, |run, t| Box::pin(capture_one(run, t))).await;
    }

    async fn check(&self, run: &Run, state: &TargetState) -> Vec<Check> {
        let stored = run.custody.find(&summary_id(state)).await.ok().flatten().is_some();
        vec![Check::new(
            "captured",
            stored,
            if stored { "capture summary stored" } else { "no capture summary" },
        )]
    }
}

async fn capture_one(run: &Run, t: &mut TargetState) {
    if let Err(e) = capture(run, t).await {
        t.fail(Stage::Capture, e);
    }
}
