//! Our own retry around a call the SDK already retried.

use std::future::Future;
use std::time::Duration;

use super::{CloudResult, ErrorKind};

/// Our own attempts at a call the SDK already retried (5 attempts, ~20 s): a throttling
/// burst during an incident is worth riding out a little longer. Backoff doubles from
/// [`RETRY_BASE`]; 4 attempts add at most 0.2 + 0.4 + 0.8 = 1.4 s.
pub const RETRY_ATTEMPTS: u32 = 4;
pub const RETRY_BASE: Duration = Duration::from_millis(200);

/// Retries throttling and transport failures with doubling backoff; anything else is
/// returned at once.
pub async fn retry<T, F, Fut>(f: F) -> CloudResult<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = CloudResult<T>>,
{
    let mut delay = RETRY_BASE;
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e)
                if attempt < RETRY_ATTEMPTS
                    && matches!(e.kind, ErrorKind::Throttled | ErrorKind::Unreachable) =>
            {
                tracing::debug!(
                    "{} {} attempt {attempt} failed ({e}); retrying in {delay:?}",
                    e.service,
                    e.operation
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            r => return r,
        }
    }
}
