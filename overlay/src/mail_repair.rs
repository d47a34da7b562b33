//! What a mailbox holder's repair has pushed to the other holders, and so what it pushes
//! next: the decisions of a repair round, for a driver that reads its store and sends the
//! copies (the node's `Mail::repair_round`).
//!
//! Per (mailbox, holder) a [`MailCursor`]: the local sequence number up to which that
//! holder confirmed our messages, and those below it still to push once visible. A round
//! pushes each holder only what came after its cursor, so a steady mailbox costs nothing; a
//! holder new to the closest set starts from 0 and gets everything. Every
//! [`FULL_PUSH_EVERY`] the log is forgotten and everything is pushed again (a holder that
//! lost its disk under the same id). A push that fails leaves the holder out for the rest
//! of the round with its cursor where it was: were it sent the next batch, that batch's
//! success would move the cursor past the messages of the failed one. Messages a batch
//! passed over because they were in flight to the owner (a repair reads only visible ones)
//! wait as `pending` and are pushed once visible, so the cursor moving on skips none.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Instant;

/// Every this often a holder's repair forgets what the others confirmed and pushes
/// everything again.
pub const FULL_PUSH_EVERY: Duration = Duration::from_secs(300);
/// Most messages one holder's cursor keeps waiting to be pushed; past it the oldest are
/// left to the next full push ([`FULL_PUSH_EVERY`]).
pub const PENDING_MAX: usize = 4096;

/// How far one holder confirmed one mailbox's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailCursor {
    /// The last sequence number the holder confirmed.
    pub upto: u64,
    /// Messages at or below `upto` not pushed to it yet, in flight when passed over.
    pub pending: Vec<u64>,
    /// Left out for the rest of this round: a push to it failed, or older messages wait
    /// for it that this round could not push.
    out: bool,
}

impl MailCursor {
    /// A cursor at `upto`, with `pending` still to push.
    pub fn at(upto: u64, pending: Vec<u64>) -> MailCursor {
        MailCursor {
            upto,
            pending,
            out: false,
        }
    }

    /// Whether the message numbered `seq` goes to this holder in this round.
    pub fn wants(&self, seq: u64) -> bool {
        !self.out && seq > self.upto
    }

    /// The holder took every message up to `upto` but those of `passed` (numbers a batch
    /// passed over), which now wait to be pushed; at most [`PENDING_MAX`] wait, the oldest
    /// going first.
    pub fn pushed(&mut self, upto: u64, passed: &[u64]) {
        for &seq in passed {
            if seq > self.upto && !self.pending.contains(&seq) {
                self.pending.push(seq);
            }
        }
        if self.pending.len() > PENDING_MAX {
            self.pending.sort_unstable();
            let extra = self.pending.len() - PENDING_MAX;
            self.pending.drain(..extra);
        }
        self.upto = self.upto.max(upto);
    }

    /// The holder gets nothing more this round.
    pub fn leave_out(&mut self) {
        self.out = true;
    }

    /// Whether the holder gets nothing more this round.
    pub fn is_out(&self) -> bool {
        self.out
    }
}

/// What repair already pushed, across rounds, per (mailbox, holder); `K` is the driver's
/// node id.
#[derive(Debug)]
pub struct MailRepairLog<K> {
    /// When the log was last forgotten.
    since: Option<Instant>,
    confirmed: BTreeMap<(K, K), MailCursor>,
}

impl<K> Default for MailRepairLog<K> {
    fn default() -> Self {
        MailRepairLog {
            since: None,
            confirmed: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> MailRepairLog<K> {
    /// A round starts at `now`: the cursors it starts from, none once every
    /// [`FULL_PUSH_EVERY`].
    pub fn start_round(&mut self, now: Instant) -> MailRound<K> {
        if self
            .since
            .is_none_or(|t| now.saturating_duration_since(t) >= FULL_PUSH_EVERY)
        {
            self.since = Some(now);
            self.confirmed.clear();
        }
        MailRound {
            before: std::mem::take(&mut self.confirmed),
            kept: BTreeMap::new(),
        }
    }

    /// The round is over: what it kept is the log.
    pub fn end_round(&mut self, round: MailRound<K>) {
        self.confirmed = round.kept;
    }
}

/// One repair round's cursors: taken from the log at its start, handed back at its end.
/// Only the pairs the round walked are kept, so the log stays as large as what is held.
#[derive(Debug)]
pub struct MailRound<K> {
    before: BTreeMap<(K, K), MailCursor>,
    kept: BTreeMap<(K, K), MailCursor>,
}

impl<K: Ord + Clone> MailRound<K> {
    /// The cursor `holder` starts this round at for `mailbox` (at 0 for a holder new to
    /// the closest set, or after a full push).
    pub fn cursor(&mut self, mailbox: &K, holder: &K) -> MailCursor {
        let c = self
            .before
            .remove(&(mailbox.clone(), holder.clone()))
            .unwrap_or_default();
        MailCursor::at(c.upto, c.pending)
    }

    /// The round is done with `holder`'s cursor for `mailbox`: kept for the next round if
    /// the holder confirmed anything or messages wait for it; being left out ends with the
    /// round.
    pub fn keep(&mut self, mailbox: K, holder: K, mut cursor: MailCursor) {
        if cursor.upto > 0 || !cursor.pending.is_empty() {
            cursor.out = false;
            self.kept.insert((mailbox, holder), cursor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batch 1 fails at a holder, batch 2 would succeed: the holder must not be sent batch
    /// 2 in that round, or its success confirms batch 1's messages too (they were never
    /// taken, and would wait for the full push minutes later).
    #[test]
    fn a_failed_push_keeps_the_holder_cursor_for_the_round() {
        let mut c = MailCursor::at(0, vec![]);
        assert!(c.wants(1));
        c.leave_out();
        assert!(
            !c.wants(65),
            "a later batch goes to a holder that failed this round"
        );
        assert_eq!(c.upto, 0, "a failure moved the cursor");

        let mut c = MailCursor::at(10, vec![]);
        assert!(!c.wants(10) && c.wants(11));
        c.pushed(64, &[]);
        assert!(!c.wants(64) && c.wants(65));
        c.pushed(3, &[]);
        assert_eq!(c.upto, 64, "a cursor never moves back");
    }

    /// A batch that passed over messages in flight moves the cursor past them; they wait
    /// in `pending` (once each), and numbers the holder already confirmed are not added.
    #[test]
    fn messages_passed_over_wait_to_be_pushed() {
        let mut c = MailCursor::at(10, vec![]);
        c.pushed(30, &[5, 12, 20]);
        assert_eq!(c.upto, 30);
        assert_eq!(c.pending, vec![12, 20], "5 was confirmed before");
        c.pushed(40, &[20, 35]);
        assert_eq!(c.pending, vec![12, 20, 35]);
        let many: Vec<u64> = (41..41 + PENDING_MAX as u64).collect();
        c.pushed(50_000, &many);
        assert_eq!(c.pending.len(), PENDING_MAX, "bounded");
        assert!(!c.pending.contains(&12), "the oldest go first");
    }

    fn at(s: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(s)
    }

    /// A round starts where the last left each holder, keeps only what it walked, forgets
    /// a holder's leave-out, and everything is forgotten every `FULL_PUSH_EVERY`.
    #[test]
    fn rounds_carry_cursors_and_forget_them_for_the_full_push() {
        let mut log = MailRepairLog::<u8>::default();
        let mut round = log.start_round(at(0));
        let mut c = round.cursor(&1, &2);
        assert_eq!(c, MailCursor::default(), "a new holder starts at 0");
        c.pushed(7, &[3]);
        c.leave_out();
        round.keep(1, 2, c);
        round.keep(1, 3, MailCursor::default());
        log.end_round(round);

        let mut round = log.start_round(at(15));
        let c = round.cursor(&1, &2);
        assert_eq!((c.upto, c.pending.clone(), c.is_out()), (7, vec![3], false));
        assert_eq!(
            round.cursor(&1, &3),
            MailCursor::default(),
            "nothing to keep"
        );
        // This round does not walk (1, 2): it is not kept.
        log.end_round(round);
        let mut round = log.start_round(at(30));
        assert_eq!(
            round.cursor(&1, &2),
            MailCursor::default(),
            "not walked, not kept"
        );
        round.keep(1, 2, MailCursor::at(9, vec![]));
        log.end_round(round);

        let mut round = log.start_round(at(299));
        assert_eq!(round.cursor(&1, &2).upto, 9);
        round.keep(1, 2, MailCursor::at(9, vec![]));
        log.end_round(round);
        let mut round = log.start_round(at(300));
        assert_eq!(
            round.cursor(&1, &2),
            MailCursor::default(),
            "forgotten for the full push"
        );
    }
}
