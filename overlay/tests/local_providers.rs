//! A provider lookup starts from the records the node itself stores: a node among the k
//! closest to a key holds its provider records, and asking the network for what it already
//! has costs a get a walk of round trips for nothing. The records are claims like any
//! answer's (the getter still checks them by fetching verified bytes), and they expire as
//! stored ones do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::dht::{Dht, Event, Request, Response};
use overlay::{Config, Key, QueryResult};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x9e7;

/// A node with four contacts; `holder`, one of them, announced itself for `key` here.
fn node_with_a_record() -> (Dht<P>, P, Key) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    println!("seed = {SEED:#x}");
    let mut dht = Dht::new(at(0), P(Key::random(&mut rng)), Config::default(), SEED);
    let peers: Vec<P> = (0..4).map(|_| P(Key::random(&mut rng))).collect();
    for p in &peers {
        dht.insert_peer(at(0), p.clone());
    }
    while dht.poll_transmit().is_some() {}
    while dht.poll_event().is_some() {}
    let key = Key::random(&mut rng);
    let holder = peers[1].clone();
    let stored = dht.handle_request(at(10), holder.clone(), Request::AddProvider(key));
    assert_eq!(stored, Response::Added);
    (dht, holder, key)
}

#[test]
fn a_provider_lookup_that_has_its_providers_locally_sends_nothing() {
    let (mut dht, holder, key) = node_with_a_record();
    let id = dht.get_providers(at(20), key, 1).unwrap();
    let sent: Vec<_> = std::iter::from_fn(|| dht.poll_transmit())
        .filter(|t| matches!(t.request, Request::GetProviders(_)))
        .collect();
    assert!(sent.is_empty(), "asked the network: {sent:?}");
    let finished = std::iter::from_fn(|| dht.poll_event()).find_map(|e| match e {
        Event::QueryFinished {
            id: i,
            result: QueryResult::GetProviders { providers, .. },
            stats,
        } if i == id => Some((providers, stats)),
        _ => None,
    });
    let (providers, stats) = finished.expect("the lookup finished at once");
    assert_eq!(providers, vec![holder]);
    assert_eq!(stats.rpcs, 0);
    dht.check_invariants().unwrap();
}

#[test]
fn a_provider_lookup_wanting_more_than_it_stores_still_walks_and_keeps_them() {
    let (mut dht, holder, key) = node_with_a_record();
    let id = dht.get_providers(at(20), key, 2).unwrap();
    let sent: Vec<_> = std::iter::from_fn(|| dht.poll_transmit())
        .filter(|t| matches!(t.request, Request::GetProviders(_)))
        .collect();
    assert!(!sent.is_empty(), "one record is not the two wanted");
    // Every contact answers with nothing new: the walk ends with the stored record.
    let mut pending = sent;
    let mut now = 20;
    while !pending.is_empty() {
        now += 100;
        for t in std::mem::take(&mut pending) {
            let answer = Response::Providers {
                closer: Vec::new(),
                providers: Vec::new(),
            };
            dht.handle_response(at(now), t.rpc, answer);
        }
        pending.extend(
            std::iter::from_fn(|| dht.poll_transmit())
                .filter(|t| matches!(t.request, Request::GetProviders(_))),
        );
    }
    let providers = std::iter::from_fn(|| dht.poll_event()).find_map(|e| match e {
        Event::QueryFinished {
            id: i,
            result: QueryResult::GetProviders { providers, .. },
            ..
        } if i == id => Some(providers),
        _ => None,
    });
    assert_eq!(providers, Some(vec![holder]));
}

#[test]
fn a_node_is_not_its_own_provider_in_a_lookup() {
    let (mut dht, _, _) = node_with_a_record();
    let other = Key::random(&mut ChaCha8Rng::seed_from_u64(SEED + 1));
    dht.start_providing(at(15), other).unwrap();
    while dht.poll_transmit().is_some() {}
    while dht.poll_event().is_some() {}
    dht.get_providers(at(20), other, 1).unwrap();
    let asked = std::iter::from_fn(|| dht.poll_transmit())
        .filter(|t| matches!(t.request, Request::GetProviders(_)))
        .count();
    assert!(asked > 0, "its own record is not one to fetch from");
}
