//! A peer proven to have lied (`Dht::peer_lied`: an answer under its own key failed
//! verification at another layer, an object's proof say) leaves the table and stays out
//! of it and of our walks for `LIAR_DENIED_FOR`, however it is heard from; records naming
//! it are neither handed on nor taken from it; its other requests are still answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::dht::{Dht, LIAR_DENIED_FOR, LIARS_MAX, Request, Response};
use overlay::{Config, ConnectionEvent, Event, Key, QueryResult};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x11a5;

fn node(rng: &mut ChaCha8Rng) -> Dht<P> {
    Dht::new(at(0), P(Key::random(rng)), Config::default(), SEED)
}

/// A node of its own, and the seeded stream its peers come from.
fn start() -> (ChaCha8Rng, Dht<P>) {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let dht = node(&mut rng);
    (rng, dht)
}

fn peers<const N: usize>(rng: &mut ChaCha8Rng) -> [P; N] {
    std::array::from_fn(|_| P(Key::random(rng)))
}

fn events(dht: &mut Dht<P>) -> Vec<Event<P>> {
    std::iter::from_fn(|| dht.poll_event()).collect()
}

#[test]
fn a_liar_leaves_the_table_and_is_kept_out_until_its_time_ends() {
    let (mut rng, mut dht) = start();
    let [x, y] = peers(&mut rng);
    for p in [&x, &y] {
        dht.handle_connection(at(0), ConnectionEvent::Dialed(p.clone()));
    }
    assert!(dht.routing_table().contains(&x.0));
    events(&mut dht);
    let claimed = Key::random(&mut rng);
    let add = dht.handle_request(at(50), x.clone(), Request::AddProvider(claimed));
    assert_eq!(add, Response::Added);

    dht.peer_lied(at(100), x.clone(), "object_proof");
    assert!(!dht.routing_table().contains(&x.0), "out at once");
    let evs = events(&mut dht);
    assert!(evs.contains(&Event::PeerMisbehaved {
        peer: x.clone(),
        reason: "object_proof"
    }));
    assert!(evs.contains(&Event::PeerRemoved(x.clone())));
    assert_eq!(dht.stats().misbehaved, 1);

    // However it is heard from, it stays out; its requests are answered all the same.
    dht.handle_connection(at(200), ConnectionEvent::Dialed(x.clone()));
    let answer = dht.handle_request(at(300), x.clone(), Request::FindNode(x.0));
    assert_eq!(answer, Response::Nodes(vec![y.clone()]));
    assert!(
        !dht.routing_table().contains(&x.0),
        "dialed or asking: still out"
    );
    assert!(
        std::iter::from_fn(|| dht.poll_transmit()).all(|t| t.to != x),
        "no verification ping to a liar"
    );
    // Its records are neither handed on nor taken.
    let asked = dht.handle_request(at(310), y.clone(), Request::GetProviders(claimed));
    assert!(
        matches!(&asked, Response::Providers { providers, .. } if providers.is_empty()),
        "{asked:?}"
    );
    let add = dht.handle_request(at(320), x.clone(), Request::AddProvider(claimed));
    assert_eq!(add, Response::Refused);
    dht.check_invariants().unwrap();

    // Once its time is over it may come back, as any peer does.
    let later = 100 + LIAR_DENIED_FOR.as_millis() as u64 + 1;
    dht.handle_connection(at(later), ConnectionEvent::Dialed(x.clone()));
    assert!(dht.routing_table().contains(&x.0), "back after its time");
    dht.check_invariants().unwrap();
}

#[test]
fn a_walk_neither_asks_a_liar_nor_keeps_its_records() {
    let (mut rng, mut dht) = start();
    let [x, y, z] = peers(&mut rng);
    dht.handle_connection(at(0), ConnectionEvent::Dialed(y.clone()));
    dht.peer_lied(at(10), x.clone(), "object_proof");
    let target = Key::random(&mut rng);
    dht.get_providers(at(20), target, 5).unwrap();
    let first = dht.poll_transmit().expect("y is asked");
    assert_eq!(first.to, y);
    // y names the liar as a closer node and as a provider; z is honest.
    dht.handle_response(
        at(30),
        first.rpc,
        Response::Providers {
            closer: vec![x.clone(), z.clone()],
            providers: vec![x.clone(), z.clone()],
        },
    );
    let asked: Vec<_> = std::iter::from_fn(|| dht.poll_transmit()).collect();
    assert!(asked.iter().any(|t| t.to == z), "z is asked");
    assert!(asked.iter().all(|t| t.to != x), "the liar is not");
    for t in asked {
        let none = Response::Providers {
            closer: Vec::new(),
            providers: Vec::new(),
        };
        dht.handle_response(at(40), t.rpc, none);
    }
    let found = events(&mut dht).into_iter().find_map(|e| match e {
        Event::QueryFinished {
            result: QueryResult::GetProviders { providers, .. },
            ..
        } => Some(providers),
        _ => None,
    });
    assert_eq!(
        found,
        Some(vec![z.clone()]),
        "only the honest record is kept"
    );
    dht.check_invariants().unwrap();
}

#[test]
fn liars_past_the_cap_forget_the_one_whose_time_ends_first() {
    let (mut rng, mut dht) = start();
    let [first] = peers(&mut rng);
    dht.peer_lied(at(0), first.clone(), "object_proof");
    for i in 0..LIARS_MAX {
        dht.peer_lied(at(1 + i as u64), P(Key::random(&mut rng)), "object_proof");
    }
    dht.handle_connection(at(10_000), ConnectionEvent::Dialed(first.clone()));
    assert!(
        dht.routing_table().contains(&first.0),
        "forgotten early to make room"
    );
    dht.check_invariants().unwrap();
}

#[test]
fn a_liar_caught_while_its_answer_is_on_the_way_gives_the_walk_nothing() {
    let (mut rng, mut dht) = start();
    let [x, y, z] = peers(&mut rng);
    for p in [&x, &y] {
        dht.handle_connection(at(0), ConnectionEvent::Dialed(p.clone()));
    }
    dht.find_node(at(10), Key::random(&mut rng)).unwrap();
    let out: Vec<_> = std::iter::from_fn(|| dht.poll_transmit()).collect();
    let to_x = out.iter().find(|t| t.to == x).expect("x is asked").rpc;
    let to_y = out.iter().find(|t| t.to == y).expect("y is asked").rpc;
    dht.peer_lied(at(20), x.clone(), "object_proof");
    // x's answer names z; it is not followed, and x is no result.
    dht.handle_response(at(30), to_x, Response::Nodes(vec![z.clone()]));
    assert!(
        std::iter::from_fn(|| dht.poll_transmit()).all(|t| t.to != z),
        "nothing taken from a liar's answer"
    );
    dht.handle_response(at(40), to_y, Response::Nodes(Vec::new()));
    let closest = events(&mut dht).into_iter().find_map(|e| match e {
        Event::QueryFinished {
            result: QueryResult::FindNode { closest },
            ..
        } => Some(closest),
        _ => None,
    });
    assert_eq!(closest, Some(vec![y.clone()]), "the liar is no result");
    dht.check_invariants().unwrap();
}

#[test]
fn a_liar_among_the_bootstrap_contacts_is_asked_only_when_it_is_all_there_is() {
    let (mut rng, mut dht) = start();
    let [x, y] = peers(&mut rng);
    // With an honest contact beside it, the join skips the liar.
    dht.peer_lied(at(0), x.clone(), "object_proof");
    dht.bootstrap(at(10), vec![x.clone(), y.clone()]).unwrap();
    let asked: Vec<P> = std::iter::from_fn(|| dht.poll_transmit())
        .map(|t| t.to)
        .collect();
    assert_eq!(asked, vec![y.clone()]);
    // Alone, it is asked: there is nobody else (RELIABILITY.md D8).
    let mut dht = node(&mut rng);
    dht.peer_lied(at(0), x.clone(), "object_proof");
    dht.bootstrap(at(10), vec![x.clone()]).unwrap();
    let asked: Vec<P> = std::iter::from_fn(|| dht.poll_transmit())
        .map(|t| t.to)
        .collect();
    assert_eq!(asked, vec![x.clone()]);
    dht.check_invariants().unwrap();
}
