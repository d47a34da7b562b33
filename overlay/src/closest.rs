//! The closest-peers walk at the heart of every lookup, as a small pure iterator.
//!
//! It knows nothing of RPCs, timers or messages (the shape of libp2p-kad's
//! `ClosestPeersIter`, the one part of it worth imitating): [`next`](ClosestPeersIter::next)
//! says whom to ask, [`on_success`](ClosestPeersIter::on_success) and
//! [`on_failure`](ClosestPeersIter::on_failure) report answers. It keeps α requests in flight
//! and finishes when the k closest candidates that have not failed have all answered.
//!
//! Hops: a candidate from our own table has hop 0; a candidate first named by the reply of
//! a candidate with hop h has hop h + 1. The lookup's hop count is the hop of the closest
//! node in its result.

use std::collections::BTreeMap;

use crate::key::{Distance, Key};
use crate::peer::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate<P> {
    peer: P,
    state: State,
    hops: u32,
}

/// What the walk wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<P> {
    /// Send a request to this peer.
    Contact(P),
    /// Nothing to send until an answer arrives.
    Waiting,
    /// The walk is over: read the result.
    Finished,
}

/// The iterative walk towards the k closest peers of a target.
#[derive(Debug, Clone)]
pub struct ClosestPeersIter<P> {
    target: Key,
    k: usize,
    alpha: usize,
    rpcs_max: usize,
    candidates_max: usize,
    candidates: BTreeMap<Distance, Candidate<P>>,
    in_flight: usize,
    rpcs_sent: usize,
    failures: usize,
}

impl<P: Peer> ClosestPeersIter<P> {
    /// A walk seeded with peers from our own table (hop 0).
    pub fn new(
        target: Key,
        seeds: impl IntoIterator<Item = P>,
        k: usize,
        alpha: usize,
        rpcs_max: usize,
        candidates_max: usize,
    ) -> Self {
        let mut it = ClosestPeersIter {
            target,
            k,
            alpha: alpha.max(1),
            rpcs_max,
            candidates_max: candidates_max.max(k),
            candidates: BTreeMap::new(),
            in_flight: 0,
            rpcs_sent: 0,
            failures: 0,
        };
        for p in seeds {
            it.insert(p, 0);
        }
        it
    }

    /// The key being looked up.
    pub fn target(&self) -> Key {
        self.target
    }

    /// Requests sent so far.
    pub fn rpcs_sent(&self) -> usize {
        self.rpcs_sent
    }

    /// Requests that failed or timed out.
    pub fn failures(&self) -> usize {
        self.failures
    }

    /// Requests awaiting an answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn insert(&mut self, peer: P, hops: u32) {
        let d = peer.key().distance(&self.target);
        if self.candidates.contains_key(&d) {
            return; // first naming wins: it defines the hop count
        }
        if self.candidates.len() >= self.candidates_max {
            // Forget the farthest candidate nobody asked yet, if the new one is closer.
            let farthest = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| c.state == State::NotContacted)
                .map(|(d, _)| *d);
            match farthest {
                Some(f) if f > d => {
                    self.candidates.remove(&f);
                }
                _ => return,
            }
        }
        self.candidates.insert(
            d,
            Candidate {
                peer,
                state: State::NotContacted,
                hops,
            },
        );
    }

    /// The next step of the walk. Call it until it stops returning `Contact`.
    #[allow(clippy::should_implement_trait)] // not an Iterator: it can say "wait", and resumes
    pub fn next(&mut self) -> Next<P> {
        let mut counted = 0;
        let mut waiting = false;
        let budget_left = self.rpcs_sent < self.rpcs_max;
        let mut contact = None;
        for c in self.candidates.values_mut() {
            if counted == self.k {
                break;
            }
            match c.state {
                State::Failed => continue,
                State::Succeeded => counted += 1,
                State::Waiting => {
                    counted += 1;
                    waiting = true;
                }
                State::NotContacted => {
                    if budget_left && self.in_flight < self.alpha {
                        c.state = State::Waiting;
                        contact = Some(c.peer.clone());
                        break;
                    }
                    if budget_left {
                        // α already in flight: this candidate waits its turn.
                        return Next::Waiting;
                    }
                    // Out of budget: the walk ends with what answered.
                    counted += 1;
                }
            }
        }
        if let Some(p) = contact {
            self.in_flight += 1;
            self.rpcs_sent += 1;
            return Next::Contact(p);
        }
        if waiting {
            Next::Waiting
        } else {
            Next::Finished
        }
    }

    fn candidate_mut(&mut self, key: &Key) -> Option<&mut Candidate<P>> {
        self.candidates.get_mut(&key.distance(&self.target))
    }

    /// `peer` answered with `closer` peers. Returns false if we were not waiting for it.
    pub fn on_success(&mut self, peer: &Key, closer: impl IntoIterator<Item = P>) -> bool {
        let Some(c) = self.candidate_mut(peer) else {
            return false;
        };
        if c.state != State::Waiting {
            return false;
        }
        c.state = State::Succeeded;
        let hops = c.hops + 1;
        self.in_flight -= 1;
        for p in closer {
            self.insert(p, hops);
        }
        true
    }

    /// `peer` failed to answer. Returns false if we were not waiting for it.
    pub fn on_failure(&mut self, peer: &Key) -> bool {
        let Some(c) = self.candidate_mut(peer) else {
            return false;
        };
        if c.state != State::Waiting {
            return false;
        }
        c.state = State::Failed;
        self.in_flight -= 1;
        self.failures += 1;
        true
    }

    /// The up to k closest peers that answered, closest first, and the hop count of the
    /// closest of them.
    pub fn result(&self) -> (Vec<P>, u32) {
        let ok: Vec<&Candidate<P>> = self
            .candidates
            .values()
            .filter(|c| c.state == State::Succeeded)
            .take(self.k)
            .collect();
        let hops = ok.first().map_or(0, |c| c.hops);
        (ok.into_iter().map(|c| c.peer.clone()).collect(), hops)
    }

    /// Whether the walk holds `key` as a candidate in any state.
    pub fn knows(&self, key: &Key) -> bool {
        self.candidates.contains_key(&key.distance(&self.target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct P(Key);
    impl Peer for P {
        fn key(&self) -> Key {
            self.0
        }
    }

    fn key(b: u8) -> Key {
        let mut k = [0u8; 32];
        k[0] = b;
        Key(k)
    }

    #[test]
    fn keeps_alpha_in_flight_and_finishes_when_k_closest_answered() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, (1..=5).map(|b| P(key(b))), 3, 2, 100, 100);
        let Next::Contact(a) = it.next() else {
            panic!()
        };
        let Next::Contact(b) = it.next() else {
            panic!()
        };
        assert_eq!(it.next(), Next::Waiting, "alpha = 2 in flight");
        assert_eq!((a.0, b.0), (key(1), key(2)));
        assert!(it.on_success(&a.0, vec![]));
        let Next::Contact(c) = it.next() else {
            panic!()
        };
        assert_eq!(c.0, key(3));
        assert!(it.on_failure(&b.0));
        let Next::Contact(d) = it.next() else {
            panic!()
        };
        assert_eq!(d.0, key(4));
        it.on_success(&c.0, vec![]);
        it.on_success(&d.0, vec![]);
        // k = 3 closest non-failed are 1, 3, 4: all answered.
        assert_eq!(it.next(), Next::Finished);
        let (closest, hops) = it.result();
        assert_eq!(
            closest.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![key(1), key(3), key(4)]
        );
        assert_eq!(hops, 0);
        assert_eq!(it.failures(), 1);
    }

    #[test]
    fn hops_count_from_the_first_referrer() {
        let target = key(0);
        let mut it = ClosestPeersIter::new(target, vec![P(key(100))], 1, 1, 100, 100);
        let Next::Contact(p) = it.next() else {
            panic!()
        };
        it.on_success(&p.0, vec![P(key(50))]);
        let Next::Contact(p) = it.next() else {
            panic!()
        };
        it.on_success(&p.0, vec![P(key(10)), P(key(100))]);
        let Next::Contact(p) = it.next() else {
            panic!()
        };
        it.on_success(&p.0, vec![]);
        assert_eq!(it.next(), Next::Finished);
        assert_eq!(it.result(), (vec![P(key(10))], 2));
    }

    #[test]
    fn answers_from_strangers_are_ignored() {
        let mut it = ClosestPeersIter::new(key(0), vec![P(key(1))], 1, 1, 100, 100);
        assert!(!it.on_success(&key(9), vec![P(key(2))]));
        assert!(!it.knows(&key(2)));
        assert!(!it.on_failure(&key(1)), "not contacted yet");
    }

    #[test]
    fn rpc_budget_bounds_the_walk() {
        let mut it = ClosestPeersIter::new(key(0), (1..=50).map(|b| P(key(b))), 20, 3, 5, 100);
        let mut sent = 0;
        loop {
            match it.next() {
                Next::Contact(p) => {
                    sent += 1;
                    it.on_failure(&p.0);
                }
                Next::Waiting => panic!("nothing in flight"),
                Next::Finished => break,
            }
        }
        assert_eq!(sent, 5);
    }
}
