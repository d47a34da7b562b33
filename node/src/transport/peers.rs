//! The connection table: at most one connection in use per peer, keyed by node id.
//!
//! Invariant: the table maps a peer to the connection new requests go out on, and both ends
//! of a pair pick the same one. When two connections to one peer exist:
//! - if the new one was opened after the old one was established (by more than
//!   [`SUPERSEDE_SLACK`]), the new one wins: a node dials only a peer it holds no connection
//!   to, so whoever opened it no longer uses the old one. That old connection is typically
//!   half-dead (the peer restarted with the same key, or dropped it), and QUIC would only
//!   notice at the idle timeout, while requests sent on it time out;
//! - otherwise the handshakes overlapped (both dialed at once, or a dial raced an inbound
//!   connection): the one dialed by the node with the smaller id wins on both sides; between
//!   two dialed by the same node, the first registered wins.
//!
//! The loser is retired: it leaves the table, serves what is in flight, and is closed after a
//! grace period, so a simultaneous open settles on one connection instead of closing both
//! or redialing in a loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use wire::control::Negotiated;
use wire::{Limits, NodeId};

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed the peer.
    Dialed,
    /// The peer dialed us.
    Accepted,
}

/// What we know about a connected peer after HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id, proven in the TLS handshake.
    pub id: NodeId,
    /// The UDP address the connection runs to.
    pub remote_addr: SocketAddr,
    /// Who opened the connection.
    pub role: Role,
    /// Where the peer says it can be dialed (its HELLO).
    pub listen_addrs: Vec<String>,
    /// The app protocols the peer serves (its HELLO).
    pub app_protos: Vec<u16>,
    /// The terms agreed in HELLO.
    pub negotiated: Negotiated,
}

impl PeerInfo {
    /// Where to dial the peer back: the first address it states in HELLO that parses, else
    /// the connection's source address (the right one on loopback and without NAT).
    pub fn dial_addr(&self) -> SocketAddr {
        self.listen_addrs
            .iter()
            .find_map(|a| a.parse().ok())
            .unwrap_or(self.remote_addr)
    }
}

/// A change in the set of connected peers, for the DHT driver and status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer became connected (HELLO done), either direction.
    Connected(PeerInfo),
    /// The connection in use for a peer closed; the peer is no longer connected.
    Disconnected {
        /// The peer.
        id: NodeId,
        /// Why the connection closed.
        reason: String,
        /// The peer closed it because it is shutting down (not a timeout or a reset):
        /// it is gone, and need not be probed to find that out.
        peer_left: bool,
        /// We closed it ourselves (idle, to give its slot to a new connection; or our
        /// shutdown): says nothing about the peer's health.
        closed_here: bool,
    },
}

/// How much later than an existing connection's establishment a new connection must have
/// been opened to supersede it. In a simultaneous open, a dialer starts before it learns of
/// the other connection, so on either side the new one opens before (or, with one-way delays,
/// a few milliseconds after) the old one is established; a restarted peer redials far later.
pub(crate) const SUPERSEDE_SLACK: Duration = Duration::from_millis(500);

/// A live connection and what HELLO settled for it.
#[derive(Debug, Clone)]
pub(crate) struct PeerConn {
    pub(crate) conn: quinn::Connection,
    /// Bytes of partial frames all streams of this connection may hold at once.
    pub(crate) buffer: Arc<tokio::sync::Semaphore>,
    /// Inbound exchanges this peer may have served at once: its share of the node's.
    pub(crate) inbound: Arc<tokio::sync::Semaphore>,
    pub(crate) info: Arc<PeerInfo>,
    /// `info.dial_addr()`, worked out once: every inbound DHT request asks for it.
    pub(crate) dial_addr: SocketAddr,
    pub(crate) limits: Limits,
    /// When its handshake began here: our dial started, or the peer's first packet arrived.
    pub(crate) opened: Instant,
    /// When HELLO finished.
    pub(crate) established: Instant,
    /// Streams open on it and when it was last used.
    pub(crate) usage: Arc<Usage>,
    /// Whether its TLS handshake completed: `false` only on an inbound resumed connection
    /// served from 0-RTT data, until the dialer's Finished arrives (see `tls`).
    pub(crate) handshake: tokio::sync::watch::Receiver<bool>,
}

/// How a connection is used: the streams open on it now and when one last began or
/// ended. When every connection slot is taken, the slot of the connection idle the longest
/// goes to a new one (`PeerTable::idlest`).
#[derive(Debug)]
pub(crate) struct Usage {
    epoch: Instant,
    active: AtomicUsize,
    /// Milliseconds after `epoch` of the last stream's start or end.
    last_ms: AtomicU64,
    /// Streams it ever carried.
    streams: AtomicU64,
}

impl Usage {
    /// A connection in use from `epoch` (its HELLO), no stream yet.
    pub(crate) fn new(epoch: Instant) -> Arc<Usage> {
        Arc::new(Usage {
            epoch,
            active: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            streams: AtomicU64::new(0),
        })
    }

    /// A stream begins; the guard ends it when dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> ActiveStream {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.stamp();
        ActiveStream(self.clone())
    }

    fn stamp(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long it has carried no stream at `now`; `None` while a stream is open.
    fn idle(&self, now: Instant) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(now.saturating_duration_since(last))
    }

    fn never_used(&self) -> bool {
        self.streams.load(Ordering::Relaxed) == 0
    }
}

/// One open stream on a connection (see [`Usage::begin`]).
#[derive(Debug)]
pub(crate) struct ActiveStream(Arc<Usage>);

impl Drop for ActiveStream {
    fn drop(&mut self) {
        self.0.stamp();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeerConn {
    fn is_alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

/// The outcome of registering a new connection.
#[derive(Debug)]
pub(crate) enum Registered {
    /// It is now the peer's connection.
    Installed,
    /// It replaced this one, which is to be retired.
    Replaced(PeerConn),
    /// The existing one wins; the new one is to be retired.
    Kept(PeerConn),
}

/// The table of connections in use.
#[derive(Debug)]
pub(crate) struct PeerTable {
    local: NodeId,
    map: Mutex<BTreeMap<NodeId, PeerConn>>,
}

impl PeerTable {
    pub(crate) fn new(local: NodeId) -> PeerTable {
        PeerTable {
            local,
            map: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<NodeId, PeerConn>> {
        // Critical sections only move values in and out of the map: a poisoned lock still
        // guards a consistent map.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection in use for `id`.
    pub(crate) fn get(&self, id: &NodeId) -> Option<PeerConn> {
        self.lock().get(id).filter(|pc| pc.is_alive()).cloned()
    }

    /// Where to dial the peer of the live connection for `id` back.
    pub(crate) fn dial_addr(&self, id: &NodeId) -> Option<SocketAddr> {
        self.lock()
            .get(id)
            .filter(|pc| pc.is_alive())
            .map(|pc| pc.dial_addr)
    }

    /// A live connection whose remote end is `addr`. Only the path QUIC validated counts:
    /// the listen addresses a peer states in HELLO are its claim, and matching on them would
    /// let any peer stand in for a bootstrap address it names.
    pub(crate) fn find_by_addr(&self, addr: SocketAddr) -> Option<PeerConn> {
        self.lock()
            .values()
            .find(|pc| pc.is_alive() && pc.info.remote_addr == addr)
            .cloned()
    }

    /// Makes `new` the peer's connection unless a better one exists (see the module doc).
    pub(crate) fn register(&self, new: PeerConn) -> Registered {
        let mut map = self.lock();
        let id = new.info.id;
        match map.get(&id) {
            Some(old) if old.is_alive() => {
                if self.prefers_new(old, &new) {
                    let old = old.clone();
                    map.insert(id, new);
                    Registered::Replaced(old)
                } else {
                    Registered::Kept(old.clone())
                }
            }
            _ => {
                map.insert(id, new);
                Registered::Installed
            }
        }
    }

    fn dialer(&self, pc: &PeerConn) -> NodeId {
        match pc.info.role {
            Role::Dialed => self.local,
            Role::Accepted => pc.info.id,
        }
    }

    fn prefers_new(&self, old: &PeerConn, new: &PeerConn) -> bool {
        if new.opened > old.established + SUPERSEDE_SLACK {
            return true;
        }
        let (old_dialer, new_dialer) = (self.dialer(old), self.dialer(new));
        old_dialer != new_dialer && new_dialer < old_dialer
    }

    /// Removes `id`'s entry if it is still the connection with `stable_id`.
    pub(crate) fn remove_if_same(&self, id: &NodeId, stable_id: usize) -> bool {
        let mut map = self.lock();
        match map.get(id) {
            Some(pc) if pc.conn.stable_id() == stable_id => {
                map.remove(id);
                true
            }
            _ => false,
        }
    }

    /// The connection to close for room: among those idle for at least `min_idle`, one
    /// that never carried a stream, else the one idle the longest.
    pub(crate) fn idlest(&self, min_idle: Duration) -> Option<PeerConn> {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|pc| pc.is_alive())
            .filter_map(|pc| {
                let idle = pc.usage.idle(now).filter(|d| *d >= min_idle)?;
                Some(((pc.usage.never_used(), idle), pc))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, pc)| pc.clone())
    }

    /// Takes every connection out of the table (shutdown).
    pub(crate) fn drain(&self) -> Vec<PeerConn> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }

    /// The connected peers, in id order.
    pub(crate) fn list(&self) -> Vec<PeerInfo> {
        self.lock()
            .values()
            .filter(|pc| pc.is_alive())
            .map(|pc| (*pc.info).clone())
            .collect()
    }

    /// How many peers are connected.
    pub(crate) fn len(&self) -> usize {
        self.lock().values().filter(|pc| pc.is_alive()).count()
    }
}
