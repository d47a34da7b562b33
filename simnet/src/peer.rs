//! The peer handle simnet gives the overlay: a 4-byte index naming a (DHT key, slot) pair.
//!
//! Routing tables, replacement caches, lookups and messages hold this `Copy` value instead
//! of anything that owns memory; everything else about a node (its state machine, region,
//! objects) lives once in the engine's arrays, found by `slot`. A slot is reused when churn
//! brings a node back with a fresh id, so the key says which incarnation a handle meant: a
//! message whose key no longer matches the slot's node goes nowhere, as it would on a real
//! network.
//!
//! The key and slot themselves live once per incarnation in a per-thread arena, read
//! through the index. A routing entry holding the 36-byte pair itself was 64 bytes and a
//! replacement 48; with the index they are 32 and 16, which is what lets 100k (and 10^6)
//! nodes with full tables fit in memory. The price is one more memory read per key, which
//! the overlay mostly avoids: a routing entry keeps its key's first 8 bytes beside the
//! handle and ranks and matches on them, reading the key only on a tie. A
//! simulation runs on one thread from start to end (a sweep's points each run on one
//! worker thread), so its handles never meet another thread's arena. The arena only grows
//! (36 bytes per incarnation, and per peer a lying node makes up, on the thread; a sweep's
//! worker keeps every point's): a handle stays valid as long as the thread lives.
//!
//! Equality, order and `Debug` are those of the (key, slot) pair, exactly as when the
//! handle held the pair: two handles made separately for the same pair are equal.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use overlay::{Key, Peer};

/// Every (key, slot) pair handed out on this thread, by handle index.
#[derive(Default)]
struct Arena {
    keys: Vec<Key>,
    slots: Vec<u32>,
}

thread_local! {
    static ARENA: RefCell<Arena> = const {
        RefCell::new(Arena {
            keys: Vec::new(),
            slots: Vec::new(),
        })
    };
}

/// A simulated node as the overlay sees it: an index into this thread's arena of
/// (key, slot) pairs. Neither `Send` nor `Sync`: on another thread the index would name
/// another arena's pair.
#[derive(Clone, Copy)]
pub struct SimPeer(u32, PhantomData<*const ()>);

impl SimPeer {
    /// A new handle for `key` at `slot`. Each call adds 36 bytes to the thread's arena:
    /// make one per incarnation and copy it, rather than one per use.
    ///
    /// # Panics
    ///
    /// If the thread already made 2^32 handles (a simulation of that size does not fit in
    /// memory anyway).
    pub fn new(key: Key, slot: u32) -> SimPeer {
        ARENA.with_borrow_mut(|a| {
            let Ok(i) = u32::try_from(a.keys.len()) else {
                panic!("more than 2^32 simnet peer handles on one thread");
            };
            a.keys.push(key);
            a.slots.push(slot);
            SimPeer(i, PhantomData)
        })
    }

    /// DHT key.
    pub fn key(&self) -> Key {
        ARENA.with_borrow(|a| a.keys[self.0 as usize])
    }

    /// Index of the node's slot in the engine.
    pub fn slot(&self) -> u32 {
        ARENA.with_borrow(|a| a.slots[self.0 as usize])
    }

    /// The (key, slot) pair: what the handle means, and what it compares by.
    pub fn pair(&self) -> (Key, u32) {
        ARENA.with_borrow(|a| (a.keys[self.0 as usize], a.slots[self.0 as usize]))
    }
}

impl Peer for SimPeer {
    fn key(&self) -> Key {
        SimPeer::key(self)
    }
}

impl PartialEq for SimPeer {
    fn eq(&self, other: &SimPeer) -> bool {
        self.0 == other.0 || self.pair() == other.pair()
    }
}

impl Eq for SimPeer {}

impl PartialOrd for SimPeer {
    fn partial_cmp(&self, other: &SimPeer) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SimPeer {
    fn cmp(&self, other: &SimPeer) -> Ordering {
        self.pair().cmp(&other.pair())
    }
}

impl fmt::Debug for SimPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, slot) = self.pair();
        f.debug_struct("SimPeer")
            .field("key", &key)
            .field("slot", &slot)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_four_bytes_and_reads_back_its_pair() {
        assert_eq!(std::mem::size_of::<SimPeer>(), 4);
        let a = SimPeer::new(Key([1; 32]), 7);
        let b = SimPeer::new(Key([2; 32]), 3);
        let a2 = SimPeer::new(Key([1; 32]), 7);
        assert_eq!((a.key(), a.slot()), (Key([1; 32]), 7));
        assert_eq!((b.key(), b.slot()), (Key([2; 32]), 3));
        // Made separately, the same pair: the same peer.
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(
            format!("{a:?}"),
            format!("SimPeer {{ key: {:?}, slot: 7 }}", Key([1; 32]))
        );
    }

    #[test]
    fn overlay_entries_shrink_with_the_handle() {
        // What the handle is for: a routing entry of 32 bytes instead of 64 (the handle
        // and the first word of its key among them), a replacement of 16 instead of 48.
        assert_eq!(std::mem::size_of::<overlay::routing::Entry<SimPeer>>(), 32);
    }
}
