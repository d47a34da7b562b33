//! The Kademlia state machine one node runs: routing table, lookups, provider records, join.
//!
//! This is the one implementation of the protocol logic: the node drives it from QUIC
//! streams and tokio timers, simnet from an event queue on virtual time. It performs no I/O
//! and reads no clock: every input carries `now`, every output is polled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::closest::{ClosestPeersIter, Next};
use crate::config::Config;
use crate::key::Key;
use crate::peer::Peer;
use crate::providers::ProviderStore;
use crate::query::{Phase, Query, QueryId, QueryKind, QueryResult, QueryStats};
use crate::routing::{Evicted, RoutingTable, Seen};
use crate::time::Instant;

/// Names one outbound request, so its answer can find its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RpcId(pub u64);

/// A DHT request, as the overlay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Are you alive?
    Ping,
    /// Your k closest contacts to a key.
    FindNode(Key),
    /// Providers of a key, and your closest contacts to it.
    GetProviders(Key),
    /// Record the sender as a provider of a key.
    AddProvider(Key),
}

/// A DHT response, as the overlay sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<P> {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `FindNode`.
    Nodes(Vec<P>),
    /// Answer to `GetProviders`.
    Providers {
        /// Closest contacts the responder knows.
        closer: Vec<P>,
        /// Providers it has records of.
        providers: Vec<P>,
    },
    /// Answer to `AddProvider`: stored.
    Added,
    /// The responder declined (e.g. its provider store is full).
    Refused,
}

/// A request for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<P> {
    /// Report the answer with this id.
    pub rpc: RpcId,
    /// Whom to send it to.
    pub to: P,
    /// What to send.
    pub request: Request,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A query finished.
    QueryFinished {
        /// Which one.
        id: QueryId,
        /// What it found.
        result: QueryResult<P>,
        /// How it went.
        stats: QueryStats,
    },
    /// Joined: the self-lookup finished and the table has peers.
    Ready,
    /// The table lost its last peer; bootstrap contacts will be retried.
    Isolated,
    /// A peer entered the routing table.
    PeerAdded(P),
    /// A peer left the routing table.
    PeerRemoved(P),
    /// A peer broke the protocol; its answer was dropped.
    PeerMisbehaved {
        /// Who.
        peer: P,
        /// What it did, as a metric label.
        reason: &'static str,
    },
}

/// A command the caller should not have issued now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// `queries_max` queries are running.
    #[error("too many queries running")]
    TooManyQueries,
    /// There is nobody to ask: the table is empty and no seeds were given.
    #[error("no peers to ask")]
    NoPeers,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtStats {
    /// Requests queued for sending.
    pub rpcs_sent: u64,
    /// Requests that failed or timed out.
    pub rpcs_failed: u64,
    /// Inbound requests answered.
    pub requests_handled: u64,
    /// Answers dropped because the peer broke the protocol.
    pub misbehaved: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Requests not sent because the transmit queue was full.
    pub transmits_refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Query(QueryId),
    Announce(QueryId),
    Probe,
    /// A PING to a stranger that asked us something: it enters the table only if it
    /// answers a request of ours.
    Verify,
}

#[derive(Debug, Clone)]
struct Rpc<P> {
    to: P,
    request: Request,
    deadline: Instant,
    purpose: Purpose,
}

/// At most this many bootstrap contacts are remembered for re-joining.
pub const BOOTSTRAP_MAX: usize = 64;

/// The Kademlia DHT of one node, as a sans-IO state machine.
///
/// Inputs: [`handle_request`](Self::handle_request) (an inbound request; returns the
/// answer), [`handle_response`](Self::handle_response) and
/// [`handle_rpc_failure`](Self::handle_rpc_failure) (the outcome of a
/// [`Transmit`]), [`handle_timeout`](Self::handle_timeout). Commands:
/// [`bootstrap`](Self::bootstrap), [`find_node`](Self::find_node),
/// [`get_providers`](Self::get_providers), [`start_providing`](Self::start_providing),
/// [`insert_peer`](Self::insert_peer). Outputs: [`poll_transmit`](Self::poll_transmit),
/// [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
///
/// After every input or command, drain `poll_transmit` and `poll_event` until they return
/// `None`, then re-arm the timer from `poll_timeout`. Time only moves forward: `now` must
/// never be smaller than in an earlier call.
#[derive(Debug)]
pub struct Dht<P: Peer> {
    local: P,
    local_key: Key,
    config: Config,
    rng: ChaCha8Rng,
    table: RoutingTable<P>,
    providers: ProviderStore<P>,
    queries: BTreeMap<QueryId, Query<P>>,
    rpcs: BTreeMap<RpcId, Rpc<P>>,
    deadlines: BTreeSet<(Instant, RpcId)>,
    transmits: VecDeque<Transmit<P>>,
    events: VecDeque<Event<P>>,
    /// Keys we announce, with when to announce them next.
    providing: BTreeMap<Key, Instant>,
    /// `providing` ordered by when each key is due, so the next one is found in O(log n).
    provide_due: BTreeSet<(Instant, Key)>,
    bootstrap: Vec<P>,
    joined: bool,
    ready: bool,
    next_query: u64,
    next_rpc: u64,
    next_refresh: Instant,
    next_liveness: Option<Instant>,
    next_expiry: Instant,
    next_rejoin: Option<Instant>,
    stats: DhtStats,
    last_now: Instant,
    /// Strangers being verified (a PING of ours in flight).
    verifying: BTreeSet<Key>,
}

impl<P: Peer> Dht<P> {
    /// A DHT for `local`, with every random choice drawn from `seed`.
    pub fn new(now: Instant, local: P, config: Config, seed: u64) -> Self {
        let local_key = local.key();
        let table = RoutingTable::new(
            local_key,
            config.k,
            config.replacement_cache_size,
            config.evict_after_failures,
            config.ip_diversity,
            now,
        );
        let providers = ProviderStore::new(
            config.provider_ttl,
            config.providers_per_key_max,
            config.provider_records_max,
        );
        Dht {
            local,
            local_key,
            rng: ChaCha8Rng::seed_from_u64(seed),
            table,
            providers,
            queries: BTreeMap::new(),
            rpcs: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            providing: BTreeMap::new(),
            provide_due: BTreeSet::new(),
            bootstrap: Vec::new(),
            joined: false,
            ready: false,
            next_query: 0,
            next_rpc: 0,
            next_refresh: now + config.bucket_refresh_interval / 4,
            next_liveness: config.liveness_interval.map(|d| now + d),
            next_expiry: now + config.provider_ttl / 8,
            next_rejoin: None,
            stats: DhtStats::default(),
            last_now: now,
            verifying: BTreeSet::new(),
            config,
        }
    }

    // ----- accessors -----

    /// Our own peer handle.
    pub fn local(&self) -> &P {
        &self.local
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The routing table, for inspection.
    pub fn routing_table(&self) -> &RoutingTable<P> {
        &self.table
    }

    /// Provider records held for others.
    pub fn provider_records(&self) -> usize {
        self.providers.len()
    }

    /// Counters.
    pub fn stats(&self) -> DhtStats {
        self.stats
    }

    /// Joined and with peers in the table.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Queries running.
    pub fn queries_running(&self) -> usize {
        self.queries.len()
    }

    /// The `n` peers closest to `key` in our table, closest first (not counting ourselves).
    pub fn closest_known(&self, key: &Key, n: usize) -> Vec<P> {
        self.table.closest(key, n)
    }

    // ----- outputs -----

    /// The next request to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<P>> {
        self.transmits.pop_front()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_refresh.min(self.next_expiry);
        let candidates = [
            self.deadlines.first().map(|(d, _)| *d),
            self.next_liveness,
            self.next_rejoin,
            self.provide_due.first().map(|(t, _)| *t),
        ];
        for c in candidates.into_iter().flatten() {
            t = t.min(c);
        }
        Some(t)
    }

    // ----- commands -----

    /// Joins the network through `contacts`: a self-lookup seeded with them, then bucket
    /// refreshes. They are remembered for re-joining if the table ever empties.
    ///
    /// With no contacts and an empty table there is nobody to ask: this node starts a new
    /// network, counts as joined at once (`Ok(None)`), and is ready when a peer joins it.
    pub fn bootstrap(
        &mut self,
        now: Instant,
        contacts: Vec<P>,
    ) -> Result<Option<QueryId>, CommandError> {
        self.advance_clock(now);
        for c in contacts {
            if c.key() != self.local_key && !self.bootstrap.iter().any(|b| b.key() == c.key()) {
                self.bootstrap.push(c);
            }
        }
        self.bootstrap.truncate(BOOTSTRAP_MAX);
        if self.bootstrap.is_empty() && self.table.is_empty() {
            self.joined = true;
            return Ok(None);
        }
        let seeds = self.bootstrap.clone();
        self.start_query(now, QueryKind::Join, self.local_key, seeds)
            .map(Some)
    }

    /// Puts a peer the driver has verified (e.g. an authenticated connection) into the
    /// table, as if it had just answered us.
    pub fn insert_peer(&mut self, now: Instant, peer: P) {
        self.advance_clock(now);
        self.peer_seen(now, peer);
    }

    /// Removes a peer the driver knows is gone (it closed its connection on shutdown),
    /// promoting a replacement, instead of waiting for failed probes to evict it.
    pub fn remove_peer(&mut self, now: Instant, key: &Key) {
        self.advance_clock(now);
        if let Some(ev) = self.table.remove(key) {
            self.on_evicted(ev);
        }
    }

    /// Declares the node joined without a self-lookup (simnet's ideal tables).
    pub fn assume_joined(&mut self) {
        self.joined = true;
        self.update_ready();
    }

    /// Starts a lookup of the k closest nodes to `target`.
    pub fn find_node(&mut self, now: Instant, target: Key) -> Result<QueryId, CommandError> {
        self.advance_clock(now);
        self.start_query(now, QueryKind::FindNode, target, Vec::new())
    }

    /// Starts a lookup of providers of `key`; it finishes once `wanted` are found or the
    /// closest nodes have all answered.
    pub fn get_providers(
        &mut self,
        now: Instant,
        key: Key,
        wanted: usize,
    ) -> Result<QueryId, CommandError> {
        self.advance_clock(now);
        self.start_query(
            now,
            QueryKind::GetProviders {
                wanted: wanted.max(1),
            },
            key,
            Vec::new(),
        )
    }

    /// Announces that we hold `key`, now and every republish interval until
    /// [`stop_providing`](Self::stop_providing).
    pub fn start_providing(&mut self, now: Instant, key: Key) -> Result<QueryId, CommandError> {
        self.advance_clock(now);
        // We answer for ourselves too, should we be among the closest nodes to the key.
        let _ = self.providers.add(now, key, self.local.clone());
        let started = self.start_query(now, QueryKind::Provide, key, Vec::new());
        // A refused announcement (too many queries) is retried soon, not a republish later.
        let next = if started.is_ok() {
            self.config.provider_republish_interval
        } else {
            self.config.rpc_timeout
        };
        self.schedule_provide(key, now + next);
        started
    }

    fn schedule_provide(&mut self, key: Key, at: Instant) {
        if let Some(old) = self.providing.insert(key, at) {
            self.provide_due.remove(&(old, key));
        }
        self.provide_due.insert((at, key));
    }

    /// Stops announcing `key`; records at other nodes lapse with their TTL.
    pub fn stop_providing(&mut self, key: &Key) {
        if let Some(at) = self.providing.remove(key) {
            self.provide_due.remove(&(at, *key));
        }
    }

    // ----- inputs -----

    /// Answers an inbound request from `from` (the driver authenticated it).
    pub fn handle_request(&mut self, now: Instant, from: P, request: Request) -> Response<P> {
        self.advance_clock(now);
        self.stats.requests_handled += 1;
        let from_key = from.key();
        let response = match request {
            Request::Ping => Response::Pong,
            Request::FindNode(target) => Response::Nodes(self.closest_for(&target, &from_key)),
            Request::GetProviders(key) => Response::Providers {
                closer: self.closest_for(&key, &from_key),
                providers: self.providers.get(now, &key, self.config.k),
            },
            Request::AddProvider(key) => match self.providers.add(now, key, from.clone()) {
                Ok(()) => Response::Added,
                Err(_) => Response::Refused,
            },
        };
        if self.table.contains(&from_key) {
            // A contact asking us something is alive: the most recently seen.
            let _ = self.table.on_seen_without_probe(now, from);
        } else if request != Request::Ping && self.table.has_room_for(&from) {
            // A stranger enters the table only after it answered a request of ours, so a
            // peer cannot place itself in our table (and be trusted as a known peer) just by
            // connecting or asking. A PING is answered but never verified: it usually *is*
            // someone's probe, and probing in answer to probes chains across the network
            // (simnet measured 6-23 pings per FIND_NODE at 3k-30k nodes).
            self.verify_stranger(now, from);
        } else if request != Request::Ping {
            // Its bucket is full: it waits as a replacement, as Kademlia has it, and (where
            // inbound probing is on) the bucket's oldest entry is probed, which is how dead
            // entries leave full buckets. It costs no verification now.
            if self.config.probe_on_inbound {
                self.peer_seen(now, from);
            } else {
                let _ = self.table.on_seen_without_probe(now, from);
            }
        }
        response
    }

    /// Sends a verification PING to a stranger, unless one is in flight to it or
    /// `strangers_verified_max` are in flight already.
    fn verify_stranger(&mut self, now: Instant, from: P) {
        let key = from.key();
        if self.verifying.len() >= self.config.strangers_verified_max || !self.verifying.insert(key)
        {
            return;
        }
        if self
            .send_rpc(now, from, Request::Ping, Purpose::Verify)
            .is_none()
        {
            self.verifying.remove(&key);
        }
    }

    fn closest_for(&self, target: &Key, asker: &Key) -> Vec<P> {
        let mut out = self.table.closest(target, self.config.k + 1);
        out.retain(|p| p.key() != *asker);
        out.truncate(self.config.k);
        out
    }

    /// The answer to the request sent as `rpc`. Late answers (after the timeout) are dropped.
    pub fn handle_response(&mut self, now: Instant, rpc: RpcId, response: Response<P>) {
        self.advance_clock(now);
        let Some(r) = self.take_rpc(rpc) else { return };
        let fits = matches!(
            (&r.request, &response),
            (Request::Ping, Response::Pong)
                | (Request::FindNode(_), Response::Nodes(_))
                | (Request::GetProviders(_), Response::Providers { .. })
                | (Request::AddProvider(_), Response::Added | Response::Refused)
        );
        if !fits {
            self.misbehaved(r.to.clone(), "wrong_response_kind");
            return self.rpc_failed(now, r);
        }
        let (closer, providers) = match response {
            Response::Nodes(c) => (c, Vec::new()),
            Response::Providers { closer, providers } => (closer, providers),
            Response::Added => (Vec::new(), Vec::new()),
            Response::Refused | Response::Pong => (Vec::new(), Vec::new()),
        };
        let closer = self.sanitize(&r.to, closer, "too_many_contacts");
        let providers = self.sanitize(&r.to, providers, "too_many_providers");
        if r.purpose == Purpose::Verify {
            self.verifying.remove(&r.to.key());
            // A verified stranger joins as if it had asked us before this rule: it probes a
            // full bucket's oldest entry only where inbound probing is on.
            if !self.config.probe_on_inbound {
                if matches!(
                    self.table.on_seen_without_probe(now, r.to.clone()),
                    Seen::Inserted
                ) {
                    self.push_event(Event::PeerAdded(r.to));
                    self.update_ready();
                }
                return;
            }
        }
        self.peer_seen(now, r.to.clone());
        match r.purpose {
            Purpose::Probe | Purpose::Verify => {}
            Purpose::Announce(q) => self.on_announce_done(now, q, true),
            Purpose::Query(q) => {
                let Some(query) = self.queries.get_mut(&q) else {
                    return;
                };
                for p in providers {
                    if !query.providers.iter().any(|x| x.key() == p.key()) {
                        query.providers.push(p);
                    }
                }
                if let Some(Phase::AwaitingPeers(iter)) = query.phase.as_mut() {
                    iter.on_success(&r.to.key(), closer);
                }
                self.advance_query(now, q);
            }
        }
    }

    /// Drops ourselves from a peer list and caps it at k, flagging a peer that sent more.
    fn sanitize(&mut self, from: &P, mut peers: Vec<P>, reason: &'static str) -> Vec<P> {
        if peers.len() > self.config.k {
            self.misbehaved(from.clone(), reason);
            peers.truncate(self.config.k);
        }
        peers.retain(|p| p.key() != self.local_key);
        peers
    }

    /// The request sent as `rpc` failed before an answer (connection refused, reset, …).
    pub fn handle_rpc_failure(&mut self, now: Instant, rpc: RpcId) {
        self.advance_clock(now);
        if let Some(r) = self.take_rpc(rpc) {
            self.rpc_failed(now, r);
        }
    }

    /// Runs the timers that fell due: RPC timeouts, refresh, liveness, republish, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        while let Some(&(deadline, rpc)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(r) = self.take_rpc(rpc) {
                self.rpc_failed(now, r);
            }
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.config.bucket_refresh_interval / 4;
            self.refresh_buckets(now, self.config.bucket_refresh_interval);
        }
        if let (Some(due), Some(interval)) = (self.next_liveness, self.config.liveness_interval) {
            if now >= due {
                self.next_liveness = Some(now + interval);
                for p in self
                    .table
                    .idle_entries(now, interval, self.config.liveness_probes_max)
                {
                    self.send_rpc(now, p, Request::Ping, Purpose::Probe);
                }
            }
        }
        if now >= self.next_expiry {
            self.next_expiry = now + self.config.provider_ttl / 8;
            self.providers.expire(now);
        }
        self.republish(now);
        if self.next_rejoin.is_some_and(|t| now >= t) {
            self.next_rejoin = None;
            if self.table.is_empty() && !self.bootstrap.is_empty() {
                let seeds = self.bootstrap.clone();
                if self
                    .start_query(now, QueryKind::Join, self.local_key, seeds)
                    .is_err()
                {
                    self.next_rejoin = Some(now + self.config.rejoin_interval);
                }
            }
        }
    }

    fn republish(&mut self, now: Instant) {
        let due: Vec<Key> = self
            .provide_due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, k)| *k)
            .collect();
        for key in due {
            let _ = self.providers.add(now, key, self.local.clone());
            // One that cannot start now (too many queries) is retried after an RPC
            // timeout: never left due, which would spin the driver's timer.
            let started = self.queries.len() < self.config.queries_max
                && self
                    .start_query(now, QueryKind::Provide, key, Vec::new())
                    .is_ok();
            let next = if started {
                self.config.provider_republish_interval
            } else {
                self.config.rpc_timeout
            };
            self.schedule_provide(key, now + next);
        }
    }

    fn refresh_buckets(&mut self, now: Instant, stale_after: std::time::Duration) {
        let buckets = self.table.buckets_to_refresh(now, stale_after);
        for b in buckets.into_iter().take(self.config.refresh_on_join_max) {
            let target = self.local_key.random_in_bucket(b, &mut self.rng);
            // Mark it now so a refresh that cannot start is not retried in a loop.
            self.table.mark_refreshed(now, &target);
            let _ = self.start_query(now, QueryKind::Refresh, target, Vec::new());
        }
    }

    // ----- internals -----

    fn advance_clock(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time moved backwards");
        self.last_now = self.last_now.max(now);
    }

    fn push_event(&mut self, ev: Event<P>) {
        if self.events.len() >= self.config.events_max {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    fn misbehaved(&mut self, peer: P, reason: &'static str) {
        self.stats.misbehaved += 1;
        self.push_event(Event::PeerMisbehaved { peer, reason });
    }

    fn update_ready(&mut self) {
        let ready = self.joined && !self.table.is_empty();
        if ready && !self.ready {
            self.push_event(Event::Ready);
        }
        self.ready = ready;
    }

    fn peer_seen(&mut self, now: Instant, peer: P) {
        match self.table.on_seen(now, peer.clone()) {
            Seen::Inserted => {
                self.push_event(Event::PeerAdded(peer));
                self.update_ready();
            }
            Seen::ProbeOldest(oldest) => {
                self.send_rpc(now, oldest, Request::Ping, Purpose::Probe);
            }
            Seen::Refreshed | Seen::Cached | Seen::IsSelf | Seen::DiversityLimit => {}
        }
    }

    fn on_evicted(&mut self, ev: Evicted<P>) {
        self.push_event(Event::PeerRemoved(ev.removed));
        if let Some(p) = ev.promoted {
            self.push_event(Event::PeerAdded(p));
        }
        if self.table.is_empty() {
            self.ready = false;
            self.push_event(Event::Isolated);
            if self.next_rejoin.is_none() {
                self.next_rejoin = Some(self.last_now + self.config.rejoin_interval);
            }
        }
    }

    fn take_rpc(&mut self, rpc: RpcId) -> Option<Rpc<P>> {
        let r = self.rpcs.remove(&rpc)?;
        self.deadlines.remove(&(r.deadline, rpc));
        Some(r)
    }

    /// Queues a request; `None` when the transmit queue is full (the caller treats that as
    /// a failure that is nobody's fault).
    fn send_rpc(
        &mut self,
        now: Instant,
        to: P,
        request: Request,
        purpose: Purpose,
    ) -> Option<RpcId> {
        if self.transmits.len() >= self.config.transmits_max {
            self.stats.transmits_refused += 1;
            return None;
        }
        let rpc = RpcId(self.next_rpc);
        self.next_rpc += 1;
        let deadline = now + self.config.rpc_timeout;
        self.rpcs.insert(
            rpc,
            Rpc {
                to: to.clone(),
                request,
                deadline,
                purpose,
            },
        );
        self.deadlines.insert((deadline, rpc));
        self.transmits.push_back(Transmit { rpc, to, request });
        self.stats.rpcs_sent += 1;
        Some(rpc)
    }

    fn rpc_failed(&mut self, now: Instant, r: Rpc<P>) {
        self.stats.rpcs_failed += 1;
        let key = r.to.key();
        if let Some(ev) = self.table.on_failure(&key) {
            self.on_evicted(ev);
        }
        match r.purpose {
            Purpose::Probe => {}
            Purpose::Verify => {
                self.verifying.remove(&key);
            }
            Purpose::Announce(q) => self.on_announce_done(now, q, false),
            Purpose::Query(q) => {
                if let Some(Some(Phase::AwaitingPeers(iter))) =
                    self.queries.get_mut(&q).map(|q| q.phase.as_mut())
                {
                    iter.on_failure(&key);
                }
                self.advance_query(now, q);
            }
        }
    }

    fn start_query(
        &mut self,
        now: Instant,
        kind: QueryKind,
        target: Key,
        extra: Vec<P>,
    ) -> Result<QueryId, CommandError> {
        if self.queries.len() >= self.config.queries_max {
            return Err(CommandError::TooManyQueries);
        }
        let mut seeds = self.table.closest(&target, self.config.k);
        for p in extra {
            if !seeds.iter().any(|s| s.key() == p.key()) {
                seeds.push(p);
            }
        }
        if seeds.is_empty() && kind != QueryKind::Provide {
            return Err(CommandError::NoPeers);
        }
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let c = &self.config;
        let iter = ClosestPeersIter::new(
            target,
            seeds,
            c.k,
            c.alpha,
            c.lookup_rpcs_max,
            c.lookup_candidates_max,
        );
        let query = Query {
            kind,
            target,
            started: now,
            providers: Vec::new(),
            phase: Some(Phase::AwaitingPeers(iter)),
        };
        self.queries.insert(id, query);
        self.advance_query(now, id);
        Ok(id)
    }

    /// Lets a query send what it can, and finishes it when it is done.
    fn advance_query(&mut self, now: Instant, id: QueryId) {
        loop {
            let Some(query) = self.queries.get_mut(&id) else {
                return;
            };
            if let QueryKind::GetProviders { wanted } = query.kind {
                if query.providers.len() >= wanted {
                    return self.finish_walk(now, id);
                }
            }
            let Some(Phase::AwaitingPeers(iter)) = query.phase.as_mut() else {
                return;
            };
            let request = match query.kind {
                QueryKind::GetProviders { .. } => Request::GetProviders(query.target),
                _ => Request::FindNode(query.target),
            };
            match iter.next() {
                Next::Contact(p) => {
                    if self
                        .send_rpc(now, p.clone(), request, Purpose::Query(id))
                        .is_none()
                    {
                        if let Some(Some(Phase::AwaitingPeers(iter))) =
                            self.queries.get_mut(&id).map(|q| q.phase.as_mut())
                        {
                            iter.on_failure(&p.key());
                        }
                    }
                }
                Next::Waiting => return,
                Next::Finished => return self.finish_walk(now, id),
            }
        }
    }

    /// The walk is over: report it, or move an announcement on to its ADD_PROVIDER round.
    fn finish_walk(&mut self, now: Instant, id: QueryId) {
        let Some(mut query) = self.queries.remove(&id) else {
            return;
        };
        let Some(Phase::AwaitingPeers(iter)) = query.phase.take() else {
            return;
        };
        self.table.mark_refreshed(now, &query.target);
        let (closest, hops) = iter.result();
        let rpcs = iter.rpcs_sent() as u32;
        let failures = iter.failures() as u32;
        if query.kind == QueryKind::Provide && !closest.is_empty() {
            let mut pending = 0;
            for p in &closest {
                if self
                    .send_rpc(
                        now,
                        p.clone(),
                        Request::AddProvider(query.target),
                        Purpose::Announce(id),
                    )
                    .is_some()
                {
                    pending += 1;
                }
            }
            query.phase = Some(Phase::AwaitingAcks {
                closest,
                pending,
                acked: 0,
                hops,
                rpcs: rpcs + pending as u32,
                failures,
            });
            self.queries.insert(id, query);
            return self.on_announce_done_check(now, id);
        }
        let stats = query.stats(now, hops, rpcs, failures);
        let result = match query.kind {
            QueryKind::GetProviders { .. } => QueryResult::GetProviders {
                providers: query.providers,
                closest,
            },
            QueryKind::Provide => QueryResult::Provided { acked: 0, closest },
            _ => QueryResult::FindNode { closest },
        };
        if query.kind == QueryKind::Join {
            self.joined = true;
            self.update_ready();
            if self.table.is_empty() {
                self.next_rejoin = Some(now + self.config.rejoin_interval);
            } else {
                self.refresh_buckets(now, std::time::Duration::ZERO);
            }
        }
        self.push_event(Event::QueryFinished { id, result, stats });
    }

    fn on_announce_done(&mut self, now: Instant, id: QueryId, ok: bool) {
        if let Some(Some(Phase::AwaitingAcks {
            pending,
            acked,
            failures,
            ..
        })) = self.queries.get_mut(&id).map(|q| q.phase.as_mut())
        {
            *pending = pending.saturating_sub(1);
            if ok {
                *acked += 1;
            } else {
                *failures += 1;
            }
        }
        self.on_announce_done_check(now, id);
    }

    fn on_announce_done_check(&mut self, now: Instant, id: QueryId) {
        let done = matches!(
            self.queries.get(&id).and_then(|q| q.phase.as_ref()),
            Some(Phase::AwaitingAcks { pending: 0, .. })
        );
        if !done {
            return;
        }
        let Some(mut query) = self.queries.remove(&id) else {
            return;
        };
        let Some(Phase::AwaitingAcks {
            closest,
            acked,
            hops,
            rpcs,
            failures,
            ..
        }) = query.phase.take()
        else {
            return;
        };
        let stats = query.stats(now, hops, rpcs, failures);
        self.push_event(Event::QueryFinished {
            id,
            result: QueryResult::Provided { acked, closest },
            stats,
        });
    }

    /// Every internal invariant; `Err` names the first one broken. Tests and simnet call
    /// this after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.table.check_invariants()?;
        self.providers.check_invariants()?;
        if self.providing.len() != self.provide_due.len()
            || self
                .provide_due
                .iter()
                .any(|(t, k)| self.providing.get(k) != Some(t))
        {
            return Err("the provide schedule disagrees with the provided keys".into());
        }
        if self.rpcs.len() != self.deadlines.len() {
            return Err(format!(
                "{} rpcs but {} deadlines",
                self.rpcs.len(),
                self.deadlines.len()
            ));
        }
        for (deadline, id) in &self.deadlines {
            match self.rpcs.get(id) {
                Some(r) if r.deadline == *deadline => {}
                _ => return Err(format!("deadline for {id:?} has no matching rpc")),
            }
        }
        if self.queries.len() > self.config.queries_max {
            return Err("more queries than queries_max".into());
        }
        for (id, q) in &self.queries {
            let in_flight = self
                .rpcs
                .values()
                .filter(|r| r.purpose == Purpose::Query(*id))
                .count();
            match &q.phase {
                Some(Phase::AwaitingPeers(iter)) if iter.in_flight() != in_flight => {
                    return Err(format!(
                        "{id:?} thinks {} in flight, {in_flight} rpcs exist",
                        iter.in_flight()
                    ));
                }
                None => return Err(format!("{id:?} has no phase")),
                _ => {}
            }
        }
        if self.ready && (self.table.is_empty() || !self.joined) {
            return Err("ready without peers or without joining".into());
        }
        if self.transmits.len() > self.config.transmits_max
            || self.events.len() > self.config.events_max
        {
            return Err("an output queue is over its bound".into());
        }
        Ok(())
    }
}
