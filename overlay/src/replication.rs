//! Replication planning: which object goes to which node, so each sits on its RF closest.
//!
//! The planner holds the objects this node stores and what it knows of other copies; from
//! the routing table and the holders it knows it computes, for each object, the RF nodes
//! closest to its key (counting ourselves). A holder in the table counts while its
//! confirmation lasts (`confirm_ttl`). A holder outside it counts only on our own fresh
//! proof (`off_table_proof_ttl`, a minute) and not once it has left the table
//! ([`Planner::handle_peer_removed`]): a gateway far from the key places the object by a
//! lookup and releases its copy as soon as it proved the key's closest hold it, but nothing
//! vouches for such a holder later, and a push alone never makes one count. Every one of them that is not known to hold a copy gets a
//! [`PlanEvent::Transfer`]; once all RF targets hold copies and we are not among them, our
//! own copy is released.
//!
//! A holder is "known" only once it proved it: it served bytes that verified against the id
//! (the driver's check after HAS or after a push), or it pushed the object to us (its bytes
//! verified as we stored them). A peer's word alone never releases a copy.
//!
//! One pusher per missing copy: of the holders we know, only the one closest to the key
//! (the lead) pushes; the others plan verify-only transfers (ask, never send) and wait. A
//! copy a non-lead has seen missing for longer than `takeover_after` is pushed anyway, so a
//! lead that cannot reach a target does not stall repair. Transfers the write path starts
//! itself are registered with [`Planner::begin_external`], so repair does not repeat them.
//!
//! A pair (object, target) whose transfer failed (unreachable, refused, timed out) is not
//! planned again before a wait that doubles with each failure in a row, from
//! `replan_debounce` up to `takeover_after` (a target back from a restart, still in the
//! table, waits at most that); an answer from the target, or its leaving the table (it
//! comes back a new chance), ends it. A transfer that failed for a reason of ours (its
//! [`TransferFault`] blames us: our store, our queue, our connection cap) starts no wait. Without it a
//! target that refuses (its table does not know us, or it does not think the object is its
//! to hold) was asked again at every replan, a second apart, for as long as the disagreement
//! lasted.
//!
//! Transfers are paced by a fanout quota: at most `transfers_max` in flight and a token
//! bucket of `bytes_per_second` with `burst_bytes` depth. Every transfer is charged its whole
//! size: one larger than the burst may start when the bucket is full and leaves it in debt,
//! so the average rate holds for any object size. Planning reruns shortly after the table
//! changes and periodically, since confirmations go stale.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::cause::TransferFault;
use crate::config::ReplicationConfig;
use crate::dht::{Event, RpcFailure};
use crate::key::Key;
use crate::peer::Peer;
use crate::routing::RoutingTable;
use crate::time::Instant;

/// Names one planned transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

/// What became of a [`PlanEvent::Transfer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferOutcome {
    /// The target holds the object and proved it (served bytes that verified).
    Verified,
    /// The target answered that it lacks the object, and this transfer was not to push it.
    Absent,
    /// The transfer failed, and the driver says what happened; the planner judges whose
    /// fault it is ([`TransferFault::blame`]).
    Failed(TransferFault),
}

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanEvent<P> {
    /// Make sure `to` holds `key`: ask it (HAS) and have it prove its copy with a verified
    /// read; if it lacks the object and `push` is set, push the bytes first. Report with
    /// [`Planner::handle_transfer_done`].
    Transfer {
        /// Report the outcome with this id.
        id: TransferId,
        /// The object.
        key: Key,
        /// Its size in bytes.
        size: u64,
        /// The node that should hold it.
        to: P,
        /// Whether to send the bytes if `to` lacks them (we are the lead holder), or only
        /// to check (another holder is closer and does the pushing).
        push: bool,
    },
    /// RF closer nodes hold `key`: our copy is no longer needed.
    Release {
        /// The object.
        key: Key,
    },
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Transfers handed to the driver.
    pub transfers_started: u64,
    /// Transfers that failed.
    pub transfers_failed: u64,
    /// Bytes of all transfers started.
    pub bytes_started: u64,
    /// Local copies released.
    pub releases: u64,
    /// Transfers planned as verify-only because a closer holder leads.
    pub deferred_to_lead: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    key: Key,
    to: Key,
    /// Started by the write path, not by the plan: not charged, not counted as repair.
    external: bool,
}

#[derive(Debug, Clone)]
struct Queued<P> {
    key: Key,
    to: P,
    push: bool,
}

/// When a pair whose transfers keep failing may be planned again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    /// The wait that gave `at`; the next failure doubles it.
    wait: Duration,
}

/// How we know a node holds a copy.
#[derive(Debug, Clone, Copy)]
struct Confirmed {
    at: Instant,
    /// We read bytes of it back from the node and they verified (our transfer's
    /// `Verified`); otherwise it pushed the object to us.
    proven: bool,
}

#[derive(Debug, Clone)]
struct Object {
    size: u64,
    /// Nodes known to hold a copy.
    confirmed: BTreeMap<Key, Confirmed>,
    released: bool,
}

/// The replication planner of one node.
#[derive(Debug)]
pub struct Planner<P> {
    local: Key,
    config: ReplicationConfig,
    objects: BTreeMap<Key, Object>,
    queue: VecDeque<Queued<P>>,
    /// (object, target) pairs queued or in flight, so nothing is planned twice.
    planned: BTreeSet<(Key, Key)>,
    in_flight: BTreeMap<TransferId, InFlight>,
    /// (object, target) pairs a verify-only transfer found missing, and since when.
    missing_since: BTreeMap<(Key, Key), Instant>,
    /// (object, target) pairs whose last transfer failed, and when to try again.
    retry: BTreeMap<(Key, Key), Retry>,
    /// Peers that left the routing table, and when; their proofs no longer count off the
    /// table (kept for `off_table_proof_ttl`).
    removed: BTreeMap<Key, Instant>,
    events: VecDeque<PlanEvent<P>>,
    /// The pacing bucket; negative after a transfer larger than the burst (debt).
    tokens: i128,
    refilled: Instant,
    replan_at: Option<Instant>,
    next_periodic: Instant,
    next_id: u64,
    stats: PlanStats,
}

impl<P: Peer> Planner<P> {
    /// A planner for the node with key `local`.
    pub fn new(now: Instant, local: Key, config: ReplicationConfig) -> Self {
        Planner {
            local,
            tokens: i128::from(config.burst_bytes),
            refilled: now,
            replan_at: None,
            next_periodic: now + config.replan_interval,
            config,
            objects: BTreeMap::new(),
            queue: VecDeque::new(),
            planned: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            missing_since: BTreeMap::new(),
            retry: BTreeMap::new(),
            removed: BTreeMap::new(),
            events: VecDeque::new(),
            next_id: 0,
            stats: PlanStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> PlanStats {
        self.stats
    }

    /// Transfers handed out (planned or registered by a write) and not reported done yet.
    /// One that is never reported blocks its (object, target) pair for good, so a driver
    /// that loses one has a bug this count shows.
    pub fn transfers_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Objects held locally.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// Copies known for `key` (other nodes confirmed, plus ours), or `None` if we do not
    /// hold it.
    pub fn known_copies(&self, key: &Key) -> Option<usize> {
        self.objects.get(key).map(|o| o.confirmed.len() + 1)
    }

    /// Objects held and the mean number of copies known per object (ours included), for the
    /// `rf_observed` metric.
    pub fn copies_mean(&self) -> (usize, f64) {
        let n = self.objects.len();
        if n == 0 {
            return (0, 0.0);
        }
        let total: usize = self.objects.values().map(|o| o.confirmed.len() + 1).sum();
        (n, total as f64 / n as f64)
    }

    /// We now hold `key`; plan its copies.
    pub fn add_object(&mut self, now: Instant, key: Key, size: u64) {
        self.objects.entry(key).or_insert(Object {
            size,
            confirmed: BTreeMap::new(),
            released: false,
        });
        self.schedule_replan(now);
    }

    /// We no longer hold `key`.
    pub fn remove_object(&mut self, key: &Key) {
        self.objects.remove(key);
        self.queue.retain(|q| q.key != *key);
        self.planned.retain(|(k, _)| k != key);
        self.missing_since.retain(|(k, _), _| k != key);
        self.retry.retain(|(k, _), _| k != key);
    }

    /// `peer` pushed `key` to us (its bytes verified as we stored them): it holds a copy.
    /// Counts while `peer` is in the routing table.
    pub fn handle_holder_confirmed(&mut self, now: Instant, key: &Key, peer: &Key) {
        self.confirm(now, key, peer, false);
    }

    fn confirm(&mut self, now: Instant, key: &Key, peer: &Key, proven: bool) {
        if *peer == self.local {
            return;
        }
        if let Some(o) = self.objects.get_mut(key) {
            let c = o
                .confirmed
                .entry(*peer)
                .or_insert(Confirmed { at: now, proven });
            c.at = now;
            c.proven = proven;
        }
    }

    /// `peer` left the routing table (it failed its probes or closed): its copies no longer
    /// count, so repair need not wait for their confirmations to expire.
    pub fn handle_peer_removed(&mut self, now: Instant, peer: &Key) {
        self.removed.insert(*peer, now);
        // Should it come back, it is a new chance, not the next failure in a row.
        self.retry.retain(|(_, to), _| to != peer);
        self.schedule_replan(now);
    }

    /// The routing table changed; re-plan after the debounce.
    pub fn handle_table_changed(&mut self, now: Instant) {
        self.schedule_replan(now);
    }

    /// The DHT raised `ev`: the planner's share of it. A contact that came re-plans after
    /// the debounce; one that left (failed, said goodbye, lied) takes its copies out of
    /// the count at once. Drivers hand every event here, so which events move the plan
    /// is decided in one place.
    pub fn handle_dht_event(&mut self, now: Instant, ev: &Event<P>) {
        match ev {
            Event::PeerAdded(_) => self.handle_table_changed(now),
            Event::PeerRemoved(p) => self.handle_peer_removed(now, &p.key()),
            Event::QueryFinished { .. }
            | Event::Ready
            | Event::Isolated
            | Event::PeerMisbehaved { .. } => {}
        }
    }

    /// The write path is pushing `key` to `to` itself: record it so the plan does not start
    /// the same transfer. Returns the id to report the outcome with, or `None` when a
    /// planned transfer of the pair is already in flight (its outcome will arrive anyway).
    pub fn begin_external(&mut self, key: Key, to: Key) -> Option<TransferId> {
        if self.in_flight.values().any(|f| f.key == key && f.to == to) {
            return None;
        }
        self.queue.retain(|q| !(q.key == key && q.to.key() == to));
        self.planned.insert((key, to));
        let id = TransferId(self.next_id);
        self.next_id += 1;
        self.in_flight.insert(
            id,
            InFlight {
                key,
                to,
                external: true,
            },
        );
        Some(id)
    }

    /// The outcome of a [`PlanEvent::Transfer`] or of a transfer from
    /// [`begin_external`](Self::begin_external).
    pub fn handle_transfer_done(&mut self, now: Instant, id: TransferId, outcome: TransferOutcome) {
        let Some(f) = self.in_flight.remove(&id) else {
            return;
        };
        let pair = (f.key, f.to);
        self.planned.remove(&pair);
        match outcome {
            TransferOutcome::Verified => {
                self.retry.remove(&pair);
                self.missing_since.remove(&pair);
                self.confirm(now, &f.key, &f.to, true);
            }
            TransferOutcome::Absent => {
                self.retry.remove(&pair);
                self.missing_since.entry(pair).or_insert(now);
            }
            TransferOutcome::Failed(fault) if fault.blame() == RpcFailure::Local => {}
            TransferOutcome::Failed(_) => {
                if !f.external {
                    self.stats.transfers_failed += 1;
                }
                let (first, max) = (self.config.replan_debounce, self.config.takeover_after);
                let wait = self
                    .retry
                    .get(&pair)
                    .map_or(first, |r| r.wait.saturating_mul(2))
                    .min(max.max(first));
                self.retry.insert(
                    pair,
                    Retry {
                        at: now + wait,
                        wait,
                    },
                );
            }
        }
        // Either way the picture changed: a release may now be possible, or a retry due.
        self.schedule_replan(now);
    }

    fn schedule_replan(&mut self, now: Instant) {
        let at = now + self.config.replan_debounce;
        self.replan_at = Some(self.replan_at.map_or(at, |t| t.min(at)));
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_periodic;
        if let Some(r) = self.replan_at {
            t = t.min(r);
        }
        if let Some(ready) = self.tokens_ready_at() {
            t = t.min(ready);
        }
        Some(t)
    }

    /// The next piece of work.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PlanEvent<P>> {
        self.events.pop_front()
    }

    /// Re-plans if due and starts the transfers the quota allows, against the current
    /// routing table.
    pub fn handle_timeout(&mut self, now: Instant, table: &RoutingTable<P>) {
        if now >= self.next_periodic {
            self.next_periodic = now + self.config.replan_interval;
            self.replan_at = Some(now);
        }
        if self.replan_at.is_some_and(|t| now >= t) {
            self.replan_at = None;
            self.replan(now, table);
        }
        self.dispatch(now);
    }

    fn replan(&mut self, now: Instant, table: &RoutingTable<P>) {
        let rf = self.config.rf.max(1);
        let (ttl, off_ttl) = (self.config.confirm_ttl, self.config.off_table_proof_ttl);
        self.removed.retain(|_, at| now - *at < off_ttl);
        // A retry long past its time belongs to a pair nobody planned again: forget it.
        let stale = self.config.replan_interval.saturating_mul(2);
        self.retry.retain(|_, r| now < r.at || now - r.at < stale);
        // The earliest retry this plan skipped: plan again then.
        let mut retry_at: Option<Instant> = None;
        let keys: Vec<Key> = self.objects.keys().copied().collect();
        for key in keys {
            let Some(obj) = self.objects.get_mut(&key) else {
                continue;
            };
            // In the table: while the confirmation lasts. Off it: only our own fresh proof,
            // and not from a peer that just left the table (a late proof of a departed peer).
            let removed = &self.removed;
            obj.confirmed.retain(|k, c| {
                if table.contains(k) {
                    now - c.at < ttl
                } else {
                    c.proven && now - c.at < off_ttl && !removed.contains_key(k)
                }
            });
            // The RF closest among the table, the holders we know and ourselves. Known holders
            // count even when the table lacks them: a writer far from the key found the key's
            // neighbourhood by a lookup, and its own table need not reach there.
            let mut ranked: Vec<(Key, Option<P>)> = table
                .closest(&key, rf)
                .into_iter()
                .map(|p| (p.key(), Some(p)))
                .collect();
            for k in obj.confirmed.keys() {
                if !ranked.iter().any(|(r, _)| r == k) {
                    ranked.push((*k, None));
                }
            }
            ranked.push((self.local, None));
            ranked.sort_by_key(|(k, _)| k.distance(&key));
            ranked.truncate(rf);
            let self_in = ranked.iter().any(|(k, _)| *k == self.local);
            obj.confirmed
                .retain(|k, _| ranked.iter().any(|(r, _)| r == k));
            let missing: Vec<P> = ranked
                .into_iter()
                .filter_map(|(k, p)| p.filter(|_| !obj.confirmed.contains_key(&k)))
                .collect();
            let local_d = self.local.distance(&key);
            if missing.is_empty() && !self_in && !obj.released {
                obj.released = true;
                self.stats.releases += 1;
                self.events.push_back(PlanEvent::Release { key });
                continue;
            }
            // The lead is the known holder closest to the key; only it pushes. A holder off
            // our table does not count here: its own RF closest need not include our
            // targets, so it may never push to them.
            let lead = !obj
                .confirmed
                .keys()
                .any(|k| k.distance(&key) < local_d && table.contains(k));
            for p in missing {
                let pair = (key, p.key());
                if let Some(r) = self.retry.get(&pair).filter(|r| now < r.at) {
                    retry_at = Some(retry_at.map_or(r.at, |t| t.min(r.at)));
                    continue;
                }
                let overdue = self
                    .missing_since
                    .get(&pair)
                    .is_some_and(|t| now - *t >= self.config.takeover_after);
                let push = lead || overdue;
                if !push {
                    self.stats.deferred_to_lead += 1;
                }
                if self.queue.len() < self.config.queue_max && self.planned.insert(pair) {
                    self.queue.push_back(Queued { key, to: p, push });
                }
            }
        }
        if let Some(at) = retry_at {
            self.replan_at = Some(self.replan_at.map_or(at, |t| t.min(at)));
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now - self.refilled;
        let add =
            (elapsed.as_nanos() * u128::from(self.config.bytes_per_second) / 1_000_000_000) as i128;
        if add > 0 {
            self.tokens = (self.tokens + add).min(i128::from(self.config.burst_bytes));
            self.refilled = now;
        }
    }

    /// Tokens needed before a transfer may start: its size, or a full bucket for one larger
    /// than the burst (it is still charged its whole size, leaving the bucket in debt).
    /// A verify-only transfer moves no object bytes and costs one token.
    fn needed(&self, q: &Queued<P>) -> i128 {
        if !q.push {
            return 1;
        }
        let size = self.objects.get(&q.key).map_or(0, |o| o.size);
        i128::from(size.min(self.config.burst_bytes).max(1))
    }

    fn charge(&self, q: &Queued<P>) -> i128 {
        if !q.push {
            return 1;
        }
        i128::from(self.objects.get(&q.key).map_or(0, |o| o.size).max(1))
    }

    /// Planned transfers in flight (the write path's own pushes are not the plan's to cap).
    fn planned_in_flight(&self) -> usize {
        self.in_flight.values().filter(|f| !f.external).count()
    }

    fn tokens_ready_at(&self) -> Option<Instant> {
        if self.planned_in_flight() >= self.config.transfers_max {
            return None;
        }
        let need = self.needed(self.queue.front()?);
        if self.tokens >= need {
            return Some(self.refilled);
        }
        if self.config.bytes_per_second == 0 {
            return None; // no refill will ever come
        }
        let secs = (need - self.tokens) as f64 / self.config.bytes_per_second as f64;
        Some(self.refilled + Duration::from_secs_f64(secs))
    }

    fn dispatch(&mut self, now: Instant) {
        self.refill(now);
        while self.planned_in_flight() < self.config.transfers_max {
            let Some(front) = self.queue.front() else {
                break;
            };
            let Some(size) = self.objects.get(&front.key).map(|o| o.size) else {
                self.queue.pop_front();
                continue;
            };
            if self.tokens < self.needed(front) {
                break;
            }
            let cost = self.charge(front);
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            self.tokens -= cost;
            let id = TransferId(self.next_id);
            self.next_id += 1;
            self.in_flight.insert(
                id,
                InFlight {
                    key: q.key,
                    to: q.to.key(),
                    external: false,
                },
            );
            self.stats.transfers_started += 1;
            if q.push {
                self.stats.bytes_started += size;
            }
            self.events.push_back(PlanEvent::Transfer {
                id,
                key: q.key,
                size,
                to: q.to,
                push: q.push,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{TestPeer, key_from_first as key};

    const MIB: u64 = 1 << 20;
    const SILENT: TransferFault = TransferFault::Exchange(crate::FailureCause::Silent);

    fn peer(first: u8, idx: u32) -> TestPeer {
        TestPeer {
            key: key(first),
            idx,
        }
    }

    /// We are key 0x00..; peers at 0x01.., 0x02.., 0x04.. (closest to the object 0x00..01
    /// first after us).
    fn setup(config: ReplicationConfig) -> (Planner<TestPeer>, RoutingTable<TestPeer>, Instant) {
        let t0 = Instant::from_duration(Duration::ZERO);
        let mut table = RoutingTable::new(key(0), 20, 20, 2, None, t0);
        for (i, first) in [0x01u8, 0x02, 0x04].into_iter().enumerate() {
            table.on_seen(t0, peer(first, i as u32));
        }
        (Planner::new(t0, key(0), config), table, t0)
    }

    fn object(last: u8) -> Key {
        let mut k = [0u8; 32];
        k[31] = last;
        Key(k)
    }

    fn drain(p: &mut Planner<TestPeer>) -> Vec<PlanEvent<TestPeer>> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    fn transfers(evs: &[PlanEvent<TestPeer>]) -> Vec<(TransferId, Key, bool)> {
        evs.iter()
            .filter_map(|e| match e {
                PlanEvent::Transfer { id, to, push, .. } => Some((*id, to.key, *push)),
                PlanEvent::Release { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_transfer_larger_than_the_burst_is_charged_whole() {
        let config = ReplicationConfig {
            rf: 2,
            bytes_per_second: 16 * MIB,
            burst_bytes: 8 * MIB,
            ..ReplicationConfig::default()
        };
        let (mut p, table, t0) = setup(config);
        p.add_object(t0, object(1), 256 * MIB);
        p.add_object(t0, object(2), 256 * MIB);
        let t1 = t0 + Duration::from_secs(1);
        p.handle_timeout(t1, &table);
        let first = transfers(&drain(&mut p));
        assert_eq!(first.len(), 1, "one 256 MiB transfer may start: {first:?}");
        // The bucket is 248 MiB in debt: the next waits for it to refill to 8 MiB, 16 s.
        let next = p.poll_timeout().unwrap_or(t1);
        let wait = next - t1;
        assert!(
            wait >= Duration::from_secs(15) && wait <= Duration::from_secs(17),
            "the second transfer waits {wait:?}"
        );
        p.handle_timeout(t1 + Duration::from_secs(15), &table);
        assert!(
            transfers(&drain(&mut p)).is_empty(),
            "not before the debt is paid"
        );
        p.handle_timeout(t1 + Duration::from_millis(16_600), &table);
        assert_eq!(transfers(&drain(&mut p)).len(), 1);
    }

    #[test]
    fn only_the_lead_holder_pushes_and_a_silent_lead_is_taken_over() {
        let config = ReplicationConfig::default();
        let (mut p, table, t0) = setup(config.clone());
        // Object 0x01..: its RF = 3 closest are peer 0x01 (distance 0), us (0x01..) and peer
        // 0x02 (0x03..); peer 0x04 (0x05..) is not a target.
        let obj = key(0x01);
        p.add_object(t0, obj, MIB);
        // Peer 0x01 proved it holds the object and is closer than us: it leads.
        p.handle_holder_confirmed(t0, &obj, &key(0x01));
        let t1 = t0 + Duration::from_secs(2);
        p.handle_timeout(t1, &table);
        let planned = transfers(&drain(&mut p));
        assert_eq!(planned.len(), 1, "{planned:?}");
        let (id, to, push) = planned[0];
        assert_eq!(to, key(0x02));
        assert!(!push, "a non-lead only checks");
        assert_eq!(p.stats().deferred_to_lead, 1);
        // The target lacks it; the lead has not pushed yet: keep checking, still no push.
        p.handle_transfer_done(t1, id, TransferOutcome::Absent);
        let t2 = t1 + Duration::from_secs(2);
        p.handle_timeout(t2, &table);
        let planned = transfers(&drain(&mut p));
        assert!(planned.iter().all(|(_, _, push)| !push), "{planned:?}");
        for (id, ..) in planned {
            p.handle_transfer_done(t2, id, TransferOutcome::Absent);
        }
        // Missing for longer than takeover_after: we push it ourselves.
        let t3 = t1 + config.takeover_after + Duration::from_secs(2);
        p.handle_timeout(t3, &table);
        let planned = transfers(&drain(&mut p));
        assert_eq!(planned.len(), 1);
        assert!(planned[0].2, "taken over: {planned:?}");
    }

    #[test]
    fn pushes_of_the_write_path_are_not_planned_again() {
        let config = ReplicationConfig::default();
        let (mut p, table, t0) = setup(config);
        let obj = object(7);
        p.add_object(t0, obj, MIB);
        let a = p.begin_external(obj, key(0x01));
        let b = p.begin_external(obj, key(0x02));
        assert!(a.is_some() && b.is_some());
        let t1 = t0 + Duration::from_secs(2);
        p.handle_timeout(t1, &table);
        assert!(
            transfers(&drain(&mut p)).is_empty(),
            "both targets are being pushed by the write path"
        );
        for id in [a, b].into_iter().flatten() {
            p.handle_transfer_done(t1, id, TransferOutcome::Verified);
        }
        p.handle_timeout(t1 + Duration::from_secs(2), &table);
        assert!(
            transfers(&drain(&mut p)).is_empty(),
            "confirmed: nothing to do"
        );
        assert_eq!(p.known_copies(&obj), Some(3));
    }

    /// A target that keeps refusing (our transfers to it fail) is asked again after 1 s,
    /// 2 s, 4 s, ... up to `takeover_after`, not at every replan; an answer ends the wait,
    /// and a transfer we could not run ourselves starts none.
    #[test]
    fn a_failing_target_is_asked_again_after_a_doubling_wait() {
        let config = ReplicationConfig {
            rf: 2,
            takeover_after: Duration::from_secs(5),
            ..ReplicationConfig::default()
        };
        let (mut p, table, t0) = setup(config);
        let obj = object(1);
        p.add_object(t0, obj, MIB);
        let mut now = t0 + Duration::from_secs(1);
        p.handle_timeout(now, &table);
        let mut asked = Vec::new();
        // Fail every transfer to 0x01 at once; step time by 100 ms for 30 s.
        for _ in 0..300 {
            for (id, to, _) in transfers(&drain(&mut p)) {
                assert_eq!(to, key(0x01));
                asked.push((now - t0).as_millis() as u64);
                p.handle_transfer_done(now, id, TransferOutcome::Failed(SILENT));
            }
            now = now + Duration::from_millis(100);
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now, &table);
            }
        }
        let gaps: Vec<u64> = asked.windows(2).map(|w| w[1] - w[0]).collect();
        println!("asked at {asked:?}, gaps {gaps:?}");
        // 1 s, 2 s, 4 s, then the 5 s cap (each rounded up to the 100 ms step).
        assert_eq!(&gaps[..4], &[1000, 2000, 4000, 5000], "{gaps:?}");
        assert!(gaps[4..].iter().all(|g| *g == 5000), "{gaps:?}");

        // It answers at last: that ends the wait.
        now = now + Duration::from_secs(5);
        p.handle_timeout(now, &table);
        let again = transfers(&drain(&mut p));
        assert_eq!(again.len(), 1, "{again:?}");
        p.handle_transfer_done(now, again[0].0, TransferOutcome::Absent);
        assert!(p.retry.is_empty(), "an answer ends the wait");

        // So does leaving the table.
        now = now + Duration::from_secs(5);
        p.handle_timeout(now, &table);
        let again = transfers(&drain(&mut p));
        p.handle_transfer_done(now, again[0].0, TransferOutcome::Failed(SILENT));
        assert_eq!(p.retry.len(), 1);
        // The DHT's event, as drivers hand it over.
        p.handle_dht_event(now, &Event::PeerRemoved(peer(0x01, 0)));
        assert!(
            p.retry.is_empty(),
            "a peer that left comes back a new chance"
        );

        // Our own shortages: planned again at the next replan, a second later.
        for ours in [
            TransferFault::OurQueue,
            TransferFault::OurStore,
            TransferFault::Stopped,
            TransferFault::Exchange(crate::FailureCause::ConnectionCap),
        ] {
            now = now + Duration::from_secs(1);
            p.handle_timeout(now, &table);
            let again = transfers(&drain(&mut p));
            assert_eq!(again.len(), 1, "{ours:?}: {again:?}");
            p.handle_transfer_done(now, again[0].0, TransferOutcome::Failed(ours));
            assert!(p.retry.is_empty(), "{ours:?} is not the target's doing");
        }
        // A refusal is the target's: it waits.
        now = now + Duration::from_secs(1);
        p.handle_timeout(now, &table);
        let again = transfers(&drain(&mut p));
        p.handle_transfer_done(
            now,
            again[0].0,
            TransferOutcome::Failed(TransferFault::Declined),
        );
        assert_eq!(p.retry.len(), 1, "a refusal makes the target wait");
    }

    /// Our transfer of `obj` to the peer at `first` verified at `at` (the write path's own).
    fn prove(p: &mut Planner<TestPeer>, at: Instant, obj: Key, first: u8) {
        if let Some(id) = p.begin_external(obj, key(first)) {
            p.handle_transfer_done(at, id, TransferOutcome::Verified);
        }
    }

    fn releases(evs: &[PlanEvent<TestPeer>]) -> usize {
        evs.iter()
            .filter(|e| matches!(e, PlanEvent::Release { .. }))
            .count()
    }

    #[test]
    fn a_far_writer_keeps_the_holders_its_table_lacks_and_releases() {
        let config = ReplicationConfig::default();
        // We are 0x00..; the object is 0xf0..: every peer of our table (0x01, 0x02, 0x04) is
        // farther from it than we are. The write found its true closest, 0xf0, 0xf1 and 0xf2,
        // through a lookup, and pushed to them; none is in our table.
        let (mut p, table, t0) = setup(config);
        let obj = key(0xf0);
        p.add_object(t0, obj, MIB);
        for first in [0xf0, 0xf1, 0xf2] {
            prove(&mut p, t0, obj, first);
        }
        assert_eq!(p.known_copies(&obj), Some(4));
        p.handle_timeout(t0 + Duration::from_secs(2), &table);
        let evs = drain(&mut p);
        assert!(
            transfers(&evs).is_empty(),
            "the RF closest hold it: nothing to send to our table's nearest: {evs:?}"
        );
        assert_eq!(releases(&evs), 1, "and our copy is not needed: {evs:?}");
        assert_eq!(p.stats().bytes_started, 0);
    }

    #[test]
    fn off_the_table_only_our_fresh_proofs_count() {
        let config = ReplicationConfig::default();
        let (mut p, table, t0) = setup(config.clone());
        let obj = key(0xf0);
        p.add_object(t0, obj, MIB);
        // Two of the key's closest proved at t0; the third only ten minutes later (paced
        // behind a mass upload, say). By then the first two proofs are stale: nothing
        // vouches that those nodes are still up, so our copy stays.
        for first in [0xf0, 0xf1] {
            prove(&mut p, t0, obj, first);
        }
        let late = t0 + Duration::from_secs(600);
        prove(&mut p, late, obj, 0xf2);
        p.handle_timeout(late + Duration::from_secs(2), &table);
        let evs = drain(&mut p);
        assert_eq!(releases(&evs), 0, "released on stale proofs: {evs:?}");

        // Pushes to us from off-table peers are their word, not our proof: they never
        // count, however fresh.
        let (mut q, table, t0) = setup(config);
        q.add_object(t0, obj, MIB);
        for first in [0xf0, 0xf1, 0xf2] {
            q.handle_holder_confirmed(t0, &obj, &key(first));
        }
        q.handle_timeout(t0 + Duration::from_secs(2), &table);
        let evs = drain(&mut q);
        assert_eq!(releases(&evs), 0, "released on pushes: {evs:?}");
        assert_eq!(
            transfers(&evs).len(),
            2,
            "we are among the table's RF closest and place the other two: {evs:?}"
        );
    }

    #[test]
    fn a_late_proof_of_a_peer_that_left_does_not_count() {
        let config = ReplicationConfig::default();
        let (mut p, table, t0) = setup(config);
        let obj = key(0xf0);
        p.add_object(t0, obj, MIB);
        // 0xf2 proved its copy and said goodbye; the proof is handled after the removal.
        p.handle_peer_removed(t0, &key(0xf2));
        for first in [0xf0, 0xf1, 0xf2] {
            prove(&mut p, t0, obj, first);
        }
        p.handle_timeout(t0 + Duration::from_secs(2), &table);
        let evs = drain(&mut p);
        assert_eq!(releases(&evs), 0, "{evs:?}");
    }

    #[test]
    fn a_holder_that_left_the_table_is_replaced_at_once() {
        let config = ReplicationConfig::default();
        let (mut p, mut table, t0) = setup(config);
        // Object 0x01..: its RF closest are 0x01, us and 0x02; both peers hold it.
        let obj = key(0x01);
        p.add_object(t0, obj, MIB);
        p.handle_holder_confirmed(t0, &obj, &key(0x01));
        p.handle_holder_confirmed(t0, &obj, &key(0x02));
        let t1 = t0 + Duration::from_secs(2);
        p.handle_timeout(t1, &table);
        assert!(transfers(&drain(&mut p)).is_empty());
        // 0x02 fails its probes and leaves the table: 0x04 takes its place at once, not
        // when the confirmation expires an hour later.
        table.remove(&key(0x02));
        p.handle_peer_removed(t1, &key(0x02));
        p.handle_timeout(t1 + Duration::from_secs(2), &table);
        let planned = transfers(&drain(&mut p));
        assert_eq!(planned.len(), 1, "{planned:?}");
        assert_eq!(planned[0].1, key(0x04));
        assert_eq!(p.known_copies(&obj), Some(2));
    }
}
