//! An in-memory network of [`Dht`]s on one deterministic scheduler.
//!
//! quinn-proto's two-endpoint test `Pair`, grown to N nodes: one event queue keyed by
//! `(time, sequence)`, a fixed link latency, nodes that can be killed without warning. A
//! request reaches a live node after the latency and its answer comes back after the
//! latency; a request to a dead node is never answered and times out at the sender. Every
//! event is delivered to the node it is addressed to, and after each one that node's
//! invariants are checked. Same seed, same run, bit for bit.
//!
//! Tests use it for correctness at 1,000+ nodes; benchmarks for a full lookup. simnet is
//! the large-scale, configurable sibling; this one stays small and obvious.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::dht::{Dht, Event, Request, Response, RpcId};
use crate::key::Key;
use crate::peer::Peer;
use crate::query::{QueryId, QueryResult, QueryStats};
use crate::time::Instant;

/// A node of the test network: its key and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TestPeer {
    /// DHT key.
    pub key: Key,
    /// Index into the network's nodes.
    pub idx: u32,
}

/// A key whose first byte is `first` and the rest zero: keys whose order and distances a
/// test can read at a glance.
pub fn key_from_first(first: u8) -> Key {
    let mut k = [0u8; 32];
    k[0] = first;
    Key(k)
}

/// A test peer at [`key_from_first`]`(first)`, its index the same byte.
pub fn peer_from_first(first: u8) -> TestPeer {
    TestPeer {
        key: key_from_first(first),
        idx: u32::from(first),
    }
}

impl Peer for TestPeer {
    fn key(&self) -> Key {
        self.key
    }
}

#[derive(Debug)]
enum Ev {
    Request {
        from: TestPeer,
        to: u32,
        rpc: RpcId,
        request: Request,
    },
    Response {
        to: u32,
        rpc: RpcId,
        response: Response<TestPeer>,
    },
    Timer {
        node: u32,
    },
}

/// A finished query as the test network recorded it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// What it found.
    pub result: QueryResult<TestPeer>,
    /// How it went.
    pub stats: QueryStats,
}

/// N state machines, one clock, one queue.
#[derive(Debug)]
pub struct TestNet {
    nodes: Vec<Dht<TestPeer>>,
    alive: Vec<bool>,
    armed: Vec<Option<Instant>>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    now: Instant,
    latency: Duration,
    rng: ChaCha8Rng,
    finished: BTreeMap<(u32, QueryId), Finished>,
    ready: Vec<bool>,
    /// Peers each node's table dropped since [`TestNet::take_removed`] last asked (kept
    /// only after [`TestNet::record_removals`]).
    removed: Vec<Vec<Key>>,
    record_removals: bool,
    events_handled: u64,
    trace: Option<blake3::Hasher>,
}

impl TestNet {
    /// `n` nodes with random keys, all from `seed`; nothing joined yet.
    pub fn new(n: usize, config: Config, latency: Duration, seed: u64) -> TestNet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = (0..n as u32)
            .map(|idx| {
                let peer = TestPeer {
                    key: Key::random(&mut rng),
                    idx,
                };
                Dht::new(Instant::ZERO, peer, config.clone(), rng.r#gen())
            })
            .collect();
        TestNet {
            nodes,
            alive: vec![true; n],
            armed: vec![None; n],
            queue: BTreeMap::new(),
            seq: 0,
            now: Instant::ZERO,
            latency,
            rng,
            finished: BTreeMap::new(),
            ready: vec![false; n],
            removed: vec![Vec::new(); n],
            record_removals: false,
            events_handled: 0,
            trace: None,
        }
    }

    /// Records a digest of every delivered event, for determinism tests.
    pub fn record_trace(&mut self) {
        self.trace = Some(blake3::Hasher::new());
    }

    /// The digest of the trace so far.
    pub fn trace_digest(&self) -> Option<[u8; 32]> {
        self.trace.as_ref().map(|h| *h.finalize().as_bytes())
    }

    /// Number of nodes, dead or alive.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Events delivered so far.
    pub fn events_handled(&self) -> u64 {
        self.events_handled
    }

    /// Node `i`'s state machine.
    pub fn node(&self, i: usize) -> &Dht<TestPeer> {
        &self.nodes[i]
    }

    /// Node `i`'s peer handle.
    pub fn peer(&self, i: usize) -> TestPeer {
        *self.nodes[i].local()
    }

    /// Whether node `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.alive[i]
    }

    /// Whether node `i` has reported `Ready`.
    pub fn is_ready(&self, i: usize) -> bool {
        self.ready[i]
    }

    /// A random index, from the network's RNG.
    pub fn random_index(&mut self) -> usize {
        self.rng.gen_range(0..self.nodes.len())
    }

    /// A random key, from the network's RNG.
    pub fn random_key(&mut self) -> Key {
        Key::random(&mut self.rng)
    }

    /// Stops node `i` without warning: it answers nothing from now on.
    pub fn kill(&mut self, i: usize) {
        self.alive[i] = false;
    }

    /// Runs `f` on node `i` as a command at the current time, then collects its output.
    pub fn command<T>(&mut self, i: usize, f: impl FnOnce(&mut Dht<TestPeer>, Instant) -> T) -> T {
        let now = self.now;
        let out = f(&mut self.nodes[i], now);
        self.after_input(i as u32);
        out
    }

    /// Node `i` joins through node `via`; `via == i` starts a new network.
    pub fn join(&mut self, i: usize, via: usize) {
        let contacts = if via == i {
            Vec::new()
        } else {
            vec![self.peer(via)]
        };
        self.command(i, |d, now| {
            let _ = d.bootstrap(now, contacts);
        });
    }

    /// A finished query, if it finished.
    pub fn finished(&self, node: usize, id: QueryId) -> Option<&Finished> {
        self.finished.get(&(node as u32, id))
    }

    /// The true k closest live nodes to `target`, from the global view.
    pub fn true_closest(&self, target: &Key, k: usize) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| self.alive[*i])
            .map(|(_, d)| d.local().key)
            .collect();
        keys.sort_by_key(|k| k.distance(target));
        keys.truncate(k);
        keys
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.queue.insert((at, self.seq), ev);
        self.seq += 1;
    }

    /// Drains node `i`'s outputs into the queue and re-arms its timer.
    fn after_input(&mut self, i: u32) {
        let idx = i as usize;
        if let Err(e) = self.nodes[idx].check_invariants() {
            panic!("node {i} broke an invariant at {:?}: {e}", self.now);
        }
        while let Some(t) = self.nodes[idx].poll_transmit() {
            let from = self.peer(idx);
            self.push(
                self.now + self.latency,
                Ev::Request {
                    from,
                    to: t.to.idx,
                    rpc: t.rpc,
                    request: t.request,
                },
            );
        }
        while let Some(ev) = self.nodes[idx].poll_event() {
            match ev {
                Event::QueryFinished { id, result, stats } => {
                    self.finished.insert((i, id), Finished { result, stats });
                }
                Event::Ready => self.ready[idx] = true,
                Event::Isolated => self.ready[idx] = false,
                Event::PeerRemoved(p) if self.record_removals => self.removed[idx].push(p.key),
                _ => {}
            }
        }
        // A timer already due fires at the current time; `armed` holds when it will fire.
        let next = self.nodes[idx].poll_timeout().map(|t| t.max(self.now));
        if next != self.armed[idx] {
            self.armed[idx] = next;
            if let Some(t) = next {
                self.push(t, Ev::Timer { node: i });
            }
        }
    }

    /// Keep the peers each table drops, for [`TestNet::take_removed`].
    pub fn record_removals(&mut self) {
        self.record_removals = true;
    }

    /// The peers node `i`'s table dropped since the last call, for drivers that keep state
    /// per peer (the replication planner).
    pub fn take_removed(&mut self, i: usize) -> Vec<Key> {
        std::mem::take(&mut self.removed[i])
    }

    /// Delivers the next event; false when the queue is empty or the next event is past
    /// `until`.
    pub fn step(&mut self, until: Instant) -> bool {
        let Some((&(at, seq), _)) = self.queue.first_key_value() else {
            return false;
        };
        if at > until {
            return false;
        }
        let Some(ev) = self.queue.remove(&(at, seq)) else {
            return false;
        };
        self.now = at;
        self.events_handled += 1;
        if let Some(h) = self.trace.as_mut() {
            h.update(format!("{at:?} {ev:?}\n").as_bytes());
        }
        match ev {
            Ev::Request {
                from,
                to,
                rpc,
                request,
            } => {
                if !self.alive[to as usize] || !self.alive[from.idx as usize] {
                    return true;
                }
                let response = self.nodes[to as usize].handle_request(at, from, request);
                self.after_input(to);
                self.push(
                    at + self.latency,
                    Ev::Response {
                        to: from.idx,
                        rpc,
                        response,
                    },
                );
            }
            Ev::Response { to, rpc, response } => {
                if self.alive[to as usize] {
                    self.nodes[to as usize].handle_response(at, rpc, response);
                    self.after_input(to);
                }
            }
            Ev::Timer { node } => {
                let idx = node as usize;
                // Only the timer that is still armed counts; older ones were superseded.
                if self.alive[idx] && self.armed[idx] == Some(at) {
                    self.armed[idx] = None;
                    self.nodes[idx].handle_timeout(at);
                    self.after_input(node);
                }
            }
        }
        true
    }

    /// Runs until no event is due before `now + span`, or `max_events` were delivered.
    /// Returns the number delivered: equal to `max_events` means it may not be quiet yet
    /// (tell a livelock from busy by the count).
    pub fn run_for(&mut self, span: Duration, max_events: u64) -> u64 {
        let until = self.now + span;
        let mut n = 0;
        while n < max_events && self.step(until) {
            n += 1;
        }
        self.now = self.now.max(until);
        n
    }

    /// Fills every live node's table "ideally": each bucket gets up to k nodes drawn at
    /// random from that bucket's part of the key space, and the node counts as joined.
    pub fn ideal_tables(&mut self) {
        let k = self.nodes.first().map_or(20, |d| d.config().k);
        let peers: Vec<TestPeer> = (0..self.nodes.len())
            .filter(|&i| self.alive[i])
            .map(|i| self.peer(i))
            .collect();
        for i in 0..self.nodes.len() {
            if !self.alive[i] {
                continue;
            }
            let me = self.peer(i).key;
            let mut by_bucket: BTreeMap<usize, Vec<TestPeer>> = BTreeMap::new();
            for p in &peers {
                if let Some(b) = me.bucket_of(&p.key) {
                    by_bucket.entry(b).or_default().push(*p);
                }
            }
            for (_, mut members) in by_bucket {
                // A partial Fisher-Yates shuffle picks k uniformly.
                let take = members.len().min(k);
                for j in 0..take {
                    let r = self.rng.gen_range(j..members.len());
                    members.swap(j, r);
                }
                let now = self.now;
                for p in members.into_iter().take(take) {
                    self.nodes[i].insert_peer(now, p);
                }
            }
            self.nodes[i].assume_joined();
            self.after_input(i as u32);
        }
    }
}
