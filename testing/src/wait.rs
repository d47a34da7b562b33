//! Polling with a deadline: the harness's only way to wait for something to become true.
//!
//! No test sleeps for a fixed time hoping that is long enough; it polls a condition at a
//! short interval and fails with the condition's name once the bound has passed.

use std::time::{Duration, Instant};

use crate::HarnessError;

/// Calls `check` every `interval` until it returns `Some`, for at most `timeout`. The
/// condition is checked once more at the deadline, so a slow last poll still counts.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_string(),
                after: timeout,
            });
        }
        std::thread::sleep(interval.min(deadline - now));
    }
}

/// Like [`poll_until`], for checks that can fail outright: an `Err` from `check` ends the
/// wait at once (a process that died will not become ready).
pub fn poll_until_ok<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<Option<T>, HarnessError>,
) -> Result<T, HarnessError> {
    poll_until(what, timeout, interval, || match check() {
        Ok(v) => v.map(Ok),
        Err(e) => Some(Err(e)),
    })
    .and_then(|r| r)
}
