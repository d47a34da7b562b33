//! The per-stream sequencing rules of OAP/1.
//!
//! Each request runs on its own bidirectional stream: the requester sends `REQ|START` …
//! `REQ|END`, the responder answers `RESP|START` … `RESP|END`, all with one `corr_id`. A
//! transport runs one [`SequenceChecker`] per direction it receives on; a violation gets a
//! 400 response where one can still be sent, then the stream is reset.

use crate::frame::{Flags, Frame};

/// Which kind of frames a direction of a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The responder's side receives `REQ` frames.
    Requests,
    /// The requester's side receives `RESP` frames.
    Responses,
}

/// A frame out of order on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// A RESP frame where a REQ was expected, or the other way round, or neither/both set.
    #[error("frame kind does not belong on this side of the stream")]
    WrongKind,
    /// The first frame of a direction lacks START (this includes END without START).
    #[error("first frame of the exchange lacks START")]
    MissingStart,
    /// A second START within one exchange.
    #[error("second START in one exchange")]
    SecondStart,
    /// A frame after END.
    #[error("frame after END")]
    AfterEnd,
    /// A frame whose `corr_id` differs from the exchange's.
    #[error("corr_id {got} does not match the exchange's {want}")]
    CorrIdMismatch {
        /// The exchange's id (from its START frame).
        want: u64,
        /// The frame's id.
        got: u64,
    },
    /// A capability on a frame without START (also a decode error; kept for frames built
    /// in memory).
    #[error("capability on a frame without START")]
    CapOnNonStart,
}

impl SequenceError {
    /// The stable name of the rule, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SequenceError::WrongKind => "wrong_kind",
            SequenceError::MissingStart => "missing_start",
            SequenceError::SecondStart => "second_start",
            SequenceError::AfterEnd => "after_end",
            SequenceError::CorrIdMismatch { .. } => "corr_id_mismatch",
            SequenceError::CapOnNonStart => "cap_on_non_start",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpectStart,
    ExpectMore { corr_id: u64 },
    Ended,
}

/// Checks the frames of one direction of one stream, in order.
#[derive(Debug, Clone)]
pub struct SequenceChecker {
    direction: Direction,
    phase: Phase,
}

impl SequenceChecker {
    /// A checker for a direction that has seen no frame yet.
    pub fn new(direction: Direction) -> SequenceChecker {
        SequenceChecker {
            direction,
            phase: Phase::ExpectStart,
        }
    }

    /// Whether END has been seen: the direction is complete.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Accepts the next frame of the direction or names the rule it breaks. After an error
    /// the checker stays where it was; the stream should be reset.
    pub fn check(&mut self, frame: &Frame) -> Result<(), SequenceError> {
        self.check_parts(frame.flags, frame.corr_id, !frame.cap.is_empty())
    }

    /// [`check`](Self::check) on the fields that matter, for callers without a `Frame`.
    pub fn check_parts(
        &mut self,
        flags: Flags,
        corr_id: u64,
        has_cap: bool,
    ) -> Result<(), SequenceError> {
        let (want, other) = match self.direction {
            Direction::Requests => (Flags::REQ, Flags::RESP),
            Direction::Responses => (Flags::RESP, Flags::REQ),
        };
        if !flags.contains(want) || flags.contains(other) {
            return Err(SequenceError::WrongKind);
        }
        let start = flags.contains(Flags::START);
        if has_cap && !start {
            return Err(SequenceError::CapOnNonStart);
        }
        let next = match self.phase {
            Phase::Ended => return Err(SequenceError::AfterEnd),
            Phase::ExpectStart if !start => return Err(SequenceError::MissingStart),
            Phase::ExpectStart => corr_id,
            Phase::ExpectMore { .. } if start => return Err(SequenceError::SecondStart),
            Phase::ExpectMore { corr_id: want } if want != corr_id => {
                return Err(SequenceError::CorrIdMismatch { want, got: corr_id });
            }
            Phase::ExpectMore { corr_id } => corr_id,
        };
        self.phase = if flags.contains(Flags::END) {
            Phase::Ended
        } else {
            Phase::ExpectMore { corr_id: next }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: Flags = Flags::REQ;
    const RESP: Flags = Flags::RESP;
    const S: Flags = Flags::START;
    const E: Flags = Flags::END;

    fn run(dir: Direction, frames: &[(Flags, u64, bool)]) -> Result<(), (usize, SequenceError)> {
        let mut c = SequenceChecker::new(dir);
        for (i, &(f, id, cap)) in frames.iter().enumerate() {
            c.check_parts(f, id, cap).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    #[test]
    fn one_frame_and_multi_frame_exchanges_pass() {
        assert_eq!(run(Direction::Requests, &[(REQ | S | E, 7, true)]), Ok(()));
        assert_eq!(
            run(
                Direction::Requests,
                &[(REQ | S, 7, true), (REQ, 7, false), (REQ | E, 7, false)]
            ),
            Ok(())
        );
        assert_eq!(
            run(
                Direction::Responses,
                &[(RESP | S, 9, false), (RESP | E, 9, false)]
            ),
            Ok(())
        );
    }

    #[test]
    fn each_invalid_sequence_is_named() {
        use SequenceError::*;
        type Case<'a> = (Direction, &'a [(Flags, u64, bool)], (usize, SequenceError));
        let cases: &[Case] = &[
            (
                Direction::Requests,
                &[(RESP | S | E, 1, false)],
                (0, WrongKind),
            ),
            (
                Direction::Responses,
                &[(REQ | S | E, 1, false)],
                (0, WrongKind),
            ),
            (
                Direction::Requests,
                &[(REQ | RESP | S, 1, false)],
                (0, WrongKind),
            ),
            (
                Direction::Requests,
                &[(REQ | E, 1, false)],
                (0, MissingStart),
            ),
            (Direction::Requests, &[(REQ, 1, false)], (0, MissingStart)),
            (
                Direction::Requests,
                &[(REQ | S, 1, false), (REQ | S, 1, false)],
                (1, SecondStart),
            ),
            (
                Direction::Requests,
                &[(REQ | S | E, 1, false), (REQ, 1, false)],
                (1, AfterEnd),
            ),
            (
                Direction::Requests,
                &[(REQ | S, 1, false), (REQ | E, 2, false)],
                (1, CorrIdMismatch { want: 1, got: 2 }),
            ),
            (
                Direction::Requests,
                &[(REQ | S, 1, false), (REQ | E, 1, true)],
                (1, CapOnNonStart),
            ),
        ];
        for (dir, frames, want) in cases {
            assert_eq!(run(*dir, frames), Err(*want), "{frames:?}");
        }
    }

    #[test]
    fn reasons_are_distinct() {
        use SequenceError::*;
        let all = [
            WrongKind,
            MissingStart,
            SecondStart,
            AfterEnd,
            CorrIdMismatch { want: 0, got: 1 },
            CapOnNonStart,
        ];
        let mut names: Vec<_> = all.iter().map(|e| e.reason()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
