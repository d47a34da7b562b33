//! One write's decisions, made the same way wherever the write runs: which of the closest
//! nodes get a copy, when the write may answer its client, and when a target that is busy
//! receiving the same object from another pusher is asked again.
//!
//! A write counts its own durable copy, then one per target whose copy the driver reports
//! durable ([`Write::handle_durable`]): the target answered that it stored the bytes after
//! its fsync, or proved a copy it already held with bytes that verified; a peer's word alone
//! never counts. The write answers ([`Write::answer`]) once W copies are durable, or every
//! placement has finished, or its wait ran out. Placements still running after the answer
//! go on (the driver keeps polling until [`Write::finished`]) for as long again as the
//! wait, then are cut ([`Write::cut`]): a target that takes in a copy more slowly than the
//! wait allows (a slow link, or a peer that reads just fast enough not to be dropped) does
//! not keep the write, and what it holds on the node, for hours. The replication planner
//! repairs what the write could not place. (simnet runs these decisions but ends a write
//! at its wait: it models neither the node's write slots nor the placements after it.)
//!
//! A target that is receiving the object from someone else (a concurrent write of the same
//! bytes, or a repair) refuses a second push; its copy is on its way, so it is asked again
//! after a doubling backoff (20 ms up to 1 s) until the write's wait runs out, and proven
//! then like any other.

use std::time::Duration;

use crate::key::Key;
use crate::peer::Peer;
use crate::time::Instant;

/// The first wait before a busy target is asked again.
pub const BUSY_BACKOFF_FIRST: Duration = Duration::from_millis(20);
/// The longest wait before a busy target is asked again.
pub const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The `n` nodes closest to `key` (`n` at least 1) as a write places copies: of `closest`
/// (any order, may hold us or duplicates), the peers among the `n` closest, nearest first,
/// and whether we are one of the `n` (then the peers are `n - 1`). We count among them when
/// fewer than `n` peers are known, or when we are closer than the `n`-th peer.
pub fn placement_targets<P: Peer>(
    local: Key,
    key: Key,
    mut closest: Vec<P>,
    n: usize,
) -> (Vec<P>, bool) {
    let n = n.max(1);
    closest.retain(|p| p.key() != local);
    closest.sort_by_key(|p| p.key().distance(&key));
    closest.dedup_by_key(|p| p.key());
    let self_in = closest.len() < n
        || closest
            .get(n - 1)
            .is_some_and(|p| p.key().distance(&key) > local.distance(&key));
    closest.truncate(if self_in { n - 1 } else { n });
    (closest, self_in)
}

/// How many durable copies a write waits for: W, at least 1 and at most RF; but on a node
/// that has never had a peer, one. Such a node is a mesh of one by design (the first node of
/// a new mesh, or a single-node deployment), and its own copy is all the mesh there is. A
/// node that had peers and lost them still waits for W, and says it could not reach it,
/// rather than acknowledge a copy nobody else holds.
pub fn write_quorum(w: usize, rf: usize, had_peers: bool) -> usize {
    if had_peers { w.clamp(1, rf.max(1)) } else { 1 }
}

/// How one placement ended, as far as the write is concerned (its durable copy, if any,
/// was reported on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceResult {
    /// Finished, whatever the outcome: proven, pushed, absent or failed.
    Done,
    /// The target is receiving the object from another pusher and refused ours.
    Busy,
}

/// Why [`Write::cut`] gave a target up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementCut {
    /// Its placement was still moving the copy: the target takes it in more slowly than
    /// the write's wait allows (the planner hears a failure).
    TooSlow,
    /// Its copy was durable and still being proven, or it was waiting to be asked again:
    /// nothing against the target (the planner hears the transfer did not run).
    Unfinished,
}

/// What a write achieved when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteAnswer {
    /// Durable copies confirmed (ours included).
    pub copies: usize,
    /// Copies the write needed (W).
    pub want: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// To be placed at this time.
    Due(Instant),
    /// Handed to the driver, not reported yet.
    Placing,
    /// Reported done, or given up.
    Finished,
}

#[derive(Debug, Clone)]
struct Target<P> {
    peer: P,
    stage: Stage,
    durable: bool,
    backoff: Duration,
}

/// The decisions of one write: poll it for placements to start, feed it what they report.
#[derive(Debug, Clone)]
pub struct Write<P> {
    want: usize,
    copies: usize,
    deadline: Instant,
    /// Placements still running then are cut: the deadline plus the wait again.
    cut_at: Instant,
    targets: Vec<Target<P>>,
}

impl<P: Peer> Write<P> {
    /// A write of an object already durable here, to place at `targets` (from
    /// [`placement_targets`]), needing `want` durable copies in all (at least 1: ours),
    /// that may wait `wait` for them.
    pub fn new(now: Instant, targets: Vec<P>, want: usize, wait: Duration) -> Write<P> {
        Write {
            want: want.max(1),
            copies: 1,
            deadline: now + wait,
            cut_at: now + wait + wait,
            targets: targets
                .into_iter()
                .map(|peer| Target {
                    peer,
                    stage: Stage::Due(now),
                    durable: false,
                    backoff: BUSY_BACKOFF_FIRST,
                })
                .collect(),
        }
    }

    /// The targets, nearest first.
    pub fn targets(&self) -> impl Iterator<Item = &P> {
        self.targets.iter().map(|t| &t.peer)
    }

    /// When the write gives up waiting (and stops asking busy targets again).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The next placement to start now, if any: the driver places a copy at the peer and
    /// reports [`Write::handle_placed`] (and [`Write::handle_durable`] as soon as it knows).
    pub fn poll_place(&mut self, now: Instant) -> Option<P> {
        if now >= self.cut_at {
            return None;
        }
        let t = self
            .targets
            .iter_mut()
            .find(|t| matches!(t.stage, Stage::Due(at) if at <= now))?;
        t.stage = Stage::Placing;
        Some(t.peer.clone())
    }

    /// `peer` holds a durable copy. Counted once per target; anyone else is ignored.
    pub fn handle_durable(&mut self, peer: &Key) {
        if let Some(t) = self.targets.iter_mut().find(|t| t.peer.key() == *peer)
            && !t.durable
        {
            t.durable = true;
            self.copies += 1;
        }
    }

    /// The placement at `peer` ended. A busy target is asked again after its backoff if
    /// that is still before the deadline; otherwise it is finished. Returns whether the
    /// placement is over for good (the driver reports its outcome to the planner then).
    pub fn handle_placed(&mut self, now: Instant, peer: &Key, result: PlaceResult) -> bool {
        let Some(t) = self
            .targets
            .iter_mut()
            .find(|t| t.peer.key() == *peer && t.stage == Stage::Placing)
        else {
            return false;
        };
        match result {
            PlaceResult::Busy if !t.durable && now + t.backoff < self.deadline => {
                t.stage = Stage::Due(now + t.backoff);
                t.backoff = (t.backoff * 2).min(BUSY_BACKOFF_MAX);
                false
            }
            _ => {
                t.stage = Stage::Finished;
                true
            }
        }
    }

    /// When the driver should call in next if nothing is reported before: the next busy
    /// target's retry, or the deadline while the write has not answered; `None` when
    /// nothing is left to time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self
            .targets
            .iter()
            .filter_map(|t| match t.stage {
                Stage::Due(at) => Some(at),
                _ => None,
            })
            .min();
        let answered = self.copies >= self.want || self.finished();
        match (retry, answered) {
            (Some(at), true) => Some(at),
            (Some(at), false) => Some(at.min(self.deadline)),
            (None, true) => None,
            (None, false) => Some(self.deadline),
        }
    }

    /// The write's answer, once it has one: W copies durable, every placement finished,
    /// or the wait ran out.
    pub fn answer(&self, now: Instant) -> Option<WriteAnswer> {
        (self.copies >= self.want || self.finished() || now >= self.deadline).then_some(
            WriteAnswer {
                copies: self.copies,
                want: self.want,
            },
        )
    }

    /// When what is left of the write will be cut ([`Write::cut`]), while anything is;
    /// the driver calls in then if nothing else came first.
    pub fn cut_at(&self) -> Option<Instant> {
        (!self.finished()).then_some(self.cut_at)
    }

    /// At or after [`Write::cut_at`], every target not finished, now given up, with why:
    /// the driver stops their placements and reports each to the planner (a target that
    /// took in its copy more slowly than the write's wait allows as failed; one whose copy
    /// is durable, still proving it, or one only waiting to be asked again, as not run);
    /// their own reports, if any come, are ignored.
    pub fn cut(&mut self, now: Instant) -> Vec<(P, PlacementCut)> {
        if now < self.cut_at {
            return Vec::new();
        }
        self.targets
            .iter_mut()
            .filter(|t| t.stage != Stage::Finished)
            .map(|t| {
                let why = match t.stage {
                    Stage::Placing if !t.durable => PlacementCut::TooSlow,
                    _ => PlacementCut::Unfinished,
                };
                t.stage = Stage::Finished;
                (t.peer.clone(), why)
            })
            .collect()
    }

    /// Whether nothing is left to do: every placement reported. A busy target's retry is
    /// due before the deadline by construction; it still runs (and reports) when the
    /// driver's timer fires late, so no target's transfer is ever left unreported.
    pub fn finished(&self) -> bool {
        self.targets.iter().all(|t| t.stage == Stage::Finished)
    }

    /// Durable copies so far (ours included).
    pub fn copies(&self) -> usize {
        self.copies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{TestPeer, key_from_first as key, peer_from_first as peer};

    fn at(ms: u64) -> Instant {
        Instant::from_duration(Duration::from_millis(ms))
    }

    #[test]
    fn a_node_that_never_had_a_peer_is_its_own_quorum() {
        assert_eq!(write_quorum(2, 3, false), 1, "a mesh of one");
        assert_eq!(write_quorum(2, 3, true), 2, "W, once it had peers");
        assert_eq!(write_quorum(5, 3, true), 3, "never more than RF");
        assert_eq!(write_quorum(0, 3, true), 1, "never less than our own copy");
    }

    fn placed_all(w: &mut Write<TestPeer>, now: Instant) -> Vec<u8> {
        std::iter::from_fn(|| w.poll_place(now))
            .map(|p| p.key.0[0])
            .collect()
    }

    #[test]
    fn targets_are_the_closest_with_us_counted_when_we_are_among_them() {
        let object = key(0x00);
        let peers = vec![peer(0x10), peer(0x01), peer(0x04), peer(0x02), peer(0x01)];
        // We are 0x03: closer than 0x04 and 0x10, so we take one of the three places.
        let (targets, self_in) = placement_targets(key(0x03), object, peers.clone(), 3);
        assert!(self_in);
        let firsts: Vec<u8> = targets.iter().map(|p| p.key.0[0]).collect();
        assert_eq!(firsts, vec![0x01, 0x02], "nearest first, duplicates folded");
        // We are 0x20: farther than the third peer, so three peers and not us.
        let (targets, self_in) = placement_targets(key(0x20), object, peers.clone(), 3);
        assert!(!self_in);
        assert_eq!(targets.len(), 3);
        // Our own handle in the list is never a target; too few peers means we count.
        let (targets, self_in) =
            placement_targets(key(0x01), object, vec![peer(0x01), peer(0x40)], 3);
        assert!(self_in);
        assert_eq!(
            targets.iter().map(|p| p.key.0[0]).collect::<Vec<_>>(),
            [0x40]
        );
    }

    #[test]
    fn answers_at_w_durable_copies_and_not_before() {
        let mut w = Write::new(
            at(0),
            vec![peer(1), peer(2), peer(3)],
            2,
            Duration::from_secs(10),
        );
        assert_eq!(placed_all(&mut w, at(0)), vec![1, 2, 3]);
        assert_eq!(w.answer(at(5)), None);
        // A peer that is not a target, and a second report of the same target, count nothing.
        w.handle_durable(&key(9));
        assert_eq!(w.answer(at(5)), None);
        w.handle_durable(&key(2));
        w.handle_durable(&key(2));
        assert_eq!(w.copies(), 2);
        assert_eq!(w.answer(at(6)), Some(WriteAnswer { copies: 2, want: 2 }));
        // The others go on after the answer.
        assert!(!w.finished());
        for k in [1, 2, 3] {
            assert!(w.handle_placed(at(7), &key(k), PlaceResult::Done));
        }
        assert!(w.finished());
    }

    #[test]
    fn a_write_whose_placements_all_failed_answers_at_once_with_what_it_has() {
        let mut w = Write::new(at(0), vec![peer(1), peer(2)], 2, Duration::from_secs(10));
        placed_all(&mut w, at(0));
        assert!(w.handle_placed(at(3), &key(1), PlaceResult::Done));
        assert_eq!(w.answer(at(3)), None);
        assert!(w.handle_placed(at(4), &key(2), PlaceResult::Done));
        assert_eq!(w.answer(at(4)), Some(WriteAnswer { copies: 1, want: 2 }));
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn the_wait_bounds_the_answer() {
        let mut w = Write::new(at(0), vec![peer(1)], 2, Duration::from_secs(10));
        placed_all(&mut w, at(0));
        assert_eq!(w.poll_timeout(), Some(at(10_000)));
        assert_eq!(w.answer(at(9_999)), None);
        assert_eq!(
            w.answer(at(10_000)),
            Some(WriteAnswer { copies: 1, want: 2 })
        );
        // The placement still running is not finished by the deadline.
        assert!(!w.finished());
    }

    #[test]
    fn a_busy_target_is_asked_again_with_a_doubling_backoff_until_the_deadline() {
        let mut w = Write::new(at(0), vec![peer(1)], 2, Duration::from_millis(200));
        let mut asked = vec![];
        let mut now = at(0);
        while let Some(p) = w.poll_place(now) {
            asked.push(now.as_duration().as_millis());
            if !w.handle_placed(now, &p.key, PlaceResult::Busy) {
                now = w.poll_timeout().unwrap_or(now);
            }
        }
        // 0, +20, +40, +80 (at 140 ms; the next, +160, would pass the 200 ms deadline).
        assert_eq!(asked, vec![0, 20, 60, 140]);
        assert!(w.finished());
        assert_eq!(w.answer(now), Some(WriteAnswer { copies: 1, want: 2 }));
    }

    #[test]
    fn a_retry_whose_timer_fires_after_the_deadline_still_runs_and_reports() {
        // The retry is due at 21 ms, before the 100 ms deadline; a loaded driver calls in
        // at 150 ms (before the cut at 200 ms). The write is not finished until that
        // placement ran and reported, so the driver never drops a target its planner is
        // waiting to hear about (past the cut, `a_retry_not_started_by_the_cut_...`).
        let mut w = Write::new(at(0), vec![peer(1)], 2, Duration::from_millis(100));
        placed_all(&mut w, at(0));
        assert!(!w.handle_placed(at(1), &key(1), PlaceResult::Busy));
        assert!(!w.finished(), "a retry is due");
        assert_eq!(w.answer(at(150)), Some(WriteAnswer { copies: 1, want: 2 }));
        assert!(w.poll_place(at(150)).is_some(), "the late retry still runs");
        assert!(!w.finished());
        assert!(
            w.handle_placed(at(160), &key(1), PlaceResult::Busy),
            "past the deadline a busy answer ends it"
        );
        assert!(w.finished());
    }

    #[test]
    fn a_placement_slower_than_twice_the_wait_is_cut() {
        // Wait 100 ms: the answer at once (W = 1), the cut at 200 ms.
        let mut w = Write::new(
            at(0),
            vec![peer(1), peer(2), peer(3)],
            1,
            Duration::from_millis(100),
        );
        assert_eq!(placed_all(&mut w, at(0)), vec![1, 2, 3]);
        assert_eq!(w.answer(at(0)), Some(WriteAnswer { copies: 1, want: 1 }));
        assert_eq!(w.cut_at(), Some(at(200)));
        assert!(w.handle_placed(at(50), &key(1), PlaceResult::Done));
        w.handle_durable(&key(2));
        assert!(w.cut(at(199)).is_empty(), "not before its time");
        let cut: Vec<(u8, PlacementCut)> = w
            .cut(at(200))
            .into_iter()
            .map(|(p, why)| (p.key.0[0], why))
            .collect();
        assert_eq!(
            cut,
            vec![(2, PlacementCut::Unfinished), (3, PlacementCut::TooSlow)],
            "a durable copy still being proven is nothing against its target"
        );
        assert_eq!(w.cut_at(), None, "nothing left to cut");
        assert!(w.finished());
        assert!(
            !w.handle_placed(at(250), &key(3), PlaceResult::Done),
            "cut: its report is ignored"
        );
    }

    #[test]
    fn a_retry_not_started_by_the_cut_is_cut_and_never_started() {
        let mut w = Write::new(at(0), vec![peer(1)], 2, Duration::from_millis(100));
        placed_all(&mut w, at(0));
        assert!(!w.handle_placed(at(1), &key(1), PlaceResult::Busy));
        // The driver calls in only after the cut: the retry is not started, and is cut.
        assert_eq!(w.poll_place(at(300)), None);
        let cut: Vec<(u8, PlacementCut)> = w
            .cut(at(300))
            .into_iter()
            .map(|(p, why)| (p.key.0[0], why))
            .collect();
        assert_eq!(cut, vec![(1, PlacementCut::Unfinished)]);
        assert!(w.finished());
    }

    #[test]
    fn a_busy_target_that_lands_its_copy_counts() {
        let mut w = Write::new(at(0), vec![peer(1)], 2, Duration::from_secs(10));
        placed_all(&mut w, at(0));
        assert!(!w.handle_placed(at(1), &key(1), PlaceResult::Busy));
        assert_eq!(w.poll_timeout(), Some(at(21)));
        assert_eq!(w.poll_place(at(20)), None, "not before its backoff");
        assert!(w.poll_place(at(21)).is_some());
        w.handle_durable(&key(1));
        assert_eq!(w.answer(at(30)), Some(WriteAnswer { copies: 2, want: 2 }));
        assert!(w.handle_placed(at(31), &key(1), PlaceResult::Done));
        assert!(w.finished());
    }

    #[test]
    fn a_report_for_a_placement_not_running_changes_nothing() {
        let mut w = Write::new(at(0), vec![peer(1)], 2, Duration::from_secs(10));
        assert!(
            !w.handle_placed(at(0), &key(1), PlaceResult::Done),
            "not started yet"
        );
        assert_eq!(placed_all(&mut w, at(0)), vec![1]);
        assert!(!w.handle_placed(at(0), &key(7), PlaceResult::Done));
        assert!(!w.finished());
    }

    #[test]
    fn a_lone_write_with_want_one_answers_at_once() {
        let w: Write<TestPeer> = Write::new(at(0), vec![], 1, Duration::from_secs(10));
        assert_eq!(w.answer(at(0)), Some(WriteAnswer { copies: 1, want: 1 }));
        assert!(w.finished());
    }
}
