//! The peer handle simnet gives the overlay: a DHT key and a slot index, nothing more.
//!
//! Routing tables, lookups and messages hold this 36-byte `Copy` value instead of anything
//! that owns memory; everything else about a node (its state machine, region, objects) lives
//! once in the engine's arrays, found by `slot`. A slot is reused when churn brings a node
//! back with a fresh id, so the key says which incarnation a handle meant: a message whose
//! key no longer matches the slot's node goes nowhere, as it would on a real network.

use overlay::{Key, Peer};

/// A simulated node as the overlay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SimPeer {
    /// DHT key.
    pub key: Key,
    /// Index of the node's slot in the engine.
    pub slot: u32,
}

impl Peer for SimPeer {
    fn key(&self) -> Key {
        self.key
    }
}
