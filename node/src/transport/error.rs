//! What can go wrong between us and a peer, as one typed enum, and the QUIC error codes we
//! close connections and reset streams with.
//!
//! Errors caused by a peer's bytes ([`TransportError::Decode`], [`TransportError::Sequence`],
//! [`TransportError::UnexpectedEnd`], [`TransportError::Message`]) carry a stable
//! [`reject_reason`](TransportError::reject_reason): the `reason` label of
//! `oap_rejects_total`. Nothing here panics on input.

use std::net::SocketAddr;
use std::time::Duration;

use wire::control::NegotiateError;
use wire::message::MessageError;
use wire::{DecodeError, NodeId, SequenceError, Status};

/// A failure of the transport, a connection, or one exchange.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration cannot work.
    #[error("invalid transport config: {0}")]
    Config(String),
    /// The UDP socket could not be opened.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Building the TLS configuration or certificate failed.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The QUIC connection to a peer could not be established.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The address dialed.
        addr: SocketAddr,
        /// Why (QUIC or TLS error text).
        reason: String,
    },
    /// The peer proved a key other than the node id we dialed: refused.
    #[error("dialed {expected} but the peer is {got}")]
    PeerIdMismatch {
        /// The id we dialed.
        expected: NodeId,
        /// The id the peer presented.
        got: NodeId,
    },
    /// The address we dialed is our own node.
    #[error("refusing to connect to ourselves")]
    SelfDial,
    /// The handshake completed but broke a rule of ours (no usable certificate, wrong ALPN,
    /// first exchange not HELLO, ...).
    #[error("handshake: {0}")]
    Handshake(String),
    /// A wait on a peer passed its bound.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What we were waiting for.
        what: &'static str,
        /// The bound that passed.
        after: Duration,
    },
    /// HELLO statements that cannot be reconciled.
    #[error("HELLO negotiation: {0}")]
    Hello(#[from] NegotiateError),
    /// The peer sent a frame that breaks OAP/1.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// The peer sent frames out of order.
    #[error("frame sequence: {0}")]
    Sequence(#[from] SequenceError),
    /// The peer's stream ended before its END frame.
    #[error("stream ended before its END frame")]
    UnexpectedEnd,
    /// A control message body (HELLO, PING) was malformed.
    #[error("control message: {0}")]
    Message(#[from] MessageError),
    /// The peer answered a control exchange with a non-200 status.
    #[error("peer answered {0:?}")]
    Status(Status),
    /// No live connection to this peer; [`connect`](super::Transport::connect) first.
    #[error("not connected to {0}")]
    NotConnected(NodeId),
    /// The connection limit is reached.
    #[error("connection limit of {max} reached")]
    TooManyConnections {
        /// The configured limit.
        max: usize,
    },
    /// A body is larger than the caller's bound allows.
    #[error("body exceeds {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// A frame we were asked to send does not fit the negotiated `max_frame` (a caller bug).
    #[error("frame of {len} bytes exceeds max_frame {max}")]
    FrameTooLarge {
        /// The frame's encoded length.
        len: usize,
        /// The negotiated limit.
        max: usize,
    },
    /// A frame was sent on an exchange whose side already ended.
    #[error("this side of the exchange already sent END")]
    AlreadyEnded,
    /// The QUIC connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// Reading a stream failed (peer reset, connection lost).
    #[error("stream read: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing a stream failed (peer stopped it, connection lost).
    #[error("stream write: {0}")]
    Write(#[from] quinn::WriteError),
    /// The transport is shutting down or shut down.
    #[error("transport closed")]
    Closed,
}

impl TransportError {
    /// The `oap_rejects_total` reason when the peer's bytes broke a rule, else `None`.
    pub fn reject_reason(&self) -> Option<&'static str> {
        match self {
            TransportError::Decode(e) => Some(e.reason()),
            TransportError::Sequence(e) => Some(e.reason()),
            TransportError::Message(e) => Some(e.reason()),
            TransportError::UnexpectedEnd => Some("missing_end"),
            _ => None,
        }
    }

    /// Whether the failure is a timeout (the DHT counts these as an unresponsive peer).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout { .. })
    }
}

/// QUIC application error codes used when we close a connection or reset a stream.
pub mod codes {
    use quinn::VarInt;

    /// Connection: orderly shutdown of the node.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(0);
    /// Connection: HELLO failed or the first exchange was not HELLO.
    pub const HELLO_FAILED: VarInt = VarInt::from_u32(1);
    /// Connection: a second connection to the same peer, closed in favour of the first.
    pub const DUPLICATE: VarInt = VarInt::from_u32(2);
    /// Connection: the peer presented our own id, or not the id that was dialed.
    pub const BAD_PEER: VarInt = VarInt::from_u32(3);
    /// Connection: closed while idle to give its slot to a new connection (the limit
    /// was reached); the peer may dial again.
    pub const IDLE: VarInt = VarInt::from_u32(4);
    /// Connection: refused after the handshake, every slot taken by a busy connection.
    pub const BUSY: VarInt = VarInt::from_u32(5);
    /// Stream: the peer broke OAP/1 framing or sequencing on this stream.
    pub const STREAM_PROTOCOL: VarInt = VarInt::from_u32(0x10);
    /// Stream: we gave up on the exchange (timeout, cancelled, handler dropped it).
    pub const STREAM_CANCELLED: VarInt = VarInt::from_u32(0x11);
    /// Stream: we answered without reading the rest of the request (404, 503).
    pub const STREAM_DONE: VarInt = VarInt::from_u32(0x12);
}
