//! A node with `rpcs_in_flight_max` requests holding a slot holds the next one until a slot
//! frees, and the held request's timeouts start when it is sent: a shortage of ours delays
//! a walk; it neither fails the request nor counts against the peer. A lookup request frees
//! its slot at its soft timeout (nobody waits for it then), so silent peers cannot starve
//! every walk of the node for a whole `rpc_timeout`. The cap used to live
//! in the node's driver, which failed such a request at once (`FailureCause::RequestSlots`):
//! the walk went on without asking that peer, and simnet, which has no such driver, never
//! saw it happen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::dht::{Dht, Event, Request, Response, Transmit};
use overlay::{Config, Key};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x5107;

/// A node allowed one request in flight, with `peers` contacts in its table.
fn node(rng: &mut ChaCha8Rng, peers: usize, config: Config) -> (Dht<P>, Vec<P>) {
    let config = Config {
        k: 4,
        rpcs_in_flight_max: 1,
        ..config
    };
    let mut dht = Dht::new(at(0), P(Key::random(rng)), config, SEED);
    let peers: Vec<P> = (0..peers).map(|_| P(Key::random(rng))).collect();
    for p in &peers {
        dht.insert_peer(at(0), p.clone());
    }
    (dht, peers)
}

/// A node with one slot that started a lookup at 0 ms, and the one request that went out:
/// alpha = 3 wants three out, the other two are held.
fn lookup_with_one_slot() -> (Dht<P>, Transmit<P>) {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut dht, _) = node(&mut rng, 4, Config::default());
    dht.find_node(at(0), Key::random(&mut rng)).unwrap();
    let first = dht.poll_transmit().expect("the first request goes out");
    assert!(
        dht.poll_transmit().is_none(),
        "a second request went past the cap"
    );
    assert_eq!(dht.stats().rpcs_held, 2);
    dht.check_invariants().unwrap();
    (dht, first)
}

#[test]
fn a_request_past_the_cap_waits_for_a_slot_and_its_timeout_starts_when_sent() {
    let (mut dht, first) = lookup_with_one_slot();
    let rpc_timeout = dht.config().rpc_timeout.as_millis() as u64;

    // Its answer frees the slot: the next request goes out now, at 50 ms.
    dht.handle_response(at(50), first.rpc, Response::Nodes(Vec::new()));
    let second = dht
        .poll_transmit()
        .expect("a held request goes out when a slot frees");
    assert!(dht.poll_transmit().is_none());
    assert!(matches!(second.request, Request::FindNode(_)));
    dht.check_invariants().unwrap();

    // Past the timeout counted from the lookup's start, the second request, sent at 50 ms,
    // has not failed; it fails at 50 ms + the timeout, and only then counts against its peer.
    dht.handle_timeout(at(rpc_timeout + 10));
    assert_eq!(dht.stats().rpcs_failed, 0, "timed from when it was held");
    let failures = |dht: &Dht<P>| dht.routing_table().get(&second.to.0).map(|e| e.failures);
    assert_eq!(failures(&dht), Some(0));
    dht.handle_timeout(at(50 + rpc_timeout));
    assert_eq!(dht.stats().rpcs_failed, 1);
    assert_eq!(failures(&dht), Some(1));
    dht.check_invariants().unwrap();
    assert_eq!(dht.stats().held_dropped, 0);
}

#[test]
fn a_lookup_request_still_held_when_its_walk_ends_is_never_sent() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    // The walk's deadline comes before the request holding the only slot times out.
    let config = Config {
        query_timeout: std::time::Duration::from_secs(2),
        ..Config::default()
    };
    let (mut dht, _) = node(&mut rng, 4, config);
    let rpc_timeout = dht.config().rpc_timeout.as_millis() as u64;
    // A stranger asks us something: we ping it before it may enter the table, and it
    // never answers, so the ping holds the slot for the whole timeout.
    let stranger = P(Key::random(&mut rng));
    dht.handle_request(at(0), stranger.clone(), Request::FindNode(stranger.0));
    let ping = dht.poll_transmit().expect("the verification ping");
    assert_eq!(ping.to, stranger);

    let id = dht.find_node(at(0), Key::random(&mut rng)).unwrap();
    assert!(dht.poll_transmit().is_none());
    assert_eq!(dht.stats().rpcs_held, 3);

    // The walk ends at its deadline with nobody asked; the ping times out later and frees
    // the slot, and the walk's held requests are dropped, not sent.
    dht.handle_timeout(at(2_000));
    let mut finished = false;
    while let Some(ev) = dht.poll_event() {
        finished |= matches!(ev, Event::QueryFinished { id: done, .. } if done == id);
    }
    assert!(finished, "the walk ended at its deadline");
    dht.handle_timeout(at(rpc_timeout));
    assert!(
        dht.poll_transmit().is_none(),
        "a request of a finished walk went out"
    );
    assert_eq!(dht.stats().held_dropped, 3);
    dht.check_invariants().unwrap();
}

#[test]
fn a_silent_peer_holds_a_slot_only_until_its_soft_timeout() {
    let (mut dht, first) = lookup_with_one_slot();
    let soft = dht.config().soft_timeout_initial.as_millis() as u64;
    // Nobody answers. At the first request's soft timeout its walk stops waiting for it,
    // and its slot goes to the next request, long before its hard timeout.
    dht.handle_timeout(at(soft));
    let second = dht
        .poll_transmit()
        .expect("the slot freed at the soft timeout");
    assert_ne!(second.to, first.to);
    assert_eq!(dht.stats().rpcs_failed, 0);
    dht.check_invariants().unwrap();
}

#[test]
fn an_answer_that_ends_the_walk_sends_none_of_its_held_requests() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut dht, _) = node(&mut rng, 4, Config::default());
    let key = Key::random(&mut rng);
    let id = dht.get_providers(at(0), key, 1).unwrap();
    let first = dht.poll_transmit().expect("the first request goes out");
    assert_eq!(dht.stats().rpcs_held, 2);
    // The first answer names a provider: the walk wants one, so it is over, and the slot
    // it frees must not go to a request of that walk.
    let provider = P(Key::random(&mut rng));
    let providers = vec![provider];
    let answer = Response::Providers {
        closer: Vec::new(),
        providers,
    };
    dht.handle_response(at(50), first.rpc, answer);
    let mut finished = false;
    while let Some(ev) = dht.poll_event() {
        finished |= matches!(ev, Event::QueryFinished { id: done, .. } if done == id);
    }
    assert!(finished, "one provider was all the walk wanted");
    assert!(
        dht.poll_transmit().is_none(),
        "a request of a finished walk went out"
    );
    assert_eq!(dht.stats().held_dropped, 2);
    dht.check_invariants().unwrap();
}
