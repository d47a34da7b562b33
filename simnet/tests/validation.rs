//! Results a correct simulator must reproduce, each derived in `simnet/VALIDATION.md`
//! before it was measured: hop counts on ideal tables, lookup timing on constant links (the
//! walk's hops + about two round trips), late requests under QUIC-like loss, static
//! resilience after a mass failure, and the cost of first contacts. Every bound is a
//! prediction that a broken engine (wrong table contents, early or late delivery, lost
//! messages not retransmitted, dead nodes still answering) or a walk that waited for dead
//! or late peers would miss.

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

/// n nodes with ideal tables, constant 50 ms links, every pair connected (`handshake`
/// off, unless `extra` turns it on), no liveness probing; 1,500 lookups over 30 s.
fn static_net(n: u32, k: usize, extra: &str) -> simnet::Scenario {
    let handshake = if extra.contains("handshake") {
        ""
    } else {
        "handshake = false\n"
    };
    common::scenario(&format!(
        "nodes = {n}\nseed = 11\nduration_s = 30\n\
         [dht]\nk = {k}\nliveness_interval_s = 0\n\
         [latency]\nmodel = \"constant\"\nms = 50\n{handshake}{extra}\n\
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

const RTT: Duration = Duration::from_millis(100);

/// Whole round trips a lookup took (panics if it is not a whole number of them).
fn rounds(o: &simnet::metrics::LookupOutcome) -> u32 {
    assert_eq!(
        o.latency.as_nanos() % RTT.as_nanos(),
        0,
        "{o:?}: not a whole number of RTTs"
    );
    (o.latency.as_nanos() / RTT.as_nanos()) as u32
}

#[test]
fn lookups_take_hops_plus_about_two_round_trips() {
    let (f, s) = common::run(static_net(1000, 20, ""));
    assert_eq!(
        s.lookup_exact_rate, 1.0,
        "(e) no churn, no loss: every result exact"
    );
    let (k, alpha) = (20.0, 3.0);
    let outcomes = f.metrics.outcomes.as_ref().unwrap();
    assert_eq!(outcomes.len() as u64, s.lookups);
    let mut within = 0;
    let mut extra_sum = 0u64;
    for o in outcomes {
        assert_eq!(o.timeouts, 0, "{o:?}: nothing is late on constant links");
        let r = rounds(o);
        assert!(r > o.hops, "{o:?}: (b) the closest node answered too early");
        within += usize::from(r <= o.hops + 3);
        extra_sum += u64::from(r - o.hops);
    }
    let n = outcomes.len() as f64;
    let extra = extra_sum as f64 / n;
    println!(
        "rounds − hops: mean {extra:.3}; within hops + 3: {within} of {n}; rpcs {:.2}, hops {:.3}",
        s.rpcs_per_lookup_mean, s.hops_mean
    );
    assert!(
        within as f64 >= 0.95 * n,
        "(c) {within} of {n} within hops + 3"
    );
    assert!(
        (1.5..=2.5).contains(&extra),
        "(c) mean rounds − hops {extra}"
    );
    let rpc_max = k + alpha * (s.hops_mean + 1.0);
    assert!(
        (k..=rpc_max).contains(&s.rpcs_per_lookup_mean),
        "(d) rpcs {} outside [{k}, {rpc_max}]",
        s.rpcs_per_lookup_mean
    );
}

#[test]
fn loss_delays_requests_as_quic_would() {
    let loss: f64 = 0.05;
    let (f, s) = common::run(static_net(1000, 20, &format!("loss = {loss}")));
    let q = 1.0 - (1.0 - loss) * (1.0 - loss);
    let per_message = s.retransmissions as f64 / s.messages_sent as f64;
    let late = s.timeouts_per_lookup_mean / s.rpcs_per_lookup_mean;
    let exact = (1.0 - q).powi(20);
    println!(
        "loss {loss}: retransmissions/message {per_message:.4} (ℓ/(1 − ℓ) = {:.4}), \
         stopped waiting for {late:.4} of requests (q = {q:.4}), success {:.4} (≥ {:.4}), \
         exact {:.4} (≥ {exact:.4})",
        loss / (1.0 - loss),
        s.lookup_success_rate,
        1.0 - q,
        s.lookup_exact_rate
    );
    assert_eq!(s.lookups_finished, s.lookups);
    assert_eq!(
        s.messages_lost, 0,
        "(b) nine tries in a row never all fail here"
    );
    let want = loss / (1.0 - loss);
    assert!(
        (per_message / want - 1.0).abs() < 0.1,
        "(a) {per_message} retransmissions per message, predicted {want}"
    );
    assert!(
        late >= q / 2.0 - 0.015 && late <= q + 0.015,
        "(c) stopped waiting for {late} of requests, predicted [{}, {q}]",
        q / 2.0
    );
    // 1,500 lookups: binomial σ ≈ 0.008 for success, 0.009 for exact; 4σ of slack.
    assert!(
        s.lookup_success_rate >= 1.0 - q - 0.035,
        "(d) success {}",
        s.lookup_success_rate
    );
    assert!(
        s.lookup_exact_rate >= exact - 0.04,
        "(d) exact {}",
        s.lookup_exact_rate
    );
    let outcomes = f.metrics.outcomes.as_ref().unwrap();
    assert!(outcomes.iter().all(|o| o.latency < Duration::from_secs(5)));
}

#[test]
fn static_resilience_after_half_the_nodes_fail() {
    let f = 0.5;
    let (_, base) = common::run(static_net(2000, 20, ""));
    let mut sc = static_net(2000, 20, &format!("[failure]\nfraction = {f}\nat_s = 0"));
    sc.drain = Duration::from_secs(600);
    let hard = sc.dht.rpc_timeout;
    let (fin, s) = common::run(sc);
    let stopped = s.timeouts_per_lookup_mean / s.rpcs_per_lookup_mean;
    let rpcs = base.rpcs_per_lookup_mean / (1.0 - f);
    // + 1 s: the finish waits for a dead candidate among the k closest until its give-up
    // time, `soft_timeout_initial` while a node has timed few strangers (every node here).
    let mean_max = (s.hops_mean + 3.0) * 0.1 + s.timeouts_per_lookup_mean / 3.0 * 0.2 + f + 1.0;
    println!(
        "failed {f}: success {}, exact {}, stopped waiting for {stopped:.4}, rpcs {:.2} (≤ 1.1 × \
         {rpcs:.2}), latency mean {:.0} ms (predicted ≤ {:.0} ms), p99 {:?} ms",
        s.lookup_success_rate,
        s.lookup_exact_rate,
        s.rpcs_per_lookup_mean,
        s.lookup_latency_ms_mean,
        mean_max * 1e3,
        s.lookup_latency_ms_p99
    );
    assert_eq!(s.alive_end, 1000);
    assert_eq!(s.lookups_finished, s.lookups);
    assert!(
        s.lookup_success_rate >= 0.995,
        "(a) success {}",
        s.lookup_success_rate
    );
    assert!(
        stopped >= f - 0.1 && stopped <= f + 0.03,
        "(b) stopped waiting for {stopped}, predicted [{}, {}]",
        f - 0.1,
        f + 0.03
    );
    assert!(
        s.rpcs_per_lookup_mean <= 1.1 * rpcs,
        "(c) rpcs {}",
        s.rpcs_per_lookup_mean
    );
    let slowest = fin
        .metrics
        .outcomes
        .as_ref()
        .unwrap()
        .iter()
        .map(|o| o.latency)
        .max();
    println!("slowest lookup {slowest:?}");
    assert!(
        s.lookup_latency_ms_p99.unwrap() < hard.as_secs_f64() * 1e3,
        "(d) p99 {:?} ms: lookups wait for hard timeouts",
        s.lookup_latency_ms_p99
    );
    assert!(
        s.lookup_latency_ms_mean <= mean_max * 1e3,
        "(d) mean latency {} ms",
        s.lookup_latency_ms_mean
    );
}

#[test]
fn first_contacts_cost_one_round_trip_more() {
    let (_, off) = common::run(static_net(1000, 20, ""));
    let (f, on) = common::run(static_net(1000, 20, "handshake = true"));
    println!(
        "latency mean without handshakes {:.1} ms, with {:.1} ms; {} handshakes",
        off.lookup_latency_ms_mean, on.lookup_latency_ms_mean, on.handshakes
    );
    let outcomes = f.metrics.outcomes.as_ref().unwrap();
    let whole = outcomes
        .iter()
        .filter(|o| o.latency.as_nanos() % RTT.as_nanos() == 0)
        .count();
    println!("{whole} of {} lookups took whole RTTs", outcomes.len());
    assert!(whole * 100 >= outcomes.len() * 99, "(a) {whole} whole");
    assert!(on.handshakes > 0);
    assert!(
        on.lookup_latency_ms_mean > off.lookup_latency_ms_mean
            && on.lookup_latency_ms_mean <= 2.0 * off.lookup_latency_ms_mean,
        "(b) {} ms against {} ms",
        on.lookup_latency_ms_mean,
        off.lookup_latency_ms_mean
    );
    assert_eq!(on.lookup_exact_rate, 1.0, "(c)");
}

/// VALIDATION.md §8: near and far peers. Three regions whose round trips range from 38 to
/// 347 ms, handshakes on: a stranger's soft timeout, an estimate over a population of near
/// and far peers, often passes before a far peer's answer. No node fails and nothing is
/// lost, so every peer answers long before its hard timeout: a walk that gives up on a peer
/// only when it is past any live round trip is exact in every lookup.
#[test]
fn soft_timeouts_do_not_cost_exactness_where_round_trips_differ() {
    let sc = common::scenario(
        "nodes = 600\nseed = 5\nduration_s = 120\n\
         [latency]\nmodel = \"regions\"\nnames = [\"a\", \"b\", \"c\"]\n\
         rtt_ms = [[61.0, 131.0, 230.0], [131.0, 58.0, 347.0], [230.0, 347.0, 38.0]]\n\
         [workload]\nlookups = 600\n",
    );
    let (_, s) = common::run(sc);
    println!(
        "exact {}, timeouts per lookup {:.2}, latency p50 {:?} ms",
        s.lookup_exact_rate, s.timeouts_per_lookup_mean, s.lookup_latency_ms_p50
    );
    assert_eq!(s.lookups_finished, s.lookups);
    assert!(
        s.timeouts_per_lookup_mean > 0.5,
        "soft timeouts do pass here"
    );
    assert!(s.lookup_exact_rate >= 0.99, "exact {}", s.lookup_exact_rate);
}

/// VALIDATION.md §9: gets on constant links, handshakes on. A get fetches from the holder
/// that answered its TAIL probe first, over the connection that probe opened: exactly one
/// round trip, never a second handshake.
#[test]
fn a_get_fetches_once_over_the_connection_its_probe_opened() {
    let net = |wanted: &str| {
        common::scenario(&format!(
            "nodes = 200\nseed = 11\nduration_s = 75\n\
             [dht]\nliveness_interval_s = 0\n\
             [latency]\nmodel = \"constant\"\nms = 50\nconnections_max = 32\n\
             [workload]\nlookups = 0\nobjects = 20\nobject_bytes = 4096\nputs_window_s = 15\ngets = 200\n{wanted}"
        ))
    };
    // Waiting for every copy (as the node did before it stopped at the first proof)
    // against the default, one holder wanted.
    let (f, s) = common::run(net("get_holders_wanted = 3\n"));
    let (f1, s1) = common::run(net(""));
    let rtt = RTT.as_nanos() as u64;
    let m = &f.metrics;
    let remote: Vec<usize> = (0..m.get_fetch.len())
        .filter(|&i| m.get_fetch[i] > 0)
        .collect();
    println!(
        "{} gets, {} served, {} remote; fetch p50/p95 {:?}/{:?} ms, probe {:?}/{:?} ms; \
         with one holder wanted: probe {:?}/{:?} ms, search p95 {:?} / {:?} ms",
        s.object_gets.unwrap_or(0),
        m.gets_ok,
        remote.len(),
        s.object_get_fetch_ms_p50,
        s.object_get_fetch_ms_p95,
        s.object_get_probe_ms_p50,
        s.object_get_probe_ms_p95,
        s1.object_get_probe_ms_p50,
        s1.object_get_probe_ms_p95,
        s.object_get_search_ms_p95,
        s1.object_get_search_ms_p95,
    );
    println!(
        "connections closed while in use: {}",
        s.connections_closed_busy
    );
    assert!(
        remote.len() > 150,
        "(c) most gets are remote: {}",
        remote.len()
    );
    assert_eq!(m.gets_ok, m.gets, "(c) every get served");
    // The parts are sorted separately, so (a) and (b) hold for every get when they hold
    // for the extremes of the remote ones.
    assert!(
        m.get_fetch.iter().all(|&t| t == 0 || t == rtt),
        "(a) a fetch took {:?} ms",
        m.get_fetch
            .iter()
            .find(|&&t| t != 0 && t != rtt)
            .map(|t| t / 1_000_000)
    );
    assert!(
        m.get_probe
            .iter()
            .all(|&t| t == 0 || (rtt..=2 * rtt).contains(&t)),
        "(b) a wait for holders outside [1, 2] RTT"
    );
    let sum: u64 = m.get_latencies.iter().sum();
    let parts: u64 = m
        .get_search
        .iter()
        .chain(&m.get_probe)
        .chain(&m.get_fetch)
        .sum();
    assert_eq!(sum, parts, "(c) latency = walk + wait + fetch");
    assert_eq!(m.gets_ok, f1.metrics.gets_ok, "(d) the same gets served");
    assert_eq!(
        m.get_search, f1.metrics.get_search,
        "(d) the walk's part is the same"
    );
    assert!(
        f1.metrics.get_probe.iter().sum::<u64>() < m.get_probe.iter().sum::<u64>(),
        "(d) one holder is found sooner than three"
    );
    assert!(
        f1.metrics
            .get_probe
            .iter()
            .zip(&m.get_probe)
            .all(|(a, b)| a <= b),
        "(d) no quantile of the wait grows"
    );
}

/// VALIDATION.md §15: 0-RTT resumption (`latency.zero_rtt`). 200 nodes on constant 50 ms
/// links with room for 16 connections each, so nodes keep dialing peers they dialed before.
/// A DHT read to a peer whose ticket the dialer holds goes with the handshake: that first
/// contact costs one round trip instead of two, and nothing else changes.
#[test]
fn a_resumed_first_contact_saves_the_handshake_round_trip() {
    let net = |zero_rtt: &str| {
        common::scenario(&format!(
            "nodes = 200\nseed = 3\nduration_s = 600\n\
             [latency]\nmodel = \"constant\"\nms = 50\nconnections_max = 16\n{zero_rtt}\n\
             [workload]\nlookups = 4000\n"
        ))
    };
    let (_, plain) = common::run(net(""));
    let (_, off) = common::run(net("zero_rtt = false"));
    let (_, on) = common::run(net("zero_rtt = true"));
    let sends = on.zero_rtt_sends.unwrap_or(0);
    println!(
        "handshakes {} / {}, 0-RTT sends {sends}; lookup mean {:.1} -> {:.1} ms, p50 {:?} -> {:?}, \
         exact {} / {}",
        off.handshakes,
        on.handshakes,
        off.lookup_latency_ms_mean,
        on.lookup_latency_ms_mean,
        off.lookup_latency_ms_p50,
        on.lookup_latency_ms_p50,
        off.lookup_exact_rate,
        on.lookup_exact_rate,
    );
    // (d) Off is the default, to the byte.
    let columns = |s: &simnet::output::Summary| {
        s.columns()
            .into_iter()
            .filter(|(name, _)| !name.contains("wall") && !name.contains("rss"))
            .collect::<Vec<_>>()
    };
    assert_eq!(columns(&plain), columns(&off), "(d) off changes nothing");
    assert_eq!(off.zero_rtt_sends, None);
    // (a) Tickets are used, at most once per dial.
    assert!(
        sends > 0 && sends <= on.handshakes,
        "(a) {sends} of {}",
        on.handshakes
    );
    // (b) The walk is the same: every lookup still exact.
    assert_eq!(off.lookup_exact_rate, 1.0);
    assert_eq!(on.lookup_exact_rate, 1.0, "(b) faster, not wronger");
    // (c) A resumed dial saves one round trip (100 ms) of a round that cost at least two,
    // so a lookup gets faster, by at most half its time.
    let saved = off.lookup_latency_ms_mean - on.lookup_latency_ms_mean;
    assert!(
        saved > 0.0 && saved <= off.lookup_latency_ms_mean / 2.0,
        "(c) saved {saved:.1} ms of {:.1}",
        off.lookup_latency_ms_mean
    );
}
