//! What a driver's connection events and failure causes do to the table, through the one
//! entry each has (`Dht::handle_connection`, `Dht::handle_rpc_failure` with a
//! `FailureCause`): a driver names what happened, the overlay decides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{P, at};
use overlay::dht::{Dht, Request};
use overlay::{Config, ConnectionEvent, FailureCause, Key, Peer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0xc0_22;

fn node(rng: &mut ChaCha8Rng) -> Dht<P> {
    let config = Config {
        liveness_interval: Some(Duration::from_secs(1)),
        ..Config::default()
    };
    Dht::new(at(0), P(Key::random(rng)), config, SEED)
}

fn pings_to(dht: &mut Dht<P>, x: &P) -> usize {
    let mut n = 0;
    while let Some(t) = dht.poll_transmit() {
        n += usize::from(t.to == *x && matches!(t.request, Request::Ping));
    }
    n
}

#[test]
fn a_connection_event_says_what_the_table_does() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut dht = node(&mut rng);
    let x = P(Key::random(&mut rng));

    // A peer that dialed us is a stranger until it answers a request of ours.
    dht.handle_connection(at(1), ConnectionEvent::Accepted(x.clone()));
    assert!(!dht.routing_table().contains(&x.key()), "accepted: not yet");
    assert!(!dht.had_peers(), "a stranger is not a peer we had");
    // One we dialed answered as the key we asked for.
    dht.handle_connection(at(2), ConnectionEvent::Dialed(x.clone()));
    assert!(dht.routing_table().contains(&x.key()), "dialed: in");
    assert_eq!(pings_to(&mut dht, &x), 0, "a new connection probes nobody");

    // An orderly close says nothing against it; a loss makes it questionable: pinged.
    dht.handle_connection(at(3), ConnectionEvent::Closed(x.key()));
    dht.handle_timeout(at(4));
    assert_eq!(pings_to(&mut dht, &x), 0, "closed in good order: trusted");
    dht.handle_connection(at(5), ConnectionEvent::Lost(x.key()));
    dht.handle_timeout(at(6));
    assert_eq!(
        pings_to(&mut dht, &x),
        1,
        "lost: pinged before it is trusted"
    );
    assert!(dht.routing_table().contains(&x.key()), "lost: not yet out");

    // A goodbye takes it out at once.
    dht.handle_connection(at(7), ConnectionEvent::PeerLeft(x.key()));
    assert!(!dht.routing_table().contains(&x.key()), "left: out");
    assert!(dht.had_peers(), "alone now, but not by design");
    dht.check_invariants().unwrap();
}

/// Two lookups' requests to `x`, failed for `cause` after `x` was last seen: whether `x`
/// is still in the table.
fn survives_two_failures(cause: FailureCause) -> bool {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut dht = node(&mut rng);
    let x = P(Key::random(&mut rng));
    dht.handle_connection(at(0), ConnectionEvent::Dialed(x.clone()));
    dht.find_node(at(10_000), Key::random(&mut rng)).unwrap();
    dht.find_node(at(10_000), Key::random(&mut rng)).unwrap();
    let mut rpcs = Vec::new();
    while let Some(t) = dht.poll_transmit() {
        if t.to == x {
            rpcs.push(t.rpc);
        }
    }
    assert_eq!(rpcs.len(), 2, "both lookups ask x");
    for (i, rpc) in rpcs.into_iter().enumerate() {
        dht.handle_rpc_failure(at(10_200 + i as u64), rpc, cause);
        dht.check_invariants().unwrap();
    }
    dht.routing_table().contains(&x.key())
}

#[test]
fn our_shortages_and_refusals_keep_a_contact_and_its_silence_does_not() {
    println!("seed {SEED}");
    use FailureCause as C;
    for ours in [
        C::RequestSlots,
        C::ConnectionCap,
        C::OursClosing,
        C::DialQueued,
        C::NotConnected,
        C::ClosedHere,
        C::PeerClosed,
        C::Unavailable,
    ] {
        assert!(
            survives_two_failures(ours),
            "{ours:?} is not the peer's failure"
        );
    }
    for theirs in [C::Silent, C::BadAnswer, C::PeerShutdown] {
        assert!(!survives_two_failures(theirs), "{theirs:?} is the peer's");
    }
}
