//! IP-diversity limits of the routing table, against eclipse attacks: one address group (an
//! IPv4 /24, an IPv6 /48, as the driver computes it) may hold at most `per_bucket` contacts
//! of a bucket and `per_table` of the whole table. Peers without a group are never limited;
//! evictions free their group's place; replacements are promoted only within the limits;
//! and a peer that comes back from another group moves its count with it. Every step is
//! followed by `check_invariants`, which recounts the groups from the buckets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use overlay::dht::{Dht, Request, Response};
use overlay::routing::Seen;
use overlay::{Config, Instant, IpDiversity, IpGroup, Key, Peer, RoutingTable};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A peer with a key and an optional address group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupPeer {
    key: Key,
    group: Option<IpGroup>,
}

impl Peer for GroupPeer {
    fn key(&self) -> Key {
        self.key
    }
    fn ip_group(&self) -> Option<IpGroup> {
        self.group
    }
}

const SEED: u64 = 0xd1ce;
const LIMITS: IpDiversity = IpDiversity {
    per_bucket: 2,
    per_table: 5,
};
const K: usize = 8;

struct Fixture {
    table: RoutingTable<GroupPeer>,
    local: Key,
    rng: ChaCha8Rng,
}

impl Fixture {
    fn new(limits: Option<IpDiversity>) -> Fixture {
        println!("seed {SEED}");
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let local = Key::random(&mut rng);
        Fixture {
            table: RoutingTable::new(local, K, K, 2, limits, Instant::ZERO),
            local,
            rng,
        }
    }

    /// A new peer in `bucket` (255: the farthest half of the key space), in `group`.
    fn peer(&mut self, bucket: usize, group: Option<IpGroup>) -> GroupPeer {
        GroupPeer {
            key: self.local.random_in_bucket(bucket, &mut self.rng),
            group,
        }
    }

    fn seen(&mut self, peer: GroupPeer) -> Seen<GroupPeer> {
        let r = self.table.on_seen(Instant::ZERO, peer);
        self.table.check_invariants().unwrap();
        r
    }

    fn in_group(&self, group: IpGroup) -> usize {
        self.table
            .iter()
            .filter(|e| e.peer.group == Some(group))
            .count()
    }
}

#[test]
fn one_group_fills_at_most_per_bucket_places_of_a_bucket() {
    let mut f = Fixture::new(Some(LIMITS));
    for _ in 0..LIMITS.per_bucket {
        let p = f.peer(255, Some(7));
        assert!(matches!(f.seen(p), Seen::Inserted));
    }
    let third = f.peer(255, Some(7));
    assert!(matches!(f.seen(third.clone()), Seen::DiversityLimit));
    assert!(!f.table.contains(&third.key));
    // The bucket has room for others: another group, or no group at all.
    let other = f.peer(255, Some(8));
    assert!(matches!(f.seen(other), Seen::Inserted));
    let ungrouped = f.peer(255, None);
    assert!(matches!(f.seen(ungrouped), Seen::Inserted));
    assert_eq!(f.in_group(7), LIMITS.per_bucket);
}

#[test]
fn one_group_fills_at_most_per_table_places_of_the_table() {
    let mut f = Fixture::new(Some(LIMITS));
    // One per bucket, so only the table limit can bite.
    let mut inserted = 0;
    for bucket in (200..=255).rev() {
        let p = f.peer(bucket, Some(9));
        match f.seen(p) {
            Seen::Inserted => inserted += 1,
            Seen::DiversityLimit => {}
            other => panic!("bucket {bucket}: {other:?}"),
        }
    }
    assert_eq!(inserted, LIMITS.per_table);
    assert_eq!(f.in_group(9), LIMITS.per_table);
    // Peers without a group fill those buckets regardless.
    for bucket in (200..=255).rev() {
        let p = f.peer(bucket, None);
        assert!(matches!(f.seen(p), Seen::Inserted), "bucket {bucket}");
    }
}

#[test]
fn without_limits_one_group_fills_the_table() {
    let mut f = Fixture::new(None);
    for _ in 0..K {
        let p = f.peer(255, Some(1));
        assert!(matches!(f.seen(p), Seen::Inserted));
    }
    assert_eq!(f.in_group(1), K);
}

#[test]
fn an_eviction_frees_its_place_and_promotion_keeps_the_limits() {
    let mut f = Fixture::new(Some(IpDiversity {
        per_bucket: 2,
        per_table: 100,
    }));
    // Fill bucket 255: two of group 1, the rest ungrouped.
    let mut members = Vec::new();
    for i in 0..K {
        let p = f.peer(255, (i < 2).then_some(1));
        assert!(matches!(f.seen(p.clone()), Seen::Inserted));
        members.push(p);
    }
    // Full bucket: newcomers wait as replacements, the group-1 one last (most recent).
    let ungrouped = f.peer(255, None);
    f.seen(ungrouped.clone());
    let grouped = f.peer(255, Some(1));
    f.seen(grouped.clone());
    // Evicting an ungrouped member: the most recent replacement is of group 1, which is at
    // its bucket limit, so the ungrouped replacement is promoted instead.
    let victim = members[K - 1].key;
    let ev = f.table.remove(&victim).unwrap();
    f.table.check_invariants().unwrap();
    assert_eq!(ev.promoted.map(|p| p.key), Some(ungrouped.key));
    assert!(!f.table.contains(&grouped.key));
    // Evicting a group-1 member frees a place of its group: the group-1 replacement, which
    // had to wait while its group was at the limit, now takes it.
    let ev = f.table.remove(&members[0].key).unwrap();
    f.table.check_invariants().unwrap();
    assert_eq!(ev.promoted.map(|p| p.key), Some(grouped.key));
    assert_eq!(f.in_group(1), 2);
    // One more group-1 member leaves: the next group-1 newcomer finds its place.
    let ev = f.table.remove(&members[1].key).unwrap();
    assert!(ev.promoted.is_none(), "{ev:?}");
    assert_eq!(f.in_group(1), 1);
    let again = f.peer(255, Some(1));
    assert!(matches!(f.seen(again), Seen::Inserted));
    assert_eq!(f.in_group(1), 2);
}

#[test]
fn a_peer_that_moves_to_another_group_moves_its_count() {
    let mut f = Fixture::new(Some(LIMITS));
    let p = f.peer(255, Some(1));
    assert!(matches!(f.seen(p.clone()), Seen::Inserted));
    // The same key, seen again from an address in another group.
    let moved = GroupPeer {
        key: p.key,
        group: Some(2),
    };
    f.seen(moved.clone());
    assert_eq!(f.in_group(1), 0);
    assert_eq!(f.in_group(2), 1);
    // Group 1's place is free again, group 2's is taken.
    let a = f.peer(255, Some(1));
    let b = f.peer(255, Some(1));
    assert!(matches!(f.seen(a), Seen::Inserted));
    assert!(matches!(f.seen(b), Seen::Inserted));
    let c = f.peer(255, Some(2));
    assert!(matches!(f.seen(c), Seen::Inserted));
    let d = f.peer(255, Some(2));
    assert!(matches!(f.seen(d), Seen::DiversityLimit));
    // Moving into a group that is at its limit keeps the entry as it was.
    let into_full = GroupPeer {
        key: moved.key,
        group: Some(1),
    };
    assert!(matches!(f.seen(into_full), Seen::Refreshed));
    assert_eq!(f.table.get(&moved.key).map(|e| e.peer.group), Some(Some(2)));
    assert_eq!(f.in_group(1), 2);
    assert_eq!(f.in_group(2), 2);
}

#[test]
fn the_dht_keeps_the_limits_against_a_flood_from_one_group() {
    println!("seed {SEED}");
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let config = Config {
        ip_diversity: Some(LIMITS),
        ..Config::default()
    };
    let local = GroupPeer {
        key: Key::random(&mut rng),
        group: None,
    };
    let mut dht = Dht::new(Instant::ZERO, local, config, SEED);
    // 200 strangers of one /24 ask us things, a handful of others too, and each answers the
    // PING that verifies it before it may enter the table.
    for i in 0..200u64 {
        let from = GroupPeer {
            key: Key::random(&mut rng),
            group: Some(if i % 40 == 0 { 1000 + i } else { 42 }),
        };
        let now = Instant::from_duration(std::time::Duration::from_millis(i));
        let _ = dht.handle_request(now, from, Request::FindNode(Key::random(&mut rng)));
        while let Some(t) = dht.poll_transmit() {
            dht.handle_response(now, t.rpc, Response::Pong);
        }
        while dht.poll_event().is_some() {}
        dht.check_invariants().unwrap();
    }
    let table = dht.routing_table();
    let flood = table.iter().filter(|e| e.peer.group == Some(42)).count();
    assert_eq!(flood, LIMITS.per_table, "the flooding group's contacts");
    assert_eq!(
        table.len(),
        LIMITS.per_table + 5,
        "plus one of each other group"
    );
}
