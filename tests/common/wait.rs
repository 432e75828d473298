//! Bounded waits for async tests: a future given [`WAIT`] to finish, and a condition polled until
//! it holds. Every wait is bounded: it fails the test, naming what it waited for, instead of hanging.

use std::future::Future;
use std::time::{Duration, Instant};

/// The bound on any single wait that could hang.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

/// Polls `check` until it holds, for at most `limit`; `what` names it in the failure.
pub async fn wait_until<F: Future<Output = bool>>(limit: Duration, what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
