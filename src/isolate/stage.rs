//! The isolate stage of acquire: the containment workflow over the targets that reached
//! it, with one scope per account and region (their load balancers and the case's
//! groups read once for all their instances).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::workflow::{Outcome, Scope, Settings, Status, isolate};
use crate::ids::{AccountId, InstanceId, Region};
use crate::pipeline::{Check, Run, Stage, StageWork, TargetState};

fn settings(run: &Run, plan_only: bool) -> Settings {
    Settings {
        case: run.case.clone(),
        concurrency: run.settings.concurrency,
        plan_only,
        now: crate::cli::isolate::now_rfc3339(),
        member_role: run.settings.member_role.clone(),
        started: None,
        // Acquire takes the defaults; `cleanroom isolate` offers the opt-in controls.
        controls: Default::default(),
    }
}

/// One scope per (account, region) of `targets`, in the targets' order.
pub fn scoped(targets: &[&TargetState]) -> Vec<(Arc<Scope>, InstanceId)> {
    let mut scopes: BTreeMap<(AccountId, Region), Arc<Scope>> = BTreeMap::new();
    targets
        .iter()
        .map(|t| {
            let side = &t.target.side;
            let scope = scopes
                .entry((side.account.clone(), side.region.clone()))
                .or_insert_with(|| Scope::new(side.account.clone(), side.region.clone(), side.cloud.clone()))
                .clone();
            (scope, t.target.id.clone())
        })
        .collect()
}

/// Containment of every live target as a plan: DryRun permission checks and decisions,
/// no change. Acquire runs it before the first change, so a refused permission stops
/// the whole run with nothing changed.
pub async fn probe(run: &Run, targets: &[TargetState]) -> Vec<Outcome> {
    let live: Vec<&TargetState> = targets.iter().filter(|t| t.failed.is_none()).collect();
    isolate(&settings(run, true), scoped(&live), run.custody.clone(), run.reporter.clone()).await
}

pub struct IsolateStage;

#[async_trait]
impl StageWork for IsolateStage {
    fn stage(&self) -> Stage {
        Stage::Isolate
    }

    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String> {
        let outcomes =
            isolate(&settings(run, true), scoped(&[state]), run.custody.clone(), run.reporter.clone()).await;
        outcomes.into_iter().flat_map(|o| if o.plan.is_empty() { vec![o.message] } else { o.plan }).collect()
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        let live: Vec<&TargetState> = targets.iter().filter(|t| t.failed.is_none()).collect();
        let outcomes =
            isolate(&settings(run, false), scoped(&live), run.custody.clone(), run.reporter.clone()).await;
        for o in outcomes {
            let Some(t) = targets
                .iter_mut()
                .find(|t| t.target.id.as_str() == o.instance && t.target.side.account.as_str() == o.account)
            else {
                continue;
            };
            if matches!(o.status, Status::Failed | Status::Refused | Status::NotStarted) {
                let mut why = o.message.clone();
                for e in &o.errors {
                    why.push_str(&format!("\n  - {e}"));
                }
                t.fail(Stage::Isolate, why);
            }
            t.warnings.extend(o.warnings.iter().cloned());
            t.containment = Some(o);
        }
    }

    async fn check(&self, _run: &Run, state: &TargetState) -> Vec<Check> {
        state
            .containment
            .as_ref()
            .map(|o| {
                o.checks
                    .iter()
                    .map(|c| {
                        let detail =
                            if c.warning { format!("warning: {}", c.detail) } else { c.detail.clone() };
                        Check::new(c.control.clone(), c.ok, detail)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
