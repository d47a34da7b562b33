//! Scheduled announcements run `announcements_max` at a time: a node that starts with a
//! store full of objects (`Dht::provide_paced`) and a node whose republish comes due for
//! every key at once announce a few keys at a time, never a burst of walks that fills
//! `queries_max`. The pacing used to be the node's own (four provide commands in flight at
//! start-up, `STARTUP_ANNOUNCE_IN_FLIGHT`); republishes were not paced at all, and simnet's
//! restarted nodes announced everything at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::QueryResult;
use overlay::dht::{Dht, Event, Request, Response, Transmit};
use overlay::{Config, Key};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0xa770;

/// Four announcement slots (the default is 16), so ten keys queue.
fn config() -> Config {
    Config {
        announcements_max: 4,
        ..Config::default()
    }
}

/// A node with 30 contacts and four announcement slots.
fn node(rng: &mut ChaCha8Rng) -> Dht<P> {
    let mut dht = Dht::new(at(0), P(Key::random(rng)), config(), SEED);
    for _ in 0..30 {
        dht.insert_peer(at(0), P(Key::random(rng)));
    }
    while dht.poll_transmit().is_some() {}
    while dht.poll_event().is_some() {}
    dht
}

/// Which of `ours` had walks start (their FIND_NODEs went out). Every request is answered
/// (no closer contacts; every record stored) at once if `answer`, else kept in `unanswered`.
fn walks_started(
    dht: &mut Dht<P>,
    ours: &[Key],
    answer: bool,
    now: u64,
    unanswered: &mut Vec<Transmit<P>>,
) -> Vec<Key> {
    let mut keys = Vec::new();
    while let Some(t) = dht.poll_transmit() {
        if let Request::FindNode(k) = t.request {
            if ours.contains(&k) && !keys.contains(&k) {
                keys.push(k);
            }
        }
        if answer {
            reply(dht, t, now);
        } else {
            unanswered.push(t);
        }
    }
    keys
}

fn reply(dht: &mut Dht<P>, t: Transmit<P>, now: u64) {
    let r = match t.request {
        Request::AddProvider(_) => Response::Added,
        _ => Response::Nodes(Vec::new()),
    };
    dht.handle_response(at(now), t.rpc, r);
}

/// Announcements that finished, from the events.
fn provided(dht: &mut Dht<P>) -> usize {
    let mut n = 0;
    while let Some(ev) = dht.poll_event() {
        if let Event::QueryFinished {
            result: QueryResult::Provided { .. },
            ..
        } = ev
        {
            n += 1;
        }
    }
    n
}

#[test]
fn a_store_full_of_objects_is_announced_four_at_a_time() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut dht = node(&mut rng);
    let keys: Vec<Key> = (0..10).map(|_| Key::random(&mut rng)).collect();
    for k in &keys {
        dht.provide_paced(at(1), *k);
    }
    assert!(dht.poll_timeout().is_some_and(|t| t <= at(1)), "due now");
    dht.handle_timeout(at(1));
    let mut unanswered = Vec::new();
    let first = walks_started(&mut dht, &keys, false, 1, &mut unanswered);
    assert_eq!(
        first.len(),
        4,
        "four announcements at once, not {}",
        first.len()
    );
    assert_eq!(dht.queries_running(), 4);
    assert!(
        dht.poll_timeout().is_some_and(|t| t > at(1)),
        "the six waiting must not spin the timer"
    );
    dht.check_invariants().unwrap();

    // Each finished announcement frees a slot for the next; all ten go out in the end.
    for t in unanswered.drain(..) {
        reply(&mut dht, t, 2);
    }
    let mut done = 0;
    let mut now = 2;
    while done < keys.len() && now < 100 {
        let _ = walks_started(&mut dht, &keys, true, now, &mut unanswered);
        done += provided(&mut dht);
        if dht.poll_timeout().is_some_and(|t| t <= at(now)) {
            dht.handle_timeout(at(now));
        }
        assert!(dht.queries_running() <= 4, "at {now} ms");
        now += 1;
    }
    assert_eq!(done, keys.len(), "every key announced");
    dht.check_invariants().unwrap();
}

#[test]
fn a_republish_due_for_every_key_at_once_runs_four_at_a_time() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut dht = node(&mut rng);
    // Ten announcements started by command, one after another (a PUT's, each at once).
    let keys: Vec<Key> = (0..10).map(|_| Key::random(&mut rng)).collect();
    for k in &keys {
        dht.start_providing(at(1), *k).unwrap();
        assert_eq!(
            walks_started(&mut dht, &keys, true, 1, &mut Vec::new()),
            vec![*k]
        );
    }
    assert_eq!(provided(&mut dht), 10);
    assert_eq!(dht.queries_running(), 0);

    // Their republishes fall due within the same second.
    let due = 1 + dht.config().provider_republish_interval.as_millis() as u64;
    dht.handle_timeout(at(due));
    let started = walks_started(&mut dht, &keys, false, due, &mut Vec::new());
    assert_eq!(started.len(), 4, "a burst of {} republishes", started.len());
    assert!(dht.poll_timeout().is_some_and(|t| t > at(due)));
    dht.check_invariants().unwrap();
}

#[test]
fn a_node_that_knows_nobody_keeps_its_announcements_until_a_peer_comes() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut dht = Dht::new(at(0), P(Key::random(&mut rng)), config(), SEED);
    let keys: Vec<Key> = (0..6).map(|_| Key::random(&mut rng)).collect();
    for k in &keys {
        dht.provide_paced(at(1), *k);
    }
    dht.handle_timeout(at(1));
    assert_eq!(provided(&mut dht), 0, "announced to nobody");
    assert!(
        dht.poll_timeout().is_none_or(|t| t > at(1)),
        "waiting for a peer must not spin the timer"
    );

    // A peer comes: the announcements are due at once, four at a time.
    let peer = P(Key::random(&mut rng));
    dht.insert_peer(at(2), peer);
    let mut unanswered = Vec::new();
    let _ = walks_started(&mut dht, &keys, false, 2, &mut unanswered);
    assert!(dht.poll_timeout().is_some_and(|t| t <= at(2)), "due now");
    dht.handle_timeout(at(2));
    let started = walks_started(&mut dht, &keys, false, 2, &mut unanswered);
    assert_eq!(started.len(), 4);
    dht.check_invariants().unwrap();
}

#[test]
fn announcements_by_command_leave_the_scheduled_ones_their_slots() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut dht = node(&mut rng);
    // Six PUTs' announcements, still walking: more than the four slots.
    let puts: Vec<Key> = (0..6).map(|_| Key::random(&mut rng)).collect();
    let mut unanswered = Vec::new();
    for k in &puts {
        dht.start_providing(at(1), *k).unwrap();
    }
    assert_eq!(
        walks_started(&mut dht, &puts, false, 1, &mut unanswered).len(),
        6
    );

    // A stored object's announcement still goes out: a node that keeps taking writes
    // must still republish what it holds.
    let held = Key::random(&mut rng);
    dht.provide_paced(at(2), held);
    assert!(dht.poll_timeout().is_some_and(|t| t <= at(2)), "due now");
    dht.handle_timeout(at(2));
    let started = walks_started(&mut dht, &[held], false, 2, &mut unanswered);
    assert_eq!(started, vec![held]);
    dht.check_invariants().unwrap();
}
