//! Durability of stored objects (issue 14 item 3): live copies per object kept up to date as
//! copies arrive, are released and crash with their node, so the time each object spends
//! below RF, and how long a holder's failure takes to repair, are measured exactly on
//! virtual time rather than sampled.
//!
//! An object is tracked from its first stored copy (for a put, that is when it was
//! acknowledged). "Below RF" is fewer than `rf` copies on live nodes. A restore is timed
//! from the crash of a holder that took an object below RF to the moment it has `rf` live
//! copies again, by repair or by a holder coming back with its disk (`rejoin_same_id`); a
//! later failure while it is still below RF does not restart the clock.

use std::collections::BTreeMap;

use overlay::{Instant, Key};

/// Live copies per object, and the time objects spent below RF.
#[derive(Debug, Default)]
pub struct Durability {
    rf: u32,
    /// Live copies of every object ever stored.
    copies: BTreeMap<Key, u32>,
    /// Objects below RF because a holder crashed: when that crash happened.
    failed_at: BTreeMap<Key, Instant>,
    below: u64,
    at: Instant,
    /// Object-nanoseconds spent below RF.
    pub below_ns: u128,
    /// Crash-to-RF-restored times, ns, one per restore.
    pub restore_ns: Vec<u64>,
    /// Crashes of nodes that held at least one object.
    pub holder_failures: u64,
}

impl Durability {
    /// Tracking for objects replicated `rf` times.
    pub fn new(rf: usize) -> Durability {
        Durability {
            rf: u32::try_from(rf).unwrap_or(u32::MAX),
            ..Durability::default()
        }
    }

    fn advance(&mut self, now: Instant) {
        if now > self.at {
            self.below_ns += u128::from(self.below) * (now - self.at).as_nanos();
            self.at = now;
        }
    }

    fn set(&mut self, now: Instant, key: Key, c: u32) {
        self.advance(now);
        let old = self.copies.insert(key, c);
        let was_below = old.is_some_and(|o| o < self.rf);
        let is_below = c < self.rf;
        match (was_below, is_below) {
            (false, true) => self.below += 1,
            (true, false) => self.below -= 1,
            _ => {}
        }
        if !is_below {
            if let Some(t) = self.failed_at.remove(&key) {
                self.restore_ns.push((now - t).as_nanos() as u64);
            }
        }
    }

    /// A node stored a copy of `key` at `now`.
    pub fn stored(&mut self, now: Instant, key: Key) {
        let c = self.copies.get(&key).copied().unwrap_or(0) + 1;
        self.set(now, key, c);
    }

    /// A live node dropped its copy of `key` (released it, or crashed: `crash`).
    pub fn dropped(&mut self, now: Instant, key: Key, crash: bool) {
        let c = self
            .copies
            .get(&key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(1);
        self.set(now, key, c);
        if crash && c < self.rf {
            self.failed_at.entry(key).or_insert(now);
        }
    }

    /// Closes the integral at `now` (the end of the run).
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Objects tracked.
    pub fn objects(&self) -> usize {
        self.copies.len()
    }

    /// Objects below RF now.
    pub fn below_rf(&self) -> u64 {
        self.below
    }

    /// Objects with no live copy now.
    pub fn unavailable(&self) -> u64 {
        self.copies.values().filter(|&&c| c == 0).count() as u64
    }

    /// Objects still waiting for RF after a holder's crash.
    pub fn unrestored(&self) -> usize {
        self.failed_at.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn t(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn time_below_rf_and_restores_are_exact() {
        let k = Key([1; 32]);
        let mut d = Durability::new(3);
        for s in [0, 0, 0] {
            d.stored(t(s), k);
        }
        assert_eq!(d.below_rf(), 0);
        d.dropped(t(10), k, true); // a holder crashes: 2 copies
        d.dropped(t(12), k, true); // another: 1, the clock keeps its start
        d.stored(t(15), k);
        d.stored(t(20), k); // back at 3
        d.close(t(30));
        assert_eq!(d.below_ns, 10 * 1_000_000_000);
        assert_eq!(d.restore_ns, vec![10 * 1_000_000_000]);
        d.dropped(t(30), k, false); // a release is not a failure
        assert_eq!(d.unrestored(), 0);
        assert_eq!(d.unavailable(), 0);
    }
}
