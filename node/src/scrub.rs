//! The scrubber: every object in the store read back and verified in the background, at a
//! bounded rate, so a copy that rots where nobody reads it is found before the other copies
//! rot too. Reads of a client or a peer verify what they read already; a scrub reaches the
//! objects nobody reads. A copy found rotten is dropped by the store like any other
//! (counted in `integrity_fail_total{source="store"}`) and fetched back from the other
//! holders (`Objects::forget_dropped`).
//!
//! One pass walks the store's index in id order from a random id round to it again, a
//! page at a time (so a node restarted before its passes end still reaches every object
//! over its restarts), reading each object as a push does (`Store::push_reader`: past the
//! page cache for a large object, read once), a piece at a time on the blocking pool. It
//! sleeps after each piece for as long as reading it at `rate` bytes per second would
//! have taken, less what it took (never faster than the rate, and a slow disk is not made
//! up for with a burst), and charges each object's open as 64 KiB more. Passes start
//! `every` apart, the first one `every` after the start but at most [`FIRST_PASS_AFTER`].
//! A read that fails with an I/O error leaves the object (the next pass reads it again);
//! an object removed meanwhile is skipped.

use std::ops::Bound;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::objects::PieceReader;
use crate::store::{Hash, Store, StoreError, id_string};

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

/// What opening an object costs against the rate, beside its bytes: at the default rate,
/// at most 128 objects a second, so a disk slow to seek is not kept busy by a store of
/// tiny objects whose bytes look like nothing.
const OBJECT_CHARGE: u64 = 64 << 10;

/// Index entries read at a time.
const PAGE: usize = 4096;

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

/// One pass over every object held when it starts, from a random id round to it again (a
/// node restarted before its passes end still reaches every object over its restarts),
/// the index read a page at a time: how many objects were read whole, and the bytes read.
async fn pass(store: &Store, rate: u64) -> (u64, u64) {
    let mut start = [0u8; 32];
    // No randomness left: every pass starts at the lowest id, as a fixed start would.
    let _ = getrandom::fill(&mut start);
    let (mut from, mut wrapped) = (Bound::Included(start), false);
    let (mut read, mut whole) = (0u64, 0u64);
    loop {
        let page = store.list_page(from, PAGE);
        let Some(&(last, _)) = page.last() else {
            if wrapped {
                break;
            }
            (from, wrapped) = (Bound::Unbounded, true);
            continue;
        };
        for (hash, size) in page {
            if wrapped && hash >= start {
                return (whole, read);
            }
            let (bytes, ok) = scrub_one(store, hash, size, rate).await;
            read += bytes;
            whole += u64::from(ok);
        }
        from = Bound::Excluded(last);
    }
    (whole, read)
}

/// Reads one object back and verifies it, paced: the bytes read, and whether it was read
/// whole. Each object is charged [`OBJECT_CHARGE`] beside its bytes, so a store of many
/// small objects is not opened faster than `rate / OBJECT_CHARGE` a second.
async fn scrub_one(store: &Store, hash: Hash, size: u64, rate: u64) -> (u64, bool) {
    let s = store.clone();
    let asked = Instant::now();
    let opened = tokio::task::spawn_blocking(move || s.push_reader(&hash, size)).await;
    pause(pause_due(OBJECT_CHARGE, rate, asked.elapsed())).await;
    let reader = match opened {
        Ok(Ok(reader)) => reader,
        // Removed since the pass began.
        Ok(Err(StoreError::NotFound)) => return (0, false),
        Ok(Err(e)) => {
            tracing::warn!(id = %id_string(&hash), error = %e, "scrub could not open an object; the next pass tries again");
            return (0, false);
        }
        Err(e) => {
            tracing::warn!(id = %id_string(&hash), error = %e, "scrub's open failed");
            return (0, false);
        }
    };
    let mut pieces = PieceReader::new(reader, PIECE);
    let (mut read, mut asked) = (0u64, Instant::now());
    while let Some(piece) = pieces.next().await {
        let n = match piece {
            Ok(bytes) => bytes.len() as u64,
            // The store counted and dropped a rotten copy itself (and told
            // `forget_dropped`); an I/O error left it for the next pass.
            Err(e) => {
                match StoreError::from_read(e) {
                    StoreError::Corrupt => {}
                    e => {
                        tracing::warn!(id = %id_string(&hash), error = %e, "scrub could not read an object; the next pass tries again")
                    }
                }
                return (read, false);
            }
        };
        read += n;
        metrics::counter!("store_scrub_bytes_total").increment(n);
        pause(pause_due(n, rate, asked.elapsed())).await;
        asked = Instant::now();
    }
    (read, true)
}

/// Sleeps for `d`, if it is not zero (a timer for zero still waits for the next tick).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// How long to wait after a piece of `read` bytes that took `took`, so reads never go
/// faster than `rate` bytes per second (nothing when the piece was slower than that).
fn pause_due(read: u64, rate: u64, took: Duration) -> Duration {
    Duration::from_secs_f64(read as f64 / rate.max(1) as f64).saturating_sub(took)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass from a random id reads every object once, over more than one page of the
    /// index and round the wrap, whatever id it starts from.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_reads_every_object_once_from_wherever_it_starts() {
        let store = Store::amnesia(1 << 30);
        let mut bytes = 0u64;
        for i in 0..(PAGE as u32 + 900) {
            let data = i.to_le_bytes().repeat(1 + (i % 7) as usize);
            bytes += data.len() as u64;
            store.put(&data, None).unwrap_or_else(|e| panic!("{e}"));
        }
        for _ in 0..3 {
            assert_eq!(
                pass(&store, u64::MAX).await,
                (PAGE as u64 + 900, bytes),
                "each object read once"
            );
        }
        assert_eq!(pass(&Store::amnesia(1 << 20), u64::MAX).await, (0, 0));
    }

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
