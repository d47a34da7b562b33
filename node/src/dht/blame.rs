//! Whose failure is it: the driver's map from what went wrong on a connection to what the
//! overlay may hold against a peer.
//!
//! The overlay evicts contacts on failures ([`RpcFailure::Peer`]) and pings questionable
//! ones; a failure wrongly blamed on a peer evicts a healthy contact, and a disconnect
//! wrongly read as a loss starts a probe. So the rule is: only what the peer did, or what
//! the network did to it, counts. Our own shortages (the RPC semaphore, the connection cap,
//! a dial queued behind another, a connection we closed ourselves, our shutdown) never do;
//! a peer that is there but declined (busy, closed an idle connection under a request) is
//! a refusal. A connection lost without a goodbye (timeout, reset, abort) makes the peer
//! questionable: it is pinged before it is trusted again, at most one probe per bucket.
//!
//! The transport says whether it closed a connection itself (`closed_here`) or the peer
//! left (`peer_left`); a peer's other orderly closes (of an idle connection, say) show
//! only in quinn's display text (`reason`), which [`ended`] reads. Its tests build each
//! quinn error and check the reading, so a quinn upgrade that rewords one fails here.

use wire::Status;

use overlay::RpcFailure;

use crate::transport::TransportError;

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
}

impl RpcError {
    /// Whose failure it is, for the overlay.
    pub(super) fn blame(&self) -> RpcFailure {
        use TransportError as T;
        match self {
            // Our limits and our shutdown.
            RpcError::Transport(T::TooManyConnections { .. } | T::Closed | T::SelfDial) => {
                RpcFailure::Local
            }
            // Queued behind another dial of the same peer: that dial's own outcome is the
            // one that counts, once, not once per request that waited for it.
            RpcError::Transport(T::Timeout {
                what: "concurrent dial",
                ..
            }) => RpcFailure::Local,
            // Connected a moment ago and gone before the request: a connection we closed
            // (idle closing, a duplicate) as likely as one the peer lost; a dead peer fails
            // the next dial anyway.
            RpcError::Transport(T::NotConnected(_)) => RpcFailure::Local,
            RpcError::Transport(e) => match connection_error(e) {
                Some(quinn::ConnectionError::LocallyClosed) => RpcFailure::Local,
                // Closed by the peer in good order but not because it shuts down (the
                // transport's `peer_left` rule): it is there, it closed an idle
                // connection or a duplicate under our request.
                Some(quinn::ConnectionError::ApplicationClosed(c)) if !is_shutdown(c) => {
                    RpcFailure::Refused
                }
                _ => RpcFailure::Peer,
            },
            RpcError::Status(Status::Unavailable) => RpcFailure::Refused,
            RpcError::Status(_) | RpcError::Message(_) => RpcFailure::Peer,
        }
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

/// How a connection to a peer ended, as far as the routing table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The peer said it is shutting down: it leaves the table now.
    PeerLeft,
    /// Closed in good order, by us (idle closing, a duplicate, our shutdown) or by the peer
    /// (its own idle closing): nothing is known against the peer.
    Closed,
    /// Lost without a goodbye (idle timeout, reset, abort): the peer is questionable.
    Lost,
}

/// Reads a `PeerEvent::Disconnected`: `peer_left` and `closed_here` as the transport
/// decided them, `reason` the display text of quinn's `ConnectionError` (the only sign of
/// a peer's own orderly close, e.g. of an idle connection).
pub(super) fn ended(peer_left: bool, closed_here: bool, reason: &str) -> Ended {
    if peer_left {
        Ended::PeerLeft
    } else if closed_here || reason.starts_with(CLOSED_BY_PEER) {
        Ended::Closed
    } else {
        Ended::Lost
    }
}

/// The start of quinn's text for `ConnectionError::ApplicationClosed`.
const CLOSED_BY_PEER: &str = "closed by peer";

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(
            ended(false, true, &C::LocallyClosed.to_string()),
            Ended::Closed
        );
        assert_eq!(
            ended(false, false, &app_close(idle, b"idle").to_string()),
            Ended::Closed
        );
        assert_eq!(ended(false, false, &C::TimedOut.to_string()), Ended::Lost);
        assert_eq!(ended(false, false, &C::Reset.to_string()), Ended::Lost);
        assert_eq!(
            ended(false, false, &C::CidsExhausted.to_string()),
            Ended::Lost
        );
        assert_eq!(
            ended(true, false, &C::TimedOut.to_string()),
            Ended::PeerLeft
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
            assert_eq!(RpcError::from(e).blame(), RpcFailure::Local, "{why}");
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
            assert_eq!(refused.blame(), RpcFailure::Refused, "{refused}");
        }
        assert_eq!(
            RpcError::Status(Status::Unavailable).blame(),
            RpcFailure::Refused
        );
        let gone = RpcError::Transport(T::Connection(app_close(shutdown, b"shutdown")));
        assert_eq!(gone.blame(), RpcFailure::Peer);
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
            assert_eq!(RpcError::from(e).blame(), RpcFailure::Peer, "{why}");
        }
    }
}
