//! Seal: the manifest of every evidence item of the case (id, source, method, time,
//! size, three digests, S3 key and version, lock), written as a new version of
//! `manifest.json` and recorded in custody with its digest.

use async_trait::async_trait;

use crate::pipeline::{Check, Run, Stage, StageWork, TargetState};

/// The seal stage of acquire: once for the case, after every target's stages.
pub struct SealStage;

#[async_trait]
impl StageWork for SealStage {
    fn stage(&self) -> Stage {
        Stage::Seal
    }

    async fn plan(&self, _run: &Run, _state: &TargetState) -> Vec<String> {
        vec!["s3:PutObject manifest.json (every evidence item, the custody head)".into()]
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        run.reporter.step("seal", "writing the manifest");
        // Seal even when a target failed: what was preserved is listed, and a rerun seals
        // again with the rest.
        match run.custody.seal().await {
            Ok((_, items)) => {
                run.reporter.done("seal", &format!("manifest of {items} evidence items written"))
            }
            Err(e) => {
                for t in targets.iter_mut() {
                    t.fail(Stage::Seal, format!("manifest: {e}"));
                }
            }
        }
    }

    async fn check(&self, run: &Run, state: &TargetState) -> Vec<Check> {
        let mut missing = Vec::new();
        for e in &state.evidence {
            if run.custody.find(&e.id).await.ok().flatten().is_none() {
                missing.push(e.id.clone());
            }
        }
        vec![Check::new(
            "evidence recorded",
            missing.is_empty(),
            if missing.is_empty() {
                format!("{} item(s)", state.evidence.len())
            } else {
                format!("not in the case: {missing:?}")
            },
        )]
    }
}
