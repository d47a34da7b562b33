//! The QUIC transport: one quinn endpoint that dials and accepts OAP/1 connections, keeps one
//! connection per peer, and runs each request on its own bidirectional stream.
//!
//! It sits between the network and everything above it (the DHT driver, object transfer, the
//! gateway): those name peers by [`NodeId`] and exchange frames; this module owns sockets,
//! TLS, connection reuse, HELLO, limits and timeouts. Its invariants: a connection is used
//! only after TLS proved the peer's key, and only within terms HELLO cannot lower until
//! HELLO settled them (a dialer's first request may go right behind its HELLO, see `hello`;
//! a listener serves nothing before HELLO); every wait on a peer is
//! bounded by a configured timeout; every byte a peer sends is decoded under a bound and a
//! rule it breaks ends only its stream, counted by reason.
//!
//! Layout:
//! - [`config`]: [`TransportConfig`], the limits and timeouts with their defaults.
//! - `tls`: the Ed25519 certificate, the verifiers that check the peer's key, ALPN.
//! - `conn`: dialing and accepting, the per-connection serving task.
//! - `peers`: the connection table and its rule for simultaneous opens.
//! - `hello`: the HELLO exchange.
//! - `stream`: frames over one QUIC stream, decoding, sequencing, rejection.
//! - [`exchange`]: [`Exchange`] and [`InboundExchange`], the two ends of a request.
//! - `inbound`: routing inbound requests; [`InboundHandler`].
//! - [`stats`]: counters, also exported through the `metrics` facade.
//! - [`error`]: [`TransportError`] and the QUIC error codes.

pub mod config;
mod conn;
pub mod error;
pub mod exchange;
mod hello;
mod inbound;
mod peers;
pub mod stats;
mod stream;
mod tls;

#[cfg(test)]
mod pipeline_tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, broadcast};
use wire::control::{
    APP_PROTO_CONTROL, APP_PROTOS_MAX, ControlRequest, ControlResponse, Hello, Negotiated,
};
use wire::{Direction, Limits, NodeId, Status, message};

pub use config::TransportConfig;
pub use error::{TransportError, codes};
pub use exchange::{Exchange, InboundExchange};
pub use inbound::{HandlerFuture, InboundHandler, NoApps};
pub use peers::{PeerEvent, PeerInfo, Role};
pub use stats::{StatsSnapshot, TransportStats};
pub use tls::{ALPN, node_id_from_cert};

use crate::identity::Identity;
use peers::PeerTable;
use stats::Side;
use stream::FramedStream;
use tls::TlsSetup;

/// The node's QUIC endpoint speaking OAP/1. Cheap to clone; all clones share one endpoint.
///
/// Call [`close`](Self::close) for an orderly shutdown; dropping the last clone closes the
/// endpoint abruptly.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    _guard: Arc<EndpointGuard>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.shared.local_id)
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

/// Closes the endpoint when the last `Transport` clone goes, which ends the accept loop and
/// every connection task (they hold `Shared`, not this guard).
#[derive(Debug)]
struct EndpointGuard(quinn::Endpoint);

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.close(codes::SHUTDOWN, b"shutdown");
    }
}

/// Key of the per-target lock that coalesces concurrent dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum DialKey {
    Id(NodeId),
    Addr(SocketAddr),
}

/// State shared by the transport handle and its tasks.
pub(crate) struct Shared {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) local_id: NodeId,
    pub(crate) local_addr: SocketAddr,
    pub(crate) config: TransportConfig,
    pub(crate) tls: TlsSetup,
    pub(crate) quic: Arc<quinn::TransportConfig>,
    pub(crate) handler: Arc<dyn InboundHandler>,
    /// App protocols above control that the handler serves.
    pub(crate) served: Vec<u16>,
    /// Our HELLO statement.
    pub(crate) hello: Hello,
    pub(crate) peers: PeerTable,
    pub(crate) stats: Arc<TransportStats>,
    pub(crate) conn_slots: Arc<Semaphore>,
    /// Inbound handshakes in progress (`max_pending_handshakes`).
    pub(crate) handshake_slots: Arc<Semaphore>,
    pub(crate) inbound_slots: Arc<Semaphore>,
    dials: Mutex<BTreeMap<DialKey, Arc<tokio::sync::Mutex<()>>>>,
    next_corr: AtomicU64,
    pub(crate) events: broadcast::Sender<PeerEvent>,
    closing: AtomicBool,
}

impl Shared {
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A fresh correlation id (unique per transport).
    pub(crate) fn corr_id(&self) -> u64 {
        self.next_corr.fetch_add(1, Ordering::Relaxed)
    }

    /// The limits in force before HELLO lowered them.
    pub(crate) fn base_limits(&self) -> Limits {
        Limits::new(self.config.max_frame)
    }

    pub(crate) fn framed(
        &self,
        pair: (quinn::SendStream, quinn::RecvStream),
        limits: Limits,
        direction: Direction,
    ) -> FramedStream {
        FramedStream::new(
            pair,
            limits,
            direction,
            self.stats.clone(),
            self.config.io_timeout,
        )
    }

    /// A stream of an established connection: its partial frames count against the
    /// connection's buffer budget.
    pub(crate) fn framed_on(
        &self,
        pc: &peers::PeerConn,
        pair: (quinn::SendStream, quinn::RecvStream),
        direction: Direction,
    ) -> FramedStream {
        self.framed(pair, pc.limits, direction)
            .with_budget(pc.buffer.clone())
            .with_activity(pc.usage.begin())
    }

    /// A claim on the lock that coalesces dials of `key`; see [`DialClaim`].
    pub(crate) fn claim_dial(&self, key: DialKey) -> DialClaim<'_> {
        let mut dials = self.dials.lock().unwrap_or_else(PoisonError::into_inner);
        DialClaim {
            shared: self,
            key,
            lock: dials.entry(key).or_default().clone(),
        }
    }
}

/// A dialer's claim on the per-target dial lock: the lock is forgotten once its last
/// claim is dropped, also when a dial is cancelled midway (a probe's timeout, a reader
/// that left), or the map would keep an entry for every target ever dialed and given up.
pub(crate) struct DialClaim<'a> {
    shared: &'a Shared,
    key: DialKey,
    /// The lock the dialers of `key` take in turn.
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for DialClaim<'_> {
    fn drop(&mut self) {
        let mut dials = self
            .shared
            .dials
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else claims it.
        if dials
            .get(&self.key)
            .is_some_and(|l| Arc::ptr_eq(l, &self.lock) && Arc::strong_count(l) == 2)
        {
            dials.remove(&self.key);
        }
    }
}

impl Transport {
    /// Opens the endpoint on `config.listen` and starts accepting connections. Must be called
    /// from within a tokio runtime.
    pub fn bind(
        identity: Arc<Identity>,
        config: TransportConfig,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Transport, TransportError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(TransportError::Config(
                "Transport::bind must be called inside a tokio runtime".into(),
            ));
        }
        let mut served = handler.app_protos();
        served.retain(|p| *p != APP_PROTO_CONTROL);
        served.sort_unstable();
        served.dedup();
        if served.len() + 1 > APP_PROTOS_MAX {
            return Err(TransportError::Config(format!(
                "at most {} app protocols fit in HELLO",
                APP_PROTOS_MAX - 1
            )));
        }
        let quic = config.quic()?;
        let tls = TlsSetup::new(identity.clone(), config.zero_rtt)?;
        let server = tls.server_config(config.quic_before_hello()?, config.max_connections)?;
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            TransportError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let mut app_protos = vec![APP_PROTO_CONTROL];
        app_protos.extend_from_slice(&served);
        let hello = Hello::ours(
            config.max_frame,
            config.max_streams_per_connection,
            app_protos,
            advertised(&config, local_addr),
        );
        let (events, _) = broadcast::channel(config.events_capacity);
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            local_id: identity.node_id(),
            local_addr,
            tls,
            quic,
            handler,
            served,
            hello,
            peers: PeerTable::new(identity.node_id()),
            stats: Arc::new(TransportStats::default()),
            conn_slots: Arc::new(Semaphore::new(config.max_connections)),
            handshake_slots: Arc::new(Semaphore::new(config.max_pending_handshakes)),
            inbound_slots: Arc::new(Semaphore::new(config.max_inbound_requests)),
            dials: Mutex::new(BTreeMap::new()),
            next_corr: AtomicU64::new(1),
            events,
            closing: AtomicBool::new(false),
            config,
        });
        tokio::spawn(conn::accept_loop(shared.clone()));
        tracing::info!(node_id = %shared.local_id, %local_addr, "transport listening");
        Ok(Transport {
            shared,
            _guard: Arc::new(EndpointGuard(endpoint)),
        })
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.shared.local_id
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransportConfig {
        &self.shared.config
    }

    /// Live counters (frames, connections, rejections by reason).
    pub fn stats(&self) -> &TransportStats {
        &self.shared.stats
    }

    /// Connects to the node at `addr`, reusing the existing connection when there is one.
    ///
    /// With `expected`, the peer must prove that key or the dial fails with
    /// [`TransportError::PeerIdMismatch`]; without it (bootstrap by address) any valid key is
    /// accepted and returned in [`PeerInfo::id`]. TLS and HELLO together are bounded by
    /// `handshake_timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<PeerInfo, TransportError> {
        conn::connect(&self.shared, addr, expected, None)
            .await
            .map(|(info, _)| info)
    }

    /// Sends a one-frame-or-more request and returns the response's status and body, all
    /// within `request_timeout`. The peer must be connected.
    pub async fn request(
        &self,
        peer: NodeId,
        app_proto_id: u16,
        payload: Bytes,
    ) -> Result<(Status, Bytes), TransportError> {
        self.request_with_cap(peer, app_proto_id, Bytes::new(), payload)
            .await
    }

    /// Connects to `peer` at `addr` if needed and sends it one request, as
    /// [`connect`](Self::connect) then [`request`](Self::request) would, one round trip
    /// sooner on a new connection: the request goes out right after HELLO, not after HELLO's
    /// answer, when it fits the one frame every peer must accept before its answer
    /// (64 KiB). If HELLO fails, so does the request. The handshake is bounded by
    /// `handshake_timeout`, the response by `request_timeout`.
    pub async fn request_to(
        &self,
        addr: SocketAddr,
        peer: NodeId,
        app_proto_id: u16,
        payload: Bytes,
    ) -> Result<(Status, Bytes), TransportError> {
        let first = conn::FirstRequest::fitting(&self.shared, app_proto_id, &payload);
        // Timed from the dial: on a new connection the request leaves with it.
        let started = Instant::now();
        let mut early = match conn::connect(&self.shared, addr, Some(peer), first).await? {
            (_, Some(early)) => early,
            // Connected already (or by a dial we queued behind), or too large to go with
            // HELLO: an ordinary request on the connection.
            (_, None) => return self.request(peer, app_proto_id, payload).await,
        };
        let max = self.shared.config.max_response_bytes;
        let t = self.shared.config.request_timeout;
        let outcome = tokio::time::timeout(t, early.read_response(max)).await;
        self.request_done(app_proto_id, started, outcome)
    }

    /// [`request`](Self::request) with a capability token on the START frame.
    pub async fn request_with_cap(
        &self,
        peer: NodeId,
        app_proto_id: u16,
        cap: Bytes,
        payload: Bytes,
    ) -> Result<(Status, Bytes), TransportError> {
        let started = Instant::now();
        let config = &self.shared.config;
        let exchange = async {
            let mut ex = self.open_exchange(peer, app_proto_id, cap).await?;
            if config.request_timeout <= config.io_timeout {
                // The bound below ends the exchange first: a timer per wait would only cost.
                ex = ex.timed_by_caller();
            }
            ex.send_request(payload).await?;
            ex.read_response(config.max_response_bytes).await
        };
        let outcome = tokio::time::timeout(config.request_timeout, exchange).await;
        self.request_done(app_proto_id, started, outcome)
    }

    /// Ends a request bounded by `request_timeout`: a timeout becomes its error, and the
    /// exchange is counted, from `started`, in the client-side stats. (Not an async fn
    /// taking the exchange's future: that would hold the future twice in the caller's state,
    /// once as an argument and once inside the timeout, and every request would copy both.)
    fn request_done(
        &self,
        app_proto_id: u16,
        started: Instant,
        outcome: Result<Result<(Status, Bytes), TransportError>, tokio::time::error::Elapsed>,
    ) -> Result<(Status, Bytes), TransportError> {
        self.shared
            .stats
            .exchange_done(Side::Client, app_proto_id, started.elapsed());
        outcome.unwrap_or_else(|_| {
            Err(TransportError::Timeout {
                what: "request",
                after: self.shared.config.request_timeout,
            })
        })
    }

    /// Opens a streaming exchange with a connected peer (large transfers); `cap` goes on the
    /// first frame. Each step of the exchange is bounded by `io_timeout`.
    pub async fn open_exchange(
        &self,
        peer: NodeId,
        app_proto_id: u16,
        cap: Bytes,
    ) -> Result<Exchange, TransportError> {
        if self.shared.is_closing() {
            return Err(TransportError::Closed);
        }
        if cap.len() > u16::MAX as usize {
            return Err(TransportError::TooLarge {
                max: u16::MAX as usize,
            });
        }
        let pc = self
            .shared
            .peers
            .get(&peer)
            .ok_or(TransportError::NotConnected(peer))?;
        let t = self.shared.config.io_timeout;
        let pair = tokio::time::timeout(t, pc.conn.open_bi())
            .await
            .map_err(|_| TransportError::Timeout {
                what: "stream open",
                after: t,
            })??;
        let fs = self.shared.framed_on(&pc, pair, Direction::Responses);
        Ok(Exchange::new(
            fs,
            peer,
            app_proto_id,
            self.shared.corr_id(),
            cap,
        ))
    }

    /// Control-protocol PING to a connected peer; returns the round-trip time.
    pub async fn ping(&self, peer: NodeId) -> Result<Duration, TransportError> {
        let nonce = self.shared.corr_id();
        let started = tokio::time::Instant::now();
        let body = message::encode(&ControlRequest::Ping(nonce));
        let (status, reply) = self.request(peer, APP_PROTO_CONTROL, body).await?;
        if status != Status::Ok {
            return Err(TransportError::Status(status));
        }
        match message::decode::<ControlResponse>(&reply)? {
            ControlResponse::Pong(n) if n == nonce => Ok(started.elapsed()),
            _ => Err(TransportError::Handshake(
                "PING answered with the wrong nonce".into(),
            )),
        }
    }

    /// The connected peers, in id order.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.peers.list()
    }

    /// What we know about a connected peer.
    pub fn peer(&self, id: &NodeId) -> Option<PeerInfo> {
        self.shared.peers.get(id).map(|pc| (*pc.info).clone())
    }

    /// Where to dial a connected peer back ([`PeerInfo::dial_addr`]), without copying its
    /// [`PeerInfo`]: asked for every inbound DHT request.
    pub fn peer_dial_addr(&self, id: &NodeId) -> Option<SocketAddr> {
        self.shared.peers.dial_addr(id)
    }

    /// How many peers are connected.
    pub fn connection_count(&self) -> usize {
        self.shared.peers.len()
    }

    /// Closes the connection to `peer`, if any.
    pub fn disconnect(&self, peer: &NodeId) {
        if let Some(pc) = self.shared.peers.get(peer) {
            pc.conn.close(codes::SHUTDOWN, b"disconnect");
        }
    }

    /// Peer connect/disconnect events from now on. A receiver that falls more than
    /// `events_capacity` behind sees `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.shared.events.subscribe()
    }

    /// Orderly shutdown: refuse new connections, give inbound requests in flight up to
    /// `shutdown_grace` to finish, close every connection, and wait (bounded) for peers to
    /// hear it.
    pub async fn close(&self) {
        let s = &self.shared;
        if s.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        s.endpoint.set_server_config(None);
        let grace = s.config.shutdown_grace;
        let all = u32::try_from(s.config.max_inbound_requests).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, s.inbound_slots.acquire_many(all)).await;
        for pc in s.peers.drain() {
            pc.conn.close(codes::SHUTDOWN, b"shutdown");
        }
        s.endpoint.close(codes::SHUTDOWN, b"shutdown");
        let _ = tokio::time::timeout(grace, s.endpoint.wait_idle()).await;
        tracing::info!(node_id = %s.local_id, "transport closed");
    }

    /// For tests and tools: a TLS-authenticated QUIC connection with ALPN `oap/1` to `addr`,
    /// without HELLO and outside the peer table, so a caller can speak raw bytes on it.
    pub async fn dial_raw(
        &self,
        addr: SocketAddr,
        expected: Option<NodeId>,
    ) -> Result<quinn::Connection, TransportError> {
        let t = self.shared.config.handshake_timeout;
        match tokio::time::timeout(t, conn::quic_dial(&self.shared, addr, expected, false)).await {
            Ok(result) => result.map(|(conn, _, _)| conn),
            Err(_) => Err(TransportError::Timeout {
                what: "handshake",
                after: t,
            }),
        }
    }

    /// For tests and tools: [`dial_raw`](Self::dial_raw), but in 0-RTT when `zero_rtt` is on
    /// and we hold a session ticket from `expected`: returned before the handshake completes,
    /// with the future of its completion (`true`: the peer took the early data), so a caller
    /// can send raw early data, replay-safe or not, and see what the listener does with it.
    pub async fn dial_raw_early(
        &self,
        addr: SocketAddr,
        expected: NodeId,
    ) -> Result<(quinn::Connection, Option<quinn::ZeroRttAccepted>), TransportError> {
        let t = self.shared.config.handshake_timeout;
        let dial = conn::quic_dial(&self.shared, addr, Some(expected), true);
        match tokio::time::timeout(t, dial).await {
            Ok(result) => {
                result.map(|(conn, _, early)| (conn, early.map(|(accepted, _)| accepted)))
            }
            Err(_) => Err(TransportError::Timeout {
                what: "handshake",
                after: t,
            }),
        }
    }

    /// For tests and tools: runs HELLO as the dialer on a connection from
    /// [`dial_raw`](Self::dial_raw), leaving it outside the peer table.
    pub async fn raw_hello(&self, conn: &quinn::Connection) -> Result<Negotiated, TransportError> {
        let t = self.shared.config.handshake_timeout;
        match tokio::time::timeout(t, hello::dial(&self.shared, conn)).await {
            Ok(result) => result.map(|(_, terms)| terms),
            Err(_) => Err(TransportError::Timeout {
                what: "HELLO",
                after: t,
            }),
        }
    }
}

/// The listen addresses stated in HELLO.
fn advertised(config: &TransportConfig, local_addr: SocketAddr) -> Vec<String> {
    if !config.advertise_addrs.is_empty() {
        return config.advertise_addrs.clone();
    }
    if local_addr.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![local_addr.to_string()]
    }
}
