//! The transport's knobs, each with a documented default, and their translation into quinn's
//! own transport parameters.
//!
//! Every resource a peer can make us hold has a named limit here: connections, streams per
//! connection, requests in flight, bytes buffered per stream and per connection, and a time
//! bound on every wait. [`TransportConfig::validate`] refuses combinations that cannot work
//! (a keep-alive slower than the idle timeout, a `max_frame` outside what OAP/1 allows)
//! before a socket is opened.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::VarInt;
use wire::MAX_FRAME;
use wire::control::{ADDR_LEN_MAX, LISTEN_ADDRS_MAX, MIN_MAX_FRAME};

use super::error::TransportError;

/// How the transport behaves and what it lets peers consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// UDP address to listen on. Default `0.0.0.0:0` (any interface, a port the OS picks);
    /// the node's CLI sets a fixed port.
    pub listen: SocketAddr,
    /// Addresses stated in HELLO as where we can be dialed (`host:port`). Empty: the bound
    /// address when it is a concrete one, nothing when it is `0.0.0.0`/`::`.
    pub advertise_addrs: Vec<String>,
    /// Most live connections, inbound and outbound together (default 256). At the limit, a
    /// new connection (either direction) takes the slot of the connection idle the longest,
    /// if one has carried no stream for `idle_evict_after`; else an inbound one is refused
    /// and a dial fails with `TooManyConnections`.
    pub max_connections: usize,
    /// Most inbound handshakes (TLS and HELLO) in progress at once (default 128); past it a
    /// new inbound connection is refused before any cryptography. A handshake holds no
    /// connection slot, so a burst of strangers cannot lock out peers by handshaking.
    pub max_pending_handshakes: usize,
    /// How long a connection must have carried no stream before its slot may go to a new
    /// connection when every slot is taken (default 1 s). Connections that never carried
    /// one go first, then the longest idle: a slot is earned by use, not by arriving first.
    pub idle_evict_after: Duration,
    /// Most concurrent bidirectional streams (= requests) a peer may open on one connection
    /// (default 128); also the `max_inflight` we state in HELLO.
    pub max_streams_per_connection: u32,
    /// Most inbound exchanges served at once across all connections (default 1024); past it a
    /// request gets 503.
    pub max_inbound_requests: usize,
    /// Most inbound exchanges one peer may have served at once (default 64), so a few
    /// identities cannot take every slot; past it its request gets 503.
    pub max_inbound_per_peer: usize,
    /// Bytes of not-yet-complete frames all streams of one connection may buffer together
    /// (default 4 MiB). A stream that needs more waits for room (within `io_timeout`), so a
    /// peer holding many streams with partial frames holds at most this much of our memory,
    /// not `max_frame` × streams.
    pub connection_buffer_bytes: usize,
    /// A connection with no packets for this long is closed (default 30 s).
    pub idle_timeout: Duration,
    /// A connection sends a keep-alive after this much silence (default 10 s).
    pub keep_alive: Duration,
    /// Bound on TLS handshake plus HELLO, either direction (default 5 s).
    pub handshake_timeout: Duration,
    /// Bound on a whole one-shot [`request`](super::Transport::request) (default 5 s).
    pub request_timeout: Duration,
    /// Bound on each single wait of a streaming exchange: opening it, one frame sent or
    /// received (default 10 s).
    pub io_timeout: Duration,
    /// Bound on one inbound exchange, from its first frame to the handler's return
    /// (default 30 s).
    pub inbound_timeout: Duration,
    /// Largest frame we accept, header included; HELLO may lower it per connection
    /// (default and maximum 1 MiB). It is also each stream's decode buffer cap.
    pub max_frame: u32,
    /// Largest response body a one-shot request collects (default 8 MiB).
    pub max_response_bytes: usize,
    /// QUIC flow-control window per stream: bytes a peer may have in flight on one stream
    /// before we read them (default 2 MiB).
    pub stream_receive_window: u32,
    /// QUIC flow-control window per connection (default 8 MiB).
    pub connection_receive_window: u32,
    /// Bytes we buffer for sending per connection before writes wait (default 8 MiB).
    pub send_window: u64,
    /// Bound on waiting for in-flight inbound requests and for peers to acknowledge the
    /// close in [`close`](super::Transport::close) (default 2 s).
    pub shutdown_grace: Duration,
    /// Capacity of the peer event channel (default 256); slow subscribers lag, never block.
    pub events_capacity: usize,
    /// TLS session resumption and QUIC 0-RTT between nodes (default off). On: we issue
    /// session tickets and keep up to [`SESSION_CACHE`](super::tls::SESSION_CACHE) of the
    /// peers' tickets; a dial to a peer whose ticket we hold sends HELLO and a first request
    /// that is safe to replay (a DHT read, see [`InboundHandler::replay_safe`]) in its first
    /// flight, and the peer answers before the handshake completes: one round trip in all.
    /// Anything else waits for the handshake on both ends (see `tls`).
    ///
    /// [`InboundHandler::replay_safe`]: super::InboundHandler::replay_safe
    pub zero_rtt: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            advertise_addrs: Vec::new(),
            max_connections: 256,
            max_pending_handshakes: 128,
            idle_evict_after: Duration::from_secs(1),
            max_streams_per_connection: 128,
            max_inbound_requests: 1024,
            max_inbound_per_peer: 64,
            connection_buffer_bytes: 4 << 20,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            inbound_timeout: Duration::from_secs(30),
            max_frame: MAX_FRAME,
            max_response_bytes: 8 * 1024 * 1024,
            stream_receive_window: 2 * 1024 * 1024,
            connection_receive_window: 8 * 1024 * 1024,
            send_window: 8 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(2),
            events_capacity: 256,
            zero_rtt: false,
        }
    }
}

impl TransportConfig {
    /// Defaults for a node listening on `listen`.
    pub fn with_listen(listen: SocketAddr) -> TransportConfig {
        TransportConfig {
            listen,
            ..TransportConfig::default()
        }
    }

    /// Refuses settings that cannot work, naming the first bad one.
    pub fn validate(&self) -> Result<(), TransportError> {
        let bad = |why: String| Err(TransportError::Config(why));
        if !(MIN_MAX_FRAME..=MAX_FRAME).contains(&self.max_frame) {
            return bad(format!(
                "max_frame {} is outside {MIN_MAX_FRAME}..={MAX_FRAME}",
                self.max_frame
            ));
        }
        if self.max_connections == 0
            || self.max_pending_handshakes == 0
            || self.max_streams_per_connection == 0
            || self.max_inbound_requests == 0
            || self.max_inbound_per_peer == 0
            || self.events_capacity == 0
        {
            return bad("connection, stream, request and event limits must be non-zero".into());
        }
        if self.max_inbound_requests > u32::MAX as usize {
            return bad("max_inbound_requests must fit in 32 bits".into());
        }
        let times = [
            ("idle_timeout", self.idle_timeout),
            ("keep_alive", self.keep_alive),
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
            ("io_timeout", self.io_timeout),
            ("inbound_timeout", self.inbound_timeout),
        ];
        if let Some((name, _)) = times.iter().find(|(_, d)| d.is_zero()) {
            return bad(format!("{name} must be non-zero"));
        }
        if self.keep_alive >= self.idle_timeout {
            return bad("keep_alive must be shorter than idle_timeout".into());
        }
        if self.advertise_addrs.len() > LISTEN_ADDRS_MAX {
            return bad(format!(
                "at most {LISTEN_ADDRS_MAX} advertise_addrs fit in HELLO"
            ));
        }
        if let Some(a) = self.advertise_addrs.iter().find(|a| a.len() > ADDR_LEN_MAX) {
            return bad(format!(
                "advertise address {a:?} is over {ADDR_LEN_MAX} bytes"
            ));
        }
        if self.connection_buffer_bytes < self.max_frame as usize
            || self.connection_buffer_bytes > u32::MAX as usize
        {
            return bad(format!(
                "connection_buffer_bytes must hold one whole frame ({} bytes) and fit in 32 bits",
                self.max_frame
            ));
        }
        if self.stream_receive_window == 0 || self.connection_receive_window == 0 {
            return bad("receive windows must be non-zero".into());
        }
        Ok(())
    }

    /// quinn's transport parameters for these limits (shared by both directions).
    pub(crate) fn quic(&self) -> Result<Arc<quinn::TransportConfig>, TransportError> {
        self.quic_with_window(self.connection_receive_window)
            .map(Arc::new)
    }

    /// The listener's transport parameters: as [`quic`](Self::quic), but a connection
    /// starts with [`PRE_HELLO_RECEIVE_WINDOW`], raised to `connection_receive_window` once
    /// its HELLO is done. So a stranger that handshakes and never says HELLO holds at most
    /// that many bytes of ours in QUIC's buffers, not the full window, for each of
    /// `max_pending_handshakes`.
    pub(crate) fn quic_before_hello(&self) -> Result<Arc<quinn::TransportConfig>, TransportError> {
        let window = self.connection_receive_window.min(PRE_HELLO_RECEIVE_WINDOW);
        self.quic_with_window(window).map(Arc::new)
    }

    fn quic_with_window(&self, window: u32) -> Result<quinn::TransportConfig, TransportError> {
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| TransportError::Config("idle_timeout is too long for QUIC".into()))?;
        let mut t = quinn::TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams_per_connection))
            // OAP/1 uses bidirectional streams only.
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(window))
            .send_window(self.send_window)
            // Loss by time, not by count: on a path that reorders (jitter, several routes)
            // dozens of later packets overtake one in flight, and the default threshold of
            // 3 takes each reordering for a loss, so the congestion window never opens and
            // a transfer crawls (RELIABILITY.md D3). A packet is declared lost once it is
            // overdue by half an RTT more than RFC 9002's 9/8, as RACK does for TCP with
            // its reordering window: jitter of a quarter RTT is no loss.
            .packet_threshold(REORDERING_PACKETS)
            .time_threshold(REORDERING_RTTS)
            .datagram_receive_buffer_size(None);
        Ok(t)
    }
}

/// Bytes a peer may send on all streams of a connection together before its HELLO is done
/// (the listener's side): HELLO and one request sent with it, each at most
/// [`MIN_MAX_FRAME`] (see `hello`).
pub const PRE_HELLO_RECEIVE_WINDOW: u32 = 2 * MIN_MAX_FRAME;

/// Packets that may overtake one in flight before it counts as lost (quinn's
/// `packet_threshold`; RFC 9002's default is 3). High enough that loss is found by time.
const REORDERING_PACKETS: u32 = 1000;
/// How overdue, in RTTs, a packet is when it counts as lost (quinn's `time_threshold`;
/// RFC 9002's default is 9/8).
const REORDERING_RTTS: f32 = 1.5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(TransportConfig::default().validate().is_ok());
        let mut c = TransportConfig {
            keep_alive: Duration::from_secs(60),
            ..TransportConfig::default()
        };
        assert!(matches!(c.validate(), Err(TransportError::Config(m)) if m.contains("keep_alive")));
        c = TransportConfig {
            max_frame: MAX_FRAME + 1,
            ..TransportConfig::default()
        };
        assert!(matches!(c.validate(), Err(TransportError::Config(m)) if m.contains("max_frame")));
    }
}
