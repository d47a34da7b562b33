//! Whose failure it is: what a driver saw happen to a request, a transfer or a connection,
//! and what the table or the replication planner may hold against the peer for it.
//!
//! The table evicts contacts on failures and pings questionable ones. A failure wrongly
//! blamed on a peer evicts a healthy contact; a disconnect wrongly read as a loss starts a
//! probe. So the rule lives here, where a simulator can run it too (simnet sends its lost
//! connections through [`Dht::handle_connection`](crate::Dht::handle_connection)): only
//! what the peer did, or what the network did to it, counts. Our own shortages (request slots, the connection cap, a
//! dial queued behind another, a connection we closed, our shutdown) never do; a peer that
//! is there but declined (busy, an idle connection closed under a request, "unavailable")
//! is a refusal. The driver's part is only to name what happened in these terms (the node
//! reads quinn's errors).

use crate::dht::RpcFailure;
use crate::key::Key;

/// What went wrong with one request, in the driver's words, before anyone is blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// Our own cap on requests in flight was reached: the request never left.
    RequestSlots,
    /// Our own connection cap was reached: no connection for it.
    ConnectionCap,
    /// We are shutting down, or the request was addressed to ourselves.
    OursClosing,
    /// The request waited behind another dial of the same peer, which failed: that dial's
    /// own outcome is the one that counts, once, not once per request that waited for it.
    DialQueued,
    /// The connection was there a moment ago and gone before the request: one we closed
    /// (idle closing, a duplicate) as likely as one the peer lost; a dead peer fails the next
    /// dial anyway.
    NotConnected,
    /// A connection we closed ourselves.
    ClosedHere,
    /// The peer closed the connection in good order and is not shutting down (its idle
    /// closing, a duplicate, busy): it is there.
    PeerClosed,
    /// The peer answered that it cannot serve the request now ("unavailable").
    Unavailable,
    /// The peer closed its connection because it shuts down.
    PeerShutdown,
    /// Anything else the peer's side of the exchange did: no answer in time, a reset or a
    /// lost connection, a dial or a handshake that failed, broken framing.
    Silent,
    /// The peer answered, with a status that is no answer or bytes that do not decode.
    BadAnswer,
}

impl FailureCause {
    /// Whose failure it is, for the table.
    pub fn blame(self) -> RpcFailure {
        match self {
            FailureCause::RequestSlots
            | FailureCause::ConnectionCap
            | FailureCause::OursClosing
            | FailureCause::DialQueued
            | FailureCause::NotConnected
            | FailureCause::ClosedHere => RpcFailure::Local,
            FailureCause::PeerClosed | FailureCause::Unavailable => RpcFailure::Refused,
            FailureCause::PeerShutdown | FailureCause::Silent | FailureCause::BadAnswer => {
                RpcFailure::Peer
            }
        }
    }
}

impl From<FailureCause> for RpcFailure {
    fn from(cause: FailureCause) -> RpcFailure {
        cause.blame()
    }
}

/// Why a transfer ended without the target's proof or answer, in the driver's words: the
/// planner, not the driver, decides from it whether the target waits before it is asked
/// again ([`TransferFault::blame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferFault {
    /// The exchange failed the way a request can, named in the same terms.
    Exchange(FailureCause),
    /// The target answered with a status that declines the transfer (not close enough to
    /// hold it, full, refusing the pusher).
    Declined,
    /// The target is taking in the object from another pusher right now.
    InProgress,
    /// The target's answer broke the protocol, or its bytes failed verification.
    BadAnswer,
    /// The target took longer than the wait its caller gave it (a write's cut, an
    /// operator's repair).
    TooSlow,
    /// Our own copy could not be read, or failed verification as we read it to send.
    OurStore,
    /// Our queue of transfers was full: it never started.
    OurQueue,
    /// The write that ran it no longer needed it and stopped it unfinished.
    Stopped,
}

impl TransferFault {
    /// Whose failure it is. [`RpcFailure::Local`] costs the target nothing; a refusal or a
    /// fault of the peer's makes the planner wait before it asks the target again.
    pub fn blame(self) -> RpcFailure {
        match self {
            TransferFault::Exchange(cause) => cause.blame(),
            TransferFault::Declined | TransferFault::InProgress => RpcFailure::Refused,
            TransferFault::BadAnswer | TransferFault::TooSlow => RpcFailure::Peer,
            TransferFault::OurStore | TransferFault::OurQueue | TransferFault::Stopped => {
                RpcFailure::Local
            }
        }
    }
}

/// What happened to a connection with a peer, as the driver saw it: the table's one input
/// from the transport ([`Dht::handle_connection`](crate::Dht::handle_connection)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent<P> {
    /// We dialed the peer and it answered as the key we asked for (its handshake proved the
    /// key, its HELLO answered ours): alive. In a full bucket it only waits as a
    /// replacement: a new connection never probes anyone.
    Dialed(P),
    /// The peer dialed us: a stranger until it answers a request of ours, so nothing yet.
    Accepted(P),
    /// The peer said it is shutting down: it leaves the table now, not after failed probes.
    PeerLeft(Key),
    /// Closed in good order, by us (idle closing, a duplicate, our shutdown) or by the peer
    /// (its own idle closing): nothing is known against the peer.
    Closed(Key),
    /// Lost without a goodbye (idle timeout, reset, abort): the peer is questionable, pinged
    /// before it is trusted again (at most one probe per bucket).
    Lost(Key),
}
