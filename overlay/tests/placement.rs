//! Where a placement's candidates come from (`Dht::find_placement`): a lookup when one can
//! start, else the table's closest at once. A node at its query cap (its own refreshes and
//! announcements, or a burst of GETs) used to drop a put's placement in simnet, while the
//! node placed it at its table's closest; now both take the same rule from here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{P, at};
use overlay::{Config, Dht, Key, Peer, PlacementWalk};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x91ace;

#[test]
fn a_placement_walks_when_it_can_and_takes_the_table_when_it_cannot() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let config = Config {
        queries_max: 1,
        ..Config::default()
    };
    let mut dht = Dht::new(at(0), P(Key::random(&mut rng)), config, SEED);
    let key = Key::random(&mut rng);

    // Nobody to ask: no lookup, and an empty table has no candidates.
    assert_eq!(
        dht.find_placement(at(0), key, 3),
        PlacementWalk::Table(Vec::new())
    );

    let peers: Vec<P> = (0..30).map(|_| P(Key::random(&mut rng))).collect();
    for p in &peers {
        dht.insert_peer(at(0), p.clone());
    }
    assert!(matches!(
        dht.find_placement(at(1), key, 3),
        PlacementWalk::Started(_)
    ));

    // The only query is taken: the three closest in the table, nearest first, at once.
    let PlacementWalk::Table(closest) = dht.find_placement(at(2), key, 3) else {
        panic!("a second lookup went past queries_max = 1");
    };
    let mut expected: Vec<Key> = peers.iter().map(Peer::key).collect();
    expected.sort_by_key(|k| k.distance(&key));
    expected.truncate(3);
    assert_eq!(closest.iter().map(Peer::key).collect::<Vec<_>>(), expected);
    dht.check_invariants().unwrap();
}
