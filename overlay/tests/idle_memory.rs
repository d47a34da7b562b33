//! A node that finished its lookups holds no more heap than before it started them. std's
//! B-trees keep their last leaf when emptied and queues keep their capacity, so every node
//! that ever ran a lookup used to keep 4-5 KiB of empty working space: a tenth of a
//! 100k-node simulation's heap, gigabytes at 10^6 nodes (`Dht::shed_idle`).
//!
//! The heap is counted by an instrumented global allocator, so this file holds one test:
//! tests in one binary run on threads that share the allocator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::alloc::System;

use common::{P, at};
use overlay::dht::{Dht, Response};
use overlay::{Config, Key};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static HEAP: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SEED: u64 = 0x1d1e;

/// Bytes allocated and not freed since `region` began (a reallocation counts its change in
/// `bytes_allocated` or `bytes_deallocated`).
fn live(region: &Region<System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

/// Runs lookups to their end, one after another, every request answered with no new
/// contact (so the table stays as it is), and drains what the node had to say.
fn run_lookups(dht: &mut Dht<P>, rng: &mut ChaCha8Rng, lookups: usize) {
    for i in 0..lookups {
        let now = at(1 + i as u64 * 1000);
        dht.find_node(now, Key::random(rng)).unwrap();
        while let Some(t) = dht.poll_transmit() {
            dht.handle_response(now, t.rpc, Response::Nodes(Vec::new()));
        }
        while dht.poll_event().is_some() {}
        assert_eq!(dht.queries_running(), 0, "lookup {i} finished");
    }
}

#[test]
fn a_node_done_with_its_lookups_gives_their_memory_back() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let config = Config {
        k: 8,
        ..Config::default()
    };
    let mut dht = Dht::new(at(0), P(Key::random(&mut rng)), config, SEED);
    for _ in 0..64 {
        dht.insert_peer(at(0), P(Key::random(&mut rng)));
    }
    while dht.poll_transmit().is_some() {}
    while dht.poll_event().is_some() {}

    let region = Region::new(HEAP);
    run_lookups(&mut dht, &mut rng, 40);
    dht.check_invariants().unwrap();
    let kept = live(&region);
    assert!(
        kept <= 0,
        "an idle node kept {kept} bytes more after 40 finished lookups"
    );
}
