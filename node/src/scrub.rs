//! The scrubber: every object in the store read back and verified in the background, at a
//! bounded rate, so a copy that rots where nobody reads it is found before the other copies
//! rot too. Reads of a client or a peer verify what they read already; a scrub reaches the
//! objects nobody reads. A copy found rotten is dropped by the store like any other
//! (counted in `integrity_fail_total{source="store"}`) and fetched back from the other
//! holders (`Objects::forget_dropped`).
//!
//! One pass walks the store's index in id order, reading each object as a push does
//! (`Store::push_reader`: past the page cache for a large object, read once), a piece at a
//! time on the blocking pool, and sleeps after each piece for as long as reading it at
//! `rate` bytes per second would have taken, less what it took: never faster than the
//! rate, and a slow disk is not made up for with a burst. Passes start `every` apart (the first one `every` after the
//! start, at most [`FIRST_PASS_AFTER`], so a restart does not add a disk scan to its own
//! work). A read that fails with an I/O error leaves the object (the next pass reads it
//! again); an object removed meanwhile is skipped.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::objects::PieceReader;
use crate::store::{Store, StoreError, id_string};

/// How the scrubber runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Bytes read and verified per second at most (0: no scrub).
    pub rate: u64,
    /// Time from one pass's start to the next's.
    pub every: Duration,
}

impl Default for ScrubConfig {
    /// 8 MiB/s (the default 10 GiB store in about 21 minutes, ~1 % of a core for BLAKE3),
    /// once a day.
    fn default() -> Self {
        ScrubConfig {
            rate: 8 << 20,
            every: Duration::from_secs(24 * 3600),
        }
    }
}

/// The latest the first pass starts after the node does.
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(600);

/// Bytes read per trip to the blocking pool (and between pauses).
const PIECE: usize = 1 << 20;

/// Scrubs `store` for as long as the node runs (the task is aborted at shutdown); `None`
/// when scrubbing is off (`rate` 0) or the store keeps nothing on disk.
pub fn keep_scrubbed(store: Store, config: ScrubConfig) -> Option<JoinHandle<()>> {
    if config.rate == 0 || !store.on_disk() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut next = Instant::now() + config.every.min(FIRST_PASS_AFTER);
        loop {
            tokio::time::sleep_until(next).await;
            next = Instant::now() + config.every;
            let (objects, bytes) = pass(&store, config.rate).await;
            metrics::counter!("store_scrub_passes_total").increment(1);
            tracing::info!(objects, bytes, "store scrub pass done");
        }
    }))
}

/// One pass over every object held when it starts: how many were read, and their bytes.
async fn pass(store: &Store, rate: u64) -> (u64, u64) {
    let mut objects = store.list();
    objects.sort_unstable();
    let (mut read, mut count) = (0u64, 0u64);
    for (hash, size) in objects {
        let s = store.clone();
        let opened = tokio::task::spawn_blocking(move || s.push_reader(&hash, size)).await;
        let reader = match opened {
            Ok(Ok(reader)) => reader,
            // Removed since the pass began.
            Ok(Err(StoreError::NotFound)) => continue,
            Ok(Err(e)) => {
                tracing::warn!(id = %id_string(&hash), error = %e, "scrub could not open an object; the next pass tries again");
                continue;
            }
            Err(_) => continue,
        };
        count += 1;
        let mut pieces = PieceReader::new(reader, PIECE);
        let mut asked = Instant::now();
        while let Some(piece) = pieces.next().await {
            let n = match piece {
                Ok(bytes) => bytes.len() as u64,
                // The store counted and dropped a rotten copy itself (and told
                // `forget_dropped`); an I/O error left it for the next pass.
                Err(e) => {
                    if !matches!(StoreError::from_read(e), StoreError::Corrupt) {
                        tracing::warn!(id = %id_string(&hash), "scrub could not read an object; the next pass tries again");
                    }
                    break;
                }
            };
            read += n;
            metrics::counter!("store_scrub_bytes_total").increment(n);
            tokio::time::sleep(pause_due(n, rate, asked.elapsed())).await;
            asked = Instant::now();
        }
    }
    (count, read)
}

/// How long to wait after a piece of `read` bytes that took `took`, so reads never go
/// faster than `rate` bytes per second (nothing when the piece was slower than that).
fn pause_due(read: u64, rate: u64, took: Duration) -> Duration {
    Duration::from_secs_f64(read as f64 / rate.max(1) as f64).saturating_sub(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrub_never_reads_faster_than_its_rate() {
        let mib = 1 << 20;
        // 4 MiB read in 1 s at 1 MiB/s: three seconds to wait.
        assert_eq!(
            pause_due(4 * mib, mib, Duration::from_secs(1)),
            Duration::from_secs(3)
        );
        // A piece slower than the rate: no wait (and the next piece is paced on its own,
        // not sped up to make the time back).
        assert_eq!(pause_due(mib, mib, Duration::from_secs(5)), Duration::ZERO);
        assert_eq!(pause_due(0, 0, Duration::ZERO), Duration::ZERO);
        // 1 KiB at 8 MiB/s: about 122 µs.
        assert_eq!(
            pause_due(1 << 10, 8 * mib, Duration::ZERO),
            Duration::from_secs_f64(1.0 / 8192.0)
        );
    }
}
