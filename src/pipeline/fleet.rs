//! The fleet runner every stage uses: bounded fan-out over the targets, results in the
//! order of the targets, and every failure kept for the end (a failed instance never
//! stops the others, and the user sees all of them at once, after what succeeded).

use std::future::Future;

use futures::StreamExt;

/// Runs `work` on every item, at most `concurrency` at once, and returns the results in
/// the order of `items`.
pub async fn each<T, R, F, Fut>(items: Vec<T>, concurrency: usize, work: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    futures::stream::iter(items).map(work).buffered(concurrency.max(1)).collect().await
}

/// One failure of one target in one step, for the report at the end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub target: String,
    pub step: String,
    pub error: String,
}

/// Failures gathered over a run, in the order they happened.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Failures(pub Vec<Failure>);

impl Failures {
    pub fn push(
        &mut self,
        target: impl Into<String>,
        step: impl Into<String>,
        error: impl std::fmt::Display,
    ) {
        self.0.push(Failure { target: target.into(), step: step.into(), error: error.to_string() });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn of(&self, target: &str) -> impl Iterator<Item = &Failure> {
        self.0.iter().filter(move |f| f.target == target)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn results_keep_the_order_and_concurrency_is_bounded() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = each((0..20u64).collect(), 3, |i| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later items finish first: order must still be kept.
                tokio::time::sleep(std::time::Duration::from_millis(20 - i)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                i * 2
            }
        })
        .await;
        assert_eq!(out, (0..20u64).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
