//! Virtual time: the only clock `overlay` knows is the `now` its driver hands in.
//!
//! The node maps its tokio clock onto this (time since the process started); simnet maps its
//! event queue's virtual time. Neither the system clock nor `std::time::Instant` appears in
//! the state machines, so a run is a pure function of its inputs.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, as nanoseconds since the driver's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The driver's epoch.
    pub const ZERO: Instant = Instant(0);

    /// The instant `since_epoch` after the epoch.
    pub fn from_duration(since_epoch: Duration) -> Instant {
        Instant(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Nanoseconds since the epoch: the instant as one machine word, for drivers that key
    /// their own structures by time (simnet's event queue).
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the epoch.
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}
