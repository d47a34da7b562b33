//! The routing table: 256 k-buckets in least-recently-seen order, with replacement caches.
//!
//! Kademlia's preference is kept (a live old contact is worth more than a new one), with
//! BitTorrent's rule for finding out which contacts are live (BEP 5): an entry heard from
//! within the liveness interval, with no failure since, is *good*; one silent for longer,
//! one that failed since it was last heard from, or one whose connection was lost without a
//! goodbye, is *questionable*. Only questionable entries are ever pinged, at most one per
//! bucket at a time, so the probes a bucket costs are bounded whatever the traffic: a
//! newcomer to a full bucket waits in the replacement cache while the least recently seen
//! questionable entry is pinged (a full bucket of good entries is not pinged at all), and a
//! questionable entry that fails once is replaced. Only a peer that answered a request of
//! ours (*verified*) can take a place: a stranger that merely asked us something waits in
//! the cache unverified, and is pinged before a place it could be promoted to is given to
//! it. A promoted replacement keeps its real last-seen time. The table never holds
//! ourselves, never more than k per bucket, and (when configured) never more than a few
//! contacts per address group.
//!
//! Buckets are stored far-first (index 255 at position 0) and created on demand: a node in a
//! network of n peers only ever fills about log2(n) buckets, which keeps 100k simulated
//! tables small.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::IpDiversity;
use crate::key::Key;
use crate::peer::{IpGroup, Peer};
use crate::rtt::Rtt;
use crate::time::Instant;

/// A sweep of a bucket ends after this many of its probes in a row were answered: one
/// departure among live entries is not worth pinging the whole bucket for, a mass failure
/// (where most probes fail) is.
pub const SWEEP_GOOD_RUN: u8 = 3;

/// A contact in a bucket.
#[derive(Debug, Clone)]
pub struct Entry<P> {
    /// The peer.
    pub peer: P,
    /// When it last answered or asked us something.
    pub last_seen: Instant,
    /// RPCs that failed since it was last seen (an entry is evicted at
    /// `evict_after_failures`, at most `u16::MAX`; two bytes keep a compact driver's entry
    /// within 32).
    pub failures: u16,
    /// Its connection was lost without a goodbye since it was last seen: questionable
    /// whatever its age.
    pub suspect: bool,
    /// It is its bucket's probe: a ping of ours to it is in flight. A flag here, in the
    /// entry's padding, rather than the probed key in the bucket (32 bytes more in each of
    /// the ~20 buckets of every node: 640 MB at 10^6 simulated nodes).
    probed: bool,
    /// Its round-trip times, once it answered a request whose time we took.
    pub rtt: Rtt,
    /// The first eight bytes of its key ([`first_word`]), kept beside the peer: a search
    /// by key and a ranking by distance decide on this word and read the key itself (which
    /// a driver's handle may keep elsewhere, out of cache) only when it ties.
    word: u64,
}

impl<P: Peer> Entry<P> {
    fn is(&self, key: &Key, word: u64) -> bool {
        self.word == word && self.peer.key() == *key
    }

    /// Whether this is `key`'s entry; cheaper than comparing `peer.key()`, which most
    /// entries are told apart from without reading.
    pub fn has_key(&self, key: &Key) -> bool {
        self.is(key, first_word(key))
    }
}

/// A key's first eight bytes, big-endian: the high word of every distance to it, so two
/// keys whose words differ are ordered by any target's distance without more reading.
/// Entries of one bucket share their first bits with us, but at any population a table
/// can hold, not 64 of them.
fn first_word(key: &Key) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = key.0;
    u64::from_be_bytes([a, b, c, d, e, f, g, h])
}

/// A peer waiting for a place in a full bucket.
#[derive(Debug, Clone)]
struct Replacement<P> {
    peer: P,
    last_seen: Instant,
    /// It answered a request of ours; an unverified one asked us something only.
    verified: bool,
    /// The low 16 bits of its key's [`first_word`], compared before the key (see
    /// [`Entry`]); with a 4-byte handle the replacement stays 16 bytes.
    tag: u16,
}

impl<P: Peer> Replacement<P> {
    fn is(&self, key: &Key, word: u64) -> bool {
        self.tag == word as u16 && self.peer.key() == *key
    }
}

#[derive(Debug, Clone)]
struct Bucket<P> {
    /// Least recently seen first.
    entries: Vec<Entry<P>>,
    /// Most recently seen last.
    replacements: Vec<Replacement<P>>,
    /// One of the entries is being pinged (its `probed` flag); at most one per bucket.
    probing: bool,
    /// An entry of this bucket failed: its questionable entries are pinged one after
    /// another until none is left or [`SWEEP_GOOD_RUN`] in a row answered.
    sweeping: bool,
    /// Probes answered in a row during the current sweep.
    good_run: u8,
    /// When a lookup last targeted this bucket.
    last_refresh: Instant,
}

impl<P> Bucket<P> {
    fn new(now: Instant) -> Self {
        Bucket {
            entries: Vec::new(),
            replacements: Vec::new(),
            probing: false,
            sweeping: false,
            good_run: 0,
            last_refresh: now,
        }
    }
}

/// What became of a peer that answered us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<P> {
    /// Already in the table: moved to the most-recently-seen end.
    Refreshed,
    /// Added to a bucket with room.
    Inserted,
    /// The bucket was full and held an entry that failed since it was last seen: that
    /// entry (returned) was evicted and the peer took its place.
    Replaced(P),
    /// The bucket is full: the peer waits as a replacement, and this questionable entry
    /// should be pinged (the caller sends the ping and reports the outcome).
    ProbeQuestionable(P),
    /// The bucket is full (of good entries, or its probe is in flight): the peer waits.
    Cached,
    /// The peer is us.
    IsSelf,
    /// Its address group is at its limit.
    DiversityLimit,
}

/// What became of a peer that asked us something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// A contact: it is alive, now the most recently seen.
    Known,
    /// A stranger. With `room`, its bucket would take it (once verified); without, it now
    /// waits in the replacement cache, unverified.
    Stranger {
        /// Whether its bucket has room for it.
        room: bool,
    },
    /// The peer is us.
    IsSelf,
}

/// An entry that left the table, and what takes its place.
#[derive(Debug, Clone)]
pub struct Evicted<P> {
    /// The peer removed.
    pub removed: P,
    /// The verified replacement promoted into the bucket, if any.
    pub promoted: Option<P>,
    /// With no verified replacement: the most recent unverified one, to be pinged; it takes
    /// the place if it answers.
    pub verify: Option<P>,
}

/// The k-bucket routing table of one node.
#[derive(Debug, Clone)]
pub struct RoutingTable<P> {
    local: Key,
    k: usize,
    replacements_max: usize,
    evict_after_failures: u32,
    diversity: Option<IpDiversity>,
    /// Entries silent this long are questionable (`None`: only failures and lost
    /// connections make an entry questionable).
    questionable_after: Option<Duration>,
    /// Position `i` holds bucket `255 - i`.
    buckets: Vec<Bucket<P>>,
    len: usize,
    groups: BTreeMap<IpGroup, usize>,
    created: Instant,
    /// The latest time any input carried.
    last_now: Instant,
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
            evict_after_failures: evict_after_failures.clamp(1, u32::from(u16::MAX)),
            diversity,
            questionable_after: None,
            buckets: Vec::new(),
            len: 0,
            groups: BTreeMap::new(),
            created: now,
            last_now: now,
        }
    }

    /// Entries silent for `after` become questionable (the DHT's liveness interval).
    pub fn set_questionable_after(&mut self, after: Option<Duration>) {
        self.questionable_after = after;
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
        // Buckets are only ever added, and a table needs about log2(n) of them: reserve
        // exactly, or a doubling `Vec` of ~96-byte buckets leaves up to half of its places
        // empty in every one of a simulation's 100k tables.
        if self.buckets.len() <= pos {
            self.buckets.reserve_exact(pos + 1 - self.buckets.len());
        }
        while self.buckets.len() <= pos {
            self.buckets.push(Bucket::new(self.created));
        }
        &mut self.buckets[pos]
    }

    fn advance(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// Whether `e` is questionable at `now`: silent too long, failed since last seen, or its
    /// connection was lost.
    pub fn is_questionable(&self, e: &Entry<P>, now: Instant) -> bool {
        e.suspect
            || e.failures > 0
            || self
                .questionable_after
                .is_some_and(|after| now - e.last_seen >= after)
    }

    /// Whether `peer` would be inserted now (its bucket has room its diversity limits
    /// allow), rather than wait as a replacement.
    pub fn has_room_for(&self, peer: &P) -> bool {
        let Some(idx) = self.local.bucket_of(&peer.key()) else {
            return false;
        };
        match self.buckets.get(Self::position(idx)) {
            Some(b) => b.entries.len() < self.k && self.diversity_allows(b, peer.ip_group(), None),
            None => true,
        }
    }

    /// The entry for a key, if present.
    pub fn get(&self, key: &Key) -> Option<&Entry<P>> {
        let word = first_word(key);
        self.bucket(key)?.entries.iter().find(|e| e.is(key, word))
    }

    /// Whether a key is in the table.
    pub fn contains(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }

    /// Whether a key waits in a replacement cache, and if so whether it is verified.
    pub fn replacement(&self, key: &Key) -> Option<bool> {
        let word = first_word(key);
        self.bucket(key)?
            .replacements
            .iter()
            .find(|r| r.is(key, word))
            .map(|r| r.verified)
    }

    /// Every contact, far buckets first, each bucket least recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<P>> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The contacts worth keeping across a restart (a node with no bootstrap peer rejoins
    /// through them): at most `max`, taken round-robin across buckets, far buckets first,
    /// so every part of the key space keeps a way in; most recently seen first within each.
    pub fn contacts_to_save(&self, max: usize) -> Vec<P> {
        let mut out = Vec::with_capacity(self.len.min(max));
        for round in 0.. {
            let mut any = false;
            for b in &self.buckets {
                let newest = b.entries.len().checked_sub(round + 1);
                if let Some(e) = newest.and_then(|i| b.entries.get(i)) {
                    any = true;
                    if out.len() == max {
                        return out;
                    }
                    out.push(e.peer.clone());
                }
            }
            if !any {
                break;
            }
        }
        out
    }

    /// Whether `group` may take one more place in `bucket` (after `leaving`, an entry of
    /// that group, gives its place up).
    fn diversity_allows(
        &self,
        bucket: &Bucket<P>,
        group: Option<IpGroup>,
        leaving: Option<Option<IpGroup>>,
    ) -> bool {
        let (Some(limits), Some(group)) = (self.diversity, group) else {
            return true;
        };
        let freed = usize::from(leaving == Some(Some(group)));
        let in_bucket = bucket
            .entries
            .iter()
            .filter(|e| e.peer.ip_group() == Some(group))
            .count()
            - freed;
        let in_table = self.groups.get(&group).copied().unwrap_or(0) - freed;
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

    /// Records that `peer` answered a request of ours just now (or that the driver verified
    /// it as if it had): it may take a place. In a full bucket it replaces an entry that
    /// failed, or waits while the least recently seen questionable entry is pinged.
    pub fn on_seen(&mut self, now: Instant, peer: P) -> Seen<P> {
        self.seen(now, peer, None, true)
    }

    /// As [`on_seen`](Self::on_seen), with the round trip of the request it answered.
    pub fn on_answered(&mut self, now: Instant, peer: P, rtt: Duration) -> Seen<P> {
        self.seen(now, peer, Some(rtt), true)
    }

    /// As [`on_seen`](Self::on_seen), but a peer that finds its bucket full (of entries
    /// that have not failed) only waits as a replacement: no probe (`Cached` instead of
    /// `ProbeQuestionable`). For peers the driver vouches for, e.g. a connection it dialed.
    pub fn on_seen_without_probe(&mut self, now: Instant, peer: P) -> Seen<P> {
        self.seen(now, peer, None, false)
    }

    fn seen(&mut self, now: Instant, peer: P, rtt: Option<Duration>, probe: bool) -> Seen<P> {
        let key = peer.key();
        let Some(idx) = self.local.bucket_of(&key) else {
            return Seen::IsSelf;
        };
        self.advance(now);
        let k = self.k;
        let bpos = Self::position(idx);
        let word = first_word(&key);
        let known = self
            .bucket_mut_or_create(idx)
            .entries
            .iter()
            .position(|e| e.is(&key, word));
        if let Some(pos) = known {
            self.refresh(bpos, pos, now, peer, rtt);
            return Seen::Refreshed;
        }
        let group = peer.ip_group();
        if self.buckets[bpos].entries.len() < k {
            if !self.diversity_allows(&self.buckets[bpos], group, None) {
                return Seen::DiversityLimit;
            }
            let entry = fresh_entry(peer, now, rtt);
            let bucket = &mut self.buckets[bpos];
            grow_at_most_to(&mut bucket.entries, k);
            bucket.entries.push(entry);
            bucket.replacements.retain(|r| !r.is(&key, word));
            self.count_group(group, true);
            self.len += 1;
            return Seen::Inserted;
        }
        // Full. An entry that failed since it was last seen gives its place to a peer that
        // just answered (the one with most failures, the least recently seen of those).
        let bucket = &self.buckets[bpos];
        let bad = bucket
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.failures > 0)
            .max_by_key(|(i, e)| (e.failures, std::cmp::Reverse(*i)))
            .map(|(i, e)| (i, e.peer.ip_group()));
        if let Some((pos, bad_group)) = bad {
            if self.diversity_allows(bucket, group, Some(bad_group)) {
                let old = self.buckets[bpos].entries.remove(pos);
                self.count_group(old.peer.ip_group(), false);
                let bucket = &mut self.buckets[bpos];
                bucket.probing &= !old.probed;
                bucket.entries.push(fresh_entry(peer, now, rtt));
                bucket.replacements.retain(|r| !r.is(&key, word));
                self.count_group(group, true);
                return Seen::Replaced(old.peer);
            }
        }
        self.cache(bpos, peer, now, true);
        if !probe || self.buckets[bpos].probing {
            return Seen::Cached;
        }
        match self.take_probe(bpos, now) {
            Some(p) => Seen::ProbeQuestionable(p),
            None => Seen::Cached,
        }
    }

    /// Moves entry `pos` of bucket `bpos` to the most-recently-seen end, as good.
    fn refresh(&mut self, bpos: usize, pos: usize, now: Instant, peer: P, rtt: Option<Duration>) {
        // A known peer seen from an address in another group: its count moves with it. If
        // the new group is at its limit, the entry keeps its old handle (and address): the
        // group counts must always match the entries.
        let old_group = self.buckets[bpos].entries[pos].peer.ip_group();
        let new_group = peer.ip_group();
        let mut take_new = true;
        if old_group != new_group {
            take_new = self.diversity_allows(&self.buckets[bpos], new_group, None);
            if take_new {
                self.count_group(old_group, false);
                self.count_group(new_group, true);
            }
        }
        let bucket = &mut self.buckets[bpos];
        let mut e = bucket.entries.remove(pos);
        let was_probe = std::mem::take(&mut e.probed);
        e.last_seen = now;
        e.failures = 0;
        e.suspect = false;
        if let Some(r) = rtt {
            e.rtt.sample(r);
        }
        if take_new {
            e.peer = peer;
        }
        bucket.entries.push(e);
        if was_probe {
            bucket.probing = false;
            if bucket.sweeping {
                bucket.good_run = bucket.good_run.saturating_add(1);
            }
        }
    }

    /// Puts `peer` in bucket `bpos`'s replacement cache, most recent last; a verified one
    /// stays verified.
    fn cache(&mut self, bpos: usize, peer: P, now: Instant, verified: bool) {
        let max = self.replacements_max;
        let key = peer.key();
        let bucket = &mut self.buckets[bpos];
        let mut verified = verified;
        let word = first_word(&key);
        if let Some(i) = bucket.replacements.iter().position(|r| r.is(&key, word)) {
            verified |= bucket.replacements.remove(i).verified;
        }
        if max == 0 {
            return;
        }
        // The oldest leaves before the newest comes, so the cache never grows past `max`.
        if bucket.replacements.len() >= max {
            bucket.replacements.remove(0);
        }
        grow_at_most_to(&mut bucket.replacements, max);
        bucket.replacements.push(Replacement {
            peer,
            last_seen: now,
            verified,
            tag: word as u16,
        });
    }

    /// Records that `peer` asked us something just now. A contact is alive (and now the most
    /// recently seen); a stranger is not trusted with a place: with room in its bucket the
    /// caller may verify it, else it waits in the cache unverified. Never a probe.
    pub fn on_asked(&mut self, now: Instant, peer: P) -> Asked {
        let key = peer.key();
        let Some(idx) = self.local.bucket_of(&key) else {
            return Asked::IsSelf;
        };
        self.advance(now);
        let bpos = Self::position(idx);
        let word = first_word(&key);
        let known = self
            .bucket_mut_or_create(idx)
            .entries
            .iter()
            .position(|e| e.is(&key, word));
        if let Some(pos) = known {
            self.refresh(bpos, pos, now, peer, None);
            return Asked::Known;
        }
        if self.has_room_for(&peer) {
            return Asked::Stranger { room: true };
        }
        self.cache(bpos, peer, now, false);
        Asked::Stranger { room: false }
    }

    /// Records a failed RPC to `key` at the table's latest time (see
    /// [`on_failure_at`](Self::on_failure_at)).
    pub fn on_failure(&mut self, key: &Key) -> Option<Evicted<P>> {
        self.on_failure_at(self.last_now, key)
    }

    /// Records a failed RPC to `key` at `now`. An entry that was questionable (or being
    /// probed) is evicted at once, a good one after `evict_after_failures` in a row; either
    /// way its bucket is swept (its questionable entries pinged in turn).
    pub fn on_failure_at(&mut self, now: Instant, key: &Key) -> Option<Evicted<P>> {
        self.advance(now);
        let idx = self.local.bucket_of(key)?;
        let bpos = Self::position(idx);
        let word = first_word(key);
        let pos = self
            .buckets
            .get(bpos)?
            .entries
            .iter()
            .position(|e| e.is(key, word))?;
        let questionable = {
            let b = &self.buckets[bpos];
            b.entries[pos].probed || self.is_questionable(&b.entries[pos], now)
        };
        let bucket = &mut self.buckets[bpos];
        bucket.entries[pos].failures = bucket.entries[pos].failures.saturating_add(1);
        bucket.sweeping = self.questionable_after.is_some();
        bucket.good_run = 0;
        if !questionable && u32::from(bucket.entries[pos].failures) < self.evict_after_failures {
            return None;
        }
        self.evict(idx, pos)
    }

    /// The connection to `key` was lost without a goodbye: its entry is questionable now
    /// (it is pinged before it is trusted again), and its bucket is swept.
    pub fn mark_suspect(&mut self, key: &Key) {
        let Some(idx) = self.local.bucket_of(key) else {
            return;
        };
        let sweep = self.questionable_after.is_some();
        if let Some(b) = self.buckets.get_mut(Self::position(idx)) {
            let word = first_word(key);
            if let Some(e) = b.entries.iter_mut().find(|e| e.is(key, word)) {
                e.suspect = true;
                if sweep && !b.sweeping {
                    b.sweeping = true;
                    b.good_run = 0;
                }
            }
        }
    }

    /// Forgets an in-flight probe of `key` whose ping could not be sent (a local shortage):
    /// the entry is neither good nor failed, and may be probed again.
    pub fn probe_dropped(&mut self, key: &Key) {
        if let Some(idx) = self.local.bucket_of(key) {
            if let Some(b) = self.buckets.get_mut(Self::position(idx)) {
                let word = first_word(key);
                if let Some(e) = b.entries.iter_mut().find(|e| e.probed && e.is(key, word)) {
                    e.probed = false;
                    b.probing = false;
                }
            }
        }
    }

    /// Marks bucket `bpos`'s least recently seen questionable entry as probed and returns it.
    fn take_probe(&mut self, bpos: usize, now: Instant) -> Option<P> {
        let b = self.buckets.get(bpos)?;
        if b.probing {
            return None;
        }
        let pos = b
            .entries
            .iter()
            .position(|e| self.is_questionable(e, now))?;
        let b = &mut self.buckets[bpos];
        b.probing = true;
        b.entries[pos].probed = true;
        Some(b.entries[pos].peer.clone())
    }

    /// Liveness: up to `max` questionable entries to ping, at most one per bucket and none
    /// in a bucket whose probe is in flight, the closest buckets first (they answer the
    /// lookups for keys near us, where stale entries cost exactness).
    pub fn liveness_probes(&mut self, now: Instant, max: usize) -> Vec<P> {
        self.advance(now);
        let mut out = Vec::new();
        for bpos in (0..self.buckets.len()).rev() {
            if out.len() >= max {
                break;
            }
            if let Some(p) = self.take_probe(bpos, now) {
                out.push(p);
            }
        }
        out
    }

    /// The next entry to ping in `key`'s bucket if that bucket is being swept and has no
    /// probe in flight. A sweep ends when no questionable entry is left, or when
    /// [`SWEEP_GOOD_RUN`] probes in a row were answered.
    pub fn continue_sweep(&mut self, now: Instant, key: &Key) -> Option<P> {
        let idx = self.local.bucket_of(key)?;
        let bpos = Self::position(idx);
        let b = self.buckets.get(bpos)?;
        if !b.sweeping || b.probing {
            return None;
        }
        let next = if b.good_run >= SWEEP_GOOD_RUN {
            None
        } else {
            self.take_probe(bpos, now)
        };
        if next.is_none() {
            self.buckets[bpos].sweeping = false;
            self.buckets[bpos].good_run = 0;
        }
        next
    }

    /// Removes a peer outright (it left, or it lied), promoting a replacement; a copy of
    /// it waiting in the replacement cache goes too.
    pub fn remove(&mut self, key: &Key) -> Option<Evicted<P>> {
        let idx = self.local.bucket_of(key)?;
        let bucket = self.buckets.get_mut(Self::position(idx))?;
        let word = first_word(key);
        bucket.replacements.retain(|r| !r.is(key, word));
        let pos = bucket.entries.iter().position(|e| e.is(key, word))?;
        self.evict(idx, pos)
    }

    fn evict(&mut self, idx: usize, pos: usize) -> Option<Evicted<P>> {
        let bpos = Self::position(idx);
        let entry = self.buckets[bpos].entries.remove(pos);
        self.len -= 1;
        self.count_group(entry.peer.ip_group(), false);
        self.buckets[bpos].probing &= !entry.probed;
        // Promote the most recently seen verified replacement the diversity limits allow,
        // with its own last-seen time (so it sits where that time puts it, and turns
        // questionable when that time says). Unverified ones are never promoted: the most
        // recent of them is handed back to be pinged.
        let mut promoted = None;
        let mut verify = None;
        let mut i = self.buckets[bpos].replacements.len();
        while i > 0 {
            i -= 1;
            let r = &self.buckets[bpos].replacements[i];
            if !r.verified {
                if verify.is_none() {
                    verify = Some(r.peer.clone());
                }
                continue;
            }
            if !self.diversity_allows(&self.buckets[bpos], r.peer.ip_group(), None) {
                continue;
            }
            let r = self.buckets[bpos].replacements.remove(i);
            let bucket = &mut self.buckets[bpos];
            let at = bucket
                .entries
                .partition_point(|e| e.last_seen <= r.last_seen);
            bucket
                .entries
                .insert(at, fresh_entry(r.peer.clone(), r.last_seen, None));
            self.count_group(r.peer.ip_group(), true);
            self.len += 1;
            promoted = Some(r.peer);
            verify = None;
            break;
        }
        Some(Evicted {
            removed: entry.peer,
            promoted,
            verify,
        })
    }

    /// Up to `n` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<P> {
        self.closest_entries(target, n, |_| true)
            .into_iter()
            .map(|e| e.peer.clone())
            .collect()
    }

    /// Up to `n` entries closest to `target` among those `keep` accepts, closest first.
    ///
    /// Walks buckets in distance order instead of sorting the whole table: the target's own
    /// bucket holds everything closer than 2^i, the buckets below it everything in
    /// [2^i, 2^(i+1)) (each a band of its own, in an order the distance's bits give), and
    /// each bucket above it a band farther out. Every entry of a band is closer than every
    /// entry of a later one, so each band's best are kept in sorted order in the result
    /// itself (at most `n`, reserved once), and the walk stops at the first band it does
    /// not need. Entries are ranked by the first word of their keys, kept in the entry, so a
    /// key (which a driver's handle may read through a table of its own) is read only
    /// when two words tie.
    pub fn closest_entries<'a>(
        &'a self,
        target: &Key,
        n: usize,
        keep: impl Fn(&Entry<P>) -> bool,
    ) -> Vec<&'a Entry<P>> {
        let mut out: Vec<&Entry<P>> = Vec::with_capacity(n.min(self.len));
        if n == 0 {
            return out;
        }
        let word = first_word(target);
        let band = |b: Option<&'a Bucket<P>>, out: &mut Vec<&'a Entry<P>>, from: usize| {
            for e in b.into_iter().flat_map(|b| b.entries.iter()) {
                if keep(e) {
                    keep_closest(out, from, n, e, target, word);
                }
            }
        };
        let at = |idx: usize| self.buckets.get(Self::position(idx));
        let lowest = 256usize.saturating_sub(self.buckets.len());
        // For the target = ourselves, every bucket is "above".
        let Some(start) = self.local.bucket_of(target) else {
            for idx in lowest..256 {
                if out.len() == n {
                    break;
                }
                let from = out.len();
                band(at(idx), &mut out, from);
            }
            return out;
        };
        band(at(start), &mut out, 0);
        // Below the target's bucket, bucket i's entries share the distance's bits above i
        // and have bit i the other way: where the distance has bit i set they are closer
        // than every bucket below i, where it is clear farther. So each bucket is a band of
        // its own, in this order: those whose bit is set from start − 1 down, then those
        // whose bit is clear from the lowest up; then the buckets above, outwards.
        let (hi, lo) = self.local.distance_words(target);
        let set = |i: usize| {
            if i >= 128 {
                (hi >> (i - 128)) & 1 == 1
            } else {
                (lo >> i) & 1 == 1
            }
        };
        let below = (lowest..start).rev().filter(|&i| set(i));
        let beyond = (lowest..start).filter(|&i| !set(i));
        for idx in below.chain(beyond).chain(start + 1..256) {
            if out.len() == n {
                break;
            }
            let from = out.len();
            band(at(idx), &mut out, from);
        }
        out
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
                if e.word != first_word(&key) {
                    return Err(format!("{key:?}'s entry has a stale first word"));
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
            let probed = b.entries.iter().filter(|e| e.probed).count();
            if probed != usize::from(b.probing) {
                return Err(format!(
                    "bucket {idx} has {probed} probed entries, its flag says {}",
                    b.probing
                ));
            }
            for (i, r) in b.replacements.iter().enumerate() {
                let key = r.peer.key();
                if r.tag != first_word(&key) as u16 {
                    return Err(format!("replacement {key:?} has a stale tag"));
                }
                if self.local.bucket_of(&key) != Some(idx) {
                    return Err(format!("replacement {key:?} cached in bucket {idx}"));
                }
                if b.entries.iter().any(|e| e.peer.key() == key)
                    || b.replacements[..i].iter().any(|o| o.peer.key() == key)
                {
                    return Err(format!("replacement {key:?} is also an entry, or twice"));
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

/// Makes room for one more entry in a bucket that never holds more than `k`: capacity
/// doubles as usual, but stops at `k` instead of overshooting it (a full bucket of 20 would
/// otherwise reserve 32 places, 40 % of a 100k-node simulation's tables left empty).
fn grow_at_most_to<T>(entries: &mut Vec<T>, k: usize) {
    if entries.len() == entries.capacity() {
        let cap = (entries.capacity() * 2)
            .max(4)
            .min(k.max(entries.len() + 1));
        entries.reserve_exact(cap - entries.len());
    }
}

fn fresh_entry<P: Peer>(peer: P, now: Instant, rtt: Option<Duration>) -> Entry<P> {
    let word = first_word(&peer.key());
    let mut e = Entry {
        peer,
        last_seen: now,
        failures: 0,
        suspect: false,
        probed: false,
        rtt: Rtt::UNKNOWN,
        word,
    };
    if let Some(r) = rtt {
        e.rtt.sample(r);
    }
    e
}

/// Puts `e` among `out[from..]`, the closest entries of the current band kept sorted by
/// distance to `target`, with `out` never longer than `n` (the farthest drops out). Every
/// entry before `from` is closer than any of this band. Keys in a table are distinct, so
/// distances are too: the order is the one order. Distances are compared on their high
/// words (an entry's `word` XOR `word`, the target's); keys are read only when those tie.
fn keep_closest<'a, P: Peer>(
    out: &mut Vec<&'a Entry<P>>,
    from: usize,
    n: usize,
    e: &'a Entry<P>,
    target: &Key,
    word: u64,
) {
    let w = e.word ^ word;
    let closer = |o: &Entry<P>| match (o.word ^ word).cmp(&w) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => {
            o.peer.key().distance_words(target) < e.peer.key().distance_words(target)
        }
    };
    if out.len() >= n {
        match out.last() {
            Some(last) if out.len() > from && !closer(last) => {
                out.pop();
            }
            _ => return,
        }
    }
    let pos = from + out[from..].partition_point(|o| closer(o));
    out.insert(pos, e);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::TestPeer;

    /// Every node has a bucket per distance it knows (~20 at 10^6 nodes): its fixed part
    /// stays within a cache line, the probe a flag on the entry rather than a key here.
    #[test]
    fn a_bucket_fits_a_cache_line() {
        assert!(std::mem::size_of::<Bucket<TestPeer>>() <= 64);
    }
}
