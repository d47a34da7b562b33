//! Round-trip time estimates: RFC 6298's smoothed RTT and RTT variation for one contact,
//! and a streaming 99th percentile for the network as a whole.
//!
//! A lookup gives each request a soft timeout: past it the request stops holding a slot of
//! the walk, though its answer is still used if it comes. For a contact, that is its SRTT +
//! 4·RTTVAR (at least 2·SRTT) plus one SRTT of room for a handshake. For a stranger there is
//! no path of its own to follow: strangers are a population, near and far, most of them
//! needing a handshake, and an SRTT/RTTVAR over them collapses after a run of near ones
//! (the first simnet runs gave up on one live far stranger in twenty). Their estimate is
//! [`RttTail`], the 99th percentile of strangers' round trips. Samples are whole request
//! round trips as the overlay sees them, handshakes included.
//!
//! The soft timeout is made for freeing slots, and may pass before a far peer answers; a
//! walk gives up on such a request only later, past [`RttMax`]: a bound on any live round
//! trip seen lately (a maximum that decays), which follows the farthest peers of a mixed
//! population at once where a quantile estimate lags behind them. Stored as microseconds in
//! `u32`s: a routing table entry grows by 8 bytes, which 100k simulated tables can afford.

use std::time::Duration;

/// SRTT and RTTVAR of one peer (or of the network). `Rtt::UNKNOWN` until the first sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rtt {
    /// Smoothed RTT in µs; 0 = no sample yet.
    srtt_us: u32,
    /// RTT variation in µs.
    rttvar_us: u32,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1)
}

impl Rtt {
    /// No sample yet.
    pub const UNKNOWN: Rtt = Rtt {
        srtt_us: 0,
        rttvar_us: 0,
    };

    /// Whether a sample has been taken.
    pub fn is_known(&self) -> bool {
        self.srtt_us != 0
    }

    /// Folds in one round trip (RFC 6298 §2: α = 1/8, β = 1/4; the first sample sets
    /// SRTT = R and RTTVAR = R/2).
    pub fn sample(&mut self, rtt: Duration) {
        let r = micros(rtt);
        if !self.is_known() {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
            return;
        }
        let (srtt, rttvar, r) = (
            u64::from(self.srtt_us),
            u64::from(self.rttvar_us),
            u64::from(r),
        );
        let dev = srtt.abs_diff(r);
        self.rttvar_us = ((3 * rttvar + dev) / 4) as u32;
        self.srtt_us = ((7 * srtt + r) / 8).max(1) as u32;
    }

    /// The smoothed RTT, if known.
    pub fn srtt(&self) -> Option<Duration> {
        self.is_known()
            .then(|| Duration::from_micros(u64::from(self.srtt_us)))
    }

    /// SRTT + 4·RTTVAR, but at least 2·SRTT (on a steady link RTTVAR decays to 0, and a
    /// timeout of exactly SRTT would race every answer), clamped to `[min, max]`; `None`
    /// before the first sample.
    pub fn timeout(&self, min: Duration, max: Duration) -> Option<Duration> {
        let srtt = self.srtt()?;
        let var = Duration::from_micros(u64::from(self.rttvar_us));
        Some((srtt + var * 4).max(srtt * 2).clamp(min, max.max(min)))
    }
}

/// A streaming estimate of the 99th percentile of round trips (stochastic approximation
/// of the quantile: each sample above the estimate raises it by 1/64 of itself times 0.99,
/// each one below lowers it by 1/64 times 0.01, which balances where 1 % of samples lie
/// above). It starts at three times the first sample, and never needs the samples kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttTail {
    /// The estimate in µs; 0 = no sample yet.
    q_us: u32,
}

impl RttTail {
    /// No sample yet.
    pub const UNKNOWN: RttTail = RttTail { q_us: 0 };

    /// Folds in one round trip.
    pub fn sample(&mut self, rtt: Duration) {
        let r = u64::from(micros(rtt));
        if self.q_us == 0 {
            self.q_us = u32::try_from(3 * r).unwrap_or(u32::MAX);
            return;
        }
        let q = u64::from(self.q_us);
        let step = (q / 64).max(1);
        let q = if r > q {
            q + (step * 99).div_ceil(100)
        } else {
            q.saturating_sub((step / 100).max(1))
        };
        self.q_us = u32::try_from(q.max(1)).unwrap_or(u32::MAX);
    }

    /// The estimate clamped to `[min, max]`, if any sample came.
    pub fn timeout(&self, min: Duration, max: Duration) -> Option<Duration> {
        (self.q_us != 0)
            .then(|| Duration::from_micros(u64::from(self.q_us)).clamp(min, max.max(min)))
    }
}

/// A decaying maximum of round trips: each sample first lowers the estimate by 1/128 of
/// itself, then raises it to the sample if that is longer. A far peer's round trip sets it
/// at once; without such samples it halves in about 90 samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttMax {
    /// The estimate in µs; 0 = no sample yet.
    max_us: u32,
    /// Samples folded in, up to `u32::MAX`.
    samples: u32,
}

impl RttMax {
    /// No sample yet.
    pub const UNKNOWN: RttMax = RttMax {
        max_us: 0,
        samples: 0,
    };

    /// Folds in one round trip.
    pub fn sample(&mut self, rtt: Duration) {
        let decayed = self.max_us - self.max_us / 128;
        self.max_us = decayed.max(micros(rtt));
        self.samples = self.samples.saturating_add(1);
    }

    /// Samples folded in so far.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The estimate, if any sample came.
    pub fn get(&self) -> Option<Duration> {
        (self.max_us != 0).then(|| Duration::from_micros(u64::from(self.max_us)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc_6298() {
        let ms = Duration::from_millis;
        let mut r = Rtt::UNKNOWN;
        assert_eq!(r.timeout(ms(10), ms(5000)), None);
        r.sample(ms(100));
        // First sample: SRTT 100, RTTVAR 50: 100 + 200.
        assert_eq!(r.timeout(ms(10), ms(5000)), Some(ms(300)));
        for _ in 0..100 {
            r.sample(ms(100));
        }
        // A steady RTT: the variation decays towards 0, twice the SRTT takes over, and the
        // floor above that.
        assert_eq!(r.srtt(), Some(ms(100)));
        assert_eq!(r.timeout(ms(150), ms(5000)), Some(ms(200)));
        assert_eq!(r.timeout(ms(250), ms(5000)), Some(ms(250)));
        r.sample(ms(900));
        assert_eq!(r.srtt(), Some(ms(200)), "7/8 · 100 + 1/8 · 900");
        assert!(
            r.timeout(ms(10), ms(5000)) > Some(ms(800)),
            "the variation jumps"
        );
        assert_eq!(
            r.timeout(ms(10), ms(500)),
            Some(ms(500)),
            "never past the hard bound"
        );
    }

    #[test]
    fn the_decaying_maximum_follows_the_farthest_peers_at_once() {
        let ms = Duration::from_millis;
        let mut m = RttMax::UNKNOWN;
        assert_eq!(m.get(), None);
        // Near peers first, then one far answer in three: the far round trip is the bound
        // from its first sample on, where the 99th-percentile estimate is still far below.
        let mut tail = RttTail::UNKNOWN;
        for i in 0..60u64 {
            let r = if i >= 20 && i % 3 == 0 { 760 } else { 120 };
            m.sample(ms(r));
            tail.sample(ms(r));
        }
        let bound = m.get().map_or(0, |d| d.as_millis());
        assert!((700..=760).contains(&bound), "{bound}");
        let q = tail.timeout(ms(1), ms(5000)).map_or(0, |d| d.as_millis());
        assert!(q < 600, "the quantile estimate lags: {q}");
        // Without far answers it decays towards the near ones, never below them.
        for _ in 0..1000 {
            m.sample(ms(120));
        }
        assert_eq!(m.get(), Some(ms(120)));
    }

    #[test]
    fn the_tail_estimate_finds_the_99th_percentile() {
        let ms = Duration::from_millis;
        let mut t = RttTail::UNKNOWN;
        assert_eq!(t.timeout(ms(1), ms(5000)), None);
        // Round trips spread evenly over 100..=299 ms, in a scrambled but fixed order: the
        // 99th percentile is 298 ms.
        for i in 0..40_000u64 {
            t.sample(ms(100 + (i * 7919) % 200));
        }
        let q = t.timeout(ms(1), ms(5000)).map(|d| d.as_millis());
        assert!(q.is_some_and(|q| (290..=305).contains(&q)), "{q:?}");
        // A population that gets faster pulls it down.
        for _ in 0..40_000 {
            t.sample(ms(50));
        }
        let q = t.timeout(ms(1), ms(5000)).map(|d| d.as_millis());
        assert!(q.is_some_and(|q| q < 100), "{q:?}");
    }
}
