//! The routing table: 256 k-buckets in least-recently-seen order, with replacement caches.
//!
//! Kademlia's rule, kept exactly: a live old contact is worth more than a new one. When a
//! full bucket meets a new peer, the new peer waits in the bucket's replacement cache and the
//! oldest entry is probed; only if the probe fails is the oldest evicted and the most recent
//! replacement promoted. The table never holds ourselves, never more than k per bucket, and
//! (when configured) never more than a few contacts per address group.
//!
//! Buckets are stored far-first (index 255 at position 0) and created on demand: a node in a
//! network of n peers only ever fills about log2(n) buckets, which keeps 100k simulated
//! tables small.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::IpDiversity;
use crate::key::Key;
use crate::peer::{IpGroup, Peer};
use crate::time::Instant;

/// A contact in a bucket.
#[derive(Debug, Clone)]
pub struct Entry<P> {
    /// The peer.
    pub peer: P,
    /// When it last answered or asked us something.
    pub last_seen: Instant,
    /// RPCs that failed since it was last seen.
    pub failures: u32,
}

#[derive(Debug, Clone)]
struct Bucket<P> {
    /// Least recently seen first.
    entries: Vec<Entry<P>>,
    /// Most recently seen last.
    replacements: Vec<P>,
    /// The entry being probed because a newcomer wants its place.
    probe: Option<Key>,
    /// When a lookup last targeted this bucket.
    last_refresh: Instant,
}

impl<P> Bucket<P> {
    fn new(now: Instant) -> Self {
        Bucket {
            entries: Vec::new(),
            replacements: Vec::new(),
            probe: None,
            last_refresh: now,
        }
    }
}

/// What became of a peer we heard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<P> {
    /// Already in the table: moved to the most-recently-seen end.
    Refreshed,
    /// Added to a bucket with room.
    Inserted,
    /// The bucket is full: the peer waits as a replacement and the oldest entry should be
    /// probed (it is the caller's job to send the ping and report the outcome).
    ProbeOldest(P),
    /// The bucket is full and its oldest entry is already being probed: the peer waits.
    Cached,
    /// The peer is us.
    IsSelf,
    /// Its address group is at its limit.
    DiversityLimit,
}

/// An entry that left the table, and the replacement that took its place.
#[derive(Debug, Clone)]
pub struct Evicted<P> {
    /// The peer removed.
    pub removed: P,
    /// The replacement promoted into the bucket, if any.
    pub promoted: Option<P>,
}

/// The k-bucket routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable<P> {
    local: Key,
    k: usize,
    replacements_max: usize,
    evict_after_failures: u32,
    diversity: Option<IpDiversity>,
    /// Position `i` holds bucket `255 - i`.
    buckets: Vec<Bucket<P>>,
    len: usize,
    groups: BTreeMap<IpGroup, usize>,
    created: Instant,
}

impl<P: Peer> RoutingTable<P> {
    /// An empty table around our own key.
    pub fn new(
        local: Key,
        k: usize,
        replacements_max: usize,
        evict_after_failures: u32,
        diversity: Option<IpDiversity>,
        now: Instant,
    ) -> Self {
        RoutingTable {
            local,
            k,
            replacements_max,
            evict_after_failures: evict_after_failures.max(1),
            diversity,
            buckets: Vec::new(),
            len: 0,
            groups: BTreeMap::new(),
            created: now,
        }
    }

    /// Our own key.
    pub fn local_key(&self) -> Key {
        self.local
    }

    /// Number of contacts in all buckets.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no contacts.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn position(bucket: usize) -> usize {
        255 - bucket
    }

    fn bucket(&self, key: &Key) -> Option<&Bucket<P>> {
        let idx = self.local.bucket_of(key)?;
        self.buckets.get(Self::position(idx))
    }

    fn bucket_mut_or_create(&mut self, idx: usize) -> &mut Bucket<P> {
        let pos = Self::position(idx);
        while self.buckets.len() <= pos {
            self.buckets.push(Bucket::new(self.created));
        }
        &mut self.buckets[pos]
    }

    /// Whether `peer` would be inserted now (its bucket has room its diversity limits
    /// allow), rather than wait as a replacement.
    pub fn has_room_for(&self, peer: &P) -> bool {
        let Some(idx) = self.local.bucket_of(&peer.key()) else {
            return false;
        };
        match self.buckets.get(Self::position(idx)) {
            Some(b) => b.entries.len() < self.k && self.diversity_allows(b, peer.ip_group()),
            None => true,
        }
    }

    /// The entry for a key, if present.
    pub fn get(&self, key: &Key) -> Option<&Entry<P>> {
        self.bucket(key)?
            .entries
            .iter()
            .find(|e| e.peer.key() == *key)
    }

    /// Whether a key is in the table.
    pub fn contains(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }

    /// Every contact, far buckets first, each bucket least recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<P>> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    fn diversity_allows(&self, bucket: &Bucket<P>, group: Option<IpGroup>) -> bool {
        let (Some(limits), Some(group)) = (self.diversity, group) else {
            return true;
        };
        let in_bucket = bucket
            .entries
            .iter()
            .filter(|e| e.peer.ip_group() == Some(group))
            .count();
        let in_table = self.groups.get(&group).copied().unwrap_or(0);
        in_bucket < limits.per_bucket && in_table < limits.per_table
    }

    fn count_group(&mut self, group: Option<IpGroup>, add: bool) {
        let Some(g) = group else { return };
        let n = self.groups.entry(g).or_insert(0);
        if add {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.groups.remove(&g);
            }
        }
    }

    /// Records that `peer` answered us or asked us something just now.
    pub fn on_seen(&mut self, now: Instant, peer: P) -> Seen<P> {
        self.seen(now, peer, true)
    }

    /// As [`on_seen`](Self::on_seen), but a peer that finds its bucket full only waits as a
    /// replacement: no probe of the oldest entry (`Cached` instead of `ProbeOldest`).
    pub fn on_seen_without_probe(&mut self, now: Instant, peer: P) -> Seen<P> {
        self.seen(now, peer, false)
    }

    fn seen(&mut self, now: Instant, peer: P, probe: bool) -> Seen<P> {
        let key = peer.key();
        let Some(idx) = self.local.bucket_of(&key) else {
            return Seen::IsSelf;
        };
        let k = self.k;
        let replacements_max = self.replacements_max;
        let bpos = Self::position(idx);
        let known = self
            .bucket_mut_or_create(idx)
            .entries
            .iter()
            .position(|e| e.peer.key() == key);
        if let Some(pos) = known {
            // A known peer seen from an address in another group: its count moves with it.
            // If the new group is at its limit, the entry keeps its old handle (and address):
            // the group counts must always match the entries.
            let old_group = self.buckets[bpos].entries[pos].peer.ip_group();
            let new_group = peer.ip_group();
            let mut take_new = true;
            if old_group != new_group {
                take_new = self.diversity_allows(&self.buckets[bpos], new_group);
                if take_new {
                    self.count_group(old_group, false);
                    self.count_group(new_group, true);
                }
            }
            let bucket = &mut self.buckets[bpos];
            let mut e = bucket.entries.remove(pos);
            e.last_seen = now;
            e.failures = 0;
            if take_new {
                e.peer = peer;
            }
            bucket.entries.push(e);
            if bucket.probe == Some(key) {
                bucket.probe = None;
            }
            return Seen::Refreshed;
        }
        let bucket = &mut self.buckets[bpos];
        if bucket.entries.len() < k {
            let group = peer.ip_group();
            let pos = Self::position(idx);
            if !self.diversity_allows(&self.buckets[pos], group) {
                return Seen::DiversityLimit;
            }
            self.buckets[pos].entries.push(Entry {
                peer,
                last_seen: now,
                failures: 0,
            });
            self.buckets[pos].replacements.retain(|p| p.key() != key);
            self.count_group(group, true);
            self.len += 1;
            return Seen::Inserted;
        }
        bucket.replacements.retain(|p| p.key() != key);
        bucket.replacements.push(peer);
        if bucket.replacements.len() > replacements_max {
            bucket.replacements.remove(0);
        }
        if bucket.probe.is_some() || !probe {
            return Seen::Cached;
        }
        let oldest = bucket.entries[0].peer.clone();
        bucket.probe = Some(oldest.key());
        Seen::ProbeOldest(oldest)
    }

    /// Records a failed RPC to `key`; evicts it (promoting a replacement) once it has failed
    /// often enough, or at once if it was being probed for a newcomer.
    pub fn on_failure(&mut self, key: &Key) -> Option<Evicted<P>> {
        let idx = self.local.bucket_of(key)?;
        let evict_after = self.evict_after_failures;
        let bucket = self.buckets.get_mut(Self::position(idx))?;
        let pos = bucket.entries.iter().position(|e| e.peer.key() == *key)?;
        bucket.entries[pos].failures += 1;
        let probed = bucket.probe == Some(*key);
        if !probed && bucket.entries[pos].failures < evict_after {
            return None;
        }
        self.evict(idx, pos)
    }

    /// Removes a peer outright (e.g. it misbehaved), promoting a replacement.
    pub fn remove(&mut self, key: &Key) -> Option<Evicted<P>> {
        let idx = self.local.bucket_of(key)?;
        let bucket = self.buckets.get(Self::position(idx))?;
        let pos = bucket.entries.iter().position(|e| e.peer.key() == *key)?;
        self.evict(idx, pos)
    }

    fn evict(&mut self, idx: usize, pos: usize) -> Option<Evicted<P>> {
        let bpos = Self::position(idx);
        let entry = self.buckets[bpos].entries.remove(pos);
        let key = entry.peer.key();
        self.len -= 1;
        self.count_group(entry.peer.ip_group(), false);
        if self.buckets[bpos].probe == Some(key) {
            self.buckets[bpos].probe = None;
        }
        // Promote the most recently seen replacement the diversity limits allow. It was seen
        // no earlier than the bucket's newest entry would make it look, which keeps the
        // least-recently-seen order.
        let last_seen = self.buckets[bpos]
            .entries
            .last()
            .map_or(entry.last_seen, |e| e.last_seen.max(entry.last_seen));
        let mut promoted = None;
        while let Some(candidate) = self.buckets[bpos].replacements.pop() {
            let group = candidate.ip_group();
            if self.diversity_allows(&self.buckets[bpos], group) {
                self.buckets[bpos].entries.push(Entry {
                    peer: candidate.clone(),
                    last_seen,
                    failures: 0,
                });
                self.count_group(group, true);
                self.len += 1;
                promoted = Some(candidate);
                break;
            }
        }
        Some(Evicted {
            removed: entry.peer,
            promoted,
        })
    }

    /// Up to `n` contacts closest to `target`, closest first.
    ///
    /// Walks buckets in distance order instead of sorting the whole table: the target's own
    /// bucket holds everything closer than 2^i, the buckets below it everything in
    /// [2^i, 2^(i+1)), and each bucket above it a band farther out.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<P> {
        let mut out: Vec<P> = Vec::with_capacity(n);
        let take_sorted = |group: &mut Vec<&Entry<P>>, out: &mut Vec<P>| {
            group.sort_by_key(|e| e.peer.key().distance(target));
            for e in group.drain(..) {
                if out.len() == n {
                    break;
                }
                out.push(e.peer.clone());
            }
        };
        let mut group: Vec<&Entry<P>> = Vec::new();
        let start = self.local.bucket_of(target).unwrap_or(0);
        let at = |idx: usize| self.buckets.get(Self::position(idx));
        // The target's bucket (for the target = ourselves, every bucket is "above").
        if self.local.bucket_of(target).is_some() {
            if let Some(b) = at(start) {
                group.extend(b.entries.iter());
            }
            take_sorted(&mut group, &mut out);
            if out.len() == n {
                return out;
            }
            // All buckets below it form one band.
            let lowest = 256 - self.buckets.len();
            for idx in (lowest..start).rev() {
                if let Some(b) = at(idx) {
                    group.extend(b.entries.iter());
                }
            }
            take_sorted(&mut group, &mut out);
        } else {
            let lowest = 256usize.saturating_sub(self.buckets.len());
            for idx in lowest..256 {
                if out.len() == n {
                    break;
                }
                if let Some(b) = at(idx) {
                    group.extend(b.entries.iter());
                }
                take_sorted(&mut group, &mut out);
            }
            return out;
        }
        for idx in start + 1..256 {
            if out.len() == n {
                break;
            }
            if let Some(b) = at(idx) {
                group.extend(b.entries.iter());
            }
            take_sorted(&mut group, &mut out);
        }
        out
    }

    /// Up to `max` contacts not heard from since `now - idle`, longest silent first.
    pub fn idle_entries(&self, now: Instant, idle: Duration, max: usize) -> Vec<P> {
        let mut idle_ones: Vec<&Entry<P>> =
            self.iter().filter(|e| now - e.last_seen >= idle).collect();
        idle_ones.sort_by_key(|e| (e.last_seen, e.peer.key()));
        idle_ones
            .into_iter()
            .take(max)
            .map(|e| e.peer.clone())
            .collect()
    }

    /// Buckets, from the closest non-empty one outwards, that no lookup touched for
    /// `interval`: these get a refresh lookup.
    pub fn buckets_to_refresh(&self, now: Instant, interval: Duration) -> Vec<usize> {
        let Some(closest) = self.buckets.iter().rposition(|b| !b.entries.is_empty()) else {
            return Vec::new();
        };
        (0..=closest)
            .filter(|&pos| now - self.buckets[pos].last_refresh >= interval)
            .map(|pos| 255 - pos)
            .collect()
    }

    /// Buckets from the closest non-empty one outwards (refreshed after a join).
    pub fn populated_range(&self) -> Vec<usize> {
        match self.buckets.iter().rposition(|b| !b.entries.is_empty()) {
            Some(closest) => (0..=closest).map(|pos| 255 - pos).collect(),
            None => Vec::new(),
        }
    }

    /// Records that a lookup for a key in `bucket` ran just now.
    pub fn mark_refreshed(&mut self, now: Instant, target: &Key) {
        if let Some(idx) = self.local.bucket_of(target) {
            if let Some(b) = self.buckets.get_mut(Self::position(idx)) {
                b.last_refresh = now;
            }
        }
    }

    /// The invariants of the table; `Err` names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut total = 0;
        let mut groups: BTreeMap<IpGroup, usize> = BTreeMap::new();
        for (pos, b) in self.buckets.iter().enumerate() {
            let idx = 255 - pos;
            if b.entries.len() > self.k {
                return Err(format!(
                    "bucket {idx} holds {} > k = {}",
                    b.entries.len(),
                    self.k
                ));
            }
            if b.replacements.len() > self.replacements_max {
                return Err(format!(
                    "bucket {idx} caches {} replacements",
                    b.replacements.len()
                ));
            }
            for (i, e) in b.entries.iter().enumerate() {
                let key = e.peer.key();
                if key == self.local {
                    return Err("the table holds ourselves".into());
                }
                if self.local.bucket_of(&key) != Some(idx) {
                    return Err(format!("{key:?} sits in bucket {idx}, belongs elsewhere"));
                }
                if b.entries[..i].iter().any(|o| o.peer.key() == key) {
                    return Err(format!("{key:?} appears twice in bucket {idx}"));
                }
                if i > 0 && b.entries[i - 1].last_seen > e.last_seen {
                    return Err(format!("bucket {idx} is not in least-recently-seen order"));
                }
                if let Some(g) = e.peer.ip_group() {
                    *groups.entry(g).or_insert(0) += 1;
                }
            }
            if let Some(p) = b.probe {
                if !b.entries.iter().any(|e| e.peer.key() == p) {
                    return Err(format!("bucket {idx} probes {p:?}, which it does not hold"));
                }
            }
            total += b.entries.len();
        }
        if total != self.len {
            return Err(format!("len {} but buckets hold {total}", self.len));
        }
        if let Some(d) = self.diversity {
            if groups.values().any(|&n| n > d.per_table) {
                return Err("an address group is over the per-table limit".into());
            }
        }
        if groups != self.groups {
            return Err("address-group counts drifted".into());
        }
        Ok(())
    }
}
