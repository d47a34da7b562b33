//! The workload: lookups, puts and gets issued at random ready nodes, and each one scored
//! against the global view when its query finishes.
//!
//! A lookup succeeds when the closest node of its result is the true closest live node to
//! the target (the node asking left out: a node never appears in its own results), and is
//! exact when the result is the true k closest live nodes, in order. Both are judged at the
//! moment the query finishes. A put looks up the object's key and sends a copy to the RF
//! closest nodes found; from then on those nodes' planners keep it on its RF closest nodes.
//! A get runs as the node's does: a node that holds the object serves it at once; else it
//! asks for `get_holders_wanted` providers (1 by default, as the node) and searches them
//! through `overlay::Locate` (`engine::reads`).
//!
//! Operation times and targets come from the workload's own streams, so they stay the same
//! when a sweep changes, say, k.

use std::collections::BTreeMap;
use std::time::Duration;

use overlay::{Instant, Key, Locate, LocateStep, PlacementWalk, QueryId, QueryResult, QueryStats};
use rand::Rng;

use super::Sim;
use super::nodes::Slot;
use super::queue::Ev;
use crate::metrics::{GetOutcome, GetParts, LookupOutcome};
use crate::oracle::LiveSet;
use crate::peer::SimPeer;
use crate::scenario::{Rate, Scenario, Target};
use crate::seed::{self, SimRng, Stream};

/// An operation waiting for its query to finish.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    /// A FIND_NODE lookup.
    Lookup {
        started: Instant,
        target: Key,
        source: Key,
    },
    /// The lookup of a put.
    Put { object: u32 },
    /// The provider walk of a get, and the node's search it belongs to (`engine::reads`).
    Get {
        started: Instant,
        object: u32,
        locate: Box<Locate<SimPeer>>,
    },
}

/// Workload state: streams and progress.
#[derive(Debug)]
pub(crate) struct Work {
    lookup_rng: SimRng,
    lookups_issued: u64,
    object_rng: SimRng,
    pub(super) objects: Vec<Key>,
    puts_issued: u32,
    placed: Vec<u32>,
    gets_issued: u64,
    /// Puts waiting for their copies (`workload.put_w`), by number.
    pub(super) writes: BTreeMap<u32, super::writes::Writing>,
    pub(super) next_write: u32,
    /// Gets waiting to walk again (`engine::reads`), by number.
    pub(super) again: BTreeMap<u32, super::reads::Again>,
    pub(super) next_again: u32,
}

impl Work {
    pub(crate) fn new(sc: &Scenario) -> Work {
        let mut object_rng = seed::rng(sc.seed, Stream::Objects, 0, 0);
        let objects = (0..sc.workload.objects)
            .map(|_| Key::random(&mut object_rng))
            .collect();
        Work {
            lookup_rng: seed::rng(sc.seed, Stream::Lookups, 0, 0),
            lookups_issued: 0,
            object_rng,
            objects,
            puts_issued: 0,
            placed: Vec::new(),
            gets_issued: 0,
            writes: BTreeMap::new(),
            next_write: 0,
            again: BTreeMap::new(),
            next_again: 0,
        }
    }
}

/// The time of operation `i` of a total of `n`, spread evenly over `[from, to)`.
fn spread(from: Instant, to: Instant, i: u64, n: u64) -> Instant {
    let span = (to - from).as_nanos();
    from + Duration::from_nanos((span * u128::from(i) / u128::from(n.max(1))) as u64)
}

/// The next arrival of a Poisson process of `rate` per second after `now`.
fn poisson_next(now: Instant, rate: f64, rng: &mut SimRng) -> Option<Instant> {
    if rate <= 0.0 {
        return None;
    }
    let u = 1.0 - rng.r#gen::<f64>();
    Some(now + Duration::from_secs_f64((-u.ln() / rate).min(1e10)))
}

/// A random ready live node, by up to 32 draws from `rng`.
fn pick_ready(live: &LiveSet, slots: &[Slot], rng: &mut SimRng) -> Option<u32> {
    let n = live.len();
    if n == 0 {
        return None;
    }
    for _ in 0..32 {
        let (_, slot) = live.get(rng.gen_range(0..n))?;
        if slots[slot as usize]
            .dht
            .as_ref()
            .is_some_and(|d| d.is_ready())
        {
            return Some(slot);
        }
    }
    None
}

/// The key of a random live node other than `not`.
fn random_other(live: &LiveSet, not: Option<u32>, rng: &mut SimRng) -> Option<Key> {
    let n = live.len();
    if n < 2 {
        return None;
    }
    let i = rng.gen_range(0..n);
    let (key, slot) = live.get(i)?;
    if Some(slot) != not {
        return Some(key);
    }
    live.get((i + 1) % n).map(|(k, _)| k)
}

impl Sim {
    pub(super) fn schedule_workload(&mut self) {
        let w = &self.sc.workload;
        let start = Instant::ZERO + w.start;
        let gets_from = start + w.puts_window;
        match w.lookups {
            Rate::Total(n) if n > 0 => self.queue.push(start, Ev::Lookup),
            Rate::PerSecond(r) => {
                if let Some(t) = poisson_next(start, r, &mut self.work.lookup_rng) {
                    self.queue.push(t, Ev::Lookup);
                }
            }
            Rate::Total(_) => {}
        }
        if w.objects > 0 {
            self.queue.push(start, Ev::Put);
            match w.gets {
                Rate::Total(n) if n > 0 => self.queue.push(gets_from, Ev::Get),
                Rate::PerSecond(r) => {
                    if let Some(t) = poisson_next(gets_from, r, &mut self.work.object_rng) {
                        self.queue.push(t, Ev::Get);
                    }
                }
                Rate::Total(_) => {}
            }
        }
    }

    /// Schedules the next operation of a total-or-rate stream, if it falls before the end.
    fn next_op(&mut self, rate: Rate, from: Instant, done: u64, ev: Ev, lookups: bool) {
        let next = match rate {
            Rate::Total(n) if done < n => Some(spread(from, self.end, done, n)),
            Rate::Total(_) => None,
            Rate::PerSecond(r) => {
                let rng = if lookups {
                    &mut self.work.lookup_rng
                } else {
                    &mut self.work.object_rng
                };
                poisson_next(self.now, r, rng)
            }
        };
        if let Some(t) = next.filter(|t| *t < self.end) {
            self.queue.push(t.max(self.now), ev);
        }
    }

    pub(super) fn on_lookup(&mut self) {
        let now = self.now;
        self.work.lookups_issued += 1;
        let rng = &mut self.work.lookup_rng;
        let source = pick_ready(&self.live, &self.slots, rng);
        let target = match self.sc.workload.target {
            Target::RandomKey => Some(Key::random(rng)),
            Target::RandomNode => random_other(&self.live, source, rng),
        };
        let started = match (source, target) {
            (Some(slot), Some(target)) => self.start_lookup(slot, target),
            _ => false,
        };
        self.metrics.lookup_issued(now, !started);
        let (rate, from) = (
            self.sc.workload.lookups,
            Instant::ZERO + self.sc.workload.start,
        );
        self.next_op(rate, from, self.work.lookups_issued, Ev::Lookup, true);
    }

    /// Starts a lookup for `target` at `slot`, scored like the workload's; `false` if the
    /// node is down or cannot start one (the swarm aims lookups at its Sybils' key).
    pub fn lookup_from(&mut self, slot: u32, target: Key) -> bool {
        self.start_lookup(slot, target)
    }

    fn start_lookup(&mut self, slot: u32, target: Key) -> bool {
        let now = self.now;
        let local = self.local_now(slot);
        let s = &mut self.slots[slot as usize];
        let Some(dht) = s.dht.as_mut() else {
            return false;
        };
        let Ok(id) = dht.find_node(local, target) else {
            return false;
        };
        let source = s.key;
        self.pending.insert(
            (slot, s.inc, id.0),
            Pending::Lookup {
                started: now,
                target,
                source,
            },
        );
        self.after_input(slot, false);
        true
    }

    pub(super) fn on_put(&mut self) {
        let now = self.now;
        let object = self.work.puts_issued;
        self.work.puts_issued += 1;
        self.metrics.puts += 1;
        let source = pick_ready(&self.live, &self.slots, &mut self.work.object_rng);
        if let (Some(slot), Some(&key)) = (source, self.work.objects.get(object as usize)) {
            let local = self.local_now(slot);
            let rf = self.sc.workload.replication.rf;
            let s = &mut self.slots[slot as usize];
            match s.dht.as_mut().map(|d| d.find_placement(local, key, rf)) {
                Some(PlacementWalk::Started(id)) => {
                    self.pending
                        .insert((slot, s.inc, id.0), Pending::Put { object });
                    self.after_input(slot, false);
                }
                // No lookup could start: the node places at its table's closest at once.
                Some(PlacementWalk::Table(closest)) => {
                    self.after_input(slot, false);
                    self.place_put(slot, object, closest);
                }
                None => {}
            }
        }
        let w = &self.sc.workload;
        let (from, to) = (
            Instant::ZERO + w.start,
            Instant::ZERO + w.start + w.puts_window,
        );
        let n = u64::from(w.objects);
        let done = u64::from(self.work.puts_issued);
        if done < n {
            let t = spread(from, to, done, n);
            if t < self.end {
                self.queue.push(t.max(now), Ev::Put);
            }
        }
    }

    pub(super) fn on_get(&mut self) {
        let now = self.now;
        self.work.gets_issued += 1;
        let rng = &mut self.work.object_rng;
        let placed = &self.work.placed;
        let pick = (!placed.is_empty()).then(|| placed[rng.gen_range(0..placed.len())]);
        let source = pick_ready(&self.live, &self.slots, rng);
        if let Some(object) = pick {
            let key = self.work.objects[object as usize];
            let wanted = self.holders_wanted();
            let rf = self.sc.workload.replication.rf;
            if source.is_some_and(|slot| self.holds(slot, &key)) {
                // The node serves its own copy: no search.
                self.metrics.get_done(
                    now,
                    GetOutcome::Served {
                        latency: Duration::ZERO,
                        intra: true,
                        parts: GetParts::default(),
                    },
                );
                let w = &self.sc.workload;
                let from = Instant::ZERO + w.start + w.puts_window;
                self.next_op(w.gets, from, self.work.gets_issued, Ev::Get, false);
                return;
            }
            match source {
                Some(slot) => {
                    let me = self.slots[slot as usize].key;
                    let timeout = super::reads::timings().search_timeout;
                    let mut locate = Box::new(Locate::new(me, rf, wanted, now, timeout));
                    // A new search's first step is its walk (unless it has no time at all).
                    match locate.poll(now) {
                        LocateStep::Walk { wanted } => {
                            self.walk_for_get(slot, object, now, locate, wanted)
                        }
                        _ => self.metrics.get_done(now, GetOutcome::Failed),
                    }
                }
                None => self.metrics.get_done(now, GetOutcome::Failed),
            }
        }
        let w = &self.sc.workload;
        let from = Instant::ZERO + w.start + w.puts_window;
        self.next_op(w.gets, from, self.work.gets_issued, Ev::Get, false);
    }

    /// A query of node `slot` finished: if it was one of the workload's, score it.
    pub(super) fn on_query_finished(
        &mut self,
        slot: u32,
        id: QueryId,
        result: QueryResult<crate::peer::SimPeer>,
        stats: QueryStats,
    ) {
        let inc = self.slots[slot as usize].inc;
        let Some(p) = self.pending.remove(&(slot, inc, id.0)) else {
            return; // the node's own join, refresh or announcement
        };
        let closest = match &result {
            QueryResult::FindNode { closest } | QueryResult::GetProviders { closest, .. } => {
                closest.as_slice()
            }
            QueryResult::Provided { closest, .. } => closest.as_slice(),
        };
        match p {
            Pending::Lookup {
                started,
                target,
                source,
            } => {
                let k = self.sc.dht.k;
                let mut truth: Vec<Key> = self
                    .live
                    .closest(&target, k, Some(&source))
                    .into_iter()
                    .map(|(key, _)| key)
                    .collect();
                let mut found: Vec<Key> = closest.iter().map(|p| p.key()).collect();
                // With liars, the lookup must find every honest node among the true k
                // closest, in order, first; a liar it returns or leaves out (its node keeps
                // proven liars out, `Dht::peer_lied`) is neither credit nor blame, nor are
                // the nodes past them that take their places: beyond the true k closest a
                // walk promises nothing (a tighter rule, the k closest honest nodes as a
                // prefix, failed walks that found a farther node by luck but not a nearer
                // one outside the true k, which no Kademlia walk is bound to find).
                let liars_on = !self.sc.faults.liars.is_empty();
                if liars_on {
                    let liars: Vec<Key> = self
                        .sc
                        .faults
                        .liars
                        .iter()
                        .filter_map(|&s| self.slots.get(s as usize).map(|s| s.key))
                        .collect();
                    truth.retain(|key| !liars.contains(key));
                    found.retain(|key| !liars.contains(key));
                }
                let success = match (found.first(), truth.first()) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                };
                let exact = if liars_on {
                    found.starts_with(&truth)
                } else {
                    found == truth
                };
                self.metrics.lookup_finished(LookupOutcome {
                    started,
                    success,
                    exact,
                    hops: stats.hops,
                    rpcs: stats.rpcs,
                    timeouts: stats.timeouts,
                    latency: stats.duration,
                    target,
                    honest: !self.is_liar(slot),
                });
            }
            Pending::Put { object } => self.place_put(slot, object, closest.to_vec()),
            Pending::Get {
                started,
                object,
                locate,
            } => {
                let (providers, closest) = match result {
                    QueryResult::GetProviders { providers, closest } => (providers, closest),
                    _ => (Vec::new(), Vec::new()),
                };
                let walk = overlay::WalkEnd::Finished {
                    providers,
                    closest,
                    rpcs: stats.rpcs,
                };
                self.search_holders(slot, object, started, locate, walk);
            }
        }
    }

    /// The put of `object` at `slot` has its candidates: place its copies (through the
    /// node's write path when the workload waits for W, else one push to each of the rf
    /// closest).
    fn place_put(&mut self, slot: u32, object: u32, closest: Vec<crate::peer::SimPeer>) {
        let key = self.work.objects[object as usize];
        if let Some(w) = self.sc.workload.put_w {
            self.start_write(slot, key, closest, w);
        } else {
            let (size, rf) = (
                self.sc.workload.object_bytes,
                self.sc.workload.replication.rf,
            );
            for to in closest.into_iter().take(rf) {
                self.send_transfer(slot, to, (None, None), key, size, true);
            }
        }
        self.metrics.puts_placed += 1;
        self.work.placed.push(object);
    }

    /// Holders a get waits for before it fetches; its provider walk asks for as many
    /// providers, and may finish as soon as it has them (the node's `find_holders` asks
    /// for one and stops at the first verified holder).
    pub(super) fn holders_wanted(&self) -> usize {
        let w = &self.sc.workload;
        w.get_holders_wanted.unwrap_or(1).max(1)
    }

    /// Whether the node up at `slot` holds `key`.
    pub(super) fn holds(&self, slot: u32, key: &Key) -> bool {
        let s = &self.slots[slot as usize];
        s.dht.is_some()
            && s.store
                .as_ref()
                .is_some_and(|st| st.objects.contains_key(key))
    }

    /// The size of `key` as stored at `slot` (the workload's object size if it is not).
    pub(super) fn object_size(&self, slot: u32, key: &Key) -> u64 {
        self.slots[slot as usize]
            .store
            .as_ref()
            .and_then(|st| st.objects.get(key).copied())
            .unwrap_or(self.sc.workload.object_bytes)
    }

    /// An operation that will never finish counts as a failure.
    pub(super) fn abandon(&mut self, p: Pending) {
        match p {
            Pending::Lookup { .. } => self.metrics.lookup_unfinished(),
            Pending::Get { started, .. } => self.metrics.get_done(started, GetOutcome::Failed),
            Pending::Put { .. } => {}
        }
    }

    /// Mean live copies per placed object, and the fraction of placed objects with at least
    /// one live copy (both 0 without objects).
    pub(super) fn replication_state(&self) -> (f64, f64) {
        if self.work.placed.is_empty() {
            return (0.0, 0.0);
        }
        let mut copies: BTreeMap<Key, u64> = BTreeMap::new();
        for s in &self.slots {
            if let (Some(_), Some(st)) = (&s.dht, &s.store) {
                for k in st.objects.keys() {
                    *copies.entry(*k).or_insert(0) += 1;
                }
            }
        }
        let (mut total, mut available) = (0u64, 0u64);
        for &o in &self.work.placed {
            let c = copies
                .get(&self.work.objects[o as usize])
                .copied()
                .unwrap_or(0);
            total += c;
            available += u64::from(c > 0);
        }
        let n = self.work.placed.len() as f64;
        (total as f64 / n, available as f64 / n)
    }
}
