//! The link model: how long a message from one slot to another takes, and whether it
//! arrives at all.
//!
//! Delays are one-way and drawn per message from the scenario's model; loss drops each
//! message independently (a lost request and a lost response look the same to the sender:
//! no answer, then a timeout). Placement-based models (regions, coordinates) fix each
//! slot's place once, from the placement stream, so a slot keeps its place across
//! incarnations. Draws come from one network stream in event order, which the event queue
//! makes deterministic.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

use crate::scenario::{Latency, LatencyModel};
use crate::seed::{self, SimRng, Stream};

/// Delays and loss between slots.
#[derive(Debug)]
pub struct Network {
    model: LatencyModel,
    loss: f64,
    rng: SimRng,
    lognormal: Option<LogNormal<f64>>,
    /// Coordinates model only: each slot's point, in ms.
    points: Vec<(f32, f32)>,
}

fn from_ms(ms: f64) -> Duration {
    Duration::from_nanos((ms.max(0.0) * 1e6).round() as u64)
}

impl Network {
    /// The network for `nodes` slots under `latency`, with streams from `master`.
    pub fn new(latency: &Latency, nodes: u32, master: u64) -> Network {
        let lognormal = match latency.model {
            // median = e^μ.
            LatencyModel::LogNormal { median_ms, sigma } => {
                LogNormal::new(median_ms.ln(), sigma).ok()
            }
            _ => None,
        };
        let points = match latency.model {
            LatencyModel::Coordinates { side_ms, .. } => {
                let mut rng = seed::rng(master, Stream::Placement, 0, 0);
                (0..nodes)
                    .map(|_| {
                        let x = rng.r#gen::<f64>() * side_ms;
                        let y = rng.r#gen::<f64>() * side_ms;
                        (x as f32, y as f32)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Network {
            model: latency.model,
            loss: latency.loss,
            rng: seed::rng(master, Stream::Network, 0, 0),
            lognormal,
            points,
        }
    }

    /// The region of a slot (regions model only).
    pub fn region(&self, slot: u32) -> Option<u32> {
        match self.model {
            LatencyModel::Regions { regions, .. } => Some(slot % regions),
            _ => None,
        }
    }

    /// A delay from `from` to `to`, not subject to loss.
    pub fn sample_delay(&mut self, from: u32, to: u32) -> Duration {
        match self.model {
            LatencyModel::Constant { ms } => from_ms(ms),
            LatencyModel::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    from_ms(self.rng.gen_range(min_ms..=max_ms))
                } else {
                    from_ms(min_ms)
                }
            }
            LatencyModel::LogNormal { median_ms, .. } => match &self.lognormal {
                Some(d) => from_ms(d.sample(&mut self.rng)),
                None => from_ms(median_ms),
            },
            LatencyModel::Regions {
                regions,
                intra_ms,
                inter_ms,
            } => {
                if from % regions == to % regions {
                    from_ms(intra_ms)
                } else {
                    from_ms(inter_ms)
                }
            }
            LatencyModel::Coordinates { base_ms, .. } => {
                let a = self.points.get(from as usize).copied().unwrap_or_default();
                let b = self.points.get(to as usize).copied().unwrap_or_default();
                let (dx, dy) = (f64::from(a.0 - b.0), f64::from(a.1 - b.1));
                from_ms(base_ms + (dx * dx + dy * dy).sqrt())
            }
        }
    }

    /// The delay of one message from `from` to `to`, or `None` if it is lost.
    pub fn send(&mut self, from: u32, to: u32) -> Option<Duration> {
        if self.loss > 0.0 && self.rng.r#gen::<f64>() < self.loss {
            return None;
        }
        Some(self.sample_delay(from, to))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn net(model: LatencyModel, loss: f64) -> Network {
        Network::new(&Latency { model, loss }, 100, 7)
    }

    fn mean_ms(n: &mut Network, draws: u32) -> f64 {
        (0..draws)
            .map(|i| n.sample_delay(i % 100, (i * 7 + 1) % 100).as_secs_f64() * 1e3)
            .sum::<f64>()
            / f64::from(draws)
    }

    #[test]
    fn models_have_their_documented_moments() {
        let mut c = net(LatencyModel::Constant { ms: 50.0 }, 0.0);
        assert_eq!(c.sample_delay(1, 2), Duration::from_millis(50));
        let mut u = net(
            LatencyModel::Uniform {
                min_ms: 20.0,
                max_ms: 80.0,
            },
            0.0,
        );
        let m = mean_ms(&mut u, 20_000);
        assert!((m - 50.0).abs() < 1.0, "uniform mean {m}");
        let mut l = net(
            LatencyModel::LogNormal {
                median_ms: 40.0,
                sigma: 0.5,
            },
            0.0,
        );
        let mut v: Vec<Duration> = (0..20_001).map(|_| l.sample_delay(0, 1)).collect();
        v.sort();
        let median = v[10_000].as_secs_f64() * 1e3;
        assert!((median - 40.0).abs() < 1.5, "lognormal median {median}");
        let mut r = net(
            LatencyModel::Regions {
                regions: 3,
                intra_ms: 10.0,
                inter_ms: 90.0,
            },
            0.0,
        );
        assert_eq!(r.sample_delay(0, 3), Duration::from_millis(10));
        assert_eq!(r.sample_delay(0, 4), Duration::from_millis(90));
        let mut k = net(
            LatencyModel::Coordinates {
                base_ms: 5.0,
                side_ms: 100.0,
            },
            0.0,
        );
        let d = k.sample_delay(3, 3);
        assert_eq!(
            d,
            Duration::from_millis(5),
            "distance to itself is the base"
        );
    }

    #[test]
    fn loss_drops_that_fraction() {
        let mut n = net(LatencyModel::Constant { ms: 1.0 }, 0.2);
        let lost = (0..50_000).filter(|_| n.send(0, 1).is_none()).count();
        let frac = lost as f64 / 50_000.0;
        assert!((frac - 0.2).abs() < 0.01, "lost {frac}");
    }
}
