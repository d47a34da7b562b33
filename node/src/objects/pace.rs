//! The minimum rate every object transfer keeps (a push received or sent, a GET served
//! here or fetched from a holder), so a peer that trickles cannot hold one for long.

use super::Objects;
use crate::transport::TransportError;

/// A transfer's progress against the minimum rate: it must move `transfer_min_rate` per
/// second over every window of `transfer_rate_grace` (the first window is its grace), so
/// neither a slow start nor a fast start followed by a trickle holds it for long. Every
/// transfer keeps one: a push received or sent and a GET served here, by wall clock; a
/// fetch, by the time spent waiting on the holder (not on our own slow client).
pub(super) struct Pace {
    started: tokio::time::Instant,
    /// Where the current window began, in the transfer's time.
    window_start: std::time::Duration,
    /// Bytes moved in the current window.
    window_bytes: u64,
    min_rate: u64,
    grace: std::time::Duration,
}

impl Pace {
    pub(super) fn new(objects: &Objects) -> Pace {
        Pace {
            started: tokio::time::Instant::now(),
            window_start: std::time::Duration::ZERO,
            window_bytes: 0,
            min_rate: objects.limits.transfer_min_rate,
            grace: objects.limits.transfer_rate_grace,
        }
    }

    /// `n` more bytes moved; the time is the wall clock since the transfer started.
    pub(super) fn progress(&mut self, n: usize) -> Result<(), TransportError> {
        self.progress_over(n, self.started.elapsed())
    }

    /// `n` more bytes moved, `elapsed` being the transfer's time so far as the caller
    /// counts it.
    pub(super) fn progress_over(
        &mut self,
        n: usize,
        elapsed: std::time::Duration,
    ) -> Result<(), TransportError> {
        self.window_bytes += n as u64;
        let span = elapsed.saturating_sub(self.window_start);
        if span > self.grace {
            if (self.window_bytes as f64) < self.min_rate as f64 * span.as_secs_f64() {
                return Err(TransportError::Timeout {
                    what: "transfer below its minimum rate",
                    after: elapsed,
                });
            }
            self.window_start = elapsed;
            self.window_bytes = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pace() -> Pace {
        Pace {
            started: tokio::time::Instant::now(),
            window_start: Duration::ZERO,
            window_bytes: 0,
            min_rate: 64 << 10,
            grace: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_fast_start_buys_no_trickle_after_it() {
        // 100 MiB in the first second, then a byte every 9.9 s: an average since the
        // start would keep it for hours. The first window (ending with the byte at 10.9 s)
        // made its rate; the next, 10.9 s to 30.7 s, moved two bytes and cuts it.
        let mut p = pace();
        assert!(p.progress_over(100 << 20, Duration::from_secs(1)).is_ok());
        assert!(p.progress_over(1, Duration::from_millis(10_900)).is_ok());
        let mut t = Duration::from_millis(10_900);
        let mut cut = None;
        for _ in 0..10 {
            t += Duration::from_millis(9_900);
            if p.progress_over(1, t).is_err() {
                cut = Some(t);
                break;
            }
        }
        assert_eq!(cut, Some(Duration::from_millis(30_700)), "the next window");
    }

    #[test]
    fn a_steady_transfer_at_the_minimum_is_never_cut() {
        let mut p = pace();
        for s in 1..=120u64 {
            assert!(
                p.progress_over(64 << 10, Duration::from_secs(s)).is_ok(),
                "at {s} s"
            );
        }
        // Silence within a window is fine as long as the window's bytes make the rate.
        let mut p = pace();
        assert!(p.progress_over(1 << 20, Duration::from_secs(11)).is_ok());
        assert!(
            p.progress_over(0, Duration::from_secs(22)).is_err(),
            "an empty window"
        );
    }
}
