//! Churn as alternating renewal processes: each slot's up and down periods, drawn so the run
//! starts in equilibrium.
//!
//! Every slot alternates up periods and down periods, each drawn independently from the
//! model (exponential; Weibull or Pareto lifetimes as in OverSim's `LifetimeChurn`, which
//! parameterises both by their mean). A process observed at an arbitrary time is up with
//! probability p = E\[up\] / (E\[up\] + E\[down\]), and the time left in its current period
//! follows the *equilibrium* (residual-life) distribution F_e(x) = ∫₀ˣ (1 − F(t)) dt / E\[X\],
//! not F itself: long periods are more likely to be the one in progress. Starting every slot
//! that way puts the whole run in the stationary regime from t = 0, which is what lets
//! `VALIDATION.md` predict the live-node count (nodes × p) at every moment.
//!
//! Each draw uses its own stream (slot, draw number), so one slot's schedule never depends on
//! another's or on what the engine did meanwhile.

use rand::Rng;
use rand_distr::{Distribution, Gamma};

use crate::scenario::ChurnModel;
use crate::seed::{self, Stream};

/// A session-length distribution with a finite mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lifetime {
    /// Exponential with this mean.
    Exponential {
        /// Mean, s.
        mean: f64,
    },
    /// Weibull with shape k and this mean (scale λ = mean / Γ(1 + 1/k)).
    Weibull {
        /// Shape k.
        shape: f64,
        /// Mean, s.
        mean: f64,
    },
    /// Pareto with shape α > 1 and this mean (x_m = mean (α − 1) / α).
    Pareto {
        /// Shape α.
        shape: f64,
        /// Mean, s.
        mean: f64,
    },
}

/// Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15).
pub fn gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}

impl Lifetime {
    /// The mean, s.
    pub fn mean(&self) -> f64 {
        match *self {
            Lifetime::Exponential { mean }
            | Lifetime::Weibull { mean, .. }
            | Lifetime::Pareto { mean, .. } => mean,
        }
    }

    /// The distribution with its derived parameters (Weibull scale, Pareto x_m).
    pub fn describe(&self) -> String {
        match *self {
            Lifetime::Exponential { mean } => format!("exponential mean {mean} s"),
            Lifetime::Weibull { shape, mean } => format!(
                "weibull shape {shape} scale {:.3} s (mean {mean} s)",
                mean / gamma(1.0 + 1.0 / shape)
            ),
            Lifetime::Pareto { shape, mean } => format!(
                "pareto shape {shape} x_m {:.3} s (mean {mean} s)",
                mean * (shape - 1.0) / shape
            ),
        }
    }

    /// A fresh period, s.
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        // 1 − U is in (0, 1]: never ln(0) or 0^(−1/α).
        let u = 1.0 - rng.r#gen::<f64>();
        match *self {
            Lifetime::Exponential { mean } => -mean * u.ln(),
            Lifetime::Weibull { shape, mean } => {
                let scale = mean / gamma(1.0 + 1.0 / shape);
                scale * (-u.ln()).powf(1.0 / shape)
            }
            Lifetime::Pareto { shape, mean } => {
                let xm = mean * (shape - 1.0) / shape;
                xm * u.powf(-1.0 / shape)
            }
        }
    }

    /// The time left in a period observed at a random moment (equilibrium distribution), s.
    pub fn sample_residual(&self, rng: &mut impl Rng) -> f64 {
        match *self {
            // Memoryless.
            Lifetime::Exponential { .. } => self.sample(rng),
            // F_e(x) = P(1/k, (x/λ)^k): x = λ G^(1/k) with G ~ Gamma(1/k, 1).
            Lifetime::Weibull { shape, mean } => {
                let scale = mean / gamma(1.0 + 1.0 / shape);
                let g = Gamma::new(1.0 / shape, 1.0).map_or(1.0, |d| d.sample(rng));
                scale * g.powf(1.0 / shape)
            }
            // F_e(x) = x/μ below x_m, 1 − (1/α)(x_m/x)^(α−1) above: inverted piecewise.
            Lifetime::Pareto { shape, mean } => {
                let xm = mean * (shape - 1.0) / shape;
                let u = rng.r#gen::<f64>();
                if u < (shape - 1.0) / shape {
                    u * mean
                } else {
                    let tail = (shape * (1.0 - u)).max(f64::MIN_POSITIVE);
                    xm * tail.powf(-1.0 / (shape - 1.0))
                }
            }
        }
    }
}

/// The up and down distributions of a renewal churn model; `None` for no churn or a trace.
pub fn lifetimes(model: &ChurnModel) -> Option<(Lifetime, Lifetime)> {
    match *model {
        ChurnModel::Exponential {
            mean_up_s,
            mean_down_s,
        } => Some((
            Lifetime::Exponential { mean: mean_up_s },
            Lifetime::Exponential { mean: mean_down_s },
        )),
        ChurnModel::Weibull {
            shape,
            mean_up_s,
            mean_down_s,
        } => Some((
            Lifetime::Weibull {
                shape,
                mean: mean_up_s,
            },
            Lifetime::Weibull {
                shape,
                mean: mean_down_s,
            },
        )),
        ChurnModel::Pareto {
            shape,
            mean_up_s,
            mean_down_s,
        } => Some((
            Lifetime::Pareto {
                shape,
                mean: mean_up_s,
            },
            Lifetime::Pareto {
                shape,
                mean: mean_down_s,
            },
        )),
        ChurnModel::None | ChurnModel::Trace { .. } => None,
    }
}

/// The renewal schedule of every slot.
#[derive(Debug)]
pub struct Schedule {
    up: Lifetime,
    down: Lifetime,
    master: u64,
    /// Draws made per slot: the index of each slot's next stream.
    draws: Vec<u32>,
}

impl Schedule {
    /// A schedule for `nodes` slots; `None` if the model is not a renewal model.
    pub fn new(model: &ChurnModel, nodes: u32, master: u64) -> Option<Schedule> {
        let (up, down) = lifetimes(model)?;
        Some(Schedule {
            up,
            down,
            master,
            draws: vec![0; nodes as usize],
        })
    }

    fn rng(&mut self, slot: u32) -> crate::seed::SimRng {
        let i = slot as usize;
        let draw = self.draws.get(i).copied().unwrap_or(0);
        if let Some(d) = self.draws.get_mut(i) {
            *d = d.wrapping_add(1);
        }
        seed::rng(self.master, Stream::Churn, slot.into(), draw.into())
    }

    /// Slot `slot` at time zero: whether it is up, and the seconds left in that period.
    pub fn initial(&mut self, slot: u32) -> (bool, f64) {
        let mut rng = self.rng(slot);
        let p = self.up.mean() / (self.up.mean() + self.down.mean());
        let up = rng.r#gen::<f64>() < p;
        let left = if up {
            self.up.sample_residual(&mut rng)
        } else {
            self.down.sample_residual(&mut rng)
        };
        (up, left)
    }

    /// The length of the period slot `slot` just entered (up if `up`), s.
    pub fn next_period(&mut self, slot: u32, up: bool) -> f64 {
        let mut rng = self.rng(slot);
        if up {
            self.up.sample(&mut rng)
        } else {
            self.down.sample(&mut rng)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn gamma_matches_known_values() {
        assert!((gamma(1.0) - 1.0).abs() < 1e-12);
        assert!((gamma(5.0) - 24.0).abs() < 1e-9);
        assert!((gamma(0.5) - std::f64::consts::PI.sqrt()).abs() < 1e-12);
        assert!((gamma(3.0) - 2.0).abs() < 1e-12);
    }

    fn mean_of(f: impl Fn(&mut crate::seed::SimRng) -> f64, n: u32) -> f64 {
        let mut rng = crate::seed::SimRng::seed_from_u64(3);
        (0..n).map(|_| f(&mut rng)).sum::<f64>() / f64::from(n)
    }

    #[test]
    fn samples_have_the_configured_mean() {
        for lt in [
            Lifetime::Exponential { mean: 100.0 },
            Lifetime::Weibull {
                shape: 0.7,
                mean: 100.0,
            },
            Lifetime::Weibull {
                shape: 2.0,
                mean: 100.0,
            },
            Lifetime::Pareto {
                shape: 3.0,
                mean: 100.0,
            },
        ] {
            let m = mean_of(|r| lt.sample(r), 400_000);
            assert!((m - 100.0).abs() < 2.5, "{lt:?}: mean {m}");
        }
    }

    #[test]
    fn residual_mean_is_second_moment_over_twice_the_mean() {
        // E[residual] = E[X²] / (2 E\[X\]). Exponential: μ. Weibull k=2, μ=100:
        // E[X²] = λ² Γ(2) with λ = 100/Γ(1.5), so E = λ²/200. Pareto α=4, μ=100:
        // x_m = 75, E[X²] = α x_m²/(α−2) = 11250, so E = 56.25.
        let lam = 100.0 / gamma(1.5);
        for (lt, want) in [
            (Lifetime::Exponential { mean: 100.0 }, 100.0),
            (
                Lifetime::Weibull {
                    shape: 2.0,
                    mean: 100.0,
                },
                lam * lam / 200.0,
            ),
            (
                Lifetime::Pareto {
                    shape: 4.0,
                    mean: 100.0,
                },
                56.25,
            ),
        ] {
            let m = mean_of(|r| lt.sample_residual(r), 400_000);
            assert!(
                (m - want).abs() < want * 0.03,
                "{lt:?}: residual mean {m}, want {want}"
            );
        }
    }
}
