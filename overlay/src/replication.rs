//! Replication planning: which object goes to which node, so each sits on its RF closest.
//!
//! The planner holds the objects this node stores and what it knows of other copies; from
//! the routing table it computes, for each object, the RF nodes closest to its key (counting
//! ourselves). Every one of them that is not known to hold a copy gets a
//! [`PlanEvent::Transfer`] (the driver asks HAS, then pushes the bytes if missing); once all
//! RF targets hold copies and we are not among them, our own copy is released.
//!
//! Transfers are paced by a fanout quota: at most `transfers_max` in flight and a token
//! bucket of `bytes_per_second` with `burst_bytes` depth, so repair after a mass failure
//! does not swamp the links. Planning reruns shortly after the table changes and
//! periodically, since confirmations go stale.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::config::ReplicationConfig;
use crate::key::Key;
use crate::peer::Peer;
use crate::routing::RoutingTable;
use crate::time::Instant;

/// Names one planned transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u64);

/// Work for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanEvent<P> {
    /// Make sure `to` holds `key` (HAS, then PUT if it lacks it); report with
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
}

#[derive(Debug, Clone)]
struct Object {
    size: u64,
    /// Nodes known to hold a copy, with when we learned it.
    confirmed: BTreeMap<Key, Instant>,
    released: bool,
}

/// The replication planner of one node.
#[derive(Debug)]
pub struct Planner<P> {
    local: Key,
    config: ReplicationConfig,
    objects: BTreeMap<Key, Object>,
    queue: VecDeque<(Key, P)>,
    /// (object, target) pairs queued or in flight, so nothing is planned twice.
    planned: BTreeSet<(Key, Key)>,
    in_flight: BTreeMap<TransferId, (Key, Key)>,
    events: VecDeque<PlanEvent<P>>,
    tokens: u64,
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
            tokens: config.burst_bytes,
            refilled: now,
            replan_at: None,
            next_periodic: now + config.replan_interval,
            config,
            objects: BTreeMap::new(),
            queue: VecDeque::new(),
            planned: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            events: VecDeque::new(),
            next_id: 0,
            stats: PlanStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> PlanStats {
        self.stats
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
        self.queue.retain(|(k, _)| k != key);
        self.planned.retain(|(k, _)| k != key);
    }

    /// `peer` is known to hold `key` (it answered HAS, took a PUT, or pushed it to us).
    pub fn handle_holder_confirmed(&mut self, now: Instant, key: &Key, peer: &Key) {
        if let Some(o) = self.objects.get_mut(key) {
            if *peer != self.local {
                o.confirmed.insert(*peer, now);
            }
        }
    }

    /// The routing table changed; re-plan after the debounce.
    pub fn handle_table_changed(&mut self, now: Instant) {
        self.schedule_replan(now);
    }

    /// The outcome of a [`PlanEvent::Transfer`].
    pub fn handle_transfer_done(&mut self, now: Instant, id: TransferId, ok: bool) {
        let Some((key, to)) = self.in_flight.remove(&id) else {
            return;
        };
        self.planned.remove(&(key, to));
        if ok {
            self.handle_holder_confirmed(now, &key, &to);
        } else {
            self.stats.transfers_failed += 1;
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
        let keys: Vec<Key> = self.objects.keys().copied().collect();
        for key in keys {
            // The RF closest among the table and ourselves: if we are among them, the others
            // are the RF - 1 closest peers.
            let mut targets: Vec<P> = table.closest(&key, rf);
            let local_d = self.local.distance(&key);
            let self_in = targets.len() < rf
                || targets
                    .last()
                    .is_some_and(|p| p.key().distance(&key) > local_d);
            if self_in {
                targets.truncate(rf - 1);
            }
            let Some(obj) = self.objects.get_mut(&key) else {
                continue;
            };
            let ttl = self.config.confirm_ttl;
            let target_keys: BTreeSet<Key> = targets.iter().map(Peer::key).collect();
            obj.confirmed
                .retain(|k, at| target_keys.contains(k) && now - *at < ttl);
            let missing: Vec<P> = targets
                .into_iter()
                .filter(|p| !obj.confirmed.contains_key(&p.key()))
                .collect();
            if missing.is_empty() && !self_in && !obj.released {
                obj.released = true;
                self.stats.releases += 1;
                self.events.push_back(PlanEvent::Release { key });
                continue;
            }
            for p in missing {
                let pair = (key, p.key());
                if self.queue.len() < self.config.queue_max && self.planned.insert(pair) {
                    self.queue.push_back((key, p));
                }
            }
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now - self.refilled;
        let add =
            (elapsed.as_nanos() * self.config.bytes_per_second as u128 / 1_000_000_000) as u64;
        if add > 0 {
            self.tokens = (self.tokens.saturating_add(add)).min(self.config.burst_bytes);
            self.refilled = now;
        }
    }

    fn cost(&self, size: u64) -> u64 {
        size.min(self.config.burst_bytes).max(1)
    }

    fn tokens_ready_at(&self) -> Option<Instant> {
        if self.in_flight.len() >= self.config.transfers_max {
            return None;
        }
        let (key, _) = self.queue.front()?;
        let need = self.cost(self.objects.get(key).map_or(0, |o| o.size));
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
        while self.in_flight.len() < self.config.transfers_max {
            let Some((key, _)) = self.queue.front() else {
                break;
            };
            let Some(size) = self.objects.get(key).map(|o| o.size) else {
                self.queue.pop_front();
                continue;
            };
            let cost = self.cost(size);
            if self.tokens < cost {
                break;
            }
            let Some((key, to)) = self.queue.pop_front() else {
                break;
            };
            self.tokens -= cost;
            let id = TransferId(self.next_id);
            self.next_id += 1;
            self.in_flight.insert(id, (key, to.key()));
            self.stats.transfers_started += 1;
            self.stats.bytes_started += size;
            self.events
                .push_back(PlanEvent::Transfer { id, key, size, to });
        }
    }
}
