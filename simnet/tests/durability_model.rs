//! Durability against an analytic model (issue 14 item 3; `simnet/VALIDATION.md` §14):
//! independent exponential node failures, a deterministic repair delay, and the chain of
//! copy counts c = RF, RF − 1, …, 0 predict the object-time below RF, the objects lost and
//! the crash → RF restored time. Every band here was derived, and written into this file,
//! before the scenario was first run.
//!
//! **Scenario.** `NODES` nodes with ideal tables; `OBJECTS` objects of 64 KiB put in the
//! first 30 s through the node's write path (`put_w = rf`: the writer stores, places its
//! copies, and releases its own once RF closer nodes hold it), so at `T0` = 60 s every
//! object sits on its RF closest nodes. From `T0` each node fails for good after an
//! exponential lifetime of rate λ (a churn trace the test draws from the printed seed);
//! nobody joins, so copies never move for any reason but a failure. No lookups, no gets.
//! The run ends at `END` (failures stop there too); there is no drain without pending
//! operations.
//!
//! **The repair delay D.** A holder's crash is noticed by each other holder when its
//! connection to it idles out (simnet's `IDLE_TIMEOUT`, 30 s after the crash; in a network
//! this small every holder is connected to the others: they pushed and verified copies to
//! each other), which makes the contact questionable and pings it at once; the ping fails at
//! `rpc_timeout` (5 s), the contact is evicted (`PeerRemoved`), the planner re-plans after
//! its 1 s debounce and the lead pushes the copy to the next closest live node, one one-way
//! delay later (5–150 ms, a handshake more on a first contact). So D = 36.0–36.6 s, the same
//! for every crash: deterministic, not exponential, since nothing in it is random but the
//! link delay. The prediction takes D = 36.1 s.
//!
//! **The chain.** Follow one object's RF copies as RF slots. A slot whose holder fails is
//! empty for exactly D, then filled on a fresh node, whose remaining life is again
//! exponential (memoryless), so each slot alternates Exp(λ) up periods and D-long down
//! periods, independently of the others, until all RF are empty at once: the object is lost
//! (no source is left to repair from). With exponential repair of rate μ = 1/D per missing
//! copy this would be the birth–death chain c → c − 1 at rate cλ, c → c + 1 at rate
//! (RF − c)μ, 0 absorbing; its stationary law, and that of the deterministic-D slots (an
//! alternating renewal process is up with probability E[up]/(E[up] + E[down]) whatever the
//! laws), is Binomial(RF, u) with u = 1/(1 + λD). So
//!   P(c < RF) = 1 − u^RF ≈ RF·λD,
//!   loss hazard ℓ = RF·λ·u·(1 − u)^(RF−1) (a live slot fails while the others are empty).
//! The run starts with every slot up, so the test integrates the renewal equation
//! u(t) = 1 − ∫_{t−D}^{t} λ·u(s) ds (a slot is empty iff it failed within the last D) from
//! T0 on, rather than using the stationary u. Predicted:
//!   below-RF object-seconds B = M ∫ (1 − u^RF) dt + M ∫ ℓ·S·(END − t)·u^RF dt
//! (the second term: a lost object stays below RF to the end, where the free slots would have
//! come back; S(t) = exp(−∫ℓ) the share not yet lost), and objects lost L = M (1 − S(END)).
//!
//! One correction for RF = 3: only the lead (the closest known holder) pushes. If the lead
//! fails while another copy is being repaired, the last holder waits until it notices the
//! lead's failure too before it pushes both; so an object at c = 1 stays there until the
//! *later* of the two pending repairs, not the earlier. The time below RF does not change
//! (the object is below RF until the later repair either way), but the window in which the
//! last copy's failure loses the object does: between the earlier (mean D/3 for two uniform
//! residuals) and the later (2D/3) of two residual times, so for RF = 3 the loss hazard lies
//! in [ℓ, 2ℓ]. For RF = 2 there is no lead to wait for and the chain is exact.
//!
//! **Bands** (sampling error, not model slack). Time below RF comes in lumps: one crash takes
//! all h objects its node holds below RF for D. Crashes are Poisson-like with rate λN(t),
//! N(t) = NODES·e^{−λ(t−T0)} live; h has mean m(t) = M·RF/N(t) and, as the node's share of
//! the key space times Poisson sampling, E[h²] ≤ 2m² + m (share coefficient of variation at
//! most 1, that of an exponential gap). So Var(B) = D²·∫ λN(t)(2m² + m) dt, plus, for the
//! lost objects' tails, ∫ (END − t)²·(1 + m) dL (a loss takes up to a whole node's holdings
//! at once: clump factor ≤ 1 + m). Losses: Var(L) = ∫ (1 + m) dL. Each figure must fall
//! within 3σ of its prediction (of the bracket's ends for RF = 3 losses). The crash →
//! restored median must lie in [36.0, 36.3] s: most restores are a single crash repaired
//! after D; the ones a second crash overlapped (about (RF − 1)λD of them) lie above it.
//!
//! **Recorded before the first run** (`the_predictor_reaches_the_stationary_chain` prints
//! them; NODES = OBJECTS = 2,000, λ = 1/1200 s, D = 36.1 s, seed 7):
//! - RF = 3: below RF 205,172 ± 11,813 object-s (1σ), band [169,733, 240,611]; lost
//!   [4.9, 9.7] ± 7.8, band [0, 33.1]; restore p50 in [36.0, 36.3] s.
//! - RF = 2: below RF 197,314 ± 14,954 object-s, band [152,452, 242,176] (of which the free
//!   slots 136,080, share 0.0567 of failure time against the stationary 1 − u² = 0.0576; the
//!   rest is the tails of lost objects); lost 108.7 ± 21.7, band [43.6, 173.8].
//!
//! **Measured** (seed 7): RF = 3: 184,942 object-s below RF (−1.7σ), 8 lost, restore p50
//! 36.060 s; RF = 2: 176,648 (−1.4σ), 104 lost, p50 36.051 s. Both times below RF are 10 %
//! under the prediction because D is not constant: a third of the crashes are noticed early,
//! by a failed liveness ping (mean crash → restored 33.8 s, p10 19.4 s); VALIDATION.md §14.
//!
//! Breaking it: `repair_slower_than_predicted_is_caught` runs the RF = 3 scenario with the
//! planner's debounce at 30 s instead of 1 s (D ≈ 65 s): the prediction for D = 36.1 s must
//! then miss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use simnet::scenario::{ChurnModel, TraceEvent};
use simnet::{Finished, Scenario};

const NODES: u32 = 2000;
const OBJECTS: u32 = 2000;
/// Failure rate per node, 1/s.
const LAMBDA: f64 = 1.0 / 1200.0;
/// Failures start here, s (every object is on its RF closest by then).
const T0: f64 = 60.0;
/// End of the run and of failures, s.
const END: f64 = 1260.0;
/// Predicted repair delay, s.
const D: f64 = 36.1;
/// Bounds of the crash → RF restored median, s.
const RESTORE_P50: (f64, f64) = (36.0, 36.3);

/// What the model predicts for one run.
#[derive(Debug)]
struct Prediction {
    /// Below-RF object-seconds of the free slots (lost objects' tails left out).
    free_s: f64,
    below_s: f64,
    below_sigma: f64,
    lost: (f64, f64),
    lost_sigma: f64,
}

/// Integrates the renewal equation for one slot from T0 to END and the loss hazard, with
/// `loss_factor` multiplying the hazard (1, or 2 for the RF = 3 bracket's upper end).
fn predict(rf: i32, d: f64, loss_factor: f64) -> Prediction {
    let h = 0.01;
    let window = (d / h).round() as usize;
    let m_objects = f64::from(OBJECTS);
    let mut rates = vec![0.0f64; window]; // λ·u·h of the last `window` steps
    let mut in_window = 0.0; // their sum: P(slot empty)
    let mut cum_hazard = 0.0f64;
    let (mut free, mut tails, mut var_b, mut var_l) = (0.0, 0.0, 0.0, 0.0);
    let steps = ((END - T0) / h).round() as usize;
    for i in 0..steps {
        let t = T0 + (i as f64 + 0.5) * h;
        let slot = i % window;
        in_window -= rates[slot];
        // u = 1 − (window before + λ·u·h), solved for u.
        let u = ((1.0 - in_window) / (1.0 + LAMBDA * h)).clamp(0.0, 1.0);
        rates[slot] = LAMBDA * u * h;
        in_window += rates[slot];
        let survive = (-cum_hazard).exp();
        let hazard = loss_factor * f64::from(rf) * LAMBDA * u * (1.0 - u).powi(rf - 1);
        let d_lost = m_objects * hazard * survive * h; // expected losses in this step
        free += m_objects * (1.0 - u.powi(rf)) * h;
        tails += d_lost * (END - t) * u.powi(rf);
        let live_nodes = f64::from(NODES) * (-LAMBDA * (t - T0)).exp();
        let m = m_objects * survive * f64::from(rf) / live_nodes;
        var_b += LAMBDA * live_nodes * h * d * d * (2.0 * m * m + m);
        var_b += d_lost * (END - t).powi(2) * (1.0 + m);
        var_l += d_lost * (1.0 + m);
        cum_hazard += hazard * h;
    }
    let lost = m_objects * (1.0 - (-cum_hazard).exp());
    Prediction {
        free_s: free,
        below_s: free + tails,
        below_sigma: var_b.sqrt(),
        lost: (lost, lost),
        lost_sigma: var_l.sqrt(),
    }
}

/// Each node's failure time: T0 + Exp(λ), kept when before END (from the run's seed).
fn failures(seed: u64) -> Vec<TraceEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d61_726b_6f76); // "markov"
    let mut events: Vec<TraceEvent> = (0..NODES)
        .filter_map(|slot| {
            let u: f64 = 1.0 - rng.r#gen::<f64>();
            let at = T0 - u.ln() / LAMBDA;
            (at < END).then(|| TraceEvent {
                at: Duration::from_secs_f64(at),
                slot,
                up: false,
            })
        })
        .collect();
    events.sort_by_key(|e| (e.at, e.slot));
    events
}

/// The scenario of the module doc, for `seed` and `rf`, with its failure trace.
fn scenario(seed: u64, rf: usize) -> Scenario {
    let mut sc = common::scenario(&format!(
        r#"
name = "durability-model"
nodes = {NODES}
seed = {seed}
duration_s = {END}

[latency]
model = "coordinates"
base_ms = 5
side_ms = 100

[workload]
lookups = 0
objects = {OBJECTS}
object_bytes = 65536
rf = {rf}
put_w = {rf}
puts_window_s = 30
gets = 0

[output]
plots = false
"#
    ));
    sc.churn.model = ChurnModel::Trace {
        events: failures(seed),
    };
    sc
}

/// Runs to the end (no invariant checks after every step: they would take minutes here).
fn run(sc: Scenario) -> Finished {
    common::run_fast(sc)
}

/// The measured figures, printed next to the prediction; `None` when all are in the band,
/// else what missed.
fn judge(f: &Finished, rf: i32, p: &Prediction) -> Option<String> {
    let m = &f.metrics;
    let dur = &m.durability;
    let below = dur.below_ns as f64 / 1e9;
    let lost = dur.unavailable() as f64;
    let mut restores = dur.restore_ns.clone();
    restores.sort_unstable();
    let p50 = restores
        .get(restores.len().saturating_sub(1) / 2)
        .map_or(f64::NAN, |&ns| ns as f64 / 1e9);
    let q = |x: f64| {
        restores
            .get(((restores.len() as f64 * x) as usize).min(restores.len().saturating_sub(1)))
            .map_or(f64::NAN, |&ns| ns as f64 / 1e9)
    };
    let mean = restores.iter().map(|&ns| ns as f64 / 1e9).sum::<f64>() / restores.len() as f64;
    println!(
        "rf {rf}: restore s: mean {mean:.2}, p1 {:.2}, p5 {:.2}, p10 {:.2}, p25 {:.2}, p75 {:.2}, \
         p90 {:.2}, p99 {:.2}; below {} of {} restores under 36 s",
        q(0.01),
        q(0.05),
        q(0.10),
        q(0.25),
        q(0.75),
        q(0.90),
        q(0.99),
        restores.iter().filter(|&&ns| ns < 36_000_000_000).count(),
        restores.len()
    );
    let object_time: f64 = f64::from(OBJECTS) * (END - 15.0);
    println!(
        "rf {rf}: below RF {below:.0} object-s ({:.3} % of object-time), predicted {:.0} ± {:.0} \
         (3σ); lost {lost}, predicted [{:.1}, {:.1}] ± {:.1} (3σ); restores {} p50 {p50:.3} s \
         (band {:?}); holder crashes {}; acked {} acked lost {}",
        100.0 * below / object_time,
        p.below_s,
        3.0 * p.below_sigma,
        p.lost.0,
        p.lost.1,
        3.0 * p.lost_sigma,
        restores.len(),
        RESTORE_P50,
        dur.holder_failures,
        m.acked,
        m.acked_lost,
    );
    let mut missed = Vec::new();
    if (below - p.below_s).abs() > 3.0 * p.below_sigma {
        missed.push(format!("time below RF {below:.0} object-s"));
    }
    if lost < p.lost.0 - 3.0 * p.lost_sigma || lost > p.lost.1 + 3.0 * p.lost_sigma {
        missed.push(format!("objects lost {lost}"));
    }
    if !(RESTORE_P50.0..=RESTORE_P50.1).contains(&p50) {
        missed.push(format!("restore p50 {p50:.3} s"));
    }
    (!missed.is_empty()).then(|| missed.join(", "))
}

/// The prediction for `rf`: for RF = 3 the loss hazard's bracket [ℓ, 2ℓ] (the lead's
/// wait), its spread in the lost objects' tails added to the time-below-RF σ.
fn predict_rf(rf: i32, d: f64) -> Prediction {
    let lo = predict(rf, d, 1.0);
    if rf < 3 {
        return lo;
    }
    let hi = predict(rf, d, 2.0);
    Prediction {
        free_s: lo.free_s,
        below_s: 0.5 * (lo.below_s + hi.below_s),
        below_sigma: hi.below_sigma + 0.5 * (hi.below_s - lo.below_s),
        lost: (lo.lost.0, hi.lost.1),
        lost_sigma: hi.lost_sigma,
    }
}

#[test]
fn rf3_time_below_rf_and_losses_follow_the_chain() {
    let p = predict_rf(3, D);
    let f = run(scenario(7, 3));
    assert_eq!(f.metrics.durability.objects() as u32, OBJECTS);
    assert_eq!(
        f.metrics.acked,
        u64::from(OBJECTS),
        "every put acknowledged"
    );
    assert_eq!(
        f.metrics.acked_lost,
        f.metrics.durability.unavailable(),
        "a lost object is gone from every node (no node comes back)"
    );
    if let Some(missed) = judge(&f, 3, &p) {
        panic!("outside the predicted band: {missed}");
    }
}

#[test]
fn rf2_losses_follow_the_chain() {
    let p = predict_rf(2, D);
    let f = run(scenario(7, 2));
    assert_eq!(
        f.metrics.acked,
        u64::from(OBJECTS),
        "every put acknowledged"
    );
    if let Some(missed) = judge(&f, 2, &p) {
        panic!("outside the predicted band: {missed}");
    }
}

#[test]
fn the_predictor_reaches_the_stationary_chain() {
    // Past the first D the slot's renewal equation settles at u = 1/(1 + λD): the share of
    // object-time below RF tends to 1 − u^RF, just under RF·λD.
    for rf in [2, 3] {
        let p = predict_rf(rf, D);
        let u = 1.0 / (1.0 + LAMBDA * D);
        let stationary = 1.0 - u.powi(rf);
        let share = p.free_s / (f64::from(OBJECTS) * (END - T0));
        println!(
            "rf {rf}: predicted below RF {:.0} ± {:.0} object-s (free slots: share of failure time {share:.4}, \
             stationary 1 − u^RF = {stationary:.4}, RF·λD = {:.4}), lost [{:.1}, {:.1}] ± {:.1}",
            p.below_s,
            p.below_sigma,
            f64::from(rf) * LAMBDA * D,
            p.lost.0,
            p.lost.1,
            p.lost_sigma
        );
        assert!(
            share > stationary * 0.97 && share < stationary * 1.1,
            "{share}"
        );
    }
}

#[test]
fn repair_slower_than_predicted_is_caught() {
    // The planner waits 30 s instead of 1 s after the table changes: D ≈ 65 s, so objects
    // stay below RF almost twice as long as the D = 36.1 s prediction allows.
    let p = predict_rf(3, D);
    let mut sc = scenario(7, 3);
    sc.workload.replication.replan_debounce = Duration::from_secs(30);
    let f = run(sc);
    let missed = judge(&f, 3, &p).expect("a 30 s debounce must leave the predicted band");
    println!("missed, as it must: {missed}");
    assert!(missed.contains("time below RF"), "{missed}");
    assert!(missed.contains("restore p50"), "{missed}");
}
