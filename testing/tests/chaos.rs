//! The chaos suite's short tests, run with every `cargo test`: the fault layers themselves
//! (all traffic really goes through the proxy; a namespace partition really cuts and heals,
//! and nothing is left behind), and the scenarios short enough to run here (bombs, the
//! handshake flood, the pauses, encoded bodies). The long scenarios (kill loop, partition
//! cycles, loss and delay, slow-loris, quota storm, soak) run in the CI tier,
//! `scripts/chaos-ci.sh`, and by hand with `cargo run --release -p testing --bin chaos --
//! SCENARIO`. The store's crash loop runs as the node crate's own unit test
//! (`store::tests::crashes`), and as `store-crashes` in the CI tier.
//!
//! A scenario's figures that miss because of a known node defect (RELIABILITY.md "Known
//! defects", `scenarios::KNOWN`) do not fail these tests; a defect found is listed there
//! with an ignored test here that fails until it is fixed. Only D6 is open today: D1 and
//! D2 are goals of the handshake flood below, D3 and D4 of the CI tier's scenarios (D4 also
//! of `node/tests/trust.rs`), D5 of the content-encoding test below.
//!
//! The tests share the machine's two cores with node processes, so they run one at a time.
//! Every test prints its seed; `CHAOS_SEED=<n>` replays it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::Duration;

use testing::chaos::client::{self, Outcome};
use testing::chaos::load::{GET_TIMEOUT, Ledger, Verdict};
use testing::chaos::proxy::Impairment;
use testing::chaos::scenarios::{self, Opts};
use testing::chaos::{Cluster, ClusterSpec, NetKind, Report, Seed, netns};

/// One chaos test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs scenario `name` (short) and prints its report.
fn scenario(name: &str) -> Report {
    let s = scenarios::find(name).unwrap();
    let opts = Opts {
        seed: Seed::from_env_or_clock(name),
        long: false,
        net: None,
    };
    let r = scenarios::run(s, &opts).unwrap();
    for n in &r.notes {
        println!("  {n}");
    }
    println!("{}", r.line());
    r
}

/// Fails unless every goal is met, known defects aside.
#[track_caller]
fn assert_passed(r: &Report) {
    assert!(r.passed(), "{}\n{}", r.line(), r.notes.join("\n"));
}

/// Fails unless the figures of `defect` meet their goals too.
#[track_caller]
fn assert_fixed(r: &Report, defect: &str) {
    let still: Vec<String> = r
        .known_misses()
        .iter()
        .filter(|f| f.known == Some(defect))
        .map(|f| f.to_string())
        .collect();
    assert!(still.is_empty(), "{defect} still shows: {still:?}");
}

/// Every address a node has in its routing table is one of the proxy's aliases: no node
/// learned another's real port, so every datagram between them crosses the proxy. Then
/// 5 % loss, duplication and reordering on every link: objects still move and verify.
#[test]
fn the_proxy_carries_all_traffic_and_the_mesh_moves_objects_through_loss() {
    let _one = serial();
    let seed = Seed::from_env_or_clock("proxy");
    let mut spec = ClusterSpec::new("proxy-test", 4, 2, NetKind::Proxy, seed);
    spec.w = Some(2);
    let c = Cluster::start(spec).unwrap();
    let proxy = c.proxy().unwrap();
    let aliases: Vec<String> = (0..4).map(|i| proxy.alias(i).to_string()).collect();
    for i in 0..4 {
        let v = c.nodes[i].admin_json("/v1/routing").unwrap();
        for p in v["peers"].as_array().unwrap() {
            let addr = p["addr"].as_str().unwrap().to_string();
            assert!(
                aliases.contains(&addr),
                "node {i} knows a peer at {addr}, not an alias of the proxy {aliases:?}"
            );
        }
    }
    proxy.set_all(Impairment {
        loss: 0.05,
        duplicate: 0.02,
        reorder: 0.02,
        ..Impairment::NONE
    });
    let ledger = Ledger::new(seed);
    let all = [0, 1, 2, 3];
    let mut placed = 0;
    for k in 0..6u64 {
        let via = k as usize % 4;
        // A 503 is a clean answer (and defect D4 makes a rare one spurious): retry once.
        let acked = ledger
            .put(c.http(via), via, c.token(), k, 300_000, 2)
            .1
            .or_else(|| ledger.put(c.http(via), via, c.token(), k, 300_000, 2).1);
        let Some(a) = acked else { continue };
        placed += 1;
        let holders = c.holders(&all, &a.id);
        let reader = all.iter().copied().find(|i| !holders.contains(i)).unwrap();
        let v = ledger.get(c.http(reader), &a, GET_TIMEOUT);
        assert_eq!(v, Verdict::Verified, "GET via non-holder {reader}");
    }
    assert!(
        placed >= 5,
        "{placed} of 6 PUTs acknowledged: {:?}",
        ledger.puts.examples()
    );
    let s = proxy.stats();
    println!("proxy: {s:?}, unknown sources {}", proxy.unknown_sources());
    assert!(
        s.forwarded > 1000 && s.lost > 0 && s.duplicated > 0,
        "{s:?}"
    );
    assert_eq!(
        proxy.unknown_sources(),
        0,
        "a datagram came from outside the mesh"
    );
}

/// Three nodes in namespaces; node 2 is cut off: the majority acknowledges a PUT, the
/// cut-off node answers 503 (it cannot reach W = 2), never hangs; after the heal the
/// object reaches every node. Dropping the cluster leaves no namespace or bridge behind.
#[test]
fn a_namespace_partition_cuts_heals_and_leaves_nothing_behind() {
    if let Some(why) = netns::unavailable() {
        println!("SKIPPED: {why}");
        return;
    }
    let _one = serial();
    let seed = Seed::from_env_or_clock("netns");
    let mut spec = ClusterSpec::new("netns-test", 3, 3, NetKind::Netns, seed);
    spec.w = Some(2);
    spec.liveness = Some(Duration::from_secs(1));
    let c = Cluster::start(spec).unwrap();
    let lab = c.lab().unwrap();
    let names: Vec<String> = (0..3).map(|i| lab.name(i).to_string()).collect();
    assert_eq!(c.http(1).ip(), std::net::IpAddr::V4(lab.addr(1)));
    c.partition(&[2], &[0, 1]).unwrap();
    let ledger = Ledger::new(seed);
    let majority = ledger.put(c.http(0), 0, c.token(), 1, 200_000, 2);
    let acked = majority.1.expect("the majority acknowledges");
    let cut_off = ledger.put(c.http(2), 2, c.token(), 2, 200_000, 2).0;
    println!("PUT via the cut-off node: {}", cut_off.outcome.describe());
    assert_eq!(cut_off.outcome.status(), Some(503), "{:?}", cut_off.outcome);
    c.heal().unwrap();
    let all = [0, 1, 2];
    let took = scenarios::time_until(Duration::from_secs(60), Duration::from_millis(250), || {
        c.holders(&all, &acked.id).len() == 3
    });
    println!("back to RF after the heal: {took:?}");
    assert!(took.is_some(), "not on every node 60 s after the heal");
    let t = client::get_object(c.http(2), &acked.id, GET_TIMEOUT);
    assert!(matches!(&t.outcome, Outcome::Answered(a) if a.status == 200));
    drop(c);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    for n in names {
        assert!(!left.contains(&n), "{n} left behind: {left}");
    }
}

#[test]
fn bombs_are_refused_at_the_cap_and_counted() {
    let _one = serial();
    assert_passed(&scenario("bombs"));
}

#[test]
fn a_handshake_flood_keeps_the_node_up_and_bounded() {
    let _one = serial();
    assert_passed(&scenario("handshake-flood"));
}

#[test]
fn a_paused_holder_is_routed_around_mid_get_and_mid_put() {
    let _one = serial();
    assert_passed(&scenario("pauses"));
}

#[test]
fn encoded_bodies_are_refused_and_bombs_never_inflated() {
    let _one = serial();
    assert_passed(&scenario("content-encoding"));
}

// -----------------------------------------------------------------------------------------
// Known defects (RELIABILITY.md): each fails until fixed.
// -----------------------------------------------------------------------------------------

#[test]
#[ignore = "known defect D6: tenant quotas are kept per node, not across the mesh"]
fn d6_a_tenant_writing_through_two_gateways_stays_within_its_quota() {
    let _one = serial();
    assert_fixed(&scenario("quota-storm"), "D6");
}
