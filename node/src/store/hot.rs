//! Small objects, verified, in memory: the gateway's fast path.
//!
//! A GET of a small object used to cost a trip to the blocking pool (open two files, read,
//! verify every chunk, close) that cost more than the work: thread wake-ups were half of
//! the CPU. Objects up to [`HotCache::ENTRY_MAX`] are kept here once their bytes were
//! verified against their id (when written, or on their first verified read from disk), so
//! a GET serves them without a thread hop or a re-verification. Every byte served from here
//! was verified since it was last written; removal and corruption evict.
//!
//! Sharded by the id's first byte so unrelated GETs do not contend; each shard evicts by
//! CLOCK (second chance) to stay within its share of the byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

use super::Hash;

const SHARDS: usize = 16;

struct Entry {
    bytes: Bytes,
    /// Read since the clock hand last passed: spared once.
    referenced: bool,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Hash, Entry>,
    clock: VecDeque<Hash>,
    bytes: usize,
}

/// A bounded cache of verified small objects.
pub struct HotCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
}

impl std::fmt::Debug for HotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotCache")
            .field("budget", &(self.shard_budget * SHARDS))
            .finish_non_exhaustive()
    }
}

impl HotCache {
    /// Largest object kept.
    pub const ENTRY_MAX: usize = 64 << 10;

    /// A cache holding at most `budget` bytes of objects (0 disables it).
    pub fn new(budget: usize) -> HotCache {
        HotCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: budget / SHARDS,
        }
    }

    fn shard(&self, hash: &Hash) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[hash[0] as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The object's bytes, if cached.
    pub fn get(&self, hash: &Hash) -> Option<Bytes> {
        let mut s = self.shard(hash);
        let e = s.map.get_mut(hash)?;
        e.referenced = true;
        Some(e.bytes.clone())
    }

    /// Keeps `bytes`, which the caller verified hash to `hash`, if small enough.
    pub fn insert(&self, hash: Hash, bytes: Bytes) {
        if bytes.len() > Self::ENTRY_MAX || bytes.len() > self.shard_budget {
            return;
        }
        let mut s = self.shard(&hash);
        if s.map.contains_key(&hash) {
            return;
        }
        while s.bytes + bytes.len() > self.shard_budget {
            let Some(victim) = s.clock.pop_front() else {
                break;
            };
            let spare = match s.map.get_mut(&victim) {
                Some(e) if e.referenced => {
                    e.referenced = false;
                    true
                }
                Some(_) => false,
                None => continue,
            };
            if spare {
                s.clock.push_back(victim);
            } else if let Some(e) = s.map.remove(&victim) {
                s.bytes -= e.bytes.len();
            }
        }
        s.bytes += bytes.len();
        s.clock.push_back(hash);
        s.map.insert(
            hash,
            Entry {
                bytes,
                referenced: false,
            },
        );
    }

    /// Forgets an object (removed, found corrupt).
    pub fn remove(&self, hash: &Hash) {
        let mut s = self.shard(hash);
        if let Some(e) = s.map.remove(hash) {
            s.bytes -= e.bytes.len();
            s.clock.retain(|h| h != hash);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> Hash {
        let mut h = [0u8; 32];
        h[0] = i % 16 * 16; // all in shard 0
        h[1] = i;
        h
    }

    #[test]
    fn stays_within_its_budget_and_spares_what_was_read() {
        let c = HotCache::new(16 * 10_000);
        for i in 0..2 {
            c.insert(h(i), Bytes::from(vec![i; 4000]));
        }
        assert!(c.get(&h(0)).is_some_and(|b| b.len() == 4000));
        // The shard holds 10,000 bytes: the third insert evicts, sparing h(0), just read.
        c.insert(h(2), Bytes::from(vec![2; 4000]));
        assert!(c.get(&h(0)).is_some(), "read since the last pass: spared");
        assert!(c.get(&h(1)).is_none(), "the oldest unread goes");
        assert!(c.get(&h(2)).is_some());
        assert!(c.bytes() <= 10_000);
        c.remove(&h(0));
        assert!(c.get(&h(0)).is_none());
        c.insert(h(9), Bytes::from(vec![0; HotCache::ENTRY_MAX + 1]));
        assert!(c.get(&h(9)).is_none(), "too large to keep");
    }
}
