//! Results a correct simulator must reproduce, each derived in `simnet/VALIDATION.md`
//! before it was measured: hop counts on ideal tables, lookup timing on constant links, the
//! RPC failure rate under loss, and static resilience after a mass failure. Every bound is
//! a prediction that a broken engine (wrong table contents, early or late delivery, lost
//! messages not lost, dead nodes still answering) would miss.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

/// P(max of `s` independent Geometric(1/2) prefix extensions >= g).
fn p_max_at_least(g: u32, s: f64) -> f64 {
    1.0 - (1.0 - 0.5f64.powi(g as i32)).powf(s)
}

/// VALIDATION.md §1: expected hops when each hop reveals `s` uniform members of the subtree
/// that the best node so far points into (s = k: the greedy chain, an upper estimate;
/// s = k²: k fresh referrers per hop, a lower one).
fn predicted_hops(n: f64, k: f64, s: f64) -> f64 {
    let mut dist: BTreeMap<u32, f64> = (0..64).map(|j| (j, 0.5f64.powi(j as i32 + 1))).collect();
    let mut expected = 0.0;
    for hop in 0..64 {
        let mut next: BTreeMap<u32, f64> = BTreeMap::new();
        for (&p, &w) in &dist {
            let size = (n - 1.0) / 2f64.powi(p as i32 + 1);
            let found = if size <= k {
                1.0
            } else {
                1.0 - (1.0 - k / size).powf(s / k)
            };
            expected += w * found * f64::from(hop);
            let rest = w * (1.0 - found);
            for g in 0..64 {
                let pg = p_max_at_least(g, s) - p_max_at_least(g + 1, s);
                if rest * pg > 1e-16 {
                    *next.entry(p + 1 + g).or_insert(0.0) += rest * pg;
                }
            }
        }
        if next.is_empty() {
            break;
        }
        dist = next;
    }
    expected
}

fn static_net(n: u32, k: usize, extra: &str) -> simnet::Scenario {
    common::scenario(&format!(
        "nodes = {n}\nseed = 11\nduration_s = 30\n\
         [dht]\nk = {k}\nliveness_interval_s = 0\n\
         [latency]\nmodel = \"constant\"\nms = 50\n{extra}\n\
         [workload]\nlookups = 1500\n"
    ))
}

#[test]
fn hop_counts_on_ideal_tables_fall_in_the_predicted_band() {
    let n = 2000;
    let mut means = Vec::new();
    for k in [2usize, 4, 20] {
        let (_, s) = common::run(static_net(n, k, ""));
        let lo = predicted_hops(f64::from(n), k as f64, (k * k) as f64);
        let hi = predicted_hops(f64::from(n), k as f64, k as f64);
        println!(
            "n = {n}, k = {k}: hops mean {:.3}, predicted band [{lo:.3}, {hi:.3}], p99 {:?}",
            s.hops_mean, s.hops_p99
        );
        assert!(
            s.hops_mean >= lo && s.hops_mean <= hi,
            "k = {k}: {} outside [{lo}, {hi}]",
            s.hops_mean
        );
        assert!(
            s.lookup_success_rate > 0.99,
            "k = {k}: success {}",
            s.lookup_success_rate
        );
        means.push(s.hops_mean);
        if k == 20 {
            assert!(
                s.hops_p99.unwrap() <= 5,
                "docs/DESIGN.md §4: lookup p99 <= 5 hops"
            );
        }
    }
    assert!(
        means.windows(2).all(|w| w[0] > w[1]),
        "more contacts per bucket, fewer hops: {means:?}"
    );
}

#[test]
fn the_predictor_reproduces_the_known_scaling() {
    // log_{2^b}(n): hops grow by about log2(10)/b per decade of n, b = log2(k) + ~1.3.
    let h = |n: f64| predicted_hops(n, 20.0, 20.0);
    let per_decade = h(1e6) - h(1e5);
    let b = 20f64.log2() + 1.33;
    assert!(
        (per_decade - 10f64.log2() / b).abs() < 0.15,
        "{per_decade} vs {}",
        10f64.log2() / b
    );
}

#[test]
fn lookups_on_constant_links_take_whole_rounds() {
    let (f, s) = common::run(static_net(1000, 20, ""));
    assert_eq!(
        s.lookup_exact_rate, 1.0,
        "no churn, no loss: every result exact"
    );
    let rtt = Duration::from_millis(100);
    let alpha = 3;
    let outcomes = f.metrics.outcomes.as_ref().unwrap();
    assert_eq!(outcomes.len() as u64, s.lookups);
    let mut exact_rounds = 0;
    for o in outcomes {
        assert_eq!(o.timeouts, 0);
        assert_eq!(
            o.latency.as_nanos() % rtt.as_nanos(),
            0,
            "{o:?}: not a whole number of RTTs"
        );
        let rounds = o.latency.as_nanos() / rtt.as_nanos();
        assert!(
            rounds > u128::from(o.hops),
            "{o:?}: closest node learned too early"
        );
        let min_rounds = u128::from(o.rpcs.div_ceil(alpha));
        assert!(
            rounds >= min_rounds,
            "{o:?}: more than alpha requests in flight"
        );
        exact_rounds += usize::from(rounds == min_rounds);
    }
    // With α always in flight, rounds = ⌈rpcs/α⌉ exactly unless candidates ran short.
    assert!(
        exact_rounds * 10 >= outcomes.len() * 9,
        "{exact_rounds} of {}",
        outcomes.len()
    );
}

#[test]
fn loss_fails_rpcs_and_lookups_as_predicted() {
    // A request and its answer are lost independently: an RPC fails with q = 1 − (1 − ℓ)².
    // The walk never retries a failed candidate, so a lookup finds the true closest node
    // only if that node's one RPC got through (1 − q), and is exact only if all k did.
    let loss: f64 = 0.05;
    let (_, s) = common::run(static_net(1000, 20, &format!("loss = {loss}")));
    let q = 1.0 - (1.0 - loss) * (1.0 - loss);
    let failed = s.timeouts_per_lookup_mean / s.rpcs_per_lookup_mean;
    let exact = (1.0 - q).powi(20);
    println!(
        "loss {loss}: failed/sent {failed:.4} (q = {q:.4}), success {:.4} (1 − q = {:.4}), \
         exact {:.4} ((1 − q)^k = {exact:.4})",
        s.lookup_success_rate,
        1.0 - q,
        s.lookup_exact_rate
    );
    assert_eq!(s.lookups_finished, s.lookups);
    assert!(
        (failed - q).abs() < 0.015,
        "failed/sent {failed}, predicted {q}"
    );
    // 1500 lookups: binomial σ ≈ 0.008 for success, 0.009 for exact; 4σ bands.
    assert!(
        (s.lookup_success_rate - (1.0 - q)).abs() < 0.035,
        "success {}",
        s.lookup_success_rate
    );
    assert!(
        (s.lookup_exact_rate - exact).abs() < 0.04,
        "exact {}",
        s.lookup_exact_rate
    );
}

#[test]
fn static_resilience_after_half_the_nodes_fail() {
    let f = 0.5;
    let (_, base) = common::run(static_net(2000, 20, ""));
    let failed_net = static_net(2000, 20, &format!("[failure]\nfraction = {f}\nat_s = 0"));
    let mut sc = failed_net;
    sc.drain = Duration::from_secs(600);
    let timeout = sc.dht.rpc_timeout;
    let (fin, s) = common::run(sc);
    let failed = s.timeouts_per_lookup_mean / s.rpcs_per_lookup_mean;
    let rpcs = base.rpcs_per_lookup_mean / (1.0 - f);
    println!(
        "failed {f}: success {}, exact {}, failed/sent {failed:.4}, rpcs {:.2} (predicted {rpcs:.2}), \
         latency mean {:.0} ms",
        s.lookup_success_rate,
        s.lookup_exact_rate,
        s.rpcs_per_lookup_mean,
        s.lookup_latency_ms_mean
    );
    assert_eq!(s.alive_end, 1000);
    assert_eq!(s.lookups_finished, s.lookups);
    // Every bucket still holds k entries, each dead with probability f: a walk loses its way
    // only if all k candidates of a step are dead (f^k ≈ 1e-6).
    assert!(
        s.lookup_success_rate >= 0.995,
        "success {}",
        s.lookup_success_rate
    );
    // Whether a candidate is asked does not depend on whether it is alive.
    assert!(
        (failed - f).abs() < 0.03,
        "failed/sent {failed}, predicted {f}"
    );
    assert!(
        (s.rpcs_per_lookup_mean / rpcs - 1.0).abs() < 0.1,
        "rpcs {}",
        s.rpcs_per_lookup_mean
    );
    // Stale tables: answers near the target list the k closest nodes dead or alive, so the
    // true k closest *live* nodes (out to rank ≈ k/(1 − f)) are rarely all learned.
    assert!(s.lookup_exact_rate < 0.3, "exact {}", s.lookup_exact_rate);
    // α slots, each held 5 s by a dead candidate and one RTT by a live one.
    let rtt = Duration::from_millis(100);
    for o in fin.metrics.outcomes.as_ref().unwrap() {
        let busy = timeout * o.timeouts + rtt * (o.rpcs - o.timeouts);
        assert!(o.latency >= busy / 3, "{o:?}: faster than α slots allow");
    }
}
