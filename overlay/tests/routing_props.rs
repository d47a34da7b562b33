//! Property tests of the routing table and of lookup termination.

#![allow(clippy::expect_used)]

use proptest::prelude::*;

use overlay::closest::{ClosestPeersIter, Next};
use overlay::routing::{Asked, RoutingTable, Seen};
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

    /// The contacts saved for a restart: at most the cap, each once, every populated bucket
    /// represented when the cap allows, the whole table when it fits, and within a bucket
    /// the most recently seen before the rest.
    #[test]
    fn contacts_to_save_spread_over_buckets_and_keep_the_cap(ids in prop::collection::vec(0u16..3000, 1..400), max in 1usize..120) {
        let me = key_from(b"me");
        let mut t: RoutingTable<P> = RoutingTable::new(me, 20, 20, 2, None, Instant::ZERO);
        for (ms, id) in ids.iter().enumerate() {
            t.on_seen(Instant::ZERO + std::time::Duration::from_millis(ms as u64), P(key_from(&id.to_be_bytes())));
        }
        let saved = t.contacts_to_save(max);
        prop_assert_eq!(saved.len(), t.len().min(max));
        let distinct: std::collections::BTreeSet<Key> = saved.iter().map(|p| p.0).collect();
        prop_assert_eq!(distinct.len(), saved.len(), "each contact once");
        let bucket = |k: &Key| me.bucket_of(k);
        let populated: std::collections::BTreeSet<_> = t.iter().map(|e| bucket(&e.peer.0)).collect();
        let covered: std::collections::BTreeSet<_> = saved.iter().map(|p| bucket(&p.0)).collect();
        if max >= populated.len() {
            prop_assert_eq!(&covered, &populated, "every bucket keeps a way in");
        } else {
            // A round cut short by the cap goes to the far buckets (the lowest indices
            // from us are the nearest: far buckets have the highest `bucket_of`).
            let far_first: std::collections::BTreeSet<_> = populated.iter().rev().take(max).copied().collect();
            prop_assert_eq!(&covered, &far_first, "the far buckets first");
        }
        // Within a bucket, saved contacts are the most recently seen ones, newest first.
        for b in &populated {
            let mut newest_first: Vec<Key> = t.iter().filter(|e| bucket(&e.peer.0) == *b).map(|e| e.peer.0).collect();
            newest_first.reverse();
            let kept: Vec<Key> = saved.iter().filter(|p| bucket(&p.0) == *b).map(|p| p.0).collect();
            prop_assert_eq!(&kept[..], &newest_first[..kept.len()]);
        }
    }

    /// Bucket sizes, order, no self, and eviction only ever of an entry that failed.
    #[test]
    fn table_invariants_hold_and_only_failures_evict(ops in prop::collection::vec(op(), 1..600), k in 1usize..6) {
        let me = key_from(b"me");
        let mut t: RoutingTable<P> = RoutingTable::new(me, k, k, 2, None, Instant::ZERO);
        t.set_questionable_after(Some(std::time::Duration::from_millis(50)));
        let mut now = Instant::ZERO;
        for op in ops {
            now = now + std::time::Duration::from_millis(1);
            let before = t.len();
            match op {
                Op::Seen(i) => {
                    let key = key_from(&i.to_be_bytes());
                    let was_there = t.contains(&key);
                    let seen = t.on_seen(now, P(key));
                    prop_assert_eq!(t.len() >= before, true, "on_seen removed an entry");
                    if was_there {
                        prop_assert_eq!(seen.clone(), Seen::Refreshed);
                    }
                    if let Seen::Replaced(old) = &seen {
                        prop_assert!(!t.contains(&old.0), "the replaced entry is gone");
                        prop_assert!(t.contains(&key));
                    }
                    if matches!(seen, Seen::ProbeQuestionable(_) | Seen::Cached) {
                        prop_assert!(!t.contains(&key), "a newcomer displaced a live entry without a probe");
                        prop_assert_eq!(t.replacement(&key), Some(true), "it waits, verified");
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

    /// `closest_entries` with a filter agrees with sorting what the filter keeps, for
    /// targets at every distance from us (sharing `shared` leading bits with our key), so
    /// that the walk goes through the buckets below the target's one by one.
    #[test]
    fn filtered_closest_matches_a_full_sort_at_every_distance(ids in prop::collection::vec(0u16..3000, 1..400), target in any::<[u8; 32]>(), shared in 0usize..24, n in 1usize..40, dropped in 0u8..6) {
        let me = key_from(b"me");
        let mut t: RoutingTable<P> = RoutingTable::new(me, 20, 20, 2, None, Instant::ZERO);
        for i in ids {
            t.on_seen(Instant::ZERO, P(key_from(&i.to_be_bytes())));
        }
        let mut target = Key(target);
        for bit in 0..shared {
            let mask = 0x80u8 >> (bit % 8);
            target.0[bit / 8] = (target.0[bit / 8] & !mask) | (me.0[bit / 8] & mask);
        }
        // Drop about a fifth of the entries (none when `dropped` is 5).
        let keep = |e: &overlay::routing::Entry<P>| dropped == 5 || e.peer.0 .0[31] % 5 != dropped;
        let mut all: Vec<Key> = t.iter().filter(|e| keep(e)).map(|e| e.peer.0).collect();
        all.sort_by_key(|k| k.distance(&target));
        all.truncate(n);
        let got: Vec<Key> = t.closest_entries(&target, n, keep).into_iter().map(|e| e.peer.0).collect();
        prop_assert_eq!(got, all);
    }

    /// `closest` agrees with a full sort when keys share their first eight bytes, the word
    /// the table ranks by: the rest of the keys decide.
    #[test]
    fn closest_matches_a_full_sort_when_first_words_tie(ids in prop::collection::vec(0u16..2000, 1..300), words in 1u8..4, target in any::<[u8; 32]>(), n in 1usize..40) {
        let me = key_from(b"me");
        let mut t: RoutingTable<P> = RoutingTable::new(me, 300, 20, 2, None, Instant::ZERO);
        for i in ids {
            let mut k = key_from(&i.to_be_bytes());
            k.0[..8].fill(0x40 + (i % u16::from(words)) as u8);
            t.on_seen(Instant::ZERO, P(k));
        }
        // Any target, and one that shares the first word of a group of keys.
        let mut near = Key(target);
        near.0[..8].fill(0x40);
        for target in [Key(target), near] {
            let mut all: Vec<Key> = t.iter().map(|e| e.peer.0).collect();
            all.sort_by_key(|k| k.distance(&target));
            all.truncate(n);
            let got: Vec<Key> = t.closest(&target, n).into_iter().map(|p| p.0).collect();
            prop_assert_eq!(got, all);
        }
        t.check_invariants().map_err(TestCaseError::fail)?;
    }

    /// A walk told each answer's RTTs up front (`on_success`) and one that asks for them
    /// (`on_success_with`) take the same steps and end with the same result, whatever the
    /// answers hold: repeats, the answerer itself, peers past a small candidate cap.
    #[test]
    fn lazy_rtts_walk_as_eager_ones(universe in 2usize..200, outcomes in prop::collection::vec(any::<(bool, u8, u8)>(), 0..300), alpha in 1usize..5, cap in 1usize..40) {
        let keys: Vec<Key> = (0..universe as u32).map(|i| key_from(&i.to_be_bytes())).collect();
        let target = key_from(b"target");
        let rtt = |k: &Key| u32::from(k.0[5] % 4) * 40_000;
        let seeds = || keys.iter().take(3).map(|k| (P(*k), rtt(k)));
        let mut eager = ClosestPeersIter::with_rtts(target, seeds(), 8, alpha, 60, cap, 100_000);
        let mut lazy = ClosestPeersIter::with_rtts(target, seeds(), 8, alpha, 60, cap, 100_000);
        let mut in_flight: Vec<Key> = Vec::new();
        let mut outcomes = outcomes.into_iter();
        loop {
            let step = eager.next();
            prop_assert_eq!(&step, &lazy.next());
            match step {
                Next::Contact(p) => in_flight.push(p.0),
                Next::Finished => break,
                Next::Waiting => {
                    let Some((ok, pick, len)) = outcomes.next() else { break };
                    let who = in_flight.remove(pick as usize % in_flight.len());
                    if ok {
                        // Some peers twice, and now and then the answerer itself.
                        let start = (pick as usize * 7) % universe;
                        let mut closer: Vec<Key> = keys.iter().cycle().skip(start).take(usize::from(len % 12)).cloned().collect();
                        if len % 3 == 0 { closer.push(who); }
                        if let Some(first) = closer.first().copied() { closer.push(first); }
                        let told: Vec<(P, u32)> = closer.iter().map(|k| (P(*k), rtt(k))).collect();
                        prop_assert_eq!(eager.on_success(&who, told), lazy.on_success_with(&who, closer.into_iter().map(P), rtt));
                    } else {
                        prop_assert_eq!(eager.on_failure(&who), lazy.on_failure(&who));
                    }
                }
            }
        }
        prop_assert_eq!(eager.result(), lazy.result());
        prop_assert_eq!(eager.rpcs_sent(), lazy.rpcs_sent());
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
                        let closer: Vec<(P, u32)> = keys.iter().cycle().skip(start).take(5).map(|k| (P(*k), 0)).collect();
                        it.on_success(&who, closer);
                    } else {
                        it.on_failure(&who);
                    }
                }
            }
            prop_assert!(it.in_flight() <= alpha.max(20));
        }
        prop_assert!(it.rpcs_sent() <= 60);
    }
}

fn far(b: u8) -> Key {
    let mut k = [0u8; 32];
    k[0] = 0x80;
    k[31] = b;
    Key(k)
}

fn at(ms: u64) -> Instant {
    Instant::ZERO + std::time::Duration::from_millis(ms)
}

/// A table whose bucket 255 is full (k = 2) of entries 1 and 2, seen at 0 and 1 ms;
/// entries are questionable after 100 ms of silence.
fn full_bucket() -> RoutingTable<P> {
    let mut t: RoutingTable<P> = RoutingTable::new(Key([0; 32]), 2, 2, 2, None, Instant::ZERO);
    t.set_questionable_after(Some(std::time::Duration::from_millis(100)));
    assert_eq!(t.on_seen(at(0), P(far(1))), Seen::Inserted);
    assert_eq!(t.on_seen(at(1), P(far(2))), Seen::Inserted);
    t
}

/// BEP 5: a full bucket of good entries is never pinged; a newcomer only waits.
#[test]
fn a_bucket_of_good_entries_is_not_probed() {
    let mut t = full_bucket();
    assert_eq!(t.on_seen(at(50), P(far(3))), Seen::Cached);
    assert_eq!(t.replacement(&far(3)), Some(true));
    assert!(
        t.liveness_probes(at(50), 16).is_empty(),
        "nobody is questionable"
    );
    t.check_invariants().unwrap_or_else(|e| panic!("{e}"));
}

/// Once entries are questionable, a newcomer makes the table ping the least recently seen
/// of them, one probe per bucket at a time; a questionable entry that fails once is replaced
/// by the newcomer, which keeps its real last-seen time.
#[test]
fn a_newcomer_probes_the_oldest_questionable_entry_once() {
    let mut t = full_bucket();
    assert_eq!(
        t.on_seen(at(150), P(far(3))),
        Seen::ProbeQuestionable(P(far(1)))
    );
    assert_eq!(
        t.on_seen(at(160), P(far(4))),
        Seen::Cached,
        "a probe is in flight"
    );
    assert!(
        t.liveness_probes(at(160), 16).is_empty(),
        "one probe per bucket"
    );
    // 1 fails its probe: evicted at once; the most recent verified newcomer (4) takes the
    // place with its own last-seen time (160 ms), after 2 (1 ms) in the LRS order.
    let ev = t.on_failure_at(at(170), &far(1)).expect("evicted");
    assert_eq!(ev.removed, P(far(1)));
    assert_eq!(ev.promoted, Some(P(far(4))));
    assert_eq!(t.get(&far(4)).map(|e| e.last_seen), Some(at(160)));
    assert_eq!(
        t.iter().map(|e| e.peer.0).collect::<Vec<_>>(),
        vec![far(2), far(4)]
    );
    t.check_invariants().unwrap_or_else(|e| panic!("{e}"));
    // A good entry that answers stays: a probe answered keeps 2 and frees the probe.
    assert_eq!(
        t.on_seen(at(300), P(far(5))),
        Seen::ProbeQuestionable(P(far(2)))
    );
    assert_eq!(t.on_seen(at(310), P(far(2))), Seen::Refreshed);
    assert!(t.contains(&far(2)));
    assert_eq!(
        t.liveness_probes(at(310), 16),
        vec![P(far(4))],
        "4 is silent since 160"
    );
}

/// An entry that failed since it was last seen gives its place to a peer that answered.
#[test]
fn a_failed_entry_is_replaced_by_a_peer_that_answered() {
    let mut t = full_bucket();
    assert!(
        t.on_failure_at(at(10), &far(2)).is_none(),
        "a good entry survives one failure"
    );
    assert_eq!(t.on_seen(at(20), P(far(3))), Seen::Replaced(P(far(2))));
    assert!(t.contains(&far(3)) && !t.contains(&far(2)));
    t.check_invariants().unwrap_or_else(|e| panic!("{e}"));
}

/// A stranger that only asked us something is never promoted: it is handed back to be
/// verified, and a verified replacement is promoted before it.
#[test]
fn only_verified_replacements_are_promoted() {
    let mut t = full_bucket();
    assert_eq!(
        t.on_asked(at(5), P(far(3))),
        Asked::Stranger { room: false }
    );
    assert_eq!(t.replacement(&far(3)), Some(false));
    let ev = t.remove(&far(1)).expect("removed");
    assert_eq!(ev.promoted, None, "nobody verified is waiting");
    assert_eq!(ev.verify, Some(P(far(3))));
    assert_eq!(t.len(), 1);
    // Asked again, it stays unverified; answering a request of ours verifies it.
    assert_eq!(t.on_asked(at(6), P(far(3))), Asked::Stranger { room: true });
    assert_eq!(t.on_seen(at(7), P(far(3))), Seen::Inserted);
    // With a verified and an unverified replacement, the verified one is promoted even if
    // the other was seen more recently.
    assert_eq!(t.on_seen(at(8), P(far(4))), Seen::Cached);
    assert_eq!(
        t.on_asked(at(9), P(far(5))),
        Asked::Stranger { room: false }
    );
    let ev = t.remove(&far(2)).expect("removed");
    assert_eq!((ev.promoted, ev.verify), (Some(P(far(4))), None));
    t.check_invariants().unwrap_or_else(|e| panic!("{e}"));
}

/// A failure in a bucket makes it swept: its questionable entries are pinged one after
/// another until none is left, then the sweep ends.
#[test]
fn a_failure_sweeps_the_bucket_one_probe_at_a_time() {
    let mut t = full_bucket();
    assert!(
        t.continue_sweep(at(200), &far(1)).is_none(),
        "no failure: no sweep"
    );
    t.mark_suspect(&far(2));
    assert_eq!(
        t.continue_sweep(at(200), &far(1)),
        Some(P(far(1))),
        "LRS first"
    );
    assert_eq!(
        t.continue_sweep(at(200), &far(1)),
        None,
        "its probe is in flight"
    );
    assert_eq!(t.on_seen(at(210), P(far(1))), Seen::Refreshed);
    assert_eq!(t.continue_sweep(at(210), &far(1)), Some(P(far(2))));
    assert_eq!(t.on_seen(at(220), P(far(2))), Seen::Refreshed);
    assert_eq!(
        t.continue_sweep(at(220), &far(1)),
        None,
        "all good: the sweep ends"
    );
    assert_eq!(t.continue_sweep(at(500), &far(1)), None, "and stays ended");
    t.check_invariants().unwrap_or_else(|e| panic!("{e}"));
}
