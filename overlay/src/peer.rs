//! What the overlay needs to know about a peer, and nothing more.
//!
//! The state machines are generic over the peer handle so that each driver keeps what it
//! needs: the node keeps a public key and socket addresses, simnet keeps a 4-byte index
//! into its arrays (100k nodes with full tables must fit in a few GiB). Inside the overlay a
//! peer's identity is its [`Key`]: two handles with the same key are the same peer.

use std::fmt::Debug;

use crate::key::Key;

/// A group of network addresses that one operator can easily fill (an IPv4 /24, an IPv6
/// /48), for the IP-diversity limits against eclipse attacks.
pub type IpGroup = u64;

/// A peer handle the overlay can store, compare and hand back to its driver.
pub trait Peer: Clone + Debug {
    /// The peer's DHT key: BLAKE3 of its public key, computed by the driver, never taken
    /// from the wire.
    fn key(&self) -> Key;

    /// The peer's address group, if diversity limits should apply to it.
    fn ip_group(&self) -> Option<IpGroup> {
        None
    }
}
