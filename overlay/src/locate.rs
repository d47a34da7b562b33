//! A GET's search for a holder, the decisions the read path makes wherever it
//! runs: whom to ask, when to stop, the order to fetch in, and what a search that proved
//! nothing means.
//!
//! The candidates are the providers the walk returned, then the `2·rf` closest nodes it
//! saw, ourselves and duplicates left out. The driver asks them all at once for the
//! object's final group (a dead holder whose record outlives it costs one probe timeout,
//! not the search) and reports each answer; the first holder whose answer verified ends the
//! search. The failover order is that holder, then the candidates that had not answered
//! when it did, those both named by a record and among the key's closest first, and in a
//! second pass the other closest before the other records (a fetch verifies every byte it reads, so
//! an unproven candidate can cost time, never correctness). A search that proved nothing is final only when it learned
//! enough: records whose providers all failed to prove the object, in a pass that asked
//! for fewer than rf providers, are worth a second pass that walks to the key's closest
//! nodes whatever records it meets ([`SECOND_PASS_WANTED`]: the first walk may have
//! stopped at a stale or made-up record); records, or silence from everyone, with some
//! candidates silent, mean the search did not finish; anything else is a miss. A walk can
//! end the search before any probe ([`WalkEnd::judge`]): silence from everyone it asked, or no
//! peers to ask, proves nothing, except on a node that never had a peer.
//!
//! [`Locate`] runs the passes within one deadline (the node's GET and simnet's gets both
//! drive it), [`Search`] is one pass, and [`Failover`] the fetch's way through its list.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::key::Key;
use crate::peer::Peer;
use crate::time::Instant;

/// Providers a GET's second pass asks its walk for: every record it meets, so the walk runs
/// to the key's closest nodes instead of stopping at the first few records, which may be
/// made up (a liar's) or outlive their holder; the search then probes those closest, who
/// should hold the object. The walk keeps the records its reporters nearest the key gave
/// (`dht::PROVIDERS_PER_WALK_MAX`, `PROVIDERS_PER_REPORTER_MAX`). A first pass asks for one.
pub const SECOND_PASS_WANTED: usize = usize::MAX;

/// What one candidate's probe came to, as the driver judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// It holds the object: its final group verified against the id.
    Holds,
    /// It answered that it lacks the object.
    Lacks,
    /// It answered, but with a refusal (busy, say): neither holder nor proof of absence.
    Declined,
    /// Its answer did not verify or did not decode (counted against it by the driver).
    Invalid,
    /// No answer: unreachable, reset, or the probe timed out.
    Silent,
}

/// How a GET's provider walk ended, as the driver saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEnd<P> {
    /// It finished: the providers it found, the closest nodes it saw, and how many
    /// requests it sent.
    Finished {
        /// Providers of the key.
        providers: Vec<P>,
        /// The closest nodes it saw.
        closest: Vec<P>,
        /// Requests it sent.
        rpcs: u32,
    },
    /// It could not start: the table is empty.
    NoPeers,
    /// It could not start for a reason of ours (too many queries running).
    Refused,
    /// The search's deadline passed before it finished.
    TimedOut,
}

/// A walk that ends the search before any candidate is probed, and what that means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkVerdict {
    /// Requests went out and nothing came back, even late, or the time ran out: nothing
    /// was learned, which is no proof of absence. Try later.
    Unfinished,
    /// Nobody to ask, on a node that never had a peer: a mesh of one lacks what it does
    /// not hold.
    NotFound,
    /// Nobody to ask, on a node that lost its peers: it cannot tell.
    NoPeers,
    /// The walk could not start (our own limits): nothing was searched.
    NotRun,
}

impl<P> WalkEnd<P> {
    /// The providers and closest nodes to search among, or why the search is over
    /// already. `had_peers`: whether the table ever held a peer (`Dht::had_peers`).
    pub fn judge(self, had_peers: bool) -> Result<(Vec<P>, Vec<P>), WalkVerdict> {
        match self {
            WalkEnd::Finished {
                providers,
                closest,
                rpcs,
            } if rpcs > 0 && providers.is_empty() && closest.is_empty() => {
                Err(WalkVerdict::Unfinished)
            }
            WalkEnd::Finished {
                providers, closest, ..
            } => Ok((providers, closest)),
            WalkEnd::NoPeers if had_peers => Err(WalkVerdict::NoPeers),
            WalkEnd::NoPeers => Err(WalkVerdict::NotFound),
            WalkEnd::Refused => Err(WalkVerdict::NotRun),
            WalkEnd::TimedOut => Err(WalkVerdict::Unfinished),
        }
    }
}

/// How a search ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchOutcome<P> {
    /// A holder proved the object: fetch from these, in this order.
    Found {
        /// The holder that proved it, then the candidates still silent when it did: those
        /// both named by a record and among the key's closest first (see `Search::outcome`).
        holders: Vec<P>,
    },
    /// Records named providers and none proved the object: search again, walking to the
    /// key's closest nodes ([`SECOND_PASS_WANTED`]).
    SearchAgain,
    /// The search did not finish (records exist, or nobody could answer): try later.
    Unfinished,
    /// Everyone asked answered and nobody holds it.
    NotFound,
}

/// One pass's search for a holder.
#[derive(Debug, Clone)]
pub struct Search<P> {
    candidates: Vec<P>,
    /// Records the walk returned (ourselves and repeats included).
    providers: usize,
    /// How many of `candidates`, at their front, came from records.
    from_records: usize,
    /// The candidates among the key's closest nodes the walk saw (records or not).
    near: BTreeSet<Key>,
    /// Whether a second pass is still possible (this one asked for fewer than rf).
    may_search_again: bool,
    settled: BTreeSet<Key>,
    found: Option<Key>,
    answered: usize,
    silent: usize,
}

impl<P: Peer> Search<P> {
    /// A search among what a provider walk that asked for `wanted` providers returned, for
    /// an object kept on `rf` nodes, run by `local`.
    pub fn new(
        local: Key,
        providers: Vec<P>,
        closest: Vec<P>,
        rf: usize,
        wanted: usize,
    ) -> Search<P> {
        let providers_count = providers.len();
        let mut seen = BTreeSet::new();
        let mut fresh = |p: &P| p.key() != local && seen.insert(p.key());
        let mut candidates: Vec<P> = providers.into_iter().filter(&mut fresh).collect();
        let from_records = candidates.len();
        let closest: Vec<P> = closest.into_iter().take(rf.saturating_mul(2)).collect();
        let near = closest.iter().map(Peer::key).collect();
        candidates.extend(closest.into_iter().filter(&mut fresh));
        Search {
            candidates,
            providers: providers_count,
            from_records,
            near,
            may_search_again: wanted < rf,
            settled: BTreeSet::new(),
            found: None,
            answered: 0,
            silent: 0,
        }
    }

    /// Everyone to probe, at once.
    pub fn candidates(&self) -> &[P] {
        &self.candidates
    }

    /// `peer`'s probe came to `answer`. Returns whether the search is over (a holder
    /// proved the object, or every candidate has answered).
    pub fn handle_answer(&mut self, peer: &Key, answer: ProbeAnswer) -> bool {
        if self.found.is_some()
            || !self.candidates.iter().any(|c| c.key() == *peer)
            || !self.settled.insert(*peer)
        {
            return self.is_over();
        }
        match answer {
            ProbeAnswer::Holds => {
                self.answered += 1;
                self.found = Some(*peer);
            }
            ProbeAnswer::Lacks | ProbeAnswer::Declined => self.answered += 1,
            ProbeAnswer::Invalid => {}
            ProbeAnswer::Silent => self.silent += 1,
        }
        self.is_over()
    }

    /// The search's time ran out: whoever has not answered was silent.
    pub fn handle_deadline(&mut self) {
        if self.found.is_none() {
            self.silent += self.candidates.len() - self.settled.len();
            let all: Vec<Key> = self.candidates.iter().map(Peer::key).collect();
            self.settled.extend(all);
        }
    }

    /// Whether a holder proved the object or every candidate is settled.
    pub fn is_over(&self) -> bool {
        self.found.is_some() || self.settled.len() == self.candidates.len()
    }

    /// What the search came to.
    pub fn outcome(self) -> SearchOutcome<P> {
        if let Some(first) = self.found {
            // After the holder, the candidates still silent: first those both named by a
            // record and among the key's closest (repair keeps copies there), then, in a
            // first pass, the other records (siblings of a record that just proved itself)
            // before the other closest; in a second pass, which follows records that proved
            // nothing, the other closest before the other records (a record can outlive its
            // holder, and a dead one costs a dial timeout of the fetch's idle time).
            let mut holders = Vec::with_capacity(self.candidates.len());
            let (mut both, mut records, mut near) = (Vec::new(), Vec::new(), Vec::new());
            for (i, c) in self.candidates.into_iter().enumerate() {
                let k = c.key();
                let (record, close) = (i < self.from_records, self.near.contains(&k));
                if k == first {
                    holders.push(c);
                } else if self.settled.contains(&k) {
                    continue;
                } else if record && close {
                    both.push(c);
                } else if record {
                    records.push(c);
                } else {
                    near.push(c);
                }
            }
            holders.extend(both);
            if self.may_search_again {
                holders.extend(records);
                holders.extend(near);
            } else {
                holders.extend(near);
                holders.extend(records);
            }
            return SearchOutcome::Found { holders };
        }
        if self.providers > 0 && self.may_search_again {
            SearchOutcome::SearchAgain
        } else if self.silent > 0 && (self.providers > 0 || self.answered == 0) {
            SearchOutcome::Unfinished
        } else {
            SearchOutcome::NotFound
        }
    }
}

/// A GET's whole search for a holder, within one deadline: a first pass that walks for
/// `wanted` providers and probes what it found, and, when that pass's records proved
/// nothing, a second pass that walks to the key's closest nodes ([`SECOND_PASS_WANTED`]).
/// The driver runs what [`Locate::poll`] asks for (a walk, the probes of one pass) and
/// reports how each ended; the node's GET and simnet's gets run the same passes.
#[derive(Debug, Clone)]
pub struct Locate<P> {
    local: Key,
    rf: usize,
    deadline: Instant,
    state: LocateState<P>,
}

#[derive(Debug, Clone)]
enum LocateState<P> {
    /// A walk asking for `wanted` providers is due; `second` in the second pass.
    WalkDue { wanted: usize, second: bool },
    /// The walk is out.
    Walking { wanted: usize, second: bool },
    /// The walk's candidates are to be handed out for probing.
    ProbeDue { search: Search<P>, second: bool },
    /// The pass's candidates are being probed.
    Probing { search: Search<P>, second: bool },
    /// It ended; the next `poll` hands the end out.
    Ended(LocateEnd<P>),
    /// `poll` has handed the end out.
    Over,
}

/// What the driver of a [`Locate`] does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocateStep<P> {
    /// Walk for the key's providers, finishing once `wanted` are known, by
    /// [`Locate::deadline`]; report how it ended with [`Locate::handle_walk`].
    Walk {
        /// Providers the walk asks for.
        wanted: usize,
    },
    /// Ask every one of these for the object's final group, at once, each within the
    /// probe timeout; report each answer with [`Locate::handle_answer`], and the deadline
    /// with [`Locate::handle_deadline`].
    Probe(Vec<P>),
    /// Wait for the walk or the probes.
    Wait,
    /// The search is over.
    Done(LocateEnd<P>),
}

/// How a GET's search ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocateEnd<P> {
    /// A holder proved the object: fetch from these, in this order
    /// ([`SearchOutcome::Found`]); `second_pass` if the second pass found it.
    Found {
        /// The failover list.
        holders: Vec<P>,
        /// Whether it took the second pass.
        second_pass: bool,
    },
    /// Everyone asked answered and nobody holds it, or a mesh of one lacks it.
    NotFound,
    /// The search did not finish: candidates were silent (with records, or with nobody
    /// answering), the deadline passed, or the first pass's records proved nothing and no
    /// time was left for the second walk. No proof of absence.
    Unfinished,
    /// Nobody to ask, on a node that lost its peers.
    NoPeers,
    /// The walk could not start for a reason of ours (too many queries running).
    NotRun,
}

impl<P: Peer> Locate<P> {
    /// A search by `local` for an object kept on `rf` nodes, starting at `now`, whose
    /// first walk asks for `wanted` providers (1 in the node) and which gives up at
    /// `now + timeout` (`ObjectTimings::search_timeout`).
    pub fn new(local: Key, rf: usize, wanted: usize, now: Instant, timeout: Duration) -> Self {
        Locate {
            local,
            rf,
            deadline: now + timeout,
            state: LocateState::WalkDue {
                wanted,
                second: false,
            },
        }
    }

    /// When the whole search gives up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What to do next at `now`. A walk due past the deadline (a second pass with no time
    /// left) ends the search unfinished instead.
    pub fn poll(&mut self, now: Instant) -> LocateStep<P> {
        match std::mem::replace(&mut self.state, LocateState::Over) {
            LocateState::WalkDue { .. } if now >= self.deadline => {
                LocateStep::Done(LocateEnd::Unfinished)
            }
            LocateState::WalkDue { wanted, second } => {
                self.state = LocateState::Walking { wanted, second };
                LocateStep::Walk { wanted }
            }
            LocateState::ProbeDue { search, second } if !search.is_over() => {
                let candidates = search.candidates().to_vec();
                self.state = LocateState::Probing { search, second };
                LocateStep::Probe(candidates)
            }
            LocateState::ProbeDue { search, second } | LocateState::Probing { search, second }
                if search.is_over() =>
            {
                match search.outcome() {
                    SearchOutcome::Found { holders } => LocateStep::Done(LocateEnd::Found {
                        holders,
                        second_pass: second,
                    }),
                    SearchOutcome::SearchAgain if !second => {
                        self.state = LocateState::WalkDue {
                            wanted: SECOND_PASS_WANTED,
                            second: true,
                        };
                        self.poll(now)
                    }
                    SearchOutcome::SearchAgain | SearchOutcome::Unfinished => {
                        LocateStep::Done(LocateEnd::Unfinished)
                    }
                    SearchOutcome::NotFound => LocateStep::Done(LocateEnd::NotFound),
                }
            }
            LocateState::Ended(end) => LocateStep::Done(end),
            LocateState::Over => LocateStep::Wait,
            waiting => {
                self.state = waiting;
                LocateStep::Wait
            }
        }
    }

    /// The walk ended as `walk`; `had_peers`: whether the table ever held a peer
    /// (`Dht::had_peers`). Either the search is over ([`WalkEnd::judge`]) or the next
    /// [`Locate::poll`] hands out the candidates to probe.
    pub fn handle_walk(&mut self, walk: WalkEnd<P>, had_peers: bool) {
        let LocateState::Walking { wanted, second } = self.state else {
            return;
        };
        self.state = match walk.judge(had_peers) {
            Ok((providers, closest)) => LocateState::ProbeDue {
                search: Search::new(self.local, providers, closest, self.rf, wanted),
                second,
            },
            Err(verdict) => LocateState::Ended(match verdict {
                WalkVerdict::Unfinished => LocateEnd::Unfinished,
                WalkVerdict::NotFound => LocateEnd::NotFound,
                WalkVerdict::NoPeers => LocateEnd::NoPeers,
                WalkVerdict::NotRun => LocateEnd::NotRun,
            }),
        };
    }

    /// `peer`'s probe came to `answer`. Returns whether this pass's probes are over (a
    /// holder proved the object, or every candidate answered): the next
    /// [`Locate::poll`] says what follows.
    pub fn handle_answer(&mut self, peer: &Key, answer: ProbeAnswer) -> bool {
        match &mut self.state {
            LocateState::Probing { search, .. } => search.handle_answer(peer, answer),
            _ => true,
        }
    }

    /// The deadline passed: a walk still out ends the search unfinished, candidates not
    /// yet answered count as silent.
    pub fn handle_deadline(&mut self) {
        match &mut self.state {
            LocateState::Walking { .. } => {
                self.state = LocateState::Ended(LocateEnd::Unfinished);
            }
            LocateState::Probing { search, .. } | LocateState::ProbeDue { search, .. } => {
                search.handle_deadline();
            }
            _ => {}
        }
    }
}

/// A fetch's way through its failover list: which holder to ask next, and when to stop
/// asking. Past the verified holder the list is candidates that had not answered the
/// search's probes (dead nodes whose records outlive them, slow ones, liars), each costing
/// up to a dial or an I/O timeout, and a list of thirty such must not hold a GET for
/// minutes: once `idle_max` has passed since the fetch started or last moved a verified
/// byte, no further holder is asked. A holder that refuses at once (lacks the object,
/// fails the handshake) costs no time and stops nothing; one that delivered anything
/// starts the wait again: progress is progress, whoever makes it. The driver reports how
/// each holder's fetch ended; the list's order is the search's ([`SearchOutcome::Found`]).
#[derive(Debug, Clone)]
pub struct Failover<P> {
    holders: std::vec::IntoIter<P>,
    idle_max: Duration,
    last_progress: Instant,
    idle: bool,
}

impl<P> Failover<P> {
    /// A failover over `holders`, in their order, for a fetch starting at `now` that gives
    /// up after `idle_max` without a verified byte (`ObjectTimings::failover_idle`).
    pub fn new(holders: Vec<P>, now: Instant, idle_max: Duration) -> Self {
        Failover {
            holders: holders.into_iter(),
            idle_max,
            last_progress: now,
            idle: false,
        }
    }

    /// The next holder to fetch from at `now`; `None` once the list ran out or `idle_max`
    /// passed without a verified byte.
    pub fn next_holder(&mut self, now: Instant) -> Option<P> {
        if now.saturating_duration_since(self.last_progress) >= self.idle_max {
            self.idle = true;
            return None;
        }
        self.holders.next()
    }

    /// How the last holder's fetch ended at `now`: whether it delivered any verified byte.
    pub fn report(&mut self, progress: bool, now: Instant) {
        if progress {
            self.last_progress = now;
        }
    }

    /// Whether it stopped with holders left untried (too long without a verified byte).
    pub fn gave_up(&self) -> bool {
        self.idle && self.holders.len() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{TestPeer, key_from_first as key, peer_from_first as peer};

    fn firsts(ps: &[TestPeer]) -> Vec<u8> {
        ps.iter().map(|p| p.key.0[0]).collect()
    }

    #[test]
    fn a_walk_that_learned_nothing_proves_nothing_except_on_a_lone_node() {
        let finished = |providers: Vec<TestPeer>, closest: Vec<TestPeer>, rpcs| WalkEnd::Finished {
            providers,
            closest,
            rpcs,
        };
        // Asked, and nobody answered: no proof of absence.
        assert_eq!(
            finished(vec![], vec![], 3).judge(true),
            Err(WalkVerdict::Unfinished)
        );
        // Asked nobody: the search runs over what came back (here nothing: a miss).
        assert_eq!(
            finished(vec![], vec![], 0).judge(true),
            Ok((vec![], vec![]))
        );
        let judged = finished(vec![peer(1)], vec![peer(2)], 2).judge(true);
        let firsts_of = judged.map(|(p, c)| (firsts(&p), firsts(&c)));
        assert_eq!(firsts_of, Ok((vec![1], vec![2])));
        let no_peers = || WalkEnd::<TestPeer>::NoPeers;
        assert_eq!(no_peers().judge(false), Err(WalkVerdict::NotFound));
        assert_eq!(no_peers().judge(true), Err(WalkVerdict::NoPeers));
        assert_eq!(
            WalkEnd::<TestPeer>::Refused.judge(true),
            Err(WalkVerdict::NotRun)
        );
        assert_eq!(
            WalkEnd::<TestPeer>::TimedOut.judge(false),
            Err(WalkVerdict::Unfinished)
        );
    }

    #[test]
    fn candidates_are_providers_then_closest_without_us_or_duplicates() {
        let s = Search::new(
            key(9),
            vec![peer(5), peer(9)],
            vec![
                peer(1),
                peer(5),
                peer(2),
                peer(3),
                peer(4),
                peer(6),
                peer(7),
                peer(8),
            ],
            3,
            1,
        );
        // Providers first; then the 2·rf = 6 closest, of which 5 was already there.
        assert_eq!(firsts(s.candidates()), vec![5, 1, 2, 3, 4, 6]);
    }

    #[test]
    fn the_first_holder_ends_the_search_and_leads_the_failover_list() {
        let mut s = Search::new(key(0), vec![peer(1)], vec![peer(2), peer(3), peer(4)], 3, 1);
        assert!(!s.handle_answer(&key(2), ProbeAnswer::Lacks));
        assert!(!s.handle_answer(&key(1), ProbeAnswer::Silent));
        assert!(s.handle_answer(&key(3), ProbeAnswer::Holds));
        // Later answers change nothing.
        assert!(s.handle_answer(&key(4), ProbeAnswer::Lacks));
        // 3 proved it; 4 had not answered when it did; 1 was silent, 2 lacks it.
        assert_eq!(
            s.outcome(),
            SearchOutcome::Found {
                holders: vec![peer(3), peer(4)]
            }
        );
    }

    #[test]
    fn the_failover_list_puts_the_closest_holders_first_and_stale_records_last() {
        // Records 1, 4, 2, 5 (1 and 2 stale; 4 and 5 also among the closest), closest 3, 4,
        // 5, 6; 3 proves it first.
        let search = |wanted| {
            let mut s = Search::new(
                key(0),
                vec![peer(1), peer(4), peer(2), peer(5)],
                vec![peer(3), peer(4), peer(5), peer(6)],
                3,
                wanted,
            );
            assert!(s.handle_answer(&key(3), ProbeAnswer::Holds));
            match s.outcome() {
                SearchOutcome::Found { holders } => firsts(&holders),
                other => panic!("{other:?}"),
            }
        };
        // A second pass follows records that proved nothing: the other closest before them.
        assert_eq!(search(SECOND_PASS_WANTED), vec![3, 4, 5, 6, 1, 2]);
        // A first pass: the records (siblings of one that just proved itself) first.
        assert_eq!(search(1), vec![3, 4, 5, 1, 2, 6]);
    }

    #[test]
    fn records_that_prove_nothing_are_worth_a_second_pass_once() {
        let answer_all = |mut s: Search<TestPeer>| {
            for k in [1, 2] {
                s.handle_answer(&key(k), ProbeAnswer::Lacks);
            }
            assert!(s.is_over());
            s.outcome()
        };
        let first = Search::new(key(0), vec![peer(1)], vec![peer(2)], 3, 1);
        assert_eq!(answer_all(first), SearchOutcome::SearchAgain);
        // The second pass walked to the end: its verdict is final.
        let second = Search::new(key(0), vec![peer(1)], vec![peer(2)], 3, SECOND_PASS_WANTED);
        assert_eq!(answer_all(second), SearchOutcome::NotFound);
    }

    fn walked(providers: Vec<TestPeer>, closest: Vec<TestPeer>) -> WalkEnd<TestPeer> {
        WalkEnd::Finished {
            providers,
            closest,
            rpcs: 3,
        }
    }

    const T: Duration = Duration::from_secs(5);

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn a_locate_walks_probes_and_hands_out_the_holders() {
        let mut l = Locate::new(key(0), 3, 1, at(0), T);
        assert_eq!(l.deadline(), at(5000));
        assert_eq!(l.poll(at(0)), LocateStep::Walk { wanted: 1 });
        assert_eq!(l.poll(at(1)), LocateStep::Wait, "the walk is out");
        l.handle_walk(walked(vec![peer(1)], vec![peer(2), peer(0)]), true);
        let LocateStep::Probe(c) = l.poll(at(10)) else {
            panic!("probes due")
        };
        assert_eq!(firsts(&c), vec![1, 2], "ourselves left out");
        assert_eq!(l.poll(at(11)), LocateStep::Wait, "the probes are out");
        assert!(!l.handle_answer(&key(2), ProbeAnswer::Lacks));
        assert!(l.handle_answer(&key(1), ProbeAnswer::Holds));
        assert_eq!(
            l.poll(at(20)),
            LocateStep::Done(LocateEnd::Found {
                holders: vec![peer(1)],
                second_pass: false
            })
        );
        assert_eq!(l.poll(at(21)), LocateStep::Wait, "over, handed out once");
    }

    #[test]
    fn records_that_prove_nothing_take_one_second_pass_to_the_closest() {
        let mut l = Locate::new(key(0), 3, 1, at(0), T);
        assert_eq!(l.poll(at(0)), LocateStep::Walk { wanted: 1 });
        l.handle_walk(walked(vec![peer(1)], vec![peer(2)]), true);
        assert!(matches!(l.poll(at(10)), LocateStep::Probe(_)));
        l.handle_answer(&key(1), ProbeAnswer::Lacks);
        assert!(l.handle_answer(&key(2), ProbeAnswer::Lacks));
        assert_eq!(
            l.poll(at(20)),
            LocateStep::Walk {
                wanted: SECOND_PASS_WANTED
            }
        );
        l.handle_walk(walked(vec![peer(1)], vec![peer(2), peer(3)]), true);
        let LocateStep::Probe(c) = l.poll(at(30)) else {
            panic!("second probes due")
        };
        assert_eq!(firsts(&c), vec![1, 2, 3]);
        for k in [1, 2] {
            l.handle_answer(&key(k), ProbeAnswer::Lacks);
        }
        l.handle_answer(&key(3), ProbeAnswer::Holds);
        assert_eq!(
            l.poll(at(40)),
            LocateStep::Done(LocateEnd::Found {
                holders: vec![peer(3)],
                second_pass: true
            })
        );
        // The same answers in the second pass with nobody holding it: a miss, no third.
        let mut l = Locate::new(key(0), 3, 1, at(0), T);
        for wanted in [1, SECOND_PASS_WANTED] {
            assert_eq!(l.poll(at(0)), LocateStep::Walk { wanted });
            l.handle_walk(walked(vec![peer(1)], vec![peer(2)]), true);
            assert!(matches!(l.poll(at(1)), LocateStep::Probe(_)));
            l.handle_answer(&key(1), ProbeAnswer::Lacks);
            l.handle_answer(&key(2), ProbeAnswer::Lacks);
        }
        assert_eq!(l.poll(at(2)), LocateStep::Done(LocateEnd::NotFound));
    }

    #[test]
    fn a_second_pass_with_no_time_left_ends_unfinished() {
        let mut l = Locate::new(key(0), 3, 1, at(0), T);
        l.poll(at(0));
        l.handle_walk(walked(vec![peer(1)], vec![]), true);
        l.poll(at(10));
        assert!(l.handle_answer(&key(1), ProbeAnswer::Lacks));
        assert_eq!(l.poll(at(5000)), LocateStep::Done(LocateEnd::Unfinished));
    }

    #[test]
    fn the_deadline_ends_a_walk_or_silences_the_probes() {
        let mut l = Locate::<TestPeer>::new(key(0), 3, 1, at(0), T);
        l.poll(at(0));
        l.handle_deadline();
        assert_eq!(l.poll(at(5000)), LocateStep::Done(LocateEnd::Unfinished));
        // Probes out, one candidate silent at the deadline, records named: unfinished.
        let mut l = Locate::new(key(0), 3, 3, at(0), T);
        l.poll(at(0));
        l.handle_walk(walked(vec![peer(1)], vec![peer(2)]), true);
        l.poll(at(1));
        l.handle_answer(&key(2), ProbeAnswer::Lacks);
        l.handle_deadline();
        assert_eq!(l.poll(at(5000)), LocateStep::Done(LocateEnd::Unfinished));
    }

    #[test]
    fn a_walk_that_ends_the_search_ends_the_locate() {
        for (walk, had_peers, end) in [
            (WalkEnd::NoPeers, false, LocateEnd::NotFound),
            (WalkEnd::NoPeers, true, LocateEnd::NoPeers),
            (WalkEnd::Refused, true, LocateEnd::NotRun),
            (WalkEnd::TimedOut, true, LocateEnd::Unfinished),
            (walked(vec![], vec![]), true, LocateEnd::Unfinished),
        ] {
            let mut l = Locate::<TestPeer>::new(key(0), 3, 1, at(0), T);
            l.poll(at(0));
            l.handle_walk(walk, had_peers);
            assert_eq!(l.poll(at(1)), LocateStep::Done(end));
        }
        // Only ourselves to ask: nothing to probe, nobody holds it.
        let mut l = Locate::new(key(0), 3, 1, at(0), T);
        l.poll(at(0));
        l.handle_walk(walked(vec![], vec![peer(0)]), true);
        assert_eq!(l.poll(at(1)), LocateStep::Done(LocateEnd::NotFound));
    }

    #[test]
    fn silence_is_no_proof_of_absence() {
        // Records exist and a candidate was silent: not finished.
        let mut s = Search::new(key(0), vec![peer(1)], vec![peer(2)], 3, 3);
        s.handle_answer(&key(2), ProbeAnswer::Lacks);
        s.handle_deadline();
        assert_eq!(s.outcome(), SearchOutcome::Unfinished);
        // No records, nobody answered (refusals and lies are no answers of absence).
        let mut s = Search::new(key(0), vec![], vec![peer(1), peer(2)], 3, 1);
        s.handle_answer(&key(1), ProbeAnswer::Invalid);
        s.handle_answer(&key(2), ProbeAnswer::Silent);
        assert_eq!(s.outcome(), SearchOutcome::Unfinished);
        // No records, some silent but someone answered that it lacks it: a miss.
        let mut s = Search::new(key(0), vec![], vec![peer(1), peer(2)], 3, 1);
        s.handle_answer(&key(1), ProbeAnswer::Lacks);
        s.handle_answer(&key(2), ProbeAnswer::Silent);
        assert_eq!(s.outcome(), SearchOutcome::NotFound);
    }

    #[test]
    fn answers_from_strangers_or_twice_do_not_count() {
        let mut s = Search::new(key(0), vec![], vec![peer(1)], 3, 1);
        assert!(!s.handle_answer(&key(7), ProbeAnswer::Holds));
        assert!(s.handle_answer(&key(1), ProbeAnswer::Lacks));
        assert!(s.handle_answer(&key(1), ProbeAnswer::Holds));
        assert_eq!(s.outcome(), SearchOutcome::NotFound);
    }

    #[test]
    fn a_search_with_no_candidates_is_over_at_once() {
        let s: Search<TestPeer> = Search::new(key(0), vec![], vec![], 3, 1);
        assert!(s.is_over());
        assert_eq!(s.outcome(), SearchOutcome::NotFound);
    }

    #[test]
    fn a_failover_stops_once_its_idle_time_passed_without_progress() {
        let at = |ms: u64| Instant::from_duration(Duration::from_millis(ms));
        let idle = Duration::from_millis(1000);
        // Holders that each take 300 ms to fail: the fourth is not asked (900 ms, then
        // 1,200 ms since the start).
        let mut f = Failover::new((1..=10).collect::<Vec<u8>>(), at(0), idle);
        let (mut asked, mut now) = (Vec::new(), 0);
        while let Some(h) = f.next_holder(at(now)) {
            asked.push(h);
            now += 300;
            f.report(false, at(now));
        }
        assert_eq!(asked, vec![1, 2, 3, 4]);
        assert!(f.gave_up());
        // Refusals that cost nothing stop nothing: every holder is asked.
        let mut f = Failover::new((1..=10).collect::<Vec<u8>>(), at(0), idle);
        let mut asked = 0;
        while f.next_holder(at(5)).is_some() {
            asked += 1;
            f.report(false, at(5));
        }
        assert_eq!(asked, 10);
        assert!(!f.gave_up(), "every holder was tried");
    }

    #[test]
    fn progress_starts_the_idle_time_again() {
        let at = |ms: u64| Instant::from_duration(Duration::from_millis(ms));
        let mut f = Failover::new(
            (1..=10).collect::<Vec<u8>>(),
            at(0),
            Duration::from_millis(1000),
        );
        let (mut asked, mut now) = (Vec::new(), 0);
        while let Some(h) = f.next_holder(at(now)) {
            asked.push(h);
            now += 300;
            // Holder 3 moved some bytes before it failed (at 900 ms): the wait starts again.
            f.report(h == 3, at(now));
        }
        assert_eq!(asked, (1..=7).collect::<Vec<_>>());
        assert!(f.gave_up());
    }
}
