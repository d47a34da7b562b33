//! What the sans-IO tests that drive one `Dht` by hand share: a peer that is just its key,
//! and virtual time in milliseconds.

use std::time::Duration;

use overlay::{Instant, Key, Peer};

/// A peer that is only its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P(pub Key);

impl Peer for P {
    fn key(&self) -> Key {
        self.0
    }
}

/// `ms` milliseconds after the epoch.
pub fn at(ms: u64) -> Instant {
    Instant::ZERO + Duration::from_millis(ms)
}
