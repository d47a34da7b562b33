//! The link model: how long a message from one slot to another takes, whether a first
//! contact pays for a handshake, and what loss does to it.
//!
//! Each pair of slots has a stable base delay, drawn once from the scenario's model (or
//! fixed by regions and placement), as real paths do; each message adds its own jitter.
//! Loss is what QUIC makes of it: a lost transmission is retransmitted after 1.5–3 round
//! trips (doubling each time), so a message arrives late, and is gone only when every try
//! within [`RETRANSMISSIONS_MAX`] failed. A first contact needs a connection: one round trip
//! of handshake (whose lost packets wait QUIC's initial 1 s probe timeout), after which the
//! request goes with HELLO pipelined, as the node sends it.
//!
//! Every random draw of a message comes from its own stream, keyed by (sender, its
//! incarnation, receiver, the number of that message from sender to receiver), and every
//! base delay from one keyed by the pair: runs that differ in, say, k keep the same network
//! for the same messages (common random numbers), instead of shifting one global stream.
//! A run whose messages draw nothing (no loss or jitter, [`Network::draws`]; no duplicated
//! or reordered messages; none of them turned on later) reads no message's stream, so the
//! engine does not number its messages (`links::Links::unnumbered`).

use std::time::Duration;

use crate::scenario::{Latency, LatencyModel};
use crate::seed::{self, Stream};

/// A message is retransmitted at most this many times before it is given up.
pub const RETRANSMISSIONS_MAX: u32 = 8;
/// QUIC's probe timeout before any RTT sample (RFC 9002: initial RTT 333 ms): a lost
/// handshake packet is resent after this, doubling.
pub const HANDSHAKE_PTO: Duration = Duration::from_secs(1);
/// The node gives up a dial whose handshake has not completed after this
/// (`handshake_timeout`); a later request dials again. Without it, a handshake drawn in a
/// lossy moment (retransmissions doubling from 1 s) held a pair's every message for tens
/// of seconds, long after the loss had healed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One message's own random numbers: SplitMix64 over its stream's seed.
#[derive(Debug, Clone)]
pub struct MsgRng(u64);

impl MsgRng {
    /// The stream seeded with `seed`.
    pub fn new(seed: u64) -> MsgRng {
        MsgRng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with mean 1.
    pub fn exp(&mut self) -> f64 {
        -(1.0 - self.uniform()).ln()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Delays, loss and handshakes between slots.
#[derive(Debug)]
pub struct Network {
    model: LatencyModel,
    loss: f64,
    jitter: f64,
    master: u64,
    /// Regions model: one-way ms between regions, row-major.
    region_ms: Vec<f64>,
    regions: u32,
    /// Coordinates model only: each slot's point, in ms.
    points: Vec<(f32, f32)>,
}

fn from_ms(ms: f64) -> Duration {
    Duration::from_nanos((ms.max(0.0) * 1e6).round() as u64)
}

impl Network {
    /// The network for `nodes` slots under `latency`, with streams from `master`.
    pub fn new(latency: &Latency, nodes: u32, master: u64) -> Network {
        let points = match latency.model {
            LatencyModel::Coordinates { side_ms, .. } => {
                let mut rng = MsgRng::new(seed::derive(master, Stream::Placement, 0, 0));
                (0..nodes)
                    .map(|_| {
                        let x = rng.uniform() * side_ms;
                        let y = rng.uniform() * side_ms;
                        (x as f32, y as f32)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let (regions, region_ms) = match latency.model {
            LatencyModel::Regions {
                regions,
                intra_ms,
                inter_ms,
            } => {
                let r = regions as usize;
                let ms = if latency.rtt_ms.len() == r * r {
                    latency.rtt_ms.iter().map(|rtt| rtt / 2.0).collect()
                } else {
                    (0..r * r)
                        .map(|i| if i / r == i % r { intra_ms } else { inter_ms })
                        .collect()
                };
                (regions, ms)
            }
            _ => (0, Vec::new()),
        };
        Network {
            model: latency.model,
            loss: latency.loss,
            jitter: latency.jitter,
            master,
            region_ms,
            regions,
            points,
        }
    }

    /// Changes the loss rate from now on (the swarm heals its lossy phase with 0).
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss.clamp(0.0, 1.0);
    }

    /// Whether a message's delay is drawn (loss or jitter): otherwise it is the pair's
    /// base delay, and only message faults (duplication, reordering) could read a
    /// message's own random stream.
    pub fn draws(&self) -> bool {
        self.loss > 0.0 || self.jitter > 0.0
    }

    /// The region of a slot (regions model only).
    pub fn region(&self, slot: u32) -> Option<u32> {
        (self.regions > 0).then(|| slot % self.regions)
    }

    /// The stable one-way base delay between two slots (the same both ways).
    pub fn base(&self, a: u32, b: u32) -> Duration {
        let (lo, hi) = (a.min(b), a.max(b));
        let pair = || {
            MsgRng::new(seed::derive(
                self.master,
                Stream::Pairs,
                lo.into(),
                hi.into(),
            ))
        };
        match self.model {
            LatencyModel::Constant { ms } => from_ms(ms),
            LatencyModel::Uniform { min_ms, max_ms } => {
                from_ms(min_ms + (max_ms - min_ms) * pair().uniform())
            }
            LatencyModel::LogNormal { median_ms, sigma } => {
                from_ms(median_ms * (sigma * pair().normal()).exp())
            }
            LatencyModel::Regions { .. } => {
                let r = self.regions.max(1);
                let i = ((a % r) * r + b % r) as usize;
                from_ms(self.region_ms.get(i).copied().unwrap_or_default())
            }
            LatencyModel::Coordinates { base_ms, .. } => {
                let p = self.points.get(a as usize).copied().unwrap_or_default();
                let q = self.points.get(b as usize).copied().unwrap_or_default();
                let (dx, dy) = (f64::from(p.0 - q.0), f64::from(p.1 - q.1));
                from_ms(base_ms + (dx * dx + dy * dy).sqrt())
            }
        }
    }

    /// The random stream of the `n`-th message from incarnation `from_inc` of `from` to `to`.
    pub fn rng(&self, from: u32, from_inc: u32, to: u32, n: u32) -> MsgRng {
        let pair = (u64::from(from) << 32) | u64::from(to);
        let msg = (u64::from(from_inc) << 32) | u64::from(n);
        MsgRng::new(seed::derive(self.master, Stream::Network, pair, msg))
    }

    /// One transmission's delay: the base plus jitter.
    fn one_way(&self, base: Duration, rng: &mut MsgRng) -> Duration {
        if self.jitter > 0.0 {
            base.mul_f64(1.0 + self.jitter * rng.exp())
        } else {
            base
        }
    }

    /// A message from `from` to `to`: its delay including any retransmissions, or `None`
    /// if every try was lost; and how many retransmissions it took.
    pub fn transmit(&self, from: u32, to: u32, rng: &mut MsgRng) -> (Option<Duration>, u32) {
        let base = self.base(from, to);
        let mut waited = Duration::ZERO;
        for tries in 0..=RETRANSMISSIONS_MAX {
            if self.loss == 0.0 || rng.uniform() >= self.loss {
                return (Some(waited + self.one_way(base, rng)), tries);
            }
            // Lost: the sender's probe timeout, 1.5–3 round trips, doubling each time.
            let pto = (base * 2).mul_f64(1.5 + 1.5 * rng.uniform());
            waited += pto * (1 << tries.min(16));
        }
        (None, RETRANSMISSIONS_MAX)
    }

    /// A QUIC handshake from `from` to `to`: one round trip, each of whose packets may be
    /// lost and is then resent after [`HANDSHAKE_PTO`] (doubling); `None` if it does not
    /// complete within [`HANDSHAKE_TIMEOUT`], where the node gives the dial up.
    pub fn handshake(&self, from: u32, to: u32, rng: &mut MsgRng) -> Option<Duration> {
        let base = self.base(from, to);
        let mut waited = Duration::ZERO;
        for tries in 0..=RETRANSMISSIONS_MAX {
            let there = self.loss == 0.0 || rng.uniform() >= self.loss;
            let back = self.loss == 0.0 || rng.uniform() >= self.loss;
            if there && back {
                let took = waited + self.one_way(base, rng) + self.one_way(base, rng);
                return (took <= HANDSHAKE_TIMEOUT).then_some(took);
            }
            waited += HANDSHAKE_PTO * (1 << tries.min(16));
            if waited > HANDSHAKE_TIMEOUT {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn net(model: LatencyModel, loss: f64, jitter: f64) -> Network {
        let latency = Latency {
            model,
            loss,
            jitter,
            handshake: true,
            zero_rtt: false,
            connections_max: 256,
            region_names: Vec::new(),
            rtt_ms: Vec::new(),
        };
        Network::new(&latency, 100, 7)
    }

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1e3
    }

    #[test]
    fn each_pair_has_a_stable_base_with_the_model_s_moments() {
        let c = net(LatencyModel::Constant { ms: 50.0 }, 0.0, 0.0);
        assert_eq!(c.base(1, 2), Duration::from_millis(50));
        let u = net(
            LatencyModel::Uniform {
                min_ms: 20.0,
                max_ms: 80.0,
            },
            0.0,
            0.1,
        );
        let pairs: Vec<(u32, u32)> = (0..100).flat_map(|a| (0..a).map(move |b| (a, b))).collect();
        let mean = pairs.iter().map(|&(a, b)| ms(u.base(a, b))).sum::<f64>() / pairs.len() as f64;
        assert!((mean - 50.0).abs() < 1.0, "uniform mean {mean}");
        assert_eq!(u.base(3, 9), u.base(9, 3), "the same both ways");
        assert_eq!(u.base(3, 9), u.base(3, 9), "and every time");
        let l = net(
            LatencyModel::LogNormal {
                median_ms: 40.0,
                sigma: 0.5,
            },
            0.0,
            0.0,
        );
        let mut v: Vec<f64> = pairs.iter().map(|&(a, b)| ms(l.base(a, b))).collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        assert!((median - 40.0).abs() < 2.0, "lognormal median {median}");
        let r = net(
            LatencyModel::Regions {
                regions: 3,
                intra_ms: 10.0,
                inter_ms: 90.0,
            },
            0.0,
            0.0,
        );
        assert_eq!(r.base(0, 3), Duration::from_millis(10));
        assert_eq!(r.base(0, 4), Duration::from_millis(90));
        let k = net(
            LatencyModel::Coordinates {
                base_ms: 5.0,
                side_ms: 100.0,
            },
            0.0,
            0.0,
        );
        assert_eq!(k.base(3, 3), Duration::from_millis(5), "distance to itself");
    }

    #[test]
    fn jitter_adds_its_mean_fraction_of_the_base() {
        let n = net(LatencyModel::Constant { ms: 50.0 }, 0.0, 0.2);
        let mean = (0..20_000)
            .map(|i| ms(n.transmit(1, 2, &mut n.rng(1, 1, 2, i)).0.unwrap()))
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 60.0).abs() < 0.5, "50 ms × (1 + 0.2): {mean}");
    }

    #[test]
    fn loss_delays_messages_by_retransmission_and_rarely_loses_them() {
        let n = net(LatencyModel::Constant { ms: 50.0 }, 0.2, 0.0);
        let draws = 50_000;
        let mut retransmitted = 0;
        let mut first_retry_ms = Vec::new();
        for i in 0..draws {
            let (d, tries) = n.transmit(1, 2, &mut n.rng(1, 1, 2, i));
            let d = d.expect("0.2^9: never all lost in 50k draws");
            if tries > 0 {
                retransmitted += 1;
            }
            if tries == 1 {
                first_retry_ms.push(ms(d) - 50.0);
            }
        }
        let frac = f64::from(retransmitted) / f64::from(draws);
        assert!((frac - 0.2).abs() < 0.01, "retransmitted {frac}");
        let lo = first_retry_ms.iter().copied().fold(f64::MAX, f64::min);
        let hi = first_retry_ms.iter().copied().fold(0.0, f64::max);
        assert!(lo >= 150.0 && hi <= 300.0, "1.5–3 RTT: {lo}..{hi}");
        // The same message gets the same fate: common random numbers.
        assert_eq!(
            n.transmit(1, 2, &mut n.rng(1, 1, 2, 77)),
            n.transmit(1, 2, &mut n.rng(1, 1, 2, 77))
        );
    }

    #[test]
    fn a_handshake_is_a_round_trip_and_a_lost_packet_waits_a_second() {
        let n = net(LatencyModel::Constant { ms: 50.0 }, 0.0, 0.0);
        assert_eq!(
            n.handshake(1, 2, &mut n.rng(1, 1, 2, 0)),
            Some(Duration::from_millis(100))
        );
        let lossy = net(LatencyModel::Constant { ms: 50.0 }, 0.1, 0.0);
        let slow = (0..10_000)
            .filter(|&i| {
                lossy.handshake(1, 2, &mut lossy.rng(1, 1, 2, i))
                    >= Some(Duration::from_millis(1100))
            })
            .count();
        let frac = slow as f64 / 10_000.0;
        assert!(
            (frac - 0.19).abs() < 0.015,
            "1 − 0.9² of handshakes retry: {frac}"
        );
    }

    /// A handshake that would need its third retransmission (1 + 2 + 4 s of waiting) is
    /// given up, as the node gives up a dial after 5 s: with 50 % loss each try gets
    /// through with probability 1/4, so (3/4)³ of handshakes fail, and none that completes
    /// took longer than the timeout.
    #[test]
    fn a_handshake_is_given_up_at_the_nodes_timeout() {
        let lossy = net(LatencyModel::Constant { ms: 50.0 }, 0.5, 0.0);
        let drawn: Vec<Option<Duration>> = (0..10_000)
            .map(|i| lossy.handshake(1, 2, &mut lossy.rng(1, 1, 2, i)))
            .collect();
        assert!(drawn.iter().flatten().all(|d| *d <= HANDSHAKE_TIMEOUT));
        let failed = drawn.iter().filter(|d| d.is_none()).count() as f64 / 10_000.0;
        assert!(
            (failed - 0.75f64.powi(3)).abs() < 0.02,
            "(3/4)³ of handshakes fail: {failed}"
        );
    }
}
