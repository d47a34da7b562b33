//! The DHT driver: one tokio task that owns the node's `overlay::Dht` and connects it to the
//! transport, the clock and the rest of the node.
//!
//! Shaped like quinn's connection driver: the task waits on one input (a command, the
//! outcome of an RPC, a peer event, or the state machine's timer), feeds it in, then drains
//! transmits and events with a cap per turn. No mutex guards the DHT, and the clock is read
//! in one place ([`Clock`]). No DHT logic lives here: the task only moves messages between
//! the state machine and QUIC streams.
//!
//! Layout:
//! - [`peer`]: [`NetPeer`] and the overlay ⇄ wire message mapping.
//! - `serve`: answering inbound app-protocol-1 requests through the driver.
//! - `blame`: whose failure a failed RPC or a closed connection is (ours never counts).
//! - [`contacts`]: the routing table's contacts saved in the data directory and dialed again
//!   at start, so a restarted node finds its way back without a bootstrap peer.

mod blame;
pub mod contacts;
pub mod peer;
mod serve;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use overlay::replication::TransferId;
use overlay::{
    Admission, Config, ConnectionEvent, Dht, Event, FailureCause, Key, Payer, PlacementWalk,
    PlanEvent, Planner, QueryId, QueryKind, QueryResult, QueryStats, Refusal, ReplicationConfig,
    Request, Response, RpcFailure, RpcId, TransferFault, TransferOutcome,
};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};
use wire::dht::{APP_PROTO_DHT, DhtResponse};
use wire::{NodeId, Status, message};

use crate::transport::{PeerEvent, Role, Transport};
use blame::RpcError;
pub(crate) use blame::transport_cause;
pub use peer::NetPeer;
pub use serve::serve_dht;

/// Commands queued to the driver at most; senders wait (backpressure) past this.
pub const COMMANDS_MAX: usize = 1024;
/// Outputs drained per turn of the loop, so one burst cannot starve the inputs.
pub const DRAIN_MAX: usize = 256;
/// RPC tasks alive at once, per slot of `overlay::Config::rpcs_in_flight_max`: the DHT
/// holds requests past its own cap, so this is a backstop, for lookup requests past their
/// soft timeout (they free their slot but are still timed) and tasks within their grace;
/// past it a transmit fails at once, as a shortage of ours.
const RPC_TASKS_PER_SLOT: usize = 2;
/// How long an RPC task may outlive the DHT's `rpc_timeout` for its request: a dial queued
/// behind another plus a request timeout could otherwise keep it (and its backstop slot)
/// for twice as long as the DHT waits for the answer.
const RPC_TASK_GRACE: Duration = Duration::from_secs(1);
/// Planned transfers queued for the repair worker; past this a transfer counts as failed
/// and is planned again later.
pub const PLANS_MAX: usize = 1024;

/// The node's one reading of time, mapped onto the overlay's virtual clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn new() -> Clock {
        Clock {
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, as the overlay counts time.
    pub fn now(&self) -> overlay::Instant {
        overlay::Instant::from_duration(self.start.elapsed())
    }

    /// An overlay instant as a tokio deadline.
    pub fn deadline(&self, t: overlay::Instant) -> tokio::time::Instant {
        self.start + t.as_duration()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// A query that could not run or finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DhtError {
    /// The overlay refused the command (too many queries, no peers).
    #[error("dht refused the query: {0}")]
    Command(#[from] overlay::CommandError),
    /// The driver stopped.
    #[error("dht driver is not running")]
    Stopped,
}

/// What a finished lookup found.
#[derive(Debug, Clone)]
pub struct LookupOutcome {
    /// Its result.
    pub result: QueryResult<NetPeer>,
    /// Its statistics.
    pub stats: QueryStats,
}

/// Finished lookups the status keeps, newest last.
pub const RECENT_LOOKUPS_MAX: usize = 16;

/// One finished lookup, for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentLookup {
    /// Hops to the closest peer found.
    pub hops: u32,
    /// How long it took.
    pub duration: Duration,
}

/// A snapshot of the DHT for health and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtStatus {
    /// Joined and with peers.
    pub ready: bool,
    /// Contacts in the routing table.
    pub routing_table_size: usize,
    /// Provider records held for others.
    pub provider_records: usize,
    /// Queries running.
    pub queries: usize,
    /// Counters of the state machine.
    pub rpcs_sent: u64,
    /// RPCs that failed or timed out.
    pub rpcs_failed: u64,
    /// Inbound requests answered.
    pub requests_handled: u64,
    /// Objects held locally.
    pub objects: usize,
    /// Mean copies known per local object, in thousandths (refreshed on timer turns).
    pub replicas_mean_milli: u64,
    /// Object transfers the planner handed out (repairs and writes' copies) and has not
    /// heard the end of yet.
    pub transfers_in_flight: usize,
    /// Contacts per non-empty bucket, `(bucket index, contacts)`, nearest bucket last
    /// (the status page draws the table's fill).
    pub buckets: Vec<(u16, u16)>,
    /// The last lookups to finish, oldest first, at most [`RECENT_LOOKUPS_MAX`].
    pub recent_lookups: Vec<RecentLookup>,
    /// Whether the routing table has ever held a peer, or the node was started with peers
    /// to join (`Dht::had_peers`). A node that never had one is alone by design (its writes
    /// need only its own copy); one that lost its peers, or has not reached them yet, is not.
    pub peers_seen: bool,
    /// Peers kept out of the table and walks for now, each caught lying
    /// (`Dht::peer_lied`).
    pub liars_denied: usize,
}

enum Command {
    Inbound {
        from: NetPeer,
        request: Request,
        reply: oneshot::Sender<Response<NetPeer>>,
    },
    /// A PING already answered (by `serve_dht`): only its effect on the table is left.
    Pinged {
        from: NetPeer,
    },
    FindNode {
        target: Key,
        reply: oneshot::Sender<Result<LookupOutcome, DhtError>>,
    },
    FindPlacement {
        key: Key,
        n: usize,
        reply: oneshot::Sender<Result<LookupOutcome, DhtError>>,
    },
    GetProviders {
        key: Key,
        wanted: usize,
        reply: oneshot::Sender<Result<LookupOutcome, DhtError>>,
    },
    Provide {
        key: Key,
        reply: oneshot::Sender<Result<LookupOutcome, DhtError>>,
    },
    Bootstrap {
        peers: Vec<NetPeer>,
    },
    Closest {
        key: Key,
        n: usize,
        reply: oneshot::Sender<Vec<NetPeer>>,
    },
    Table {
        reply: oneshot::Sender<Vec<NetPeer>>,
    },
    ContactsToSave {
        max: usize,
        reply: oneshot::Sender<Vec<NetPeer>>,
    },
    ObjectAdded {
        key: Key,
        size: u64,
    },
    ObjectsHeldAtStart {
        objects: Vec<(Key, u64)>,
        reply: oneshot::Sender<()>,
    },
    ObjectRemoved {
        key: Key,
    },
    HolderConfirmed {
        key: Key,
        holder: Key,
    },
    PeerLied {
        peer: NetPeer,
    },
    TransferDone {
        id: TransferId,
        outcome: TransferOutcome,
    },
    BeginExternal {
        key: Key,
        to: Key,
        reply: oneshot::Sender<Option<TransferId>>,
    },
    AdmitReplica {
        from: Key,
        key: Key,
        size: u64,
        reply: oneshot::Sender<Result<Payer, Refusal>>,
    },
    RefundReplica {
        payer: Payer,
        bytes: u64,
    },
    HoldsMailbox {
        key: Key,
        reply: oneshot::Sender<bool>,
    },
    TakesMailReplica {
        mailbox: Key,
        from: Key,
        reply: oneshot::Sender<bool>,
    },
}

/// A cheap handle to the driver: commands in, answers back on oneshot channels.
#[derive(Clone)]
pub struct DhtHandle {
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<DhtStatus>,
    local: NetPeer,
}

impl std::fmt::Debug for DhtHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhtHandle")
            .field("local", &self.local.id)
            .finish_non_exhaustive()
    }
}

impl DhtHandle {
    /// Our own peer handle.
    pub fn local(&self) -> &NetPeer {
        &self.local
    }

    /// The latest status snapshot.
    pub fn status(&self) -> DhtStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status says ready, or `timeout` passes; returns whether ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.status.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// The k closest nodes to `target`, by an iterative lookup.
    pub async fn find_node(&self, target: Key) -> Result<LookupOutcome, DhtError> {
        self.ask(|reply| Command::FindNode { target, reply })
            .await?
    }

    /// The candidates to place `n` copies of `key` at: a lookup's closest nodes, or the
    /// table's when no lookup can start (`overlay::Dht::find_placement`'s rule).
    pub async fn find_placement(&self, key: Key, n: usize) -> Result<Vec<NetPeer>, DhtError> {
        let out = self
            .ask(|reply| Command::FindPlacement { key, n, reply })
            .await??;
        Ok(match out.result {
            QueryResult::FindNode { closest } => closest,
            _ => Vec::new(),
        })
    }

    /// Providers of `key`; finishes once `wanted` are known.
    pub async fn get_providers(&self, key: Key, wanted: usize) -> Result<LookupOutcome, DhtError> {
        self.ask(|reply| Command::GetProviders { key, wanted, reply })
            .await?
    }

    /// Announces that we hold `key` (and keeps re-announcing it).
    pub async fn provide(&self, key: Key) -> Result<LookupOutcome, DhtError> {
        self.ask(|reply| Command::Provide { key, reply }).await?
    }

    /// The `n` closest peers to `key` in our routing table, without a lookup.
    pub async fn closest_known(&self, key: Key, n: usize) -> Result<Vec<NetPeer>, DhtError> {
        self.ask(|reply| Command::Closest { key, n, reply }).await
    }

    /// We now hold an object: plan its replicas.
    pub async fn object_added(&self, key: Key, size: u64) -> Result<(), DhtError> {
        self.send(Command::ObjectAdded { key, size }).await
    }

    /// Objects we held when we started: plan their replicas, and announce them as
    /// announcement slots free (`overlay::Dht::provide_paced`: a few at a time). Returns
    /// once the driver took them, so a caller handing over a large store sends one batch at
    /// a time: commands come first in the driver's loop, and a stream of one-object commands
    /// could hold back the answers to its requests for as long as the store takes to hand
    /// over; batches make that a few thousand short turns at 10^6 objects.
    pub async fn objects_held_at_start(&self, objects: Vec<(Key, u64)>) -> Result<(), DhtError> {
        self.ask(|reply| Command::ObjectsHeldAtStart { objects, reply })
            .await
    }

    /// We no longer hold an object.
    pub async fn object_removed(&self, key: Key) -> Result<(), DhtError> {
        self.send(Command::ObjectRemoved { key }).await
    }

    /// `holder` proved it holds `key` (it served us bytes of it that verified).
    pub async fn holder_confirmed(&self, key: Key, holder: Key) -> Result<(), DhtError> {
        self.send(Command::HolderConfirmed { key, holder }).await
    }

    /// `peer` answered a proof (a TAIL probe, a placement's proof: short ranges a holder
    /// verifies in its own store before it serves them) with bytes that fail verification
    /// under its own key: the DHT keeps it out for a while (`Dht::peer_lied`). Best effort:
    /// with the command queue full the report is dropped, and the liar is caught at its
    /// next lie.
    pub fn peer_lied(&self, peer: NetPeer) {
        let _ = self.tx.try_send(Command::PeerLied { peer });
    }

    /// The outcome of a transfer the planner asked for, or one the write path registered.
    pub async fn transfer_done(
        &self,
        id: TransferId,
        outcome: TransferOutcome,
    ) -> Result<(), DhtError> {
        self.send(Command::TransferDone { id, outcome }).await
    }

    /// The write path is pushing `key` to `to`: the planner will not plan it again. Returns
    /// the id to report the outcome with (`None` if a planned transfer already runs).
    pub async fn begin_external(&self, key: Key, to: Key) -> Result<Option<TransferId>, DhtError> {
        self.ask(|reply| Command::BeginExternal { key, to, reply })
            .await
    }

    /// Whether `from` may push us `size` bytes of `key` without a capability (the
    /// overlay's admission rule: a known sender, us among the RF closest, within budget),
    /// and the budget that paid.
    pub async fn admit_replica(
        &self,
        from: Key,
        key: Key,
        size: u64,
    ) -> Result<Result<Payer, Refusal>, DhtError> {
        self.ask(|reply| Command::AdmitReplica {
            from,
            key,
            size,
            reply,
        })
        .await
    }

    /// Gives back the bytes [`admit_replica`](Self::admit_replica) charged `payer` for a
    /// push that ended without them (`overlay::Admission::refund`). Not waited for: when
    /// the driver's queue is full the refund is lost, and the budget refills at its rate.
    pub fn refund_replica(&self, payer: Payer, bytes: u64) {
        if bytes > 0 {
            let _ = self.tx.try_send(Command::RefundReplica { payer, bytes });
        }
    }

    /// Whether mail for the mailbox with key `key` may be stored here (the overlay's rule:
    /// us among the 2·RF closest in our table, the set the owner's receive asks).
    pub async fn holds_mailbox(&self, key: Key) -> Result<bool, DhtError> {
        self.ask(|reply| Command::HoldsMailbox { key, reply }).await
    }

    /// Whether we take copies of mailbox `mailbox`'s messages handed on by `from`
    /// (REPLICATE; the overlay's rule, `Admission::takes_mail_replica`).
    pub async fn takes_mail_replica(&self, mailbox: Key, from: Key) -> Result<bool, DhtError> {
        self.ask(|reply| Command::TakesMailReplica {
            mailbox,
            from,
            reply,
        })
        .await
    }

    async fn send(&self, cmd: Command) -> Result<(), DhtError> {
        self.tx.send(cmd).await.map_err(|_| DhtError::Stopped)
    }

    /// Every contact in the routing table, far buckets first.
    pub async fn routing_table(&self) -> Result<Vec<NetPeer>, DhtError> {
        self.ask(|reply| Command::Table { reply }).await
    }

    /// At most `max` contacts worth keeping across a restart (the table's choice,
    /// `RoutingTable::contacts_to_save`).
    pub async fn contacts_to_save(&self, max: usize) -> Result<Vec<NetPeer>, DhtError> {
        self.ask(|reply| Command::ContactsToSave { max, reply })
            .await
    }

    /// Joins through these peers (already connected and verified by the transport).
    pub async fn bootstrap(&self, peers: Vec<NetPeer>) -> Result<(), DhtError> {
        self.tx
            .send(Command::Bootstrap { peers })
            .await
            .map_err(|_| DhtError::Stopped)
    }

    /// `from` pinged us and was answered already: the driver refreshes its contact. Waits
    /// only for room in the command queue, not for the driver to run.
    pub async fn pinged(&self, from: NetPeer) -> Result<(), DhtError> {
        self.send(Command::Pinged { from }).await
    }

    /// Hands an inbound request to the state machine and returns its answer.
    pub async fn inbound(
        &self,
        from: NetPeer,
        request: Request,
    ) -> Result<Response<NetPeer>, DhtError> {
        self.ask(|reply| Command::Inbound {
            from,
            request,
            reply,
        })
        .await
    }
}

struct RpcOutcome {
    rpc: RpcId,
    response: Result<Response<NetPeer>, RpcFailure>,
}

/// The task that owns the `Dht`.
struct Driver {
    dht: Dht<NetPeer>,
    planner: Planner<NetPeer>,
    admission: Admission,
    plans: mpsc::Sender<PlanEvent<NetPeer>>,
    replicas_mean_milli: u64,
    recent_lookups: std::collections::VecDeque<RecentLookup>,
    clock: Clock,
    transport: Transport,
    local_id: NodeId,
    commands: mpsc::Receiver<Command>,
    outcomes_tx: mpsc::Sender<RpcOutcome>,
    outcomes: mpsc::Receiver<RpcOutcome>,
    peer_events: broadcast::Receiver<PeerEvent>,
    waiting: BTreeMap<QueryId, oneshot::Sender<Result<LookupOutcome, DhtError>>>,
    rpc_slots: Arc<Semaphore>,
    status: watch::Sender<DhtStatus>,
    requests_handled: CountByKind,
    rpcs_sent: CountByKind,
    /// `dht_routing_table_peers`, set after every input: its handle is looked up once.
    table_gauge: OnceLock<metrics::Gauge>,
    /// `dht_rpcs_held_total`, likewise.
    held_counter: OnceLock<metrics::Counter>,
    /// The state machines' next deadline, armed once and moved only when it changes (a
    /// new timer per input cost a registration and a removal on every DHT request).
    timer: Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<tokio::time::Instant>,
    /// The status's bucket fill and the table size it was counted at: counted again when
    /// the size changes and on every timer turn, not after every input (it is a pass over
    /// the whole table).
    fill: Option<(usize, Vec<(u16, u16)>)>,
}

/// Starts the driver for `transport`'s node; it runs until `shutdown` flips to true.
/// `expect_peers`: the node was given peers to join or remembers some, so it is never taken
/// for a mesh of one (`overlay::Dht::expect_peers`).
pub fn spawn(
    transport: Transport,
    listen: SocketAddr,
    config: Config,
    replication: ReplicationConfig,
    seed: u64,
    expect_peers: bool,
    mut shutdown: watch::Receiver<bool>,
) -> (DhtHandle, mpsc::Receiver<PlanEvent<NetPeer>>) {
    let clock = Clock::new();
    let local = NetPeer::new(transport.node_id(), listen);
    let (tx, commands) = mpsc::channel(COMMANDS_MAX);
    // Within what a channel and a semaphore accept, whatever the configuration says.
    let rpc_tasks_max = config
        .rpcs_in_flight_max
        .saturating_mul(RPC_TASKS_PER_SLOT)
        .clamp(1, Semaphore::MAX_PERMITS);
    let (outcomes_tx, outcomes) = mpsc::channel(rpc_tasks_max);
    let (status_tx, status) = watch::channel(DhtStatus {
        peers_seen: expect_peers,
        ..DhtStatus::default()
    });
    let mut dht = Dht::new(clock.now(), local.clone(), config, seed);
    if expect_peers {
        dht.expect_peers();
    }
    let peer_events = transport.subscribe();
    let (plans_tx, plans) = mpsc::channel(PLANS_MAX);
    let mut driver = Driver {
        admission: Admission::new(local.key, &replication),
        planner: Planner::new(clock.now(), local.key, replication),
        plans: plans_tx,
        replicas_mean_milli: 0,
        recent_lookups: std::collections::VecDeque::with_capacity(RECENT_LOOKUPS_MAX),
        dht,
        clock,
        local_id: transport.node_id(),
        transport,
        commands,
        outcomes_tx,
        outcomes,
        peer_events,
        waiting: BTreeMap::new(),
        rpc_slots: Arc::new(Semaphore::new(rpc_tasks_max)),
        status: status_tx,
        requests_handled: CountByKind::new("dht_requests_handled_total"),
        rpcs_sent: CountByKind::new("dht_rpcs_sent_total"),
        table_gauge: OnceLock::new(),
        held_counter: OnceLock::new(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        timer_at: None,
        fill: None,
    };
    tokio::spawn(async move {
        // One wait for shutdown across turns (any change, or its sender gone): a new
        // `changed()` per turn registered and dropped a waiter on every input.
        let stop = shutdown.changed();
        tokio::pin!(stop);
        while driver.turn(stop.as_mut()).await {
            driver.drain();
        }
        tracing::debug!("dht driver stopped");
    });
    (DhtHandle { tx, status, local }, plans)
}

impl Driver {
    /// Waits for one input and feeds it in; false when it is time to stop.
    async fn turn(&mut self, stop: Pin<&mut impl Future>) -> bool {
        let next = overlay::timer::next_timeout(&self.dht, Some(&self.planner));
        let deadline = next.map(|t| self.clock.deadline(t));
        if deadline != self.timer_at {
            if let Some(d) = deadline {
                self.timer.as_mut().reset(d);
            }
            self.timer_at = deadline;
        }
        let armed = deadline.is_some();
        tokio::select! {
            biased;
            _ = stop => return false,
            cmd = self.commands.recv() => match cmd {
                Some(cmd) => self.on_command(cmd),
                None => return false,
            },
            Some(out) = self.outcomes.recv() => {
                let now = self.clock.now();
                match out.response {
                    Ok(r) => self.dht.handle_response(now, out.rpc, r),
                    Err(why) => self.dht.handle_rpc_failure(now, out.rpc, why),
                }
            }
            ev = self.peer_events.recv() => self.on_peer_event(ev),
            () = self.timer.as_mut(), if armed => {
                // Fired: the next turn arms it again, whatever its deadline.
                self.timer_at = None;
                self.fill = None;
                let now = self.clock.now();
                overlay::timer::handle_timeout(now, &mut self.dht, Some(&mut self.planner));
                // O(objects): refreshed on timer turns only, not after every message.
                self.replicas_mean_milli = (self.planner.copies_mean().1 * 1000.0) as u64;
            }
        }
        true
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Inbound {
                from,
                request,
                reply,
            } => {
                self.requests_handled.increment(&request);
                let _ = reply.send(self.dht.handle_request(now, from, request));
            }
            Command::Pinged { from } => {
                self.requests_handled.increment(&Request::Ping);
                let _ = self.dht.handle_request(now, from, Request::Ping);
            }
            Command::FindNode { target, reply } => {
                let started = self.dht.find_node(now, target);
                self.track(started, reply);
            }
            Command::FindPlacement { key, n, reply } => {
                match self.dht.find_placement(now, key, n) {
                    PlacementWalk::Started(id) => self.track(Ok(id), reply),
                    // No lookup ran: the table's closest, with a walk of nothing.
                    PlacementWalk::Table(closest) => {
                        let _ = reply.send(Ok(LookupOutcome {
                            result: QueryResult::FindNode { closest },
                            stats: QueryStats {
                                kind: QueryKind::FindNode,
                                target: key,
                                hops: 0,
                                rpcs: 0,
                                timeouts: 0,
                                duration: Duration::ZERO,
                            },
                        }));
                    }
                }
            }
            Command::GetProviders { key, wanted, reply } => {
                let started = self.dht.get_providers(now, key, wanted);
                self.track(started, reply);
            }
            Command::Provide { key, reply } => {
                let started = self.dht.start_providing(now, key);
                self.track(started, reply);
            }
            Command::Bootstrap { peers } => {
                if let Err(e) = self.dht.bootstrap(now, peers) {
                    tracing::warn!(error = %e, "bootstrap could not start");
                }
            }
            Command::Closest { key, n, reply } => {
                let _ = reply.send(self.dht.closest_known(&key, n));
            }
            Command::ObjectAdded { key, size } => self.planner.add_object(now, key, size),
            Command::ObjectsHeldAtStart { objects, reply } => {
                for (key, size) in objects {
                    self.planner.add_object(now, key, size);
                    self.dht.provide_paced(now, key);
                }
                let _ = reply.send(());
            }
            // Gone from our store: no longer one of its copies, and no longer announced.
            Command::ObjectRemoved { key } => {
                self.planner.remove_object(&key);
                self.dht.stop_providing(&key);
            }
            Command::HolderConfirmed { key, holder } => {
                self.planner.handle_holder_confirmed(now, &key, &holder)
            }
            Command::PeerLied { peer } => self.dht.peer_lied(now, peer, "object_proof"),
            Command::TransferDone { id, outcome } => {
                self.planner.handle_transfer_done(now, id, outcome)
            }
            Command::BeginExternal { key, to, reply } => {
                let _ = reply.send(self.planner.begin_external(key, to));
            }
            Command::AdmitReplica {
                from,
                key,
                size,
                reply,
            } => {
                let verdict =
                    self.admission
                        .check(now, self.dht.routing_table(), &from, &key, size);
                let _ = reply.send(verdict);
            }
            Command::RefundReplica { payer, bytes } => {
                self.admission.refund(payer, bytes);
            }
            Command::HoldsMailbox { key, reply } => {
                let _ = reply.send(self.admission.holds_mailbox(self.dht.routing_table(), &key));
            }
            Command::TakesMailReplica {
                mailbox,
                from,
                reply,
            } => {
                let table = self.dht.routing_table();
                let _ = reply.send(self.admission.takes_mail_replica(table, &mailbox, &from));
            }
            Command::ContactsToSave { max, reply } => {
                let _ = reply.send(self.dht.routing_table().contacts_to_save(max));
            }
            Command::Table { reply } => {
                let table = self
                    .dht
                    .routing_table()
                    .iter()
                    .map(|e| e.peer.clone())
                    .collect();
                let _ = reply.send(table);
            }
        }
    }

    fn track(
        &mut self,
        started: Result<QueryId, overlay::CommandError>,
        reply: oneshot::Sender<Result<LookupOutcome, DhtError>>,
    ) {
        match started {
            Ok(id) => {
                self.waiting.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn on_peer_event(&mut self, ev: Result<PeerEvent, broadcast::error::RecvError>) {
        match ev {
            // What the connection means for the table is the overlay's rule.
            Ok(PeerEvent::Connected(info)) => {
                let peer = NetPeer::new(info.id, info.dial_addr());
                let event = match info.role {
                    Role::Dialed => ConnectionEvent::Dialed(peer),
                    Role::Accepted => ConnectionEvent::Accepted(peer),
                };
                self.dht.handle_connection(self.clock.now(), event);
            }
            Ok(PeerEvent::Disconnected {
                id,
                reason,
                peer_left,
                closed_here,
            }) => {
                let event = blame::ended(Key::for_node(&id), peer_left, closed_here, &reason);
                if matches!(event, ConnectionEvent::Lost(_)) {
                    metrics::counter!("dht_connections_lost_total").increment(1);
                }
                self.dht.handle_connection(self.clock.now(), event);
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!("bus_lagged_total", "bus" => "peer_events").increment(n);
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// Drains what the last input produced, a bounded amount per turn.
    fn drain(&mut self) {
        for _ in 0..DRAIN_MAX {
            let Some(t) = self.dht.poll_transmit() else {
                break;
            };
            self.send(t.rpc, t.to, t.request);
        }
        for _ in 0..DRAIN_MAX {
            let Some(ev) = self.dht.poll_event() else {
                break;
            };
            self.on_event(ev);
        }
        for _ in 0..DRAIN_MAX {
            let Some(plan) = self.planner.poll_event() else {
                break;
            };
            if let Err(mpsc::error::TrySendError::Full(PlanEvent::Transfer { id, .. })) =
                self.plans.try_send(plan)
            {
                // The worker is saturated: this transfer is planned again on the next round,
                // and its target is not to blame.
                self.planner.handle_transfer_done(
                    self.clock.now(),
                    id,
                    TransferOutcome::Failed(TransferFault::OurQueue),
                );
            }
        }
        let s = self.dht.stats();
        let status = DhtStatus {
            ready: self.dht.is_ready(),
            routing_table_size: self.dht.routing_table().len(),
            provider_records: self.dht.provider_records(),
            queries: self.dht.queries_running(),
            rpcs_sent: s.rpcs_sent,
            rpcs_failed: s.rpcs_failed,
            requests_handled: s.requests_handled,
            objects: self.planner.objects(),
            replicas_mean_milli: self.replicas_mean_milli,
            transfers_in_flight: self.planner.transfers_in_flight(),
            buckets: self.fill_now(),
            recent_lookups: self.recent_lookups.iter().copied().collect(),
            peers_seen: self.dht.had_peers(),
            liars_denied: self.dht.liars_denied(),
        };
        self.table_gauge
            .get_or_init(|| metrics::gauge!("dht_routing_table_peers"))
            .set(status.routing_table_size as f64);
        self.held_counter
            .get_or_init(|| metrics::counter!("dht_rpcs_held_total"))
            .absolute(s.rpcs_held);
        self.status.send_if_modified(|old| {
            let changed = *old != status;
            *old = status;
            changed
        });
    }

    /// The bucket fill, counted again only when the table's size changed since (see
    /// `fill`).
    fn fill_now(&mut self) -> Vec<(u16, u16)> {
        let len = self.dht.routing_table().len();
        match &self.fill {
            Some((at, fill)) if *at == len => fill.clone(),
            _ => {
                let fill = self.bucket_fill();
                self.fill = Some((len, fill.clone()));
                fill
            }
        }
    }

    /// Contacts per non-empty bucket of the routing table.
    fn bucket_fill(&self) -> Vec<(u16, u16)> {
        let table = self.dht.routing_table();
        let local = table.local_key();
        let mut fill: BTreeMap<u16, u16> = BTreeMap::new();
        for e in table.iter() {
            if let Some(b) = local.bucket_of(&e.peer.key) {
                let n = fill
                    .entry(u16::try_from(b).unwrap_or(u16::MAX))
                    .or_default();
                *n = n.saturating_add(1);
            }
        }
        fill.into_iter().collect()
    }

    fn on_event(&mut self, ev: Event<NetPeer>) {
        self.planner.handle_dht_event(self.clock.now(), &ev);
        match ev {
            Event::QueryFinished { id, result, stats } => {
                metrics::histogram!("dht_lookup_hops").record(f64::from(stats.hops));
                metrics::histogram!("dht_lookup_seconds").record(stats.duration.as_secs_f64());
                if self.recent_lookups.len() == RECENT_LOOKUPS_MAX {
                    self.recent_lookups.pop_front();
                }
                self.recent_lookups.push_back(RecentLookup {
                    hops: stats.hops,
                    duration: stats.duration,
                });
                if let Some(reply) = self.waiting.remove(&id) {
                    let _ = reply.send(Ok(LookupOutcome { result, stats }));
                }
            }
            Event::Ready => {
                tracing::info!(peers = self.dht.routing_table().len(), "joined the mesh")
            }
            Event::Isolated => tracing::warn!("lost every peer; retrying bootstrap contacts"),
            Event::PeerAdded(p) => tracing::debug!(peer = %p.id, "routing table +"),
            Event::PeerRemoved(p) => tracing::debug!(peer = %p.id, "routing table -"),
            Event::PeerMisbehaved { peer, reason } => {
                metrics::counter!("dht_misbehaved_total", "reason" => reason).increment(1);
                tracing::debug!(peer = %peer.id, reason, "peer misbehaved");
            }
        }
    }

    /// Sends one RPC on its own task; the outcome comes back through `outcomes`.
    fn send(&mut self, rpc: RpcId, to: NetPeer, request: Request) {
        self.rpcs_sent.increment(&request);
        let Ok(permit) = self.rpc_slots.clone().try_acquire_owned() else {
            // Tasks outlived their requests in the DHT (which holds requests past its own
            // cap): fail it now rather than queue without bound. A shortage of ours, never
            // counted against the peer.
            metrics::counter!("dht_rpcs_failed_total", "blame" => "local").increment(1);
            self.dht
                .handle_rpc_failure(self.clock.now(), rpc, FailureCause::RequestSlots);
            return;
        };
        let transport = self.transport.clone();
        let outcomes = self.outcomes_tx.clone();
        let local = self.local_id;
        let wait = self.dht.config().rpc_timeout + RPC_TASK_GRACE;
        tokio::spawn(async move {
            let response = tokio::time::timeout(wait, rpc_once(&transport, &to, &request, &local))
                .await
                .unwrap_or(Err(RpcError::TimedOut));
            if let Err(e) = &response {
                tracing::debug!(peer = %to.id, error = %e, "dht rpc failed");
            }
            let response = response.map_err(|e| {
                let blame = e.cause().blame();
                metrics::counter!("dht_rpcs_failed_total", "blame" => blame_label(blame))
                    .increment(1);
                blame
            });
            let _ = outcomes.send(RpcOutcome { rpc, response }).await;
            drop(permit);
        });
    }
}

/// A request's kind: its slot in a [`CountByKind`] and its label in `dht_rpcs_sent_total`
/// and `dht_requests_handled_total`; pings against FIND_NODEs is how a probe cascade shows
/// (`testing/tests/dht_probes.rs`).
fn kind(r: &Request) -> (usize, &'static str) {
    match r {
        Request::Ping => (0, "ping"),
        Request::FindNode(_) => (1, "find_node"),
        Request::GetProviders(_) => (2, "get_providers"),
        Request::AddProvider(_) => (3, "add_provider"),
    }
}

/// A counter labelled by request kind whose handles are looked up once: every RPC and every
/// inbound request is counted, and a lookup by name hashes the name and its labels.
struct CountByKind {
    name: &'static str,
    handles: [OnceLock<metrics::Counter>; 4],
}

impl CountByKind {
    fn new(name: &'static str) -> CountByKind {
        CountByKind {
            name,
            handles: Default::default(),
        }
    }

    fn increment(&self, r: &Request) {
        let (i, label) = kind(r);
        self.handles[i]
            .get_or_init(|| metrics::counter!(self.name, "kind" => label))
            .increment(1);
    }
}

/// The `blame` label of `dht_rpcs_failed_total`.
fn blame_label(b: RpcFailure) -> &'static str {
    match b {
        RpcFailure::Peer => "peer",
        RpcFailure::Refused => "refused",
        RpcFailure::Local => "local",
    }
}

async fn rpc_once(
    t: &Transport,
    to: &NetPeer,
    request: &Request,
    local: &NodeId,
) -> Result<Response<NetPeer>, RpcError> {
    let body = message::encode(&peer::request_to_wire(request));
    // To a peer we hold no connection to, the request goes out with HELLO.
    let (status, reply) = t.request_to(to.addr, to.id, APP_PROTO_DHT, body).await?;
    match status {
        Status::Ok => {
            let r: DhtResponse = message::decode(&reply)?;
            Ok(peer::response_from_wire(r, local))
        }
        Status::Unavailable if matches!(request, Request::AddProvider(_)) => Ok(Response::Refused),
        other => Err(RpcError::Status(other)),
    }
}
