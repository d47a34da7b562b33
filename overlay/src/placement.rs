//! One copy's placement at one target: the steps that make a copy count, for the node and
//! simnet alike.
//!
//! A copy counts (toward a write's W, as a holder the planner may rely on) only when the
//! target is known to hold it durably: its `Stored` answer to a push, which it gives after
//! its fsync, or a proof, a verified read of a chunk it serves. A `Held` answer ("I had it
//! already") is the target's word, so it counts only once proven, and every push is followed
//! by a proof: a peer's claim alone never confirms a holder.
//!
//! The planner's transfers and the operator's repair prove first (the target may hold the
//! object already) and push only when the target answered that it lacks it; the write path
//! pushes first, since a fresh object is rarely held. A target that claimed the object
//! (`Held`) and then lacks it at the proof (its copy rotted, and the proof found it) is
//! sent ours, once per placement; if it then says another pusher is sending it, the
//! placement ends as declined rather than busy, so a write does not ask it again. Any
//! other answer to a proof ends the placement: a target that refuses to be asked is not
//! sent bytes.
//!
//! The driver polls [`Placement::poll`] for the next step, runs it (a read, or the bytes),
//! and feeds the answer back; [`PlaceStep::Durable`] comes at most once, when the copy
//! starts to count, before the proof that follows a `Stored`.

use crate::cause::TransferFault;
use crate::replication::TransferOutcome;
use crate::write::PlaceResult;

/// The state of one copy's placement at one target.
#[derive(Debug, Clone)]
pub struct Placement {
    push: bool,
    /// A claim (`Held`) its proof then denied was answered with our bytes once already.
    pushed_after_claim: bool,
    state: State,
    /// The copy counts and the driver has not heard it yet.
    durable_due: bool,
    /// The copy counts (told or due).
    durable: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Asking the target for a proof; `pushed` once our bytes went (`Some(moved)`: whether
    /// it took them in, answering `Stored`, or had them, `Held`).
    Prove {
        pushed: Option<bool>,
    },
    /// Sending the bytes.
    Push,
    Done(PlaceEnd),
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceStep {
    /// Ask the target for a verified read of the object; answer with
    /// [`Placement::handle_proof`].
    Prove,
    /// Send the target our copy; answer with [`Placement::handle_push`].
    Push,
    /// The copy now counts: tell the write (then poll again).
    Durable,
    /// The placement is over.
    Done(PlaceEnd),
}

/// The target's answer to a proof, as the driver read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofAnswer {
    /// It served bytes that verified against the id.
    Proven,
    /// It answered that it lacks the object.
    Lacks,
    /// Anything else: what went wrong.
    Failed(TransferFault),
}

/// The target's answer to a push, as the driver read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAnswer {
    /// It took the bytes in and made them durable.
    Stored,
    /// It says it held the object already (a claim, to be proven).
    Held,
    /// Anything else: what went wrong.
    Failed(TransferFault),
}

/// How a placement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaceEnd {
    /// The target proved its copy; `moved` when it took our bytes in.
    Verified {
        /// Whether our bytes were stored there.
        moved: bool,
    },
    /// The target lacks the object and this placement was not to push it.
    Absent,
    /// The placement failed.
    Failed(TransferFault),
}

impl PlaceEnd {
    /// The outcome, for the planner.
    pub fn outcome(self) -> TransferOutcome {
        match self {
            PlaceEnd::Verified { .. } => TransferOutcome::Verified,
            PlaceEnd::Absent => TransferOutcome::Absent,
            PlaceEnd::Failed(fault) => TransferOutcome::Failed(fault),
        }
    }

    /// The result, for the write: a target taking the object in from another pusher is
    /// asked again; anything else is over.
    pub fn result(self) -> PlaceResult {
        match self {
            PlaceEnd::Failed(TransferFault::InProgress) => PlaceResult::Busy,
            _ => PlaceResult::Done,
        }
    }
}

impl Placement {
    /// A placement that proves first, and pushes (if `push`) only when the target lacks the
    /// object: the planner's and the operator's repair.
    pub fn prove_first(push: bool) -> Self {
        Self::starting(push, State::Prove { pushed: None })
    }

    /// A placement that pushes first, then proves: the write path's.
    pub fn push_first() -> Self {
        Self::starting(true, State::Push)
    }

    fn starting(push: bool, state: State) -> Self {
        Placement {
            push,
            pushed_after_claim: false,
            state,
            durable_due: false,
            durable: false,
        }
    }

    /// The next step.
    pub fn poll(&mut self) -> PlaceStep {
        if std::mem::take(&mut self.durable_due) {
            return PlaceStep::Durable;
        }
        match self.state {
            State::Prove { .. } => PlaceStep::Prove,
            State::Push => PlaceStep::Push,
            State::Done(end) => PlaceStep::Done(end),
        }
    }

    /// The target answered a proof. Ignored unless a proof was asked for.
    pub fn handle_proof(&mut self, answer: ProofAnswer) {
        let State::Prove { pushed } = self.state else {
            return;
        };
        self.state = State::Done(match (answer, pushed) {
            (ProofAnswer::Proven, _) => {
                self.counts();
                PlaceEnd::Verified {
                    moved: pushed == Some(true),
                }
            }
            (ProofAnswer::Lacks, None) if self.push => {
                self.state = State::Push;
                return;
            }
            (ProofAnswer::Lacks, None) => PlaceEnd::Absent,
            // It said it held the object and now lacks it: its copy went in between (the
            // proof found it rotten there, and it dropped it), so it is sent ours, once.
            (ProofAnswer::Lacks, Some(false)) if self.push && !self.pushed_after_claim => {
                self.pushed_after_claim = true;
                self.state = State::Push;
                return;
            }
            // It took our bytes (or claimed the object twice) and then lacks them: it
            // declined to hold them.
            (ProofAnswer::Lacks, Some(_)) => PlaceEnd::Failed(TransferFault::Declined),
            (ProofAnswer::Failed(fault), _) => PlaceEnd::Failed(fault),
        });
    }

    /// The target answered a push. Ignored unless a push was asked for.
    pub fn handle_push(&mut self, answer: PushAnswer) {
        if !matches!(self.state, State::Push) {
            return;
        }
        self.state = match answer {
            PushAnswer::Stored => {
                self.counts();
                State::Prove { pushed: Some(true) }
            }
            PushAnswer::Held => State::Prove {
                pushed: Some(false),
            },
            // It claimed the object, lacked it at the proof, and now says another pusher is
            // sending it: not a target to ask again (a write would, for a busy one), or a
            // liar could take a body twice per retry.
            PushAnswer::Failed(TransferFault::InProgress) if self.pushed_after_claim => {
                State::Done(PlaceEnd::Failed(TransferFault::Declined))
            }
            PushAnswer::Failed(fault) => State::Done(PlaceEnd::Failed(fault)),
        };
    }

    fn counts(&mut self) {
        if !self.durable {
            self.durable = true;
            self.durable_due = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureCause;

    const SILENT: TransferFault = TransferFault::Exchange(FailureCause::Silent);

    /// Runs a placement against scripted answers; returns the steps it asked for and how it
    /// ended.
    fn run(
        mut p: Placement,
        proofs: &[ProofAnswer],
        pushes: &[PushAnswer],
    ) -> (Vec<PlaceStep>, PlaceEnd) {
        let (mut proofs, mut pushes) = (proofs.iter(), pushes.iter());
        let mut steps = Vec::new();
        loop {
            let step = p.poll();
            steps.push(step);
            match step {
                PlaceStep::Prove => match proofs.next() {
                    Some(a) => p.handle_proof(*a),
                    None => panic!("a proof nobody scripted, after {steps:?}"),
                },
                PlaceStep::Push => match pushes.next() {
                    Some(a) => p.handle_push(*a),
                    None => panic!("a push nobody scripted, after {steps:?}"),
                },
                PlaceStep::Durable => {}
                PlaceStep::Done(end) => return (steps, end),
            }
        }
    }

    use PlaceStep::{Durable, Prove, Push};

    #[test]
    fn a_write_counts_a_stored_copy_before_its_proof() {
        let (steps, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Proven],
            &[PushAnswer::Stored],
        );
        assert_eq!(&steps[..3], &[Push, Durable, Prove]);
        assert_eq!(end, PlaceEnd::Verified { moved: true });
    }

    /// A target that answered `Stored` counted at once (its word, given after its fsync,
    /// is what a write waits for); if its proof then says it lacks the copy, the placement
    /// fails and the planner does not count the target as a holder.
    #[test]
    fn a_stored_copy_that_fails_its_proof_counted_for_the_write_but_not_for_repair() {
        let (steps, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Lacks],
            &[PushAnswer::Stored],
        );
        assert_eq!(&steps[..3], &[Push, Durable, Prove]);
        assert_eq!(end, PlaceEnd::Failed(TransferFault::Declined));
        assert_ne!(end.outcome(), TransferOutcome::Verified);
    }

    #[test]
    fn a_held_copy_counts_only_once_proven() {
        let (steps, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Proven],
            &[PushAnswer::Held],
        );
        assert_eq!(&steps[..3], &[Push, Prove, Durable]);
        assert_eq!(end, PlaceEnd::Verified { moved: false });
        // A claim that fails its proof never counts.
        let (steps, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Failed(TransferFault::BadAnswer)],
            &[PushAnswer::Held],
        );
        assert!(!steps.contains(&Durable), "{steps:?}");
        assert_eq!(end, PlaceEnd::Failed(TransferFault::BadAnswer));
        // Nor does one the target then says it lacks: its copy went (found rotten by the
        // proof); it is sent ours, once, which counts when stored.
        let (steps, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Lacks, ProofAnswer::Proven],
            &[PushAnswer::Held, PushAnswer::Stored],
        );
        assert_eq!(&steps[..5], &[Push, Prove, Push, Durable, Prove]);
        assert_eq!(end, PlaceEnd::Verified { moved: true });
        // Nor one that, sent ours after its claim, says another pusher is sending it: the
        // write does not ask it again.
        let busy = PushAnswer::Failed(TransferFault::InProgress);
        let (_, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Lacks],
            &[PushAnswer::Held, busy],
        );
        assert_eq!(end, PlaceEnd::Failed(TransferFault::Declined));
        assert_eq!(end.result(), PlaceResult::Done);
        // A target that keeps claiming what it then lacks is not pushed to for ever.
        let (steps, end) = run(
            Placement::push_first(),
            &[ProofAnswer::Lacks, ProofAnswer::Lacks],
            &[PushAnswer::Held, PushAnswer::Held],
        );
        assert!(!steps.contains(&Durable), "{steps:?}");
        assert_eq!(end, PlaceEnd::Failed(TransferFault::Declined));
        // A verify-only placement never pushes.
        let (steps, end) = run(Placement::prove_first(false), &[ProofAnswer::Lacks], &[]);
        assert!(!steps.contains(&Push), "{steps:?}");
        assert_eq!(end, PlaceEnd::Absent);
    }

    #[test]
    fn repair_proves_first_and_pushes_only_to_a_target_that_lacks_it() {
        let (steps, end) = run(Placement::prove_first(true), &[ProofAnswer::Proven], &[]);
        assert_eq!(&steps[..], &[Prove, Durable, PlaceStep::Done(end)]);
        assert_eq!(end, PlaceEnd::Verified { moved: false });

        let (steps, end) = run(
            Placement::prove_first(true),
            &[ProofAnswer::Lacks, ProofAnswer::Proven],
            &[PushAnswer::Stored],
        );
        assert_eq!(&steps[..4], &[Prove, Push, Durable, Prove]);
        assert_eq!(end, PlaceEnd::Verified { moved: true });

        // A verify-only transfer reports the absence; a refusal or silence is never pushed to.
        let (_, end) = run(Placement::prove_first(false), &[ProofAnswer::Lacks], &[]);
        assert_eq!(end, PlaceEnd::Absent);
        for fault in [SILENT, TransferFault::Declined] {
            let (steps, end) = run(
                Placement::prove_first(true),
                &[ProofAnswer::Failed(fault)],
                &[],
            );
            assert!(!steps.contains(&Push), "{steps:?}");
            assert_eq!(end, PlaceEnd::Failed(fault));
        }
    }

    #[test]
    fn a_failed_push_ends_it_and_a_busy_target_is_asked_again_by_the_write() {
        let busy = PushAnswer::Failed(TransferFault::InProgress);
        let (steps, end) = run(Placement::push_first(), &[], &[busy]);
        assert!(!steps.contains(&Prove), "{steps:?}");
        assert_eq!(end.result(), PlaceResult::Busy);
        assert_eq!(
            end.outcome(),
            TransferOutcome::Failed(TransferFault::InProgress)
        );
        let (_, end) = run(Placement::push_first(), &[], &[PushAnswer::Failed(SILENT)]);
        assert_eq!(end.result(), PlaceResult::Done);
    }

    #[test]
    fn answers_out_of_turn_are_ignored() {
        let mut p = Placement::push_first();
        p.handle_proof(ProofAnswer::Proven);
        assert_eq!(p.poll(), Push, "a proof nobody asked for proves nothing");
        p.handle_push(PushAnswer::Held);
        p.handle_push(PushAnswer::Stored);
        assert_eq!(p.poll(), Prove, "a second push answer changes nothing");
    }
}
