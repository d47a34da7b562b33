//! The Kademlia state machine one node runs: routing table, lookups, provider records, join.
//!
//! This is the one implementation of the protocol logic: the node drives it from QUIC
//! streams and tokio timers, simnet from an event queue on virtual time. It performs no I/O
//! and reads no clock: every input carries `now`, every output is polled.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cause::ConnectionEvent;
use crate::closest::{ClosestPeersIter, Next};
use crate::config::Config;
use crate::key::Key;
use crate::peer::Peer;
use crate::providers::ProviderStore;
use crate::query::{Phase, Query, QueryId, QueryKind, QueryResult, QueryStats};
use crate::routing::{Asked, Evicted, RoutingTable, Seen};
use crate::rtt::{Rtt, RttMax, RttTail};
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

/// Where a placement's candidates come from ([`Dht::find_placement`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementWalk<P> {
    /// A lookup started: its closest nodes are the candidates when it finishes.
    Started(QueryId),
    /// No lookup could start: these, the table's closest, are the candidates.
    Table(Vec<P>),
}

/// Why a request got no answer, as the driver saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcFailure {
    /// The peer failed us: no answer in time, connection refused, reset or lost. Counts
    /// against the contact, and fails the request at once (no waiting for the timeout).
    Peer,
    /// The peer is there but declined (e.g. answered "unavailable"): the request failed, the
    /// contact stays as it was.
    Refused,
    /// We could not send it: a local limit (requests in flight, the connection cap) or our
    /// own shutdown. Never the peer's fault: the request failed, the contact stays as it was.
    Local,
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
    /// Requests that waited for a slot (`rpcs_in_flight_max` were in flight).
    pub rpcs_held: u64,
    /// Of those, lookup requests dropped unsent: their walk had finished while they waited.
    pub held_dropped: u64,
    /// Lookup requests that passed their soft timeout (their slot was freed).
    pub soft_timeouts: u64,
    /// Answers to lookup requests that came after their soft timeout.
    pub late_answers: u64,
    /// Of those, answers that came after their lookup had finished (not used).
    pub answers_after_finish: u64,
    /// Liveness pings of questionable entries sent.
    pub probes_sent: u64,
    /// Verification pings of strangers sent.
    pub verifications_sent: u64,
    /// Bootstrap contacts missing from the table that were pinged (`bootstrap_check_interval`).
    pub bootstrap_checks: u64,
    /// Self-lookups repeated because the table held fewer than k peers.
    pub thin_table_lookups: u64,
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

/// A request waiting for a slot: `rpcs_in_flight_max` were in flight when it was made.
#[derive(Debug, Clone)]
struct Held<P> {
    rpc: RpcId,
    to: P,
    request: Request,
    purpose: Purpose,
}

#[derive(Debug, Clone)]
struct Rpc<P> {
    to: P,
    request: Request,
    sent: Instant,
    /// The hard timeout: past it the contact has failed.
    deadline: Instant,
    /// The soft timeout of a lookup request: past it the request frees its slot of the walk.
    soft: Option<Instant>,
    /// The give-up time of a lookup request (after its soft timeout, before its hard one):
    /// past it the request no longer holds the walk's finish.
    give_up: Option<Instant>,
    /// It counts against `rpcs_in_flight_max`: until it ends, or, for a lookup request,
    /// until its soft timeout (past it nobody waits for it; it is still timed for blame).
    slot: bool,
    purpose: Purpose,
}

/// Answers timed (from anyone: contacts' pings and lookups count) before the longest recent
/// round trips are trusted as a bound: until then a request's give-up time is at least
/// `soft_timeout_initial`.
pub const RTT_SAMPLES_TRUSTED: u32 = 64;

/// At most this many bootstrap contacts are remembered for re-joining.
pub const BOOTSTRAP_MAX: usize = 64;

/// How long a peer proven to have lied ([`Dht::peer_lied`]) is kept out of the table and
/// out of our lookups: long enough that a liar met on every walk is not asked again each
/// time, short enough that a wrong verdict (a bug of ours, say) heals by itself.
pub const LIAR_DENIED_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// Liars remembered at once; past it the one whose time ends first is forgotten early, so
/// a flood of throwaway ids costs bounded memory.
pub const LIARS_MAX: usize = 256;

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
    /// Shared: a simulation of 10^6 nodes would hold 10^6 copies of 320 bytes.
    config: Arc<Config>,
    rng: ChaCha8Rng,
    table: RoutingTable<P>,
    providers: ProviderStore<P>,
    queries: BTreeMap<QueryId, Query<P>>,
    rpcs: BTreeMap<RpcId, Rpc<P>>,
    deadlines: BTreeSet<(Instant, RpcId)>,
    /// Soft timeouts of lookup requests still counted as in flight by their walk.
    soft_deadlines: BTreeSet<(Instant, RpcId)>,
    /// Give-up times of lookup requests not given up yet.
    give_up_deadlines: BTreeSet<(Instant, RpcId)>,
    /// When each running query must finish.
    query_deadlines: BTreeSet<(Instant, QueryId)>,
    /// The 99th percentile of round trips of answers from strangers (peers not in our
    /// table), for strangers' soft timeouts: a stranger's request usually opens a connection
    /// first, which a contact's does not, and strangers are a population, not one path.
    net_rtt: RttTail,
    /// Round-trip times of every answer, for a stranger's soft timeout before any stranger
    /// answered.
    any_rtt: Rtt,
    /// The longest round trip of strangers' answers lately, for give-up times.
    stranger_max_rtt: RttMax,
    /// The longest round trip of any answer lately (contacts' included), for give-up times
    /// before strangers answered: its samples say when the bounds are trusted.
    any_max_rtt: RttMax,
    transmits: VecDeque<Transmit<P>>,
    /// Requests waiting for a slot, oldest first; sent as slots free.
    held: VecDeque<Held<P>>,
    /// Requests in flight holding a slot (`Rpc::slot`).
    slots_used: usize,
    events: VecDeque<Event<P>>,
    /// Keys we announce, with when to announce them next.
    providing: BTreeMap<Key, Instant>,
    /// `providing` ordered by when each key is due, so the next one is found in O(log n).
    provide_due: BTreeSet<(Instant, Key)>,
    bootstrap: Vec<P>,
    joined: bool,
    ready: bool,
    /// The table has held a peer at some time, or peers were expected (`expect_peers`).
    had_peers: bool,
    next_query: u64,
    next_rpc: u64,
    next_refresh: Instant,
    next_liveness: Option<Instant>,
    next_expiry: Instant,
    next_rejoin: Option<Instant>,
    /// When to repeat the self-lookup of a thin table, and the wait after that one.
    next_thin_lookup: Option<(Instant, std::time::Duration)>,
    /// When to ping a bootstrap contact missing from the table next, and which is next.
    next_bootstrap_check: Option<Instant>,
    bootstrap_turn: usize,
    stats: DhtStats,
    last_now: Instant,
    /// Strangers being verified (a PING of ours in flight).
    verifying: BTreeSet<Key>,
    /// Peers proven to have lied, and until when they are kept out ([`Dht::peer_lied`]).
    liars: BTreeMap<Key, Instant>,
}

/// Replaces `c` with a new, unallocated one when `empty` says it holds nothing
/// ([`Dht::shed_idle`]).
fn shed<C: Default>(c: &mut C, empty: impl Fn(&C) -> bool) {
    if empty(c) {
        *c = C::default();
    }
}

impl<P: Peer> Dht<P> {
    /// A DHT for `local`, with every random choice drawn from `seed`. Nodes that share a
    /// configuration (a simulation's) may share one `Arc` of it.
    pub fn new(now: Instant, local: P, config: impl Into<Arc<Config>>, seed: u64) -> Self {
        let config = config.into();
        let local_key = local.key();
        let mut table = RoutingTable::new(
            local_key,
            config.k,
            config.replacement_cache_size,
            config.evict_after_failures,
            config.ip_diversity,
            now,
        );
        table.set_questionable_after(config.liveness_interval);
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
            soft_deadlines: BTreeSet::new(),
            give_up_deadlines: BTreeSet::new(),
            query_deadlines: BTreeSet::new(),
            net_rtt: RttTail::UNKNOWN,
            any_rtt: Rtt::UNKNOWN,
            stranger_max_rtt: RttMax::UNKNOWN,
            any_max_rtt: RttMax::UNKNOWN,
            transmits: VecDeque::new(),
            held: VecDeque::new(),
            slots_used: 0,
            events: VecDeque::new(),
            providing: BTreeMap::new(),
            provide_due: BTreeSet::new(),
            bootstrap: Vec::new(),
            joined: false,
            ready: false,
            had_peers: false,
            next_query: 0,
            next_rpc: 0,
            next_refresh: now + config.bucket_refresh_interval / 4,
            next_liveness: config
                .liveness_interval
                .map(|d| now + first_liveness_round(d, config.liveness_spread, &local_key)),
            next_expiry: now + config.provider_ttl / 8,
            next_rejoin: None,
            next_thin_lookup: None,
            next_bootstrap_check: None,
            bootstrap_turn: 0,
            stats: DhtStats::default(),
            last_now: now,
            verifying: BTreeSet::new(),
            liars: BTreeMap::new(),
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

    /// The provider records held for others, read-only: simulation checkers verify that
    /// each names a provider that really announced its key.
    pub fn provider_store(&self) -> &ProviderStore<P> {
        &self.providers
    }

    /// The bootstrap contacts it was given, read-only: simulation checkers tell a node that
    /// joined through liars alone from one cut off by a partition.
    pub fn bootstrap_contacts(&self) -> &[P] {
        &self.bootstrap
    }

    /// Counters.
    pub fn stats(&self) -> DhtStats {
        self.stats
    }

    /// Whether the table has ever held a peer, or the node was told to expect some
    /// ([`expect_peers`](Self::expect_peers)): a node that never had one is alone by
    /// design, one that lost its peers (or has not reached them yet) is cut off
    /// ([`write_quorum`](crate::write_quorum), [`WalkEnd::judge`](crate::WalkEnd::judge)).
    pub fn had_peers(&self) -> bool {
        self.had_peers
    }

    /// Declares that this node belongs to a mesh before it has reached anyone (it was given
    /// peers to join, or remembers some from its last run): it is never taken for a mesh
    /// of one, so its writes wait for W copies and a search over its empty table says it
    /// cannot tell rather than that the object is absent. Without this, a restarted node
    /// whose peers were not reachable yet acknowledged writes with its own copy alone.
    pub fn expect_peers(&mut self) {
        self.had_peers = true;
    }

    /// Joined and with peers in the table.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Queries running.
    pub fn queries_running(&self) -> usize {
        self.queries.len()
    }

    /// The smoothed round-trip time over every answer, if any came.
    pub fn network_rtt(&self) -> Option<std::time::Duration> {
        self.any_rtt.srtt()
    }

    /// The `n` peers closest to `key` in our table, closest first (not counting ourselves).
    pub fn closest_known(&self, key: &Key, n: usize) -> Vec<P> {
        self.table.closest(key, n)
    }

    // ----- outputs -----

    /// The next request to send. A driver drains these after every input; once they are
    /// drained, the working collections that input left empty give their memory back
    /// ([`shed_idle`](Self::shed_idle)).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit<P>> {
        let next = self.transmits.pop_front();
        if next.is_none() {
            self.shed_idle();
        }
        next
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        let next = self.events.pop_front();
        if next.is_none() {
            shed(&mut self.events, VecDeque::is_empty);
        }
        next
    }

    /// Frees the memory of working collections that hold nothing now. A B-tree keeps its
    /// last leaf when emptied (about 2 KiB for the queries' map: eleven queries' room) and a
    /// queue its capacity, so every node that ever ran a lookup or sent a request kept
    /// 4-5 KiB it no longer used: a fifth of a 100k-node simulation's heap, and gigabytes
    /// at 10^6 nodes. A busy node pays one allocation per collection when it gets busy
    /// again.
    fn shed_idle(&mut self) {
        shed(&mut self.queries, BTreeMap::is_empty);
        shed(&mut self.rpcs, BTreeMap::is_empty);
        shed(&mut self.deadlines, BTreeSet::is_empty);
        shed(&mut self.soft_deadlines, BTreeSet::is_empty);
        shed(&mut self.give_up_deadlines, BTreeSet::is_empty);
        shed(&mut self.query_deadlines, BTreeSet::is_empty);
        shed(&mut self.transmits, VecDeque::is_empty);
        shed(&mut self.held, VecDeque::is_empty);
        shed(&mut self.verifying, BTreeSet::is_empty);
        shed(&mut self.liars, BTreeMap::is_empty);
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_refresh.min(self.next_expiry);
        let candidates = [
            self.deadlines.first().map(|(d, _)| *d),
            self.soft_deadlines.first().map(|(d, _)| *d),
            self.give_up_deadlines.first().map(|(d, _)| *d),
            self.query_deadlines.first().map(|(d, _)| *d),
            self.next_liveness,
            self.next_rejoin,
            self.next_thin_lookup.map(|(t, _)| t),
            self.next_bootstrap_check,
            // Due announcements wait while their slots or the queries' places are full, or
            // the table is empty: a query that ends and a peer that comes are inputs, after
            // which the driver asks again.
            self.provide_due
                .first()
                .filter(|_| self.may_announce())
                .map(|(t, _)| *t),
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
        if !self.bootstrap.is_empty() {
            self.next_bootstrap_check = self.config.bootstrap_check_interval.map(|d| now + d);
        }
        if self.bootstrap.is_empty() && self.table.is_empty() {
            self.joined = true;
            return Ok(None);
        }
        let seeds = self.bootstrap.clone();
        self.start_query(now, QueryKind::Join, self.local_key, seeds)
            .map(Some)
    }

    /// Puts a peer the driver has verified (e.g. a connection it dialed, whose HELLO
    /// answered ours) into the table, as if it had just answered us; in a full bucket it only
    /// waits as a replacement (a new connection never starts a probe).
    pub fn insert_peer(&mut self, now: Instant, peer: P) {
        self.advance_clock(now);
        if self.is_liar(&peer.key()) {
            return;
        }
        let seen = self.table.on_seen_without_probe(now, peer.clone());
        self.on_table_seen(now, peer, seen);
    }

    /// What happened to a connection with a peer (the transport's one input to the table;
    /// the rules are [`ConnectionEvent`]'s).
    pub fn handle_connection(&mut self, now: Instant, event: ConnectionEvent<P>) {
        match event {
            ConnectionEvent::Dialed(peer) => self.insert_peer(now, peer),
            ConnectionEvent::PeerLeft(key) => self.remove_peer(now, &key),
            ConnectionEvent::Lost(key) => self.peer_lost(now, &key),
            ConnectionEvent::Accepted(_) | ConnectionEvent::Closed(_) => {}
        }
    }

    /// The connection to a peer was lost without a goodbye (a timeout, a reset): its entry
    /// becomes questionable, and is pinged before it is trusted again.
    pub fn peer_lost(&mut self, now: Instant, key: &Key) {
        self.advance_clock(now);
        self.table.mark_suspect(key);
        self.continue_sweep(now, key);
    }

    /// A peer proved it lied, in an answer tied to its own key (its connection's): what
    /// it sent for an object failed verification against the object's id, say. It leaves
    /// the table (a replacement promoted, its cached copy dropped), and for
    /// [`LIAR_DENIED_FOR`] it does not enter the table again, however it is heard from;
    /// no walk of ours starts from it (unless it is the only bootstrap contact left), takes
    /// an answer from it, follows a record naming it or returns it; and no record naming it
    /// is handed on or taken from it. Its other requests are still answered: answering
    /// trusts nobody. An attacker with many throwaway ids that each get caught lying can
    /// push an older liar out of the list early ([`LIARS_MAX`]); each costs it a record
    /// someone probes.
    pub fn peer_lied(&mut self, now: Instant, peer: P, reason: &'static str) {
        self.advance_clock(now);
        let key = peer.key();
        if key == self.local_key {
            return;
        }
        self.misbehaved(peer, reason);
        self.prune_liars(now);
        if self.liars.len() >= LIARS_MAX && !self.liars.contains_key(&key) {
            if let Some(first) = self.liars.iter().min_by_key(|(k, until)| (**until, **k)) {
                let first = *first.0;
                self.liars.remove(&first);
            }
        }
        self.liars.insert(key, now + LIAR_DENIED_FOR);
        if let Some(ev) = self.table.remove(&key) {
            self.on_evicted(now, ev);
        }
    }

    /// The providers we know of for `key`: ourselves first if we provide it (we may be
    /// among the closest nodes to it), then the records we hold for others, less those
    /// naming a peer kept out for having lied. Our own claim is not a stored record: a node
    /// holding more objects than `provider_records_max` would otherwise fill its store
    /// with them and refuse every other node's ADD_PROVIDER.
    fn records_of(&self, now: Instant, key: &Key) -> Vec<P> {
        let k = self.config.k;
        let mut records = Vec::new();
        if self.providing.contains_key(key) {
            records.push(self.local.clone());
        }
        if self.liars.is_empty() {
            records.extend(
                self.providers
                    .get(now, key, k.saturating_sub(records.len())),
            );
            return records;
        }
        // Filtered before the cap, so a liar's records cannot crowd out honest ones.
        let mut others = self.providers.get(now, key, usize::MAX);
        others.retain(|p| !self.is_liar(&p.key()));
        records.extend(others);
        records.truncate(k);
        records
    }

    /// Forgets the liars whose time is over.
    fn prune_liars(&mut self, now: Instant) {
        if !self.liars.is_empty() {
            self.liars.retain(|_, until| *until > now);
        }
    }

    /// Peers kept out now for having lied ([`Dht::peer_lied`]), for the operator's gauge.
    pub fn liars_denied(&self) -> usize {
        self.liars
            .values()
            .filter(|until| **until > self.last_now)
            .count()
    }

    /// Whether `key` is a peer kept out for having lied.
    fn is_liar(&self, key: &Key) -> bool {
        !self.liars.is_empty()
            && self
                .liars
                .get(key)
                .is_some_and(|until| *until > self.last_now)
    }

    /// Removes a peer the driver knows is gone (it closed its connection on shutdown),
    /// promoting a replacement, instead of waiting for failed probes to evict it.
    pub fn remove_peer(&mut self, now: Instant, key: &Key) {
        self.advance_clock(now);
        if let Some(ev) = self.table.remove(key) {
            self.on_evicted(now, ev);
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

    /// Starts the lookup a placement of `n` copies of `key` takes its targets from. When no
    /// lookup can start (too many running, or nobody to ask) the `n` closest in the table are
    /// the candidates at once: a node at its query cap still places copies where it knows
    /// best, rather than dropping the write (`placement_targets` then picks among them).
    pub fn find_placement(&mut self, now: Instant, key: Key, n: usize) -> PlacementWalk<P> {
        match self.find_node(now, key) {
            Ok(id) => PlacementWalk::Started(id),
            Err(_) => PlacementWalk::Table(self.closest_known(&key, n.max(1))),
        }
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
        self.announce(now, key, false)
    }

    /// Starts one announcement of `key` (`scheduled`: one of the schedule's
    /// `announcements_max`) and sets its next: a republish interval on, or an RPC timeout
    /// if it could not start (too many queries), so a refused one is retried soon.
    fn announce(
        &mut self,
        now: Instant,
        key: Key,
        scheduled: bool,
    ) -> Result<QueryId, CommandError> {
        let started = self.start_query(now, QueryKind::Provide, key, Vec::new());
        let next = match started {
            Ok(id) => {
                if let Some(q) = self.queries.get_mut(&id) {
                    q.scheduled = scheduled;
                }
                self.config.provider_republish_interval
            }
            Err(_) => self.config.rpc_timeout,
        };
        self.schedule_provide(key, now + next);
        started
    }

    /// Announces `key` as soon as an announcement slot is free ([`Config::announcements_max`]
    /// of them at once), then every `provider_republish_interval`: for a node that starts
    /// with a store full of objects, whose announcements would otherwise go out in one
    /// burst. We answer GET_PROVIDERS for the key at once.
    pub fn provide_paced(&mut self, now: Instant, key: Key) {
        self.advance_clock(now);
        self.schedule_provide(key, now);
    }

    /// Whether a due announcement could start now: a slot is free and so is a query's
    /// place, and there is somebody to announce to. A node that starts with its store
    /// before its table (the node announces what it holds while it still joins) would
    /// otherwise spend every announcement on a walk with nobody to ask, and be found by
    /// nobody until the republish, 22 hours on.
    fn may_announce(&self) -> bool {
        !self.table.is_empty()
            && self.queries.len() < self.config.queries_max
            && self.scheduled_announcements() < self.config.announcements_max
    }

    /// Scheduled announcements running. A command's (a PUT's, a received copy's) do not
    /// count: a node that keeps taking writes must still republish what it holds.
    fn scheduled_announcements(&self) -> usize {
        self.queries.values().filter(|q| q.scheduled).count()
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
                providers: self.records_of(now, &key),
            },
            // A proven liar's claim is not kept, nor handed on.
            Request::AddProvider(_) if self.is_liar(&from_key) => Response::Refused,
            Request::AddProvider(key) => match self.providers.add(now, key, from.clone()) {
                Ok(()) => Response::Added,
                Err(_) => Response::Refused,
            },
        };
        if self.is_liar(&from_key) {
            return response;
        }
        if request == Request::Ping {
            // A PING is answered, and refreshes a contact, but never makes us verify or
            // cache the sender: it usually *is* someone's probe, and answering probes with
            // probes chains across the network (PERFORMANCE.md, "## simnet").
            if self.table.contains(&from_key) {
                let _ = self.table.on_asked(now, from);
            }
            return response;
        }
        // A stranger enters the table only after it answered a request of ours, so a peer
        // cannot place itself in our table (and be trusted as a known peer) just by
        // connecting or asking: with room in its bucket it is pinged, else it waits in the
        // replacement cache unverified. Nothing here ever probes a table entry.
        if let Asked::Stranger { room: true } = self.table.on_asked(now, from.clone()) {
            self.verify_stranger(now, from);
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
        } else {
            self.stats.verifications_sent += 1;
        }
    }

    /// Our k closest contacts to `target` for someone else's lookup: never the asker, and
    /// never a contact that failed since we last heard from it (Kademlia: a node that fails
    /// to respond is removed from consideration until it does).
    fn closest_for(&self, target: &Key, asker: &Key) -> Vec<P> {
        self.table
            .closest_entries(target, self.config.k, |e| {
                e.failures == 0 && !e.has_key(asker)
            })
            .into_iter()
            .map(|e| e.peer.clone())
            .collect()
    }

    /// The answer to the request sent as `rpc`. An answer after the request's soft timeout
    /// is still used; one after its hard timeout (the request already failed) is dropped.
    pub fn handle_response(&mut self, now: Instant, rpc: RpcId, response: Response<P>) {
        self.advance_clock(now);
        let Some(r) = self.take_rpc(rpc) else { return };
        self.on_response(now, r, response);
        self.release_held(now);
    }

    /// What an answer to a request of ours (`r`, already ended) does.
    fn on_response(&mut self, now: Instant, r: Rpc<P>, response: Response<P>) {
        let fits = matches!(
            (&r.request, &response),
            (Request::Ping, Response::Pong)
                | (Request::FindNode(_), Response::Nodes(_))
                | (Request::GetProviders(_), Response::Providers { .. })
                | (Request::AddProvider(_), Response::Added | Response::Refused)
        );
        if !fits {
            self.misbehaved(r.to.clone(), "wrong_response_kind");
            return self.rpc_failed(now, r, RpcFailure::Peer);
        }
        let (closer, providers) = match response {
            Response::Nodes(c) => (c, Vec::new()),
            Response::Providers { closer, providers } => (closer, providers),
            Response::Added => (Vec::new(), Vec::new()),
            Response::Refused | Response::Pong => (Vec::new(), Vec::new()),
        };
        let closer = self.sanitize(&r.to, closer, "too_many_contacts");
        let providers = self.sanitize(&r.to, providers, "too_many_providers");
        let key = r.to.key();
        if r.purpose == Purpose::Verify {
            self.verifying.remove(&key);
        }
        let rtt = now - r.sent;
        self.any_rtt.sample(rtt);
        self.any_max_rtt.sample(rtt);
        if !self.table.contains(&key) {
            self.net_rtt.sample(rtt);
            self.stranger_max_rtt.sample(rtt);
        }
        if !self.is_liar(&key) {
            let seen = self.table.on_answered(now, r.to.clone(), rtt);
            self.on_table_seen(now, r.to.clone(), seen);
        }
        match r.purpose {
            Purpose::Probe => self.continue_sweep(now, &key),
            Purpose::Verify => {}
            Purpose::Announce(q) => self.on_announce_done(now, q, true),
            Purpose::Query(q) => {
                if r.soft.is_none() {
                    self.stats.late_answers += 1;
                    if !self.queries.contains_key(&q) {
                        self.stats.answers_after_finish += 1;
                    }
                }
                // A peer denied while its answer was on the way: the walk takes nothing
                // from it, as from a peer that did not answer.
                let liar = self.is_liar(&key);
                let Some(query) = self.queries.get_mut(&q) else {
                    return;
                };
                if let Some(Phase::AwaitingPeers(iter)) = query.phase.as_mut() {
                    if liar {
                        iter.on_failure(&key);
                    } else {
                        let table = &self.table;
                        iter.on_success_with(&key, closer, |k| rtt_hint(table, k));
                    }
                }
                if !liar {
                    for p in providers {
                        keep_provider(query, p, key);
                    }
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
        peers.retain(|p| {
            let key = p.key();
            key != self.local_key && !self.is_liar(&key)
        });
        peers
    }

    /// The request sent as `rpc` got no answer, for the reason given: the driver reports a
    /// refused, reset or unreachable peer at once, without waiting for the timeout.
    /// `why` is a [`FailureCause`](crate::FailureCause) from a driver, or a blame it already decided.
    pub fn handle_rpc_failure(&mut self, now: Instant, rpc: RpcId, why: impl Into<RpcFailure>) {
        self.advance_clock(now);
        if let Some(r) = self.take_rpc(rpc) {
            self.rpc_failed(now, r, why.into());
            self.release_held(now);
        }
    }

    /// Runs the timers that fell due: RPC timeouts (soft and hard), query deadlines,
    /// refresh, liveness, republish, expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        while let Some(&(soft, rpc)) = self.soft_deadlines.first() {
            if soft > now {
                break;
            }
            self.soft_deadlines.remove(&(soft, rpc));
            self.soft_timeout(now, rpc);
        }
        while let Some(&(at, rpc)) = self.give_up_deadlines.first() {
            if at > now {
                break;
            }
            self.give_up_deadlines.remove(&(at, rpc));
            self.give_up(now, rpc);
        }
        while let Some(&(deadline, rpc)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            if let Some(r) = self.take_rpc(rpc) {
                self.rpc_failed(now, r, RpcFailure::Peer);
            }
        }
        while let Some(&(deadline, id)) = self.query_deadlines.first() {
            if deadline > now {
                break;
            }
            self.query_deadlines.remove(&(deadline, id));
            self.expire_query(now, id);
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
                    .liveness_probes(now, self.config.liveness_probes_max)
                {
                    self.send_probe(now, p);
                }
            }
        }
        if now >= self.next_expiry {
            self.next_expiry = now + self.config.provider_ttl / 8;
            self.providers.expire(now);
        }
        // Any timer turn will do: the list is at most LIARS_MAX, and `is_liar` reads
        // the time anyway; this only frees the entries.
        self.prune_liars(now);
        self.republish(now);
        if self.next_bootstrap_check.is_some_and(|t| now >= t) {
            self.next_bootstrap_check = self.config.bootstrap_check_interval.map(|d| now + d);
            self.check_bootstrap(now);
        }
        self.thin_table_lookup(now);
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
        self.release_held(now);
    }

    /// Repeats the self-lookup while the table holds fewer than k peers (see
    /// `Config::thin_table_lookup`), backing off to a quarter of the bucket refresh
    /// interval; a table that filled, or emptied (rejoining does more), stops it.
    fn thin_table_lookup(&mut self, now: Instant) {
        let Some((due, wait)) = self.next_thin_lookup else {
            return;
        };
        if now < due {
            return;
        }
        let len = self.table.len();
        if len == 0 || len >= self.config.k {
            self.next_thin_lookup = None;
            return;
        }
        let wait = (wait * 2).min(self.config.bucket_refresh_interval / 4);
        self.next_thin_lookup = Some((now + wait, wait));
        if self
            .start_query(now, QueryKind::Refresh, self.local_key, Vec::new())
            .is_ok()
        {
            self.stats.thin_table_lookups += 1;
        }
    }

    /// Pings the next bootstrap contact the table does not hold (nor a verified
    /// replacement): if it answers it enters the table, and lookups through it find the
    /// rest of its side of a healed partition. With an empty table, rejoining does more.
    fn check_bootstrap(&mut self, now: Instant) {
        if self.table.is_empty() {
            return;
        }
        let n = self.bootstrap.len();
        for i in 0..n {
            let c = &self.bootstrap[(self.bootstrap_turn + i) % n];
            let key = c.key();
            if self.table.contains(&key)
                || self.table.replacement(&key) == Some(true)
                || self.is_liar(&key)
            {
                continue;
            }
            let c = c.clone();
            self.bootstrap_turn = (self.bootstrap_turn + i + 1) % n;
            self.stats.bootstrap_checks += 1;
            self.verify_stranger(now, c);
            return;
        }
    }

    /// A lookup request passed its soft timeout: its walk stops waiting for it.
    fn soft_timeout(&mut self, now: Instant, rpc: RpcId) {
        let Some(r) = self.rpcs.get_mut(&rpc) else {
            return;
        };
        r.soft = None;
        if std::mem::take(&mut r.slot) {
            self.slots_used -= 1;
        }
        let (Purpose::Query(q), key) = (r.purpose, r.to.key()) else {
            return;
        };
        if let Some(Some(Phase::AwaitingPeers(iter))) =
            self.queries.get_mut(&q).map(|q| q.phase.as_mut())
        {
            if iter.on_unresponsive(&key) {
                self.stats.soft_timeouts += 1;
            }
        }
        self.advance_query(now, q);
    }

    /// A lookup request passed its give-up time: it no longer holds its walk's finish.
    fn give_up(&mut self, now: Instant, rpc: RpcId) {
        let Some(r) = self.rpcs.get_mut(&rpc) else {
            return;
        };
        r.give_up = None;
        let (Purpose::Query(q), key) = (r.purpose, r.to.key()) else {
            return;
        };
        if let Some(Some(Phase::AwaitingPeers(iter))) =
            self.queries.get_mut(&q).map(|q| q.phase.as_mut())
        {
            iter.on_given_up(&key);
        }
        self.advance_query(now, q);
    }

    /// A query ran out of time: it finishes with what it has.
    fn expire_query(&mut self, now: Instant, id: QueryId) {
        match self.queries.get(&id).and_then(|q| q.phase.as_ref()) {
            Some(Phase::AwaitingPeers(_)) => self.finish_walk(now, id),
            Some(Phase::AwaitingAcks { .. }) => {
                if let Some(Some(Phase::AwaitingAcks { pending, .. })) =
                    self.queries.get_mut(&id).map(|q| q.phase.as_mut())
                {
                    *pending = 0;
                }
                self.on_announce_done_check(now, id);
            }
            None => {}
        }
    }

    /// Starts the due announcements the free slots allow; the others stay due, and
    /// [`poll_timeout`](Self::poll_timeout) names them again once a slot frees.
    fn republish(&mut self, now: Instant) {
        // Each turn starts one or moves one to later (intervals are positive): the loop ends.
        while let Some(&(at, key)) = self.provide_due.first() {
            if at > now || !self.may_announce() {
                break; // due until a query ends or a peer comes (`poll_timeout` waits)
            }
            // `may_announce` left room, and an announcement needs no peer to start, so this
            // cannot fail; were it to, the key is tried again after an RPC timeout.
            let _ = self.announce(now, key, true);
            if self.providing.get(&key).is_some_and(|&next| next <= now) {
                break; // an unvalidated zero interval: the key would be due again at once
            }
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

    /// Acts on what the table made of a peer that answered us.
    fn on_table_seen(&mut self, now: Instant, peer: P, seen: Seen<P>) {
        match seen {
            Seen::Inserted => {
                self.had_peers = true;
                self.push_event(Event::PeerAdded(peer));
                self.update_ready();
            }
            Seen::Replaced(old) => {
                self.push_event(Event::PeerRemoved(old));
                self.push_event(Event::PeerAdded(peer));
            }
            Seen::ProbeQuestionable(q) => self.send_probe(now, q),
            Seen::Refreshed | Seen::Cached | Seen::IsSelf | Seen::DiversityLimit => {}
        }
    }

    /// Pings a questionable entry the table marked as its bucket's probe.
    fn send_probe(&mut self, now: Instant, peer: P) {
        let key = peer.key();
        match self.send_rpc(now, peer, Request::Ping, Purpose::Probe) {
            Some(_) => self.stats.probes_sent += 1,
            None => self.table.probe_dropped(&key),
        }
    }

    /// Goes on sweeping `key`'s bucket if an entry of it failed recently.
    fn continue_sweep(&mut self, now: Instant, key: &Key) {
        if let Some(p) = self.table.continue_sweep(now, key) {
            self.send_probe(now, p);
        }
    }

    fn on_evicted(&mut self, now: Instant, ev: Evicted<P>) {
        self.push_event(Event::PeerRemoved(ev.removed));
        if let Some(p) = ev.promoted {
            self.push_event(Event::PeerAdded(p));
        }
        if let Some(p) = ev.verify {
            // Only verified peers are promoted: this one must answer first.
            self.verify_stranger(now, p);
        }
        if self.table.is_empty() {
            self.ready = false;
            self.push_event(Event::Isolated);
            if self.next_rejoin.is_none() {
                self.next_rejoin = Some(self.last_now + self.config.rejoin_interval);
            }
        }
    }

    /// Ends a request in flight (answered, failed or timed out), freeing its slot; the
    /// handler sends held requests once it is done (`release_held`).
    fn take_rpc(&mut self, rpc: RpcId) -> Option<Rpc<P>> {
        let r = self.rpcs.remove(&rpc)?;
        if r.slot {
            self.slots_used -= 1;
        }
        self.deadlines.remove(&(r.deadline, rpc));
        if let Some(soft) = r.soft {
            self.soft_deadlines.remove(&(soft, rpc));
        }
        if let Some(at) = r.give_up {
            self.give_up_deadlines.remove(&(at, rpc));
        }
        Some(r)
    }

    /// Sends held requests, oldest first, while slots are free; a lookup request whose walk
    /// has finished is dropped: nobody waits for its answer any more. Run at the end of
    /// every handler that can free a slot, after the walks heard what freed it.
    fn release_held(&mut self, now: Instant) {
        while self.slots_used < self.config.rpcs_in_flight_max {
            let Some(h) = self.held.pop_front() else {
                return;
            };
            let wanted = match h.purpose {
                Purpose::Query(id) => self
                    .queries
                    .get(&id)
                    .is_some_and(|q| matches!(q.phase, Some(Phase::AwaitingPeers(_)))),
                // An announcement stores our record whether or not its ack is awaited.
                Purpose::Announce(_) | Purpose::Probe | Purpose::Verify => true,
            };
            if wanted {
                self.start_rpc(now, h.rpc, h.to, h.request, h.purpose);
            } else {
                self.stats.held_dropped += 1;
            }
        }
    }

    /// The soft timeout of a request to `to`: for a contact, its own timeout (at least
    /// 2·SRTT, `Rtt::timeout`) plus one SRTT, room for the handshake a request needs when
    /// the connection was closed since; for a stranger, the 99th percentile of strangers'
    /// round trips (those usually include a handshake already), else the timeout of all
    /// answers plus one SRTT; else the initial value. Always within
    /// `[soft_timeout_min, rpc_timeout]`.
    fn soft_timeout_for(&self, to: &Key) -> std::time::Duration {
        let (min, max) = (self.config.soft_timeout_min, self.config.rpc_timeout);
        let with_handshake = |rtt: &Rtt| {
            let t = rtt.timeout(min, max)?;
            Some((t + rtt.srtt()?).min(max.max(min)))
        };
        match self.table.get(to) {
            Some(e) => with_handshake(&e.rtt),
            None => self.net_rtt.timeout(min, max),
        }
        .or_else(|| with_handshake(&self.any_rtt))
        .unwrap_or(self.config.soft_timeout_initial.clamp(min, max.max(min)))
    }

    /// How long after sending a lookup request with soft timeout `soft` the walk gives up
    /// on it: 5/4 of the longest round trip lately, if that is longer. A soft timeout is an
    /// estimate that frees slots, over near and far peers alike for a stranger, and a far
    /// peer answers after it as a matter of course; the give-up time bounds any live round
    /// trip. The longest round trip is the strangers' (handshake included); until
    /// [`RTT_SAMPLES_TRUSTED`] strangers answered, at least twice any answer's (a contact
    /// answers on an open connection, where a stranger first costs a handshake, about one
    /// more round trip of the same path) but no more than `soft_timeout_initial`. Until
    /// [`RTT_SAMPLES_TRUSTED`] answers were timed, a request to anyone but a measured
    /// contact is not given up before `soft_timeout_initial` (RFC 6298's initial timeout):
    /// a node's first lookups have not seen a far peer yet.
    ///
    /// Counting any answer there, not only strangers', matters under churn: a node with
    /// ideal or long-lived contacts times few strangers (a lookup's answers from table
    /// contacts are not theirs), and until it had timed 64 of them a dead candidate held
    /// its walks' finish for the whole initial timeout (PERFORMANCE.md, "Issue 12").
    fn give_up_after(&self, to: &Key, soft: std::time::Duration) -> std::time::Duration {
        let measured = self.table.get(to).is_some_and(|e| e.rtt.is_known());
        let floor = if measured || self.any_max_rtt.samples() >= RTT_SAMPLES_TRUSTED {
            std::time::Duration::ZERO
        } else {
            self.config.soft_timeout_initial
        };
        let zero = std::time::Duration::ZERO;
        let strangers = self.stranger_max_rtt.get().map_or(zero, |m| m + m / 4);
        // Never longer than the floor it replaces: with loss or a heavy tail, twice the
        // longest answer (a retransmitted one) passes the hard timeout.
        let anyone = if self.stranger_max_rtt.samples() >= RTT_SAMPLES_TRUSTED {
            zero
        } else {
            self.any_max_rtt.get().map_or(zero, |m| {
                (m * 2 + m / 2).min(self.config.soft_timeout_initial)
            })
        };
        soft.max(strangers).max(anyone).max(floor)
    }

    /// Queues a request, or holds it until a slot is free (`rpcs_in_flight_max`); `None`
    /// when the transmit queue is full (the caller treats that as a failure that is nobody's
    /// fault).
    fn send_rpc(
        &mut self,
        now: Instant,
        to: P,
        request: Request,
        purpose: Purpose,
    ) -> Option<RpcId> {
        if self.transmits.len() + self.held.len() >= self.config.transmits_max {
            self.stats.transmits_refused += 1;
            return None;
        }
        let rpc = RpcId(self.next_rpc);
        self.next_rpc += 1;
        if self.slots_used >= self.config.rpcs_in_flight_max || !self.held.is_empty() {
            self.stats.rpcs_held += 1;
            self.held.push_back(Held {
                rpc,
                to,
                request,
                purpose,
            });
        } else {
            self.start_rpc(now, rpc, to, request, purpose);
        }
        Some(rpc)
    }

    /// Puts a request in flight: its timeouts run from `now`, and it goes out with the next
    /// `poll_transmit`.
    fn start_rpc(&mut self, now: Instant, rpc: RpcId, to: P, request: Request, purpose: Purpose) {
        let deadline = now + self.config.rpc_timeout;
        let soft_after =
            matches!(purpose, Purpose::Query(_)).then(|| self.soft_timeout_for(&to.key()));
        let soft = soft_after.map(|d| now + d).filter(|s| *s < deadline);
        let give_up = soft_after
            .map(|d| now + self.give_up_after(&to.key(), d))
            .filter(|g| *g < deadline);
        self.rpcs.insert(
            rpc,
            Rpc {
                to: to.clone(),
                request,
                sent: now,
                deadline,
                soft,
                give_up,
                slot: true,
                purpose,
            },
        );
        self.slots_used += 1;
        self.deadlines.insert((deadline, rpc));
        if let Some(s) = soft {
            self.soft_deadlines.insert((s, rpc));
        }
        if let Some(g) = give_up {
            self.give_up_deadlines.insert((g, rpc));
        }
        self.transmits.push_back(Transmit { rpc, to, request });
        self.stats.rpcs_sent += 1;
    }

    fn rpc_failed(&mut self, now: Instant, r: Rpc<P>, why: RpcFailure) {
        self.stats.rpcs_failed += 1;
        let key = r.to.key();
        // A request sent before the contact was last seen alive (it asked us something or
        // answered since) failed on a path the peer has left, e.g. the connection of a
        // process that restarted with the same key: not held against the contact.
        let stale = self.table.get(&key).is_some_and(|e| e.last_seen > r.sent);
        let why = if why == RpcFailure::Peer && stale {
            RpcFailure::Refused
        } else {
            why
        };
        if why == RpcFailure::Peer {
            if let Some(ev) = self.table.on_failure_at(now, &key) {
                self.on_evicted(now, ev);
            }
        } else if r.purpose == Purpose::Probe {
            // Not the entry's fault: it is neither good nor failed, and may be probed again.
            self.table.probe_dropped(&key);
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
        if why == RpcFailure::Peer {
            self.continue_sweep(now, &key);
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
        let k = self.config.k;
        let hint = |e: &crate::routing::Entry<P>| {
            e.rtt.srtt().map_or(0, |d| {
                u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)
            })
        };
        // Contacts that failed since we last heard from them are out of consideration until
        // they answer again, unless nobody else is left.
        let mut seeds: Vec<(P, u32)> = self
            .table
            .closest_entries(&target, k, |e| e.failures == 0)
            .into_iter()
            .map(|e| (e.peer.clone(), hint(e)))
            .collect();
        if seeds.is_empty() {
            seeds = self
                .table
                .closest_entries(&target, k, |_| true)
                .into_iter()
                .map(|e| (e.peer.clone(), hint(e)))
                .collect();
        }
        // Extra seeds (the bootstrap contacts) skip a proven liar while anyone else is left
        // to ask: a node that joined through liars alone still asks them (RELIABILITY.md
        // D8), there being nobody else.
        let honest_extra = extra.iter().any(|p| !self.is_liar(&p.key()));
        for p in extra {
            if (honest_extra || !seeds.is_empty()) && self.is_liar(&p.key()) {
                continue;
            }
            if !seeds.iter().any(|(s, _)| s.key() == p.key()) {
                seeds.push((p, 0));
            }
        }
        if seeds.is_empty() && kind != QueryKind::Provide {
            return Err(CommandError::NoPeers);
        }
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let c = &self.config;
        let default_rtt = self.any_rtt.srtt().map_or(0, |d| {
            u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)
        });
        let iter = ClosestPeersIter::with_rtts(
            target,
            seeds,
            c.k,
            c.alpha,
            c.lookup_rpcs_max,
            c.lookup_candidates_max,
            default_rtt,
        );
        let deadline = now + c.query_timeout;
        // A provider lookup starts from the records we store ourselves (we may be among the
        // k closest to the key): claims like any answer's, and it finishes at once when
        // they are all it wants. We are no holder to fetch from.
        let mut query = Query {
            kind,
            target,
            started: now,
            deadline,
            providers: Vec::new(),
            reporters: Vec::new(),
            phase: Some(Phase::AwaitingPeers(iter)),
            scheduled: false,
        };
        if let QueryKind::GetProviders { .. } = kind {
            for p in self.records_of(now, &target) {
                if p.key() != self.local_key {
                    keep_provider(&mut query, p, self.local_key);
                }
            }
        }
        self.queries.insert(id, query);
        self.query_deadlines.insert((deadline, id));
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
                        // Our own queue is full: nobody's fault, but this walk moves on.
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
        if !self.held.is_empty() {
            let before = self.held.len();
            self.held.retain(|h| h.purpose != Purpose::Query(id));
            self.stats.held_dropped += (before - self.held.len()) as u64;
        }
        let Some(Phase::AwaitingPeers(iter)) = query.phase.take() else {
            return;
        };
        self.table.mark_refreshed(now, &query.target);
        let (mut closest, hops) = iter.result();
        if !self.liars.is_empty() {
            // Denied after they answered: not a result, a target or a holder to ask.
            closest.retain(|p| !self.is_liar(&p.key()));
            query.providers.retain(|p| !self.is_liar(&p.key()));
        }
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
            // A walk ended by its deadline had that deadline taken off the schedule; the
            // announcement phase keeps it (already due: the acks are not waited for).
            self.query_deadlines.insert((query.deadline, id));
            self.queries.insert(id, query);
            return self.on_announce_done_check(now, id);
        }
        self.query_deadlines.remove(&(query.deadline, id));
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
                self.next_thin_lookup = self.config.thin_table_lookup.map(|d| (now + d, d));
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
        self.query_deadlines.remove(&(query.deadline, id));
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
        if self.liars.len() > LIARS_MAX {
            return Err("more liars remembered than LIARS_MAX".into());
        }
        if let Some(k) = self
            .liars
            .keys()
            .find(|k| self.is_liar(k) && self.table.contains(k))
        {
            return Err(format!("liar {k:?} is in the table"));
        }
        if self.soft_deadlines.len() > self.rpcs.len()
            || self
                .soft_deadlines
                .iter()
                .any(|(s, id)| self.rpcs.get(id).is_none_or(|r| r.soft != Some(*s)))
        {
            return Err("a soft deadline has no matching rpc".into());
        }
        if self.give_up_deadlines.len() > self.rpcs.len()
            || self
                .give_up_deadlines
                .iter()
                .any(|(g, id)| self.rpcs.get(id).is_none_or(|r| r.give_up != Some(*g)))
        {
            return Err("a give-up time has no matching rpc".into());
        }
        if self.query_deadlines.len() != self.queries.len()
            || self
                .query_deadlines
                .iter()
                .any(|(d, id)| self.queries.get(id).is_none_or(|q| q.deadline != *d))
        {
            return Err("query deadlines disagree with the queries".into());
        }
        for (id, q) in &self.queries {
            let pending: Vec<&Rpc<P>> = self
                .rpcs
                .values()
                .filter(|r| r.purpose == Purpose::Query(*id))
                .collect();
            let soft_pending = pending.iter().filter(|r| r.soft.is_some()).count();
            // A request held for a slot is in flight for its walk (with no soft timeout yet).
            let held = self
                .held
                .iter()
                .filter(|h| h.purpose == Purpose::Query(*id))
                .count();
            match &q.phase {
                Some(Phase::AwaitingPeers(iter))
                    if iter.in_flight() + iter.unresponsive() != pending.len() + held
                        || iter.in_flight() < soft_pending + held =>
                {
                    return Err(format!(
                        "{id:?} thinks {} in flight and {} unresponsive, {} rpcs exist \
                         ({soft_pending} within their soft timeout), {held} held",
                        iter.in_flight(),
                        iter.unresponsive(),
                        pending.len()
                    ));
                }
                None => return Err(format!("{id:?} has no phase")),
                _ => {}
            }
        }
        if self.ready && (self.table.is_empty() || !self.joined) {
            return Err("ready without peers or without joining".into());
        }
        if self.transmits.len() + self.held.len() > self.config.transmits_max
            || self.events.len() > self.config.events_max
        {
            return Err("an output queue is over its bound".into());
        }
        let slots = self.rpcs.values().filter(|r| r.slot).count();
        if slots != self.slots_used || slots > self.config.rpcs_in_flight_max {
            return Err(format!(
                "{slots} requests hold a slot, {} counted, {} allowed",
                self.slots_used, self.config.rpcs_in_flight_max
            ));
        }
        if !self.held.is_empty() && slots < self.config.rpcs_in_flight_max {
            return Err(format!(
                "{} requests held with {slots} of {} slots used",
                self.held.len(),
                self.config.rpcs_in_flight_max
            ));
        }
        if let Some(h) = self.held.iter().find(|h| self.rpcs.contains_key(&h.rpc)) {
            return Err(format!("held request {:?} also in flight", h.rpc));
        }
        if self
            .held
            .iter()
            .zip(self.held.iter().skip(1))
            .any(|(a, b)| a.rpc >= b.rpc)
        {
            return Err("held requests out of order".into());
        }
        Ok(())
    }
}

/// Provider records a walk keeps at most: what one answer may carry (OAP/1's cap). A walk
/// that runs to the end (a GET's second pass) may meet many more, and a liar's are made up.
pub const PROVIDERS_PER_WALK_MAX: usize = 32;

/// Provider records a walk keeps from one reporter: an object has about rf holders, so
/// more from one node are stale or made up, and they would crowd out the others'.
pub const PROVIDERS_PER_REPORTER_MAX: usize = 8;

/// How long after its start a node runs its first liveness round: a whole `interval`, or
/// with `spread` the share of it its key's last two bytes give (`Config::liveness_spread`):
/// not its first, which XOR neighbours (each other's closest contacts) share.
fn first_liveness_round(
    interval: std::time::Duration,
    spread: bool,
    key: &Key,
) -> std::time::Duration {
    if !spread {
        return interval;
    }
    let share = u16::from_be_bytes([key.0[30], key.0[31]]);
    interval.mul_f64(f64::from(share) / 65_536.0)
}

/// A contact's known round trip in µs, 0 when unknown (a stranger, or never timed).
fn rtt_hint<P: Peer>(table: &RoutingTable<P>, key: &Key) -> u32 {
    table.get(key).and_then(|e| e.rtt.srtt()).map_or(0, |d| {
        u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)
    })
}

/// Adds `p`, reported by `reporter`, to `query`'s providers unless known or its reporter
/// already gave [`PROVIDERS_PER_REPORTER_MAX`]; past [`PROVIDERS_PER_WALK_MAX`], only in
/// place of a record whose reporter is farther from the key. Records are held at the key's
/// closest nodes, so the nearest reporters' are the ones that name its holders, while a
/// liar's, met earlier in the walk, are not; a record's own id proves nothing (a liar
/// makes up ids next to the key for free), its reporter's place in the walk does.
fn keep_provider<P: Peer>(query: &mut Query<P>, p: P, reporter: Key) {
    let key = p.key();
    if query.providers.iter().any(|x| x.key() == key)
        || query.reporters.iter().filter(|r| **r == reporter).count() >= PROVIDERS_PER_REPORTER_MAX
    {
        return;
    }
    if query.providers.len() < PROVIDERS_PER_WALK_MAX {
        query.providers.push(p);
        query.reporters.push(reporter);
        return;
    }
    let target = query.target;
    if let Some((i, far)) = query
        .reporters
        .iter()
        .map(|r| r.distance(&target))
        .enumerate()
        .max_by_key(|(_, d)| *d)
        && reporter.distance(&target) < far
    {
        query.providers[i] = p;
        query.reporters[i] = reporter;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{TestPeer, key_from_first as key, peer_from_first as peer};

    fn walk(target: Key) -> Query<TestPeer> {
        Query {
            kind: QueryKind::GetProviders { wanted: usize::MAX },
            target,
            started: Instant::ZERO,
            deadline: Instant::ZERO,
            providers: Vec::new(),
            reporters: Vec::new(),
            phase: None,
            scheduled: false,
        }
    }

    /// A walk that meets more records than it keeps keeps those its nearest reporters gave,
    /// at most eight from each: liars far from the key, met early, give way to the key's
    /// closest nodes, whatever ids the liars made up (next to the key, here).
    #[test]
    fn a_walk_keeps_the_records_of_the_reporters_nearest_the_key() {
        let target = key(0x00);
        let mut q = walk(target);
        // Four liars far from the key (0x80.., 0x90.., ...) each report ten made-up ids
        // right next to it: eight of each are kept.
        let mut made_up = 0u8;
        for liar in [0x80u8, 0x90, 0xa0, 0xb0] {
            for _ in 0..10 {
                made_up += 1;
                let mut id = [0u8; 32];
                id[31] = made_up;
                keep_provider(
                    &mut q,
                    TestPeer {
                        key: Key(id),
                        idx: 0,
                    },
                    key(liar),
                );
            }
        }
        assert_eq!(
            q.providers.len(),
            PROVIDERS_PER_WALK_MAX,
            "8 from each of 4"
        );
        let before = q.providers.clone();
        keep_provider(&mut q, before[0], key(0x01));
        assert_eq!(q.providers, before, "a known record is not added twice");
        // A farther reporter does not displace anyone.
        keep_provider(&mut q, peer(0x42), key(0xf0));
        assert!(!q.providers.contains(&peer(0x42)));
        // The key's closest nodes report the holders: their records replace the farthest
        // reporter's.
        keep_provider(&mut q, peer(0x41), key(0x01));
        keep_provider(&mut q, peer(0x43), key(0x02));
        assert_eq!(q.providers.len(), PROVIDERS_PER_WALK_MAX);
        assert!(q.providers.contains(&peer(0x41)) && q.providers.contains(&peer(0x43)));
        let from_b0 = q.reporters.iter().filter(|r| **r == key(0xb0)).count();
        assert_eq!(from_b0, 6, "the farthest liar lost two of its eight");
    }

    /// Nodes started together probe at once unless `liveness_spread` gives each its own
    /// share of the interval for its first round (simnet's 10^6 ideal tables, where every
    /// node starts at time zero).
    #[test]
    fn a_spread_first_liveness_round_comes_at_the_share_its_key_gives() {
        let interval = std::time::Duration::from_secs(60);
        // The share is the key's last two bytes over 2^16; its first bytes do not count.
        let first_round = |last: [u8; 2], spread: bool| {
            let config = Config {
                liveness_interval: Some(interval),
                liveness_spread: spread,
                bootstrap_check_interval: None,
                thin_table_lookup: None,
                ..Config::default()
            };
            let mut key = [0xa5u8; 32];
            key[30..].copy_from_slice(&last);
            let local = TestPeer {
                key: Key(key),
                idx: 0,
            };
            Dht::new(Instant::ZERO, local, config, 1).poll_timeout()
        };
        let at = |d| Some(Instant::ZERO + d);
        assert_eq!(first_round([0x80, 0], false), at(interval));
        assert_eq!(first_round([0x40, 0], false), at(interval));
        assert_eq!(first_round([0x80, 0], true), at(interval / 2));
        assert_eq!(first_round([0x40, 0], true), at(interval / 4));
        assert_eq!(first_round([0, 0], true), at(std::time::Duration::ZERO));
    }
}
