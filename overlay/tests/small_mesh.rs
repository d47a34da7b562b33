//! A node that joins through a seed which does not yet vouch for anyone (the seed verifies a
//! stranger with a ping before it serves it, and a small mesh's joiners all arrive at once)
//! learns nobody but the seed. While its table is that thin it asks again, soon, instead of
//! waiting for the bucket refresh a quarter of an hour later: else the joiners of a
//! four-node mesh stay strangers to each other for fifteen minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::dht::{Dht, Request, Response};
use overlay::{Config, Key};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x5eed_0d09;

#[test]
fn a_joiner_whose_seed_knew_nobody_asks_again_soon() {
    println!("seed {SEED:#x}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let config = Config::default();
    let mut joiner = Dht::new(at(0), P(Key::random(&mut rng)), config.clone(), SEED);
    let seed = P(Key::random(&mut rng));
    let other = P(Key::random(&mut rng));
    joiner.bootstrap(at(0), vec![seed.clone()]).unwrap();

    // Virtual time in 10 ms steps. For its first second the seed knows nobody it would
    // name; then it has verified `other`, and names it.
    let mut asked_other = None;
    let mut now_ms = 0;
    while now_ms <= 30_000 && asked_other.is_none() {
        joiner.handle_timeout(at(now_ms));
        while let Some(t) = joiner.poll_transmit() {
            let answer = match (&t.request, t.to == seed) {
                (Request::FindNode(_), true) if now_ms < 1_000 => Response::Nodes(Vec::new()),
                (Request::FindNode(_), true) => Response::Nodes(vec![other.clone()]),
                (Request::Ping, _) => Response::Pong,
                (Request::FindNode(_), false) if t.to == other => {
                    asked_other = Some(now_ms);
                    Response::Nodes(vec![seed.clone()])
                }
                _ => continue,
            };
            joiner.handle_response(at(now_ms), t.rpc, answer);
        }
        now_ms += 10;
    }
    let asked = asked_other.expect("the joiner never learned the peer its seed verified later");
    println!("the joiner asked the later peer {asked} ms after it started");
    assert!(joiner.is_ready());
    assert!(joiner.routing_table().contains(&other.0));
    joiner.check_invariants().unwrap();
}

/// A zero first wait would never grow (it doubles): a node would start a self-lookup at
/// every timer turn. The configuration refuses it.
#[test]
fn a_zero_thin_table_wait_is_refused() {
    let zero = Config {
        thin_table_lookup: Some(std::time::Duration::ZERO),
        ..Config::default()
    };
    assert!(zero.validate().is_err());
    let off = Config {
        thin_table_lookup: None,
        ..Config::default()
    };
    assert_eq!(off.validate(), Ok(()));
}
