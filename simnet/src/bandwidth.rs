//! The bandwidth model (`[bandwidth]`, off by default): every node has an uplink and a
//! downlink of fixed capacity, and every movement of object bytes (a put's push, a repair
//! transfer, a get's fetch) must hold both the sender's uplink and the receiver's downlink
//! for `bytes / min(uplink, downlink)` before its last byte travels the one-way delay.
//!
//! Each link is a calendar of reservations. A transfer ready at `t` takes the earliest
//! interval at or after `t` that is free on both of its links, first come first served (a
//! transfer never delays one reserved before it; a later, shorter one may use a gap left
//! before an earlier, longer one). One transfer at a time per link, at the full rate: no
//! fair sharing between concurrent flows and no congestion control. Small messages (DHT
//! requests and answers, `Stored` and transfer outcomes, verify-only checks, a get's
//! probes) stay latency-only. Everything is a function of the events: no randomness.

use std::time::Duration;

use overlay::Instant;

/// Link capacities, bytes per second (`[bandwidth]`; the file gives Mbit/s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bandwidth {
    /// Each node's uplink, bytes/s (>= 1).
    pub uplink: u64,
    /// Each node's downlink, bytes/s (>= 1).
    pub downlink: u64,
}

/// Bytes per second of `mbps` megabits (10^6 bits) per second.
pub fn bytes_per_s(mbps: f64) -> u64 {
    (mbps * 125_000.0).round() as u64
}

/// How long `bytes` take at `rate` bytes/s, rounded up to the nanosecond.
pub fn serialization(bytes: u64, rate: u64) -> Duration {
    let ns = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(rate.max(1)));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// One link's reservations: (start, end) intervals, pairwise disjoint, unordered.
type Calendar = Vec<(Instant, Instant)>;

/// Every node's two links.
#[derive(Debug)]
pub struct Pipes {
    cap: Bandwidth,
    up: Vec<Calendar>,
    down: Vec<Calendar>,
}

impl Pipes {
    /// Free links for `nodes` slots.
    pub fn new(cap: Bandwidth, nodes: u32) -> Pipes {
        Pipes {
            cap,
            up: vec![Vec::new(); nodes as usize],
            down: vec![Vec::new(); nodes as usize],
        }
    }

    /// Reserves `from`'s uplink and `to`'s downlink for `bytes`, from the earliest time at
    /// or after `ready` both are free: returns (start, end) of the bytes' serialization.
    /// Reservations that ended by `now` are forgotten. A node sending to itself moves no
    /// bytes over a link: (ready, ready).
    pub fn reserve(
        &mut self,
        now: Instant,
        from: u32,
        to: u32,
        ready: Instant,
        bytes: u64,
    ) -> (Instant, Instant) {
        if from == to {
            return (ready, ready);
        }
        let (f, t) = (from as usize, to as usize);
        self.up[f].retain(|&(_, e)| e > now);
        self.down[t].retain(|&(_, e)| e > now);
        let took = serialization(bytes, self.cap.uplink.min(self.cap.downlink));
        let mut start = ready;
        // Move past every reservation the candidate overlaps until none does; each move
        // goes to an overlapping reservation's end, so this ends after at most as many
        // moves as there are reservations.
        loop {
            let end = start + took;
            let clash = self.up[f]
                .iter()
                .chain(self.down[t].iter())
                .filter(|&&(s, e)| s < end && e > start)
                .map(|&(_, e)| e)
                .max();
            match clash {
                Some(e) => start = e,
                None => break,
            }
        }
        let end = start + took;
        if end > start {
            self.up[f].push((start, end));
            self.down[t].push((start, end));
        }
        (start, end)
    }

    /// A node crashed: its links' reservations go (its peers' ends keep theirs, a
    /// simplification: the bytes it was sending or receiving stop, their time is not
    /// handed back to the other side).
    pub fn clear(&mut self, slot: u32) {
        let i = slot as usize;
        if let Some(c) = self.up.get_mut(i) {
            c.clear();
        }
        if let Some(c) = self.down.get_mut(i) {
            c.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn transfers_into_one_node_queue_in_order() {
        // 1 MB/s both ways: 100 kB take 100 ms.
        let cap = Bandwidth {
            uplink: 1_000_000,
            downlink: 1_000_000,
        };
        let mut p = Pipes::new(cap, 5);
        for (k, from) in [1, 2, 3, 4].into_iter().enumerate() {
            let (s, e) = p.reserve(at(0), from, 0, at(0), 100_000);
            assert_eq!((s, e), (at(100 * k as u64), at(100 * (k as u64 + 1))));
        }
    }

    #[test]
    fn the_slower_link_sets_the_rate_and_gaps_are_used() {
        let cap = Bandwidth {
            uplink: 1_000_000,
            downlink: 500_000,
        };
        let mut p = Pipes::new(cap, 4);
        // 100 kB at 500 kB/s: 200 ms, from 1 s.
        assert_eq!(
            p.reserve(at(0), 0, 1, at(1000), 100_000),
            (at(1000), at(1200))
        );
        // A later request ready now fits in the gap before it.
        assert_eq!(p.reserve(at(0), 0, 2, at(0), 50_000), (at(0), at(100)));
        // One that does not fit waits for the end.
        assert_eq!(
            p.reserve(at(0), 3, 1, at(900), 100_000),
            (at(1200), at(1400))
        );
        // Self-transfers move nothing.
        assert_eq!(p.reserve(at(0), 2, 2, at(5), 1 << 30), (at(5), at(5)));
    }

    #[test]
    fn serialization_is_exact_and_rounds_up() {
        assert_eq!(serialization(1_000_000, 1_000_000), Duration::from_secs(1));
        assert_eq!(serialization(1, 3), Duration::from_nanos(333_333_334));
        assert_eq!(bytes_per_s(100.0), 12_500_000);
    }
}
