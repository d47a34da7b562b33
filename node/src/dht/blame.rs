//! What went wrong, in the overlay's terms: the driver's map from quinn's errors and the
//! transport's disconnects to [`FailureCause`] and [`ConnectionEvent`]. Whose failure each
//! is (a local shortage never counts against a peer; a peer that is there but declined is
//! a refusal) is the overlay's rule (`overlay::cause`), which simnet runs too; this file
//! only names what happened.
//!
//! The transport says whether it closed a connection itself (`closed_here`) or the peer
//! left (`peer_left`); a peer's other orderly closes (of an idle connection, say) show
//! only in quinn's display text (`reason`), which [`ended`] reads. Its tests build each
//! quinn error and check the reading, so a quinn upgrade that rewords one fails here.

use wire::Status;

use overlay::{ConnectionEvent, FailureCause, Key};

use crate::transport::TransportError;

use super::NetPeer;

/// Why one RPC produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub(super) enum RpcError {
    /// The transport failed the connection or the exchange.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer answered with a status other than 200.
    #[error("peer answered {0:?}")]
    Status(Status),
    /// The peer's answer did not decode.
    #[error("malformed answer: {0}")]
    Message(#[from] wire::message::MessageError),
    /// No outcome within the DHT's `rpc_timeout` and a grace: the DHT failed the request
    /// at its own deadline already, and the task stops holding its slot.
    #[error("no outcome within the request's timeout")]
    TimedOut,
}

impl RpcError {
    /// What went wrong, for the overlay to judge.
    pub(super) fn cause(&self) -> FailureCause {
        use FailureCause as C;
        match self {
            RpcError::Transport(e) => transport_cause(e),
            RpcError::TimedOut => C::Silent,
            RpcError::Status(Status::Unavailable) => C::Unavailable,
            RpcError::Status(_) | RpcError::Message(_) => C::BadAnswer,
        }
    }
}

/// What a transport failure was, in the overlay's terms: the one reading of the transport's
/// errors for every exchange with a peer (DHT requests and object transfers), so a local
/// shortage never counts against a peer on one path and for it on another.
pub(crate) fn transport_cause(e: &TransportError) -> FailureCause {
    use FailureCause as C;
    use TransportError as T;
    match e {
        T::TooManyConnections { .. } => C::ConnectionCap,
        T::Closed | T::SelfDial => C::OursClosing,
        T::Timeout {
            what: "concurrent dial",
            ..
        } => C::DialQueued,
        T::NotConnected(_) => C::NotConnected,
        e => match connection_error(e) {
            Some(quinn::ConnectionError::LocallyClosed) => C::ClosedHere,
            Some(quinn::ConnectionError::ApplicationClosed(c)) if is_shutdown(c) => C::PeerShutdown,
            Some(quinn::ConnectionError::ApplicationClosed(_)) => C::PeerClosed,
            _ => C::Silent,
        },
    }
}

/// The connection error under a transport error, if the connection is what failed.
fn connection_error(e: &TransportError) -> Option<&quinn::ConnectionError> {
    match e {
        TransportError::Connection(c)
        | TransportError::Read(quinn::ReadError::ConnectionLost(c))
        | TransportError::Write(quinn::WriteError::ConnectionLost(c)) => Some(c),
        _ => None,
    }
}

/// Whether a peer's close says it is shutting down (as the transport decides `peer_left`).
fn is_shutdown(c: &quinn::ApplicationClose) -> bool {
    c.error_code == crate::transport::codes::SHUTDOWN && c.reason.as_ref() == b"shutdown"
}

/// Reads a `PeerEvent::Disconnected` of `peer`: `peer_left` and `closed_here` as the
/// transport decided them, `reason` the display text of quinn's `ConnectionError` (the only
/// sign of a peer's own orderly close, e.g. of an idle connection).
pub(super) fn ended(
    peer: Key,
    peer_left: bool,
    closed_here: bool,
    reason: &str,
) -> ConnectionEvent<NetPeer> {
    if peer_left {
        ConnectionEvent::PeerLeft(peer)
    } else if closed_here || reason.starts_with(CLOSED_BY_PEER) {
        ConnectionEvent::Closed(peer)
    } else {
        ConnectionEvent::Lost(peer)
    }
}

/// The start of quinn's text for `ConnectionError::ApplicationClosed`.
const CLOSED_BY_PEER: &str = "closed by peer";

#[cfg(test)]
mod tests {
    use super::*;
    use overlay::RpcFailure;
    use quinn::ConnectionError as C;
    use quinn::VarInt;

    fn app_close(code: VarInt, reason: &'static [u8]) -> C {
        C::ApplicationClosed(quinn::ApplicationClose {
            error_code: code,
            reason: bytes::Bytes::from_static(reason),
        })
    }

    #[test]
    fn disconnects_are_read_from_quinns_own_texts() {
        let idle = crate::transport::codes::IDLE;
        let k = Key([3; 32]);
        let ended = |left, here, reason: &str| ended(k, left, here, reason);
        assert_eq!(
            ended(false, true, &C::LocallyClosed.to_string()),
            ConnectionEvent::Closed(k)
        );
        assert_eq!(
            ended(false, false, &app_close(idle, b"idle").to_string()),
            ConnectionEvent::Closed(k)
        );
        assert_eq!(
            ended(false, false, &C::TimedOut.to_string()),
            ConnectionEvent::Lost(k)
        );
        assert_eq!(
            ended(false, false, &C::Reset.to_string()),
            ConnectionEvent::Lost(k)
        );
        assert_eq!(
            ended(false, false, &C::CidsExhausted.to_string()),
            ConnectionEvent::Lost(k)
        );
        assert_eq!(
            ended(true, false, &C::TimedOut.to_string()),
            ConnectionEvent::PeerLeft(k)
        );
    }

    #[test]
    fn local_shortages_are_never_the_peers_failure() {
        use TransportError as T;
        let local = [
            T::TooManyConnections { max: 256 },
            T::Closed,
            T::SelfDial,
            T::NotConnected(wire::NodeId([7; 32])),
            T::Timeout {
                what: "concurrent dial",
                after: std::time::Duration::from_secs(5),
            },
            T::Connection(C::LocallyClosed),
            T::Read(quinn::ReadError::ConnectionLost(C::LocallyClosed)),
            T::Write(quinn::WriteError::ConnectionLost(C::LocallyClosed)),
        ];
        for e in local {
            let why = e.to_string();
            assert_eq!(
                RpcError::from(e).cause().blame(),
                RpcFailure::Local,
                "{why}"
            );
        }
    }

    #[test]
    fn a_peer_that_is_there_refuses_and_a_silent_one_fails() {
        use TransportError as T;
        let shutdown = crate::transport::codes::SHUTDOWN;
        for close in [
            app_close(crate::transport::codes::IDLE, b"idle"),
            app_close(crate::transport::codes::BUSY, b"busy"),
            app_close(shutdown, b"disconnect"),
        ] {
            let refused = RpcError::Transport(T::Connection(close));
            assert_eq!(refused.cause().blame(), RpcFailure::Refused, "{refused}");
        }
        assert_eq!(
            RpcError::Status(Status::Unavailable).cause().blame(),
            RpcFailure::Refused
        );
        let gone = RpcError::Transport(T::Connection(app_close(shutdown, b"shutdown")));
        assert_eq!(gone.cause().blame(), RpcFailure::Peer);
        let failed = [
            T::Timeout {
                what: "request",
                after: std::time::Duration::from_secs(5),
            },
            T::Connection(C::TimedOut),
            T::Read(quinn::ReadError::ConnectionLost(C::Reset)),
        ];
        for e in failed {
            let why = e.to_string();
            assert_eq!(RpcError::from(e).cause().blame(), RpcFailure::Peer, "{why}");
        }
    }
}
