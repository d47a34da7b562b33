//! A failure is held against a contact only if the contact was not seen alive since the
//! request was sent. A node that restarts with the same key re-joins by asking us
//! something (which refreshes its entry) while requests we sent to its old process are
//! still timing out; counting those evicted a live contact, and a first node without
//! bootstrap contacts stayed alone (`testing/tests/objects.rs`, the quorum test).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{P, at};
use overlay::dht::{Dht, Request, RpcFailure};
use overlay::{Config, Key, Peer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x5a1e;

/// A node with one contact, `x`, two lookups sent to it, and `x` silent since.
fn with_two_requests_to(x: &P) -> (Dht<P>, Vec<overlay::dht::RpcId>) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let local = P(Key::random(&mut rng));
    let config = Config {
        liveness_interval: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    let mut dht = Dht::new(at(0), local, config, SEED);
    dht.insert_peer(at(0), x.clone());
    dht.find_node(at(10_000), Key::random(&mut rng)).unwrap();
    dht.find_node(at(10_000), Key::random(&mut rng)).unwrap();
    let mut rpcs = Vec::new();
    while let Some(t) = dht.poll_transmit() {
        if t.to == *x {
            rpcs.push(t.rpc);
        }
    }
    assert_eq!(rpcs.len(), 2, "both lookups ask x");
    (dht, rpcs)
}

#[test]
fn failures_of_requests_sent_before_the_contact_was_seen_do_not_evict_it() {
    println!("seed {SEED}");
    let x = P(Key::random(&mut ChaCha8Rng::seed_from_u64(SEED + 1)));
    let (mut dht, rpcs) = with_two_requests_to(&x);
    // x comes back (a restarted process, same key) and asks us something.
    let _ = dht.handle_request(at(10_100), x.clone(), Request::FindNode(x.key()));
    for (i, rpc) in rpcs.into_iter().enumerate() {
        dht.handle_rpc_failure(at(10_200 + i as u64), rpc, RpcFailure::Peer);
        dht.check_invariants().unwrap();
    }
    assert!(
        dht.routing_table().contains(&x.key()),
        "x was seen alive since"
    );
}

#[test]
fn failures_of_requests_sent_after_the_contact_was_last_seen_evict_it() {
    let x = P(Key::random(&mut ChaCha8Rng::seed_from_u64(SEED + 1)));
    let (mut dht, rpcs) = with_two_requests_to(&x);
    for (i, rpc) in rpcs.into_iter().enumerate() {
        dht.handle_rpc_failure(at(10_200 + i as u64), rpc, RpcFailure::Peer);
        dht.check_invariants().unwrap();
    }
    assert!(
        !dht.routing_table().contains(&x.key()),
        "x failed twice, questionable"
    );
}
