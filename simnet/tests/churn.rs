//! Churn starts and stays in equilibrium: each slot is an alternating renewal process, so
//! the expected number of live nodes is nodes × E[up] / (E[up] + E[down]) at every moment
//! (VALIDATION.md §4). Checked on the schedule alone with many slots (tight band), on full
//! runs of each renewal model (the engine's own live count), and against a deliberately
//! wrong start (fresh sessions instead of residual ones) that the same band must reject.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use simnet::churn::{Lifetime, Schedule};
use simnet::scenario::ChurnModel;

/// Hoeffding: n independent [0, 1] variables stay within this of their expected sum with
/// probability at least 1 − δ.
fn hoeffding(n: f64, delta: f64) -> f64 {
    (n * (2.0 / delta).ln() / 2.0).sqrt()
}

/// Something that decides each slot's periods.
trait Process {
    /// Up at time zero, and the seconds left in that period.
    fn initial(&mut self, slot: u32) -> (bool, f64);
    /// The length of the period just entered.
    fn next(&mut self, slot: u32, up: bool) -> f64;
}

impl Process for Schedule {
    fn initial(&mut self, slot: u32) -> (bool, f64) {
        Schedule::initial(self, slot)
    }
    fn next(&mut self, slot: u32, up: bool) -> f64 {
        self.next_period(slot, up)
    }
}

/// Fraction of `n` slots up at each of `times` (s).
fn up_fraction_at(n: u32, times: &[f64], p: &mut impl Process) -> Vec<f64> {
    let mut up_at = vec![0u32; times.len()];
    for slot in 0..n {
        let (mut up, mut left) = p.initial(slot);
        let mut t = 0.0;
        for (i, &sample) in times.iter().enumerate() {
            while t + left <= sample {
                t += left;
                up = !up;
                left = p.next(slot, up);
            }
            up_at[i] += u32::from(up);
        }
    }
    up_at.iter().map(|&c| f64::from(c) / f64::from(n)).collect()
}

/// The mistake a residual-life start avoids: the right fraction up, but every slot starts
/// a fresh period at time zero.
struct FreshStart {
    up: Lifetime,
    down: Lifetime,
    rng: rand_chacha::ChaCha8Rng,
}

impl Process for FreshStart {
    fn initial(&mut self, slot: u32) -> (bool, f64) {
        let is_up = slot % 4 != 0;
        (is_up, self.next(slot, is_up))
    }
    fn next(&mut self, _: u32, up: bool) -> f64 {
        if up {
            self.up.sample(&mut self.rng)
        } else {
            self.down.sample(&mut self.rng)
        }
    }
}

fn models() -> Vec<ChurnModel> {
    vec![
        ChurnModel::Exponential {
            mean_up_s: 600.0,
            mean_down_s: 200.0,
        },
        ChurnModel::Weibull {
            shape: 0.5,
            mean_up_s: 600.0,
            mean_down_s: 200.0,
        },
        ChurnModel::Pareto {
            shape: 1.5,
            mean_up_s: 600.0,
            mean_down_s: 200.0,
        },
    ]
}

#[test]
fn the_schedule_is_in_equilibrium_at_every_moment() {
    let n = 20_000;
    let band = hoeffding(f64::from(n), 1e-4) / f64::from(n);
    let times = [0.0, 100.0, 300.0, 1000.0, 3000.0];
    for model in models() {
        let mut s = Schedule::new(&model, n, 9).unwrap();
        let fr = up_fraction_at(n, &times, &mut s);
        println!("{model:?}: up fraction {fr:?}, expected 0.75 ± {band:.4}");
        for f in fr {
            assert!(
                (f - 0.75).abs() < band,
                "{model:?}: {f} outside 0.75 ± {band}"
            );
        }
    }
}

#[test]
fn starting_from_fresh_sessions_would_be_caught() {
    // With heavy-tailed Pareto sessions a fresh start drifts away from 0.75 for a long time.
    let n = 20_000;
    let band = hoeffding(f64::from(n), 1e-4) / f64::from(n);
    let mut fresh = FreshStart {
        up: Lifetime::Pareto {
            shape: 1.5,
            mean: 600.0,
        },
        down: Lifetime::Pareto {
            shape: 1.5,
            mean: 200.0,
        },
        rng: <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(5),
    };
    let fr = up_fraction_at(n, &[300.0], &mut fresh);
    println!("fresh start: up fraction at 300 s = {}", fr[0]);
    assert!(
        (fr[0] - 0.75).abs() > band,
        "the band cannot tell a wrong start: {}",
        fr[0]
    );
}

#[test]
fn runs_keep_the_expected_number_of_live_nodes() {
    let n = 600;
    let band = hoeffding(f64::from(n), 1e-3);
    for (model, params) in [
        ("exponential", "mean_up_s = 600\nmean_down_s = 200"),
        ("weibull", "shape = 0.5\nmean_s = 600\nmean_down_s = 200"),
        ("pareto", "shape = 1.5\nmean_s = 600\nmean_down_s = 200"),
    ] {
        let sc = common::scenario(&format!(
            "nodes = {n}\nseed = 3\nduration_s = 600\n\
             [dht]\nrpc_timeout_ms = 2000\n\
             [churn]\nmodel = \"{model}\"\n{params}\n\
             [workload]\nlookups_per_s = 1\n[output]\ninterval_s = 100\n"
        ));
        let (f, s) = common::run(sc);
        let expected = s.alive_expected.unwrap();
        let first = f.metrics.rows[0].alive_end;
        println!(
            "{model}: alive mean {:.1}, after 100 s {first}, expected {expected} ± {band:.1}; \
             lookups {} success {:.3}",
            s.alive_mean, s.lookups, s.lookup_success_rate
        );
        assert_eq!(expected, 450.0);
        assert!(
            (s.alive_mean - expected).abs() < band,
            "{model}: {}",
            s.alive_mean
        );
        assert!(
            (f64::from(first as u32) - expected).abs() < band,
            "{model}: {first} at 100 s"
        );
        assert!(
            s.lookup_success_rate > 0.9,
            "{model}: success {}",
            s.lookup_success_rate
        );
    }
}

#[test]
fn a_trace_is_replayed_exactly() {
    let sc = common::scenario(
        "nodes = 1000\nseed = 2\nduration_s = 1500\n[dht]\nrpc_timeout_ms = 2000\n\
         [churn]\nmodel = \"trace\"\nfile = \"traces/example.csv\"\n\
         [workload]\nlookups_per_s = 2\n[output]\ninterval_s = 250\n",
    );
    let ChurnModel::Trace { events } = sc.churn.model.clone() else {
        panic!()
    };
    let (f, s) = common::run(sc);
    let alive: Vec<u64> = f.metrics.rows.iter().map(|r| r.alive_end).collect();
    println!(
        "alive every 250 s: {alive:?}, success {:.3}",
        s.lookup_success_rate
    );
    // Reference: every slot starts up, transitions apply in time order, repeats are no-ops.
    for (i, &got) in alive.iter().enumerate() {
        let t = std::time::Duration::from_secs(250 * (i as u64 + 1));
        let mut up = vec![true; 1000];
        for e in events.iter().filter(|e| e.at < t) {
            up[e.slot as usize] = e.up;
        }
        let want = up.iter().filter(|&&u| u).count() as u64;
        assert_eq!(got, want, "live nodes at {t:?}");
    }
    assert!(alive[2] < 720, "300 slots went down at 600 s: {}", alive[2]);
}

#[test]
fn nodes_can_come_back_with_their_id_contacts_and_objects() {
    // Smoke test of `rejoin_same_id`: every node's invariants hold after every step while
    // nodes return with their old id, re-inserted contacts and stored objects.
    let sc = common::scenario(
        "nodes = 300\nseed = 8\nduration_s = 600\n[dht]\nrpc_timeout_ms = 2000\n\
         [churn]\nmodel = \"exponential\"\nmean_up_s = 200\nmean_down_s = 100\nrejoin_same_id = true\n\
         [workload]\nlookups_per_s = 2\nobjects = 40\nobject_bytes = 4096\nputs_window_s = 30\n\
         gets_per_s = 1\nreplan_interval_s = 30\n",
    );
    let (_, s) = common::run(sc);
    println!(
        "rejoin_same_id: success {:.3}, gets {:.3}, copies {:?}",
        s.lookup_success_rate,
        s.object_get_success_rate.unwrap(),
        s.replicas_mean
    );
    assert!(
        s.lookup_success_rate > 0.85,
        "success {}",
        s.lookup_success_rate
    );
    assert!(s.object_get_success_rate.unwrap() > 0.8);
}
