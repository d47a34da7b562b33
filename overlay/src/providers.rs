//! Provider records: "peer N holds object X", kept by the nodes closest to X.
//!
//! A record is always about the peer that announced it (the transport authenticated it), so
//! nobody can announce on another's behalf. Records expire after their TTL unless
//! republished; the store is bounded per key and in total, and a full key keeps its most
//! recently announced records.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::key::Key;
use crate::peer::Peer;
use crate::time::Instant;

#[derive(Debug, Clone)]
struct Record<P> {
    provider: P,
    expires: Instant,
}

/// Why a record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRefused {
    /// The store holds `provider_records_max` records for other keys.
    Full,
}

/// The provider records one node keeps for others.
#[derive(Debug, Clone)]
pub struct ProviderStore<P> {
    records: BTreeMap<Key, Vec<Record<P>>>,
    total: usize,
    ttl: Duration,
    per_key_max: usize,
    total_max: usize,
}

impl<P: Peer> ProviderStore<P> {
    /// An empty store.
    pub fn new(ttl: Duration, per_key_max: usize, total_max: usize) -> Self {
        ProviderStore {
            records: BTreeMap::new(),
            total: 0,
            ttl,
            per_key_max,
            total_max,
        }
    }

    /// Records in all.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds or renews `provider` for `key`.
    pub fn add(&mut self, now: Instant, key: Key, provider: P) -> Result<(), StoreRefused> {
        let expires = now + self.ttl;
        let pk = provider.key();
        let recs = self.records.entry(key).or_default();
        if let Some(pos) = recs.iter().position(|r| r.provider.key() == pk) {
            let mut r = recs.remove(pos);
            r.expires = expires;
            r.provider = provider;
            recs.push(r);
            return Ok(());
        }
        if recs.len() >= self.per_key_max {
            recs.remove(0); // the record renewed longest ago makes room
            self.total -= 1;
        } else if self.total >= self.total_max {
            if recs.is_empty() {
                self.records.remove(&key);
            }
            return Err(StoreRefused::Full);
        }
        recs.push(Record { provider, expires });
        self.total += 1;
        Ok(())
    }

    /// Every record held, `(key, provider)` in key order, expired or not (for checkers
    /// outside the node that judge where records came from).
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &P)> {
        self.records
            .iter()
            .flat_map(|(k, recs)| recs.iter().map(move |r| (k, &r.provider)))
    }

    /// Live providers of `key`, most recently announced first, at most `max`.
    pub fn get(&self, now: Instant, key: &Key, max: usize) -> Vec<P> {
        self.records
            .get(key)
            .map(|recs| {
                recs.iter()
                    .rev()
                    .filter(|r| r.expires > now)
                    .take(max)
                    .map(|r| r.provider.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops expired records; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.records.retain(|_, recs| {
            let before = recs.len();
            recs.retain(|r| r.expires > now);
            dropped += before - recs.len();
            !recs.is_empty()
        });
        self.total -= dropped;
        dropped
    }

    /// The earliest expiry, for the driver's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.records
            .values()
            .flat_map(|r| r.iter().map(|r| r.expires))
            .min()
    }

    /// `Err` if the counts drifted or a key is over its cap.
    pub fn check_invariants(&self) -> Result<(), String> {
        let n: usize = self.records.values().map(Vec::len).sum();
        if n != self.total {
            return Err(format!("provider count {} but {n} records", self.total));
        }
        if self
            .records
            .values()
            .any(|r| r.len() > self.per_key_max || r.is_empty())
        {
            return Err("a key is over its provider cap, or empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct P(u8);
    impl Peer for P {
        fn key(&self) -> Key {
            Key([self.0; 32])
        }
    }

    #[test]
    fn records_expire_renew_and_stay_bounded() {
        let ttl = Duration::from_secs(10);
        let mut s = ProviderStore::new(ttl, 2, 3);
        let t0 = Instant::ZERO;
        let k = Key([0; 32]);
        assert_eq!(s.add(t0, k, P(1)), Ok(()));
        assert_eq!(s.add(t0, k, P(2)), Ok(()));
        assert_eq!(s.add(t0, k, P(3)), Ok(()), "per-key cap evicts the oldest");
        assert_eq!(s.get(t0, &k, 10), vec![P(3), P(2)]);
        assert_eq!(s.add(t0, Key([1; 32]), P(1)), Ok(()));
        assert_eq!(s.add(t0, Key([2; 32]), P(1)), Err(StoreRefused::Full));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(s.add(later, k, P(2)), Ok(()), "renewal");
        let after_ttl = t0 + ttl;
        assert_eq!(s.get(after_ttl, &k, 10), vec![P(2)]);
        assert_eq!(s.expire(after_ttl), 2);
        assert_eq!(s.len(), 1);
        s.check_invariants().unwrap_or_else(|e| panic!("{e}"));
    }
}
