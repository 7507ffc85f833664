//! The pipeline of `cleanroom acquire`: the stages, in the one order they run, and what
//! they share (the run's context, each target's state, the fleet runner, the journal,
//! the custody seam).
//!
//! The order follows the order of volatility (RFC 3227) and "contain fast, alter
//! nothing": read what the control plane knows before anything changes it (capture);
//! keep the evidence alive whoever terminates the instance (protect); fix the disks'
//! point in time (snapshot); cut the attacker off while the snapshots complete
//! (isolate); move the disks out of the attacker's reach (share); examine them in the
//! clean room (analyze, collect); list and seal everything (seal).
//!
//! Each stage can say what it would do (`plan`, changing nothing), do it (`run`, over
//! the whole fleet with bounded concurrency, a failed target never stopping the
//! others), and prove it held (`check`, from a fresh read).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod custody;
pub mod fleet;
pub mod journal;

use crate::cloud::{Accounts, Instance, Side, Snapshot};
use crate::ids::{CaseId, InstanceId};
use crate::progress::Reporter;
use custody::{CustodySink, EvidenceRef};
use journal::Journal;

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Capture,
    Protect,
    Snapshot,
    Isolate,
    Share,
    Analyze,
    Collect,
    Seal,
}

/// The one order of the stages.
pub const ORDER: [Stage; 8] = [
    Stage::Capture,
    Stage::Protect,
    Stage::Snapshot,
    Stage::Isolate,
    Stage::Share,
    Stage::Analyze,
    Stage::Collect,
    Stage::Seal,
];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Protect => "protect",
            Stage::Snapshot => "snapshot",
            Stage::Isolate => "isolate",
            Stage::Share => "share",
            Stage::Analyze => "analyze",
            Stage::Collect => "collect",
            Stage::Seal => "seal",
        }
    }

    /// What the stage does, in a line.
    pub fn purpose(self) -> &'static str {
        match self {
            Stage::Capture => "read and store what AWS knows about the instance, before any change",
            Stage::Protect => "termination protection, shutdown behaviour stop, keep volumes, case tags",
            Stage::Snapshot => "one crash-consistent CreateSnapshots over every EBS volume",
            Stage::Isolate => "detach from its service, cut network and credentials, prove it held",
            Stage::Share => "copy the snapshots into the forensics account under its key",
            Stage::Analyze => "examine the forensics copies on a clean analysis instance",
            Stage::Collect => "store the clean room's results in the case",
            Stage::Seal => "write the manifest of every evidence item",
        }
    }
}

/// Which stages a run does, in [`ORDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub isolate: bool,
    pub analysis: bool,
    /// Containment alone: protect and isolate.
    pub isolate_only: bool,
}

impl Selection {
    pub fn stages(&self) -> Vec<Stage> {
        ORDER
            .into_iter()
            .filter(|s| match s {
                Stage::Protect => true,
                Stage::Isolate => self.isolate,
                Stage::Capture | Stage::Snapshot | Stage::Share | Stage::Seal => !self.isolate_only,
                Stage::Analyze | Stage::Collect => self.analysis && !self.isolate_only,
            })
            .collect()
    }
}

/// One instance of the case and where it lives.
#[derive(Debug, Clone)]
pub struct Target {
    pub side: Side,
    pub id: InstanceId,
}

impl Target {
    /// The instance's ARN: the subject of its custody records.
    pub fn arn(&self) -> String {
        crate::ids::instance_arn(&self.side.region, &self.side.account, &self.id)
    }
}

/// One control or result and whether it holds, from a fresh read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub control: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(control: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self { control: control.into(), ok, detail: detail.into() }
    }
}

/// A stage that failed for one target: later stages skip it, a rerun resumes it.
#[derive(Debug, Clone, Serialize)]
pub struct StageFailure {
    pub stage: Stage,
    pub error: String,
}

/// What the stages learn about one target as they go.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub target: Target,
    /// As resolved before any stage ran.
    pub instance: Instance,
    pub capture: Option<crate::capture::Summary>,
    /// Snapshots of its volumes in the member account (the point in time).
    pub snapshots: Vec<Snapshot>,
    /// Its disks in the forensics account.
    pub copies: Vec<crate::share::HandedOff>,
    pub containment: Option<crate::isolate::workflow::Outcome>,
    /// Its disks examined in the clean room.
    pub examined: Vec<crate::analyze::Examined>,
    /// What the clean room found (YARA matches, suspicious key files), with digests.
    pub findings: Vec<crate::collect::Finding>,
    pub evidence: Vec<EvidenceRef>,
    pub failed: Option<StageFailure>,
    pub warnings: Vec<String>,
    pub checks: Vec<(Stage, Check)>,
}

impl TargetState {
    pub fn new(target: Target, instance: Instance) -> Self {
        Self {
            target,
            instance,
            capture: None,
            snapshots: vec![],
            copies: vec![],
            examined: vec![],
            findings: vec![],
            containment: None,
            evidence: vec![],
            failed: None,
            warnings: vec![],
            checks: vec![],
        }
    }

    pub fn fail(&mut self, stage: Stage, error: impl std::fmt::Display) {
        if self.failed.is_none() {
            self.failed = Some(StageFailure { stage, error: error.to_string() });
        }
    }
}

/// What a run needs: the case, both sides of it, where evidence and facts go, and how
/// to tell a person.
pub struct Run {
    pub case: CaseId,
    pub accounts: Arc<dyn Accounts>,
    pub custody: Arc<dyn CustodySink>,
    pub journal: Journal,
    pub reporter: Arc<dyn Reporter>,
    pub settings: Settings,
}

/// The run's choices, validated before it starts.
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    /// Key the forensics copies are made under.
    pub forensics_key: String,
    /// Key (ARN or alias) in member accounts for snapshots that cannot be shared as they
    /// are: those under the default aws/ebs key or another key the forensics account
    /// may not use.
    pub handoff_key: String,
    pub member_role: String,
    /// Longest wait for a snapshot or copy to complete.
    pub snapshot_timeout: std::time::Duration,
    /// First wait between polls (doubles, up to [`MAX_POLL`]).
    pub first_poll: std::time::Duration,
    pub plan_only: bool,
    /// The clean room; `None` when the run does no analysis.
    pub analysis: Option<crate::analyze::AnalysisSettings>,
}

/// Longest wait between two polls of a snapshot.
pub const MAX_POLL: std::time::Duration = std::time::Duration::from_secs(30);

/// A stage: what it would do, doing it for the fleet, and proving it.
#[async_trait]
pub trait StageWork: Send + Sync {
    fn stage(&self) -> Stage;
    /// The API calls it would make for one target, changing nothing.
    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String>;
    /// Does the stage for every target that has not failed, recording failures in the
    /// target's state.
    async fn run(&self, run: &Run, targets: &mut [TargetState]);
    /// Re-reads what the stage did for one target.
    async fn check(&self, run: &Run, state: &TargetState) -> Vec<Check>;
}

/// The work of each stage, in [`ORDER`]: the one place that binds a stage to its code.
pub fn work(stage: Stage) -> Option<Box<dyn StageWork>> {
    match stage {
        Stage::Capture => Some(Box::new(crate::capture::stage::CaptureStage)),
        Stage::Protect => Some(Box::new(crate::protect::ProtectStage)),
        Stage::Snapshot => Some(Box::new(crate::snapshot::SnapshotStage)),
        Stage::Isolate => Some(Box::new(crate::isolate::stage::IsolateStage)),
        Stage::Share => Some(Box::new(crate::share::ShareStage)),
        Stage::Analyze => Some(Box::new(crate::analyze::AnalyzeStage)),
        Stage::Collect => Some(Box::new(crate::collect::CollectStage)),
        Stage::Seal => Some(Box::new(crate::seal::SealStage)),
    }
}

/// Runs `stages` in order over `targets`; a target that fails a stage skips the rest.
pub async fn run_stages(run: &Run, stages: &[Stage], targets: &mut [TargetState]) {
    for &stage in stages {
        let Some(work) = work(stage) else { continue };
        run.reporter.step("acquire", &format!("{}: {}", stage.name(), stage.purpose()));
        work.run(run, targets).await;
    }
}

/// Why a run stopped before its first change.
#[derive(Debug, thiserror::Error)]
#[error("nothing was changed:\n  {}", lines.join("\n  "))]
pub struct Stopped {
    /// True when it is the input or a permission (exit 2), false when a read failed.
    pub refused: bool,
    pub lines: Vec<String>,
}

/// The whole run: permissions proved with DryRun before the first change (a refusal
/// stops everything, nothing changed), then every stage in order, then the checks of
/// what must hold at the end (snapshots, hand-off).
pub async fn execute(run: &Run, stages: &[Stage], targets: &mut [TargetState]) -> Result<(), Stopped> {
    if stages.contains(&Stage::Isolate) {
        let probe = crate::isolate::stage::probe(run, targets).await;
        use crate::isolate::workflow::Status;
        let stopped: Vec<_> =
            probe.iter().filter(|o| matches!(o.status, Status::Refused | Status::Failed)).collect();
        if !stopped.is_empty() {
            return Err(Stopped {
                refused: stopped.iter().any(|o| o.status == Status::Refused),
                lines: stopped.iter().map(|o| format!("{}: {}", o.instance, o.message)).collect(),
            });
        }
    }
    run_stages(run, stages, targets).await;
    for t in targets.iter_mut().filter(|t| t.failed.is_none()) {
        for &stage in stages.iter().filter(|s| matches!(s, Stage::Snapshot | Stage::Share)) {
            if let Some(w) = work(stage) {
                for c in w.check(run, t).await {
                    t.checks.push((stage, c));
                }
            }
        }
    }
    Ok(())
}

impl TargetState {
    /// Done, and every end check holds.
    pub fn succeeded(&self) -> bool {
        self.failed.is_none() && self.checks.iter().all(|(_, c)| c.ok)
    }
}

/// Every stage's plan for every target.
pub async fn plan_stages(run: &Run, stages: &[Stage], targets: &[TargetState]) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for t in targets {
        let mut calls = Vec::new();
        for &stage in stages {
            let Some(work) = work(stage) else {
                calls.push(format!("[{}] not built yet: skipped", stage.name()));
                continue;
            };
            for c in work.plan(run, t).await {
                calls.push(format!("[{}] {c}", stage.name()));
            }
        }
        out.push((t.target.id.to_string(), calls));
    }
    out
}

/// Runs `work` on every target that has not failed, with the run's concurrency.
/// (`work` returns a boxed future: the compiler cannot prove an async closure over
/// `&mut TargetState` general enough for `async_trait`'s `Send` bound.)
pub async fn for_each_live<'a, F>(run: &'a Run, targets: &'a mut [TargetState], work: F)
where
    F: Fn(&'a Run, &'a mut TargetState) -> futures::future::BoxFuture<'a, ()>,
{
    // A semaphore rather than a buffered stream: the futures are built before the
    // await, so no closure over a borrowed target lives in the awaited state.
    let permits = tokio::sync::Semaphore::new(run.settings.concurrency.max(1));
    let permits = &permits;
    let futures: Vec<futures::future::BoxFuture<'_, ()>> = targets
        .iter_mut()
        .filter(|t| t.failed.is_none())
        .map(|t| {
            let job = work(run, t);
            Box::pin(async move {
                let _permit = permits.acquire().await;
                job.await;
            }) as futures::future::BoxFuture<'_, ()>
        })
        .collect();
    futures::future::join_all(futures).await;
}
