//! Connections: dialing, accepting, and the task that serves each one until it closes.
//!
//! Both directions follow the same path: TLS proves the peer's key (see `tls`), HELLO settles
//! the terms, and only then does the connection enter the peer table and start serving
//! streams. A dial may carry a [`FirstRequest`]: sent on the stream after HELLO's, before
//! HELLO's answer, so a first request to a new peer costs the handshake and one round trip;
//! its exchange is handed back once HELLO succeeded, and fails with it otherwise.
//!
//! A dial holds one of the `max_connections` slots from before its handshake; an inbound
//! connection holds one of `max_pending_handshakes` during its handshake and takes a
//! connection slot only after HELLO, so strangers that handshake in a burst cannot take
//! every slot before a real peer gets one; until then its receive window is the small
//! pre-HELLO one (`TransportConfig::quic_before_hello`). At the limit, a new connection
//! takes the slot of the idlest connection (`PeerTable::idlest`): a slot is kept by use.
//! The handshake plus HELLO is bounded by `handshake_timeout`. Concurrent dials of one peer
//! are coalesced behind a per-target lock, so a burst of requests to a new peer opens one
//! connection (and only the first of them goes with HELLO).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::VarInt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wire::control::{Hello, Negotiated};
use wire::{Direction, HEADER_LEN, Limits, NodeId};

use super::error::{TransportError, codes};
use super::exchange::Exchange;
use super::peers::{PeerConn, PeerEvent, PeerInfo, Registered, Role};
use super::{DialKey, Shared, hello, inbound, tls};

/// A request to send on a new connection right after HELLO, without waiting for HELLO's
/// answer (see `hello`). Its single frame holds to `hello::PRE_HELLO_MAX_FRAME`.
#[derive(Clone)]
pub(crate) struct FirstRequest {
    pub(crate) app_proto_id: u16,
    pub(crate) payload: Bytes,
    /// It may go out as 0-RTT data (`InboundHandler::replay_safe`).
    pub(crate) replay_safe: bool,
}

impl FirstRequest {
    /// `payload` for `app_proto_id`, if it fits the one frame a request may send before
    /// HELLO's answer; else it has to wait for the connection.
    pub(crate) fn fitting(
        shared: &Shared,
        app_proto_id: u16,
        payload: &Bytes,
    ) -> Option<FirstRequest> {
        (HEADER_LEN + payload.len() <= hello::PRE_HELLO_MAX_FRAME as usize).then(|| FirstRequest {
            app_proto_id,
            payload: payload.clone(),
            replay_safe: shared.handler.replay_safe(app_proto_id, payload),
        })
    }
}

/// Returns the connection to `expected` (or to whoever is at `addr`), dialing it if needed.
/// A new connection carries `first`, if given, with its HELLO; its exchange comes back,
/// waiting for the response. On an existing connection `first` is not sent.
pub(crate) async fn connect(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    expected: Option<NodeId>,
    first: Option<FirstRequest>,
) -> Result<(PeerInfo, Option<Exchange>), TransportError> {
    if shared.is_closing() {
        return Err(TransportError::Closed);
    }
    if expected == Some(shared.local_id) {
        return Err(TransportError::SelfDial);
    }
    if let Some(pc) = existing(shared, addr, expected) {
        return Ok(((*pc.info).clone(), None));
    }
    let key = expected.map_or(DialKey::Addr(addr), DialKey::Id);
    let claim = shared.claim_dial(key);
    let t = shared.config.handshake_timeout;
    match tokio::time::timeout(t, claim.lock.lock()).await {
        Err(_) => Err(TransportError::Timeout {
            what: "concurrent dial",
            after: t,
        }),
        Ok(_guard) => match existing(shared, addr, expected) {
            Some(pc) => Ok(((*pc.info).clone(), None)),
            None => dial(shared, addr, expected, first).await,
        },
    }
}

fn existing(shared: &Shared, addr: SocketAddr, expected: Option<NodeId>) -> Option<PeerConn> {
    match expected {
        Some(id) => shared.peers.get(&id),
        None => shared.peers.find_by_addr(addr),
    }
}

async fn dial(
    shared: &Arc<Shared>,
    addr: SocketAddr,
    expected: Option<NodeId>,
    first: Option<FirstRequest>,
) -> Result<(PeerInfo, Option<Exchange>), TransportError> {
    let slot = take_slot(shared)
        .await
        .ok_or(TransportError::TooManyConnections {
            max: shared.config.max_connections,
        })?;
    let t = shared.config.handshake_timeout;
    let opened = Instant::now();
    let outcome = tokio::time::timeout(t, handshake_out(shared, addr, expected, first)).await;
    let (conn, id, (hello, terms), early) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            shared.stats.handshake_failed();
            return Err(e);
        }
        Err(_) => {
            shared.stats.handshake_failed();
            return Err(TransportError::Timeout {
                what: "handshake",
                after: t,
            });
        }
    };
    shared.stats.connection_dialed();
    let pc = peer_conn(
        &shared.config,
        conn,
        id,
        addr,
        (Role::Dialed, opened),
        (hello, terms),
        done(),
    );
    let early = early.map(|ex| ex.joined(&pc));
    Ok((install(shared, pc, slot), early))
}

/// What a dial settled: the connection, the peer's id, HELLO's outcome, and the exchange of
/// the request sent with HELLO, if any.
type Dialed = (
    quinn::Connection,
    NodeId,
    (Hello, Negotiated),
    Option<Exchange>,
);

/// A handshake state that is complete (see `PeerConn::handshake`).
fn done() -> tokio::sync::watch::Receiver<bool> {
    tokio::sync::watch::channel(true).1
}

/// TLS, then HELLO and `first` sent back to back, then HELLO's answer. A failure of either
/// closes the connection as a failed HELLO: the request never outlives its connection's
/// HELLO. With a session ticket for the peer, HELLO and a replay-safe `first` go as 0-RTT
/// data; if the peer refuses it, they are sent again once the handshake completed.
async fn handshake_out(
    shared: &Shared,
    addr: SocketAddr,
    expected: Option<NodeId>,
    first: Option<FirstRequest>,
) -> Result<Dialed, TransportError> {
    let replay_safe = first.as_ref().is_none_or(|f| f.replay_safe);
    let (conn, id, zero_rtt) = quic_dial(shared, addr, expected, replay_safe).await?;
    let mut outcome = settle(shared, &conn, id, first.clone()).await;
    if let Some((accepted, seen)) = zero_rtt {
        // Our handshake completes with the answers to early data (the peer's Finished comes
        // with them): nothing to wait for but the verdict.
        let accepted = accepted.await;
        if let Some(e) = conn.close_reason() {
            // A full handshake the verifier refused (the address is another node's now).
            return Err(dial_failed(shared, addr, expected, &seen, &e));
        }
        shared.stats.zero_rtt(accepted);
        if !accepted {
            outcome = settle(shared, &conn, id, first).await;
        }
        // The session's certificate, now confirmed by the handshake, must be the id dialed.
        let proven = match tls::peer_id(&conn) {
            Ok(proven) => proven,
            Err(e) => {
                conn.close(codes::BAD_PEER, b"bad peer");
                return Err(e);
            }
        };
        if proven != id {
            conn.close(codes::BAD_PEER, b"wrong node id");
            return Err(TransportError::PeerIdMismatch {
                expected: id,
                got: proven,
            });
        }
    }
    match outcome {
        Ok((terms, early)) => Ok((conn, id, terms, early)),
        Err(e) => {
            conn.close(codes::HELLO_FAILED, b"hello failed");
            Err(e)
        }
    }
}

/// HELLO and `first` sent back to back, then HELLO's answer.
async fn settle(
    shared: &Shared,
    conn: &quinn::Connection,
    id: NodeId,
    first: Option<FirstRequest>,
) -> Result<((Hello, Negotiated), Option<Exchange>), TransportError> {
    let hello_stream = hello::send(shared, conn).await?;
    let Some(first) = first else {
        return Ok((hello::answer(shared, hello_stream).await?, None));
    };
    // Both at once: the request's stream may need credit the peer grants as HELLO's
    // stream closes, and a failed HELLO must not wait for the request.
    let (terms, early) = tokio::try_join!(
        hello::answer(shared, hello_stream),
        send_first(shared, conn, id, first)
    )?;
    Ok((terms, Some(early)))
}

/// Opens the stream after HELLO's and sends `first` on it in one frame: under
/// `PRE_HELLO_MAX_FRAME` ([`FirstRequest::fitting`]), so within any terms HELLO settles.
/// The response is read with our own `max_frame`, which the terms never exceed.
async fn send_first(
    shared: &Shared,
    conn: &quinn::Connection,
    peer: NodeId,
    first: FirstRequest,
) -> Result<Exchange, TransportError> {
    let pair = conn.open_bi().await?;
    let fs = shared.framed(pair, shared.base_limits(), Direction::Responses);
    let mut ex = Exchange::new(fs, peer, first.app_proto_id, shared.corr_id(), Bytes::new());
    ex.send_request(first.payload).await?;
    Ok(ex)
}

/// A dial in 0-RTT: its handshake's end (`true`: the peer took the early data), and what
/// its verifier saw if the handshake was a full one.
pub(crate) type EarlyDial = (quinn::ZeroRttAccepted, tls::SeenId);

/// The error of a dial whose handshake failed. The verifier saw the key before refusing it:
/// name the mismatch precisely.
fn dial_failed(
    shared: &Shared,
    addr: SocketAddr,
    expected: Option<NodeId>,
    seen: &tls::SeenId,
    e: &dyn std::fmt::Display,
) -> TransportError {
    let got = seen
        .get()
        .copied()
        .or_else(|| expected.and_then(|want| shared.tls.refused(&want)));
    match (expected, got) {
        (Some(want), Some(got)) if want != got => TransportError::PeerIdMismatch {
            expected: want,
            got,
        },
        (_, Some(got)) if got == shared.local_id => TransportError::SelfDial,
        _ => TransportError::Connect {
            addr,
            reason: e.to_string(),
        },
    }
}

/// TLS over QUIC to `addr`, refusing any key but `expected`. No HELLO, no registration.
///
/// With `early`, `zero_rtt` on and a session ticket from `expected`, it returns at once
/// with the connection in 0-RTT (the third value: resolves once the handshake completes,
/// `true` if the peer took the early data); its id is then `expected`, which the ticket
/// was filed under, and the caller confirms it with [`tls::peer_id`] after the handshake.
pub(crate) async fn quic_dial(
    shared: &Shared,
    addr: SocketAddr,
    expected: Option<NodeId>,
    early: bool,
) -> Result<(quinn::Connection, NodeId, Option<EarlyDial>), TransportError> {
    let (cfg, seen) = shared.tls.client_config(expected, shared.quic.clone())?;
    let connect_err = |reason: String| TransportError::Connect { addr, reason };
    let name = match expected {
        Some(id) if shared.config.zero_rtt => tls::server_name(&id),
        _ => tls::SERVER_NAME.to_string(),
    };
    let mut connecting = shared
        .endpoint
        .connect_with(cfg, addr, &name)
        .map_err(|e| connect_err(e.to_string()))?;
    if let Some(want) = expected.filter(|_| early && shared.config.zero_rtt) {
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => return Ok((conn, want, Some((accepted, seen)))),
            Err(full) => connecting = full,
        }
    }
    let conn = match connecting.await {
        Ok(conn) => conn,
        Err(e) => return Err(dial_failed(shared, addr, expected, &seen, &e)),
    };
    let id = tls::peer_id(&conn).inspect_err(|_| conn.close(codes::BAD_PEER, b"bad peer"))?;
    if let Some(want) = expected.filter(|want| *want != id) {
        conn.close(codes::BAD_PEER, b"wrong node id");
        return Err(TransportError::PeerIdMismatch {
            expected: want,
            got: id,
        });
    }
    if id == shared.local_id {
        conn.close(codes::BAD_PEER, b"self");
        return Err(TransportError::SelfDial);
    }
    Ok((conn, id, None))
}

/// Accepts inbound connections until the endpoint closes.
pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.is_closing() {
            incoming.refuse();
            continue;
        }
        // Full of busy connections: refuse before any cryptography.
        let full = shared.conn_slots.available_permits() == 0
            && shared
                .peers
                .idlest(shared.config.idle_evict_after)
                .is_none();
        let pending = match shared.handshake_slots.clone().try_acquire_owned() {
            Ok(pending) if !full => pending,
            _ => {
                shared.stats.connection_refused();
                incoming.refuse();
                continue;
            }
        };
        tokio::spawn(accept_one(shared.clone(), incoming, pending));
    }
}

/// How long a new connection waits for the slot of an idle one it closed.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection slot: a free one, else the slot of the idlest connection, closed for it.
/// `None` when every connection is busy.
async fn take_slot(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = shared.conn_slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    let idle = shared.peers.idlest(shared.config.idle_evict_after)?;
    tracing::debug!(peer = %idle.info.id, "closing an idle connection for room");
    metrics::counter!("oap_connections_total", "event" => "closed_idle").increment(1);
    idle.conn.close(codes::IDLE, b"idle");
    // Its serving task ends at once and returns the slot; another new connection may take
    // it first, hence the bounded wait.
    tokio::time::timeout(ROOM_WAIT, shared.conn_slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

async fn accept_one(shared: Arc<Shared>, incoming: quinn::Incoming, pending: OwnedSemaphorePermit) {
    let remote = incoming.remote_address();
    let t = shared.config.handshake_timeout;
    let opened = Instant::now();
    let outcome = tokio::time::timeout(t, handshake_in(&shared, incoming, opened)).await;
    drop(pending);
    match outcome {
        Ok(Ok((pc, slot, None))) => {
            shared.stats.connection_accepted();
            install(&shared, pc, slot);
        }
        Ok(Ok((pc, slot, Some((finished, tx))))) => {
            shared.stats.resumed_in();
            tokio::spawn(confirm(shared.clone(), pc.clone(), finished, tx));
            tokio::spawn(drive(shared, pc, slot));
        }
        Ok(Err(TransportError::TooManyConnections { .. })) => {
            shared.stats.connection_refused();
            tracing::debug!(%remote, "inbound connection refused: every connection busy");
        }
        Ok(Err(e)) => {
            shared.stats.handshake_failed();
            tracing::debug!(%remote, error = %e, "inbound handshake failed");
        }
        Err(_) => {
            shared.stats.handshake_failed();
            tracing::debug!(%remote, "inbound handshake timed out");
        }
    }
}

/// An inbound connection served before its handshake completed: the handshake's end, and
/// where to announce it to the connection's streams.
type Unconfirmed = (quinn::ZeroRttAccepted, tokio::sync::watch::Sender<bool>);

/// An inbound connection resumed from 0-RTT data enters the peer table once its handshake
/// completes (a replayed flight never does); until then its streams are served as `tls`
/// describes. Closed if the handshake does not complete within `handshake_timeout`.
async fn confirm(
    shared: Arc<Shared>,
    pc: PeerConn,
    finished: quinn::ZeroRttAccepted,
    tx: tokio::sync::watch::Sender<bool>,
) {
    let t = shared.config.handshake_timeout;
    // A listener's verdict is meaningless (quinn): the connection's state tells.
    let completed = tokio::time::timeout(t, finished).await.is_ok();
    if !completed || pc.conn.close_reason().is_some() {
        shared.stats.handshake_failed();
        pc.conn
            .close(codes::HELLO_FAILED, b"handshake not completed");
        return;
    }
    shared.stats.connection_accepted();
    // In the table first: a request held for the handshake may look its peer up.
    register(&shared, &pc);
    tx.send_replace(true);
}

/// TLS, a connection slot, then HELLO: a connection refused for room is closed before its
/// HELLO is answered, so the dialer sees a failed handshake, not a connection that dies.
/// A connection that resumes a session of ours goes on from the dialer's first flight, its
/// handshake not yet complete (the third value; see `tls`).
async fn handshake_in(
    shared: &Shared,
    incoming: quinn::Incoming,
    opened: Instant,
) -> Result<(PeerConn, OwnedSemaphorePermit, Option<Unconfirmed>), TransportError> {
    let remote = incoming.remote_address();
    let connecting = incoming.accept()?;
    let (conn, unconfirmed) = if shared.config.zero_rtt {
        match connecting.into_0rtt() {
            // A resumed session knows the peer's certificate from its ticket at once; a full
            // handshake shows it only with the dialer's second flight.
            Ok((conn, finished)) if tls::peer_id(&conn).is_ok() => {
                let (tx, rx) = tokio::sync::watch::channel(false);
                (conn, Some(((finished, tx), rx)))
            }
            Ok((conn, finished)) => {
                // A listener's verdict is meaningless (quinn): the connection's state tells.
                finished.await;
                if let Some(e) = conn.close_reason() {
                    return Err(e.into());
                }
                (conn, None)
            }
            // Never for a listener (quinn); kept total.
            Err(connecting) => (connecting.await?, None),
        }
    } else {
        (connecting.await?, None)
    };
    let (unconfirmed, handshake) = match unconfirmed {
        Some((u, rx)) => (Some(u), rx),
        None => (None, done()),
    };
    let id = tls::peer_id(&conn).inspect_err(|_| conn.close(codes::BAD_PEER, b"bad peer"))?;
    if id == shared.local_id {
        conn.close(codes::BAD_PEER, b"self");
        return Err(TransportError::SelfDial);
    }
    let Some(slot) = take_slot(shared).await else {
        conn.close(codes::BUSY, b"too many connections");
        return Err(TransportError::TooManyConnections {
            max: shared.config.max_connections,
        });
    };
    match hello::accept(shared, &conn).await {
        Ok((hello, terms)) => {
            // The peer said HELLO: the full window from now on (see `quic_before_hello`).
            conn.set_receive_window(VarInt::from_u32(shared.config.connection_receive_window));
            Ok((
                peer_conn(
                    &shared.config,
                    conn,
                    id,
                    remote,
                    (Role::Accepted, opened),
                    (hello, terms),
                    handshake,
                ),
                slot,
                unconfirmed,
            ))
        }
        Err(e) => {
            conn.close(codes::HELLO_FAILED, b"hello failed");
            Err(e)
        }
    }
}

/// A connection that finished HELLO; `opened` is when its handshake began here.
fn peer_conn(
    config: &super::TransportConfig,
    conn: quinn::Connection,
    id: NodeId,
    remote_addr: SocketAddr,
    (role, opened): (Role, Instant),
    (hello, negotiated): (Hello, Negotiated),
    handshake: tokio::sync::watch::Receiver<bool>,
) -> PeerConn {
    let info = PeerInfo {
        id,
        remote_addr,
        role,
        listen_addrs: hello.listen_addrs,
        app_protos: hello.app_protos,
        negotiated,
    };
    PeerConn {
        conn,
        dial_addr: info.dial_addr(),
        buffer: Arc::new(tokio::sync::Semaphore::new(config.connection_buffer_bytes)),
        inbound: Arc::new(tokio::sync::Semaphore::new(config.max_inbound_per_peer)),
        limits: Limits::new(negotiated.max_frame),
        opened,
        established: Instant::now(),
        usage: super::peers::Usage::new(Instant::now()),
        info: Arc::new(info),
        handshake,
    }
}

/// Registers a connection that finished HELLO, starts serving it, and returns the peer's
/// connection in use (this one, or the one it lost to).
fn install(shared: &Arc<Shared>, pc: PeerConn, slot: OwnedSemaphorePermit) -> PeerInfo {
    let winner = register(shared, &pc);
    tokio::spawn(drive(shared.clone(), pc, slot));
    winner
}

/// Enters a connection that finished HELLO (and its handshake) in the peer table; returns
/// the peer's connection in use (this one, or the one it lost to).
fn register(shared: &Arc<Shared>, pc: &PeerConn) -> PeerInfo {
    let winner = match shared.peers.register(pc.clone()) {
        Registered::Installed => {
            // No subscriber is not an error: events are for whoever listens.
            let _ = shared.events.send(PeerEvent::Connected((*pc.info).clone()));
            pc.clone()
        }
        Registered::Replaced(old) => {
            retire(shared, old.conn);
            pc.clone()
        }
        Registered::Kept(existing) => {
            retire(shared, pc.conn.clone());
            existing
        }
    };
    tracing::debug!(peer = %pc.info.id, role = ?pc.info.role, "connection ready");
    (*winner.info).clone()
}

/// Closes a duplicate connection once what is in flight on it has had time to finish.
fn retire(shared: &Shared, conn: quinn::Connection) {
    let grace = shared.config.request_timeout;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        conn.close(codes::DUPLICATE, b"duplicate connection");
    });
}

/// Serves a connection's inbound streams until it closes, then forgets it.
async fn drive(shared: Arc<Shared>, pc: PeerConn, _slot: OwnedSemaphorePermit) {
    let reason = loop {
        match pc.conn.accept_bi().await {
            Ok(pair) => {
                // Boxed: a task's future is copied whole on spawn and on completion, so
                // a pointer is cheaper to carry than the stream's state (~1 KiB).
                tokio::spawn(Box::pin(inbound::serve_stream(
                    shared.clone(),
                    pc.clone(),
                    pair,
                )));
            }
            Err(e) => break e,
        }
    };
    if shared
        .peers
        .remove_if_same(&pc.info.id, pc.conn.stable_id())
    {
        tracing::debug!(peer = %pc.info.id, %reason, "connection closed");
        let peer_left = matches!(&reason, quinn::ConnectionError::ApplicationClosed(c)
            if c.error_code == super::codes::SHUTDOWN && c.reason.as_ref() == b"shutdown");
        let closed_here = matches!(&reason, quinn::ConnectionError::LocallyClosed);
        let _ = shared.events.send(PeerEvent::Disconnected {
            id: pc.info.id,
            reason: reason.to_string(),
            peer_left,
            closed_here,
        });
    }
}
