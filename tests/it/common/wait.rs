//! Waiting for an event rather than sleeping for a time that usually suffices: a condition
//! polled to a deadline, a counter that stopped moving, `/status` once it answers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::SOON;

/// Waits for a condition instead of sleeping for a time that usually suffices: polls `check`
/// every 20 ms until it gives `Ok`, and returns that value. After `within`, panics saying
/// that `what` did not happen and what the last check saw instead (its `Err`).
pub async fn wait_until<T, Fut>(within: Duration, what: &str, mut check: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("{what} did not happen within {within:?}; last seen: {seen}")
            }
            // The polling interval of the wait, not a condition.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Waits until `counter` is at least `min` and has not moved for `quiet` (back-pressure has
/// reached whatever increments it); returns its value. Panics if it is still moving after
/// `within`.
pub async fn wait_until_still(
    counter: &AtomicU64,
    min: u64,
    quiet: Duration,
    within: Duration,
) -> u64 {
    let deadline = Instant::now() + within;
    let mut value = counter.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        // The sampling interval of a "nothing moves for `quiet`" check, not a condition.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != value || now < min {
            value = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "still moving (or under {min}) at {value} after {within:?}"
        );
    }
}

/// `/status` of a daemon whose `[metrics]` listens on `metrics`, retrying while the
/// listener is not up yet.
pub async fn status_of(metrics: SocketAddr) -> wsbridge::metrics::Status {
    wait_until(SOON, "an answer from /status", || async move {
        wsbridge::status_client::fetch_status(metrics)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}
