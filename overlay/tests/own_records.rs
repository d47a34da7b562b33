//! What a node announces about itself is not a record it keeps for others. A node that holds
//! more objects than `provider_records_max` used to fill its provider store with its own
//! records (one per object it announced) and then refuse every other node's ADD_PROVIDER:
//! the keys closest to it went unfindable. Its own keys are the keys it provides; it answers
//! for them from that list, and the store's cap counts others' records only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::dht::{Dht, Request, Response};
use overlay::{Config, Key};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x0a7e;

/// Room for four records kept for others.
fn config() -> Config {
    Config {
        provider_records_max: 4,
        ..Config::default()
    }
}

/// A node with a few contacts that provides `own` keys, more than its store's cap.
fn node_providing(rng: &mut ChaCha8Rng, own: usize) -> (Dht<P>, Vec<Key>) {
    println!("seed = {SEED:#x}");
    let mut dht = Dht::new(at(0), P(Key::random(rng)), config(), SEED);
    for _ in 0..4 {
        dht.insert_peer(at(0), P(Key::random(rng)));
    }
    let keys: Vec<Key> = (0..own).map(|_| Key::random(rng)).collect();
    for k in &keys {
        dht.provide_paced(at(0), *k);
    }
    while dht.poll_transmit().is_some() {}
    while dht.poll_event().is_some() {}
    (dht, keys)
}

#[test]
fn a_node_providing_many_keys_still_stores_others_records() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut dht, _) = node_providing(&mut rng, 10);
    for i in 0..4 {
        let key = Key::random(&mut rng);
        let from = P(Key::random(&mut rng));
        let answer = dht.handle_request(at(10), from, Request::AddProvider(key));
        assert_eq!(answer, Response::Added, "record {i} refused");
    }
    assert_eq!(dht.provider_records(), 4, "only others' records count");
    let fifth = dht.handle_request(
        at(10),
        P(Key::random(&mut rng)),
        Request::AddProvider(Key::random(&mut rng)),
    );
    assert_eq!(fifth, Response::Refused, "the cap still holds for others");
    dht.check_invariants().unwrap();
}

#[test]
fn a_node_answers_for_the_keys_it_provides_until_it_stops() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut dht, keys) = node_providing(&mut rng, 10);
    let me = dht.local().clone();
    let asker = P(Key::random(&mut rng));
    let providers_of = |dht: &mut Dht<P>, now: u64, key: Key| match dht.handle_request(
        at(now),
        asker.clone(),
        Request::GetProviders(key),
    ) {
        Response::Providers { providers, .. } => providers,
        other => panic!("GET_PROVIDERS answered {other:?}"),
    };
    for k in &keys {
        assert_eq!(providers_of(&mut dht, 20, *k), vec![me.clone()]);
    }
    // Another's record for one of our keys is answered beside ours.
    let other = P(Key::random(&mut rng));
    let added = dht.handle_request(at(30), other.clone(), Request::AddProvider(keys[0]));
    assert_eq!(added, Response::Added);
    let both = providers_of(&mut dht, 40, keys[0]);
    assert!(both.contains(&me) && both.contains(&other), "{both:?}");
    // Past the records' TTL ours still stands: it lasts as long as we provide.
    let past_ttl = config().provider_ttl.as_millis() as u64 + 1_000;
    assert_eq!(providers_of(&mut dht, past_ttl, keys[1]), vec![me.clone()]);
    dht.stop_providing(&keys[1]);
    assert!(providers_of(&mut dht, past_ttl, keys[1]).is_empty());
    dht.check_invariants().unwrap();
}
