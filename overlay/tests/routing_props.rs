//! Property tests of the routing table and of lookup termination.

use proptest::prelude::*;

use overlay::closest::{ClosestPeersIter, Next};
use overlay::routing::{RoutingTable, Seen};
use overlay::{Instant, Key, Peer};

#[derive(Debug, Clone, PartialEq)]
struct P(Key);
impl Peer for P {
    fn key(&self) -> Key {
        self.0
    }
}

fn key_from(b: &[u8]) -> Key {
    Key(*blake3::hash(b).as_bytes())
}

#[derive(Debug, Clone)]
enum Op {
    Seen(u16),
    Fail(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => (0u16..400).prop_map(Op::Seen), 1 => (0u16..400).prop_map(Op::Fail)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Bucket sizes, order, no self, and eviction only ever on a failure.
    #[test]
    fn table_invariants_hold_and_only_failures_evict(ops in prop::collection::vec(op(), 1..600), k in 1usize..6) {
        let me = key_from(b"me");
        let mut t: RoutingTable<P> = RoutingTable::new(me, k, k, 2, None, Instant::ZERO);
        let mut now = Instant::ZERO;
        for op in ops {
            now = now + std::time::Duration::from_millis(1);
            let before = t.len();
            match op {
                Op::Seen(i) => {
                    let key = key_from(&i.to_be_bytes());
                    let was_there = t.contains(&key);
                    let seen = t.on_seen(now, P(key));
                    prop_assert!(t.len() >= before, "on_seen removed an entry");
                    if was_there {
                        prop_assert_eq!(seen.clone(), Seen::Refreshed);
                    }
                    if matches!(seen, Seen::ProbeOldest(_) | Seen::Cached) {
                        prop_assert!(!t.contains(&key), "a newcomer displaced a live entry without a probe");
                    }
                }
                Op::Fail(i) => {
                    let key = key_from(&i.to_be_bytes());
                    if let Some(ev) = t.on_failure(&key) {
                        prop_assert_eq!(ev.removed.0, key);
                        prop_assert!(!t.contains(&key));
                    }
                }
            }
            t.check_invariants().map_err(TestCaseError::fail)?;
            prop_assert!(!t.contains(&me));
        }
    }

    /// `closest` agrees with sorting the whole table.
    #[test]
    fn closest_matches_a_full_sort(ids in prop::collection::vec(0u16..2000, 1..400), target in any::<[u8; 32]>(), n in 1usize..40) {
        let me = key_from(b"me");
        let mut t: RoutingTable<P> = RoutingTable::new(me, 20, 20, 2, None, Instant::ZERO);
        for i in ids {
            t.on_seen(Instant::ZERO, P(key_from(&i.to_be_bytes())));
        }
        let target = Key(target);
        let mut all: Vec<Key> = t.iter().map(|e| e.peer.0).collect();
        all.sort_by_key(|k| k.distance(&target));
        all.truncate(n);
        let got: Vec<Key> = t.closest(&target, n).into_iter().map(|p| p.0).collect();
        prop_assert_eq!(got, all);
        let got_self: Vec<Key> = t.closest(&me, n).into_iter().map(|p| p.0).collect();
        let mut all_self: Vec<Key> = t.iter().map(|e| e.peer.0).collect();
        all_self.sort_by_key(|k| k.distance(&me));
        all_self.truncate(n);
        prop_assert_eq!(got_self, all_self);
    }

    /// Whatever peers answer or fail, a walk ends within its RPC budget.
    #[test]
    fn lookups_terminate(universe in 1usize..300, outcomes in prop::collection::vec(any::<(bool, u8)>(), 0..400), alpha in 1usize..5) {
        let keys: Vec<Key> = (0..universe as u32).map(|i| key_from(&i.to_be_bytes())).collect();
        let target = key_from(b"target");
        let mut it = ClosestPeersIter::new(target, keys.iter().take(3).cloned().map(P), 20, alpha, 60, 160);
        let mut in_flight: Vec<Key> = Vec::new();
        let mut outcomes = outcomes.into_iter();
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps < 10_000, "walk did not end");
            match it.next() {
                Next::Contact(p) => in_flight.push(p.0),
                Next::Finished => break,
                Next::Waiting => {
                    prop_assert!(!in_flight.is_empty(), "waiting with nothing in flight");
                    let (ok, pick) = outcomes.next().unwrap_or((false, 0));
                    let who = in_flight.remove(pick as usize % in_flight.len());
                    if ok {
                        let start = (pick as usize * 7) % universe;
                        let closer: Vec<P> = keys.iter().cycle().skip(start).take(5).cloned().map(P).collect();
                        it.on_success(&who, closer);
                    } else {
                        it.on_failure(&who);
                    }
                }
            }
            prop_assert!(it.in_flight() <= alpha);
        }
        prop_assert!(it.rpcs_sent() <= 60);
    }
}

/// Without probing, a newcomer to a full bucket only waits as a replacement: no probe is
/// started, so a later verified newcomer still gets one.
#[test]
fn seen_without_probe_caches_and_leaves_the_probe_free() {
    let me = Key([0; 32]);
    let mut t: RoutingTable<P> = RoutingTable::new(me, 2, 2, 2, None, Instant::ZERO);
    let far = |b: u8| {
        let mut k = [0u8; 32];
        k[0] = 0x80;
        k[31] = b;
        Key(k)
    };
    assert_eq!(t.on_seen(Instant::ZERO, P(far(1))), Seen::Inserted);
    assert_eq!(t.on_seen(Instant::ZERO, P(far(2))), Seen::Inserted);
    assert_eq!(
        t.on_seen_without_probe(Instant::ZERO, P(far(3))),
        Seen::Cached
    );
    assert_eq!(
        t.on_seen_without_probe(Instant::ZERO, P(far(1))),
        Seen::Refreshed
    );
    assert_eq!(
        t.on_seen(Instant::ZERO, P(far(4))),
        Seen::ProbeOldest(P(far(2)))
    );
    t.check_invariants().unwrap_or_else(|e| panic!("{e}"));
}
