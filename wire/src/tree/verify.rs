//! Verifying a slice that arrives as `Bytes` (frame bodies off the network) without moving
//! its bytes: a group that lies inside one fed piece is verified where it lies and handed
//! out as a `Bytes` view of that piece; only a node split across two pieces is gathered
//! (one copy of that node). Sans-IO, in the shape of [`crate::FrameDecoder`]: feed what
//! arrived, then poll until there is nothing more to take; "needs more bytes" is not an
//! error. At the end of the input [`SliceVerifier::finish`] says whether the slice was
//! whole (a truncated or over-long slice is refused there).
//!
//! Every byte handed out has verified against the object's id first (through
//! [`super::check::Checker`], the same rules as [`super::SliceDecoder`]).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::check::{Checker, Need, SliceError};
use super::{HEADER, Hash, PARENT};

/// Verifies the slice of `start..start+count` of the object `hash`, fed as `Bytes`, and
/// hands out the verified bytes of the range as views of what was fed (no copy).
///
/// Bounded: feed one piece, then call [`SliceVerifier::poll_verified`] until it returns
/// `Ok(None)`; the verifier then holds less than one node (16 KiB) beyond that piece.
pub struct SliceVerifier {
    hash: Hash,
    start: u64,
    count: u64,
    checker: Option<Checker>,
    input: Pieces,
    /// The first failure, returned again by every later call.
    failed: Option<SliceError>,
}

/// The fed bytes not consumed yet, in order.
#[derive(Default)]
struct Pieces {
    queue: VecDeque<Bytes>,
    buffered: usize,
}

impl Pieces {
    /// The next `n` bytes, if that many are here: a view of the front piece when it holds
    /// them all, else gathered into one buffer.
    fn take(&mut self, n: usize) -> Option<Bytes> {
        if self.buffered < n {
            return None;
        }
        if n == 0 {
            // The one group of an empty object.
            return Some(Bytes::new());
        }
        self.buffered -= n;
        let front = self.queue.front_mut()?;
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.queue.pop_front();
            }
            return Some(out);
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let front = self.queue.front_mut()?;
            let k = front.len().min(n - out.len());
            out.extend_from_slice(&front.split_to(k));
            if front.is_empty() {
                self.queue.pop_front();
            }
        }
        Some(out.freeze())
    }
}

impl SliceVerifier {
    /// A verifier of the slice of `start..start+count` of the object `hash`.
    pub fn new(hash: &Hash, start: u64, count: u64) -> SliceVerifier {
        SliceVerifier {
            hash: *hash,
            start,
            count,
            checker: None,
            input: Pieces::default(),
            failed: None,
        }
    }

    /// The object length the slice claims (authenticated once the final group verified).
    pub fn claimed_len(&self) -> Option<u64> {
        self.checker.as_ref().map(Checker::len)
    }

    /// Takes the next bytes of the slice as they arrived.
    pub fn feed(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.input.buffered += bytes.len();
            self.input.queue.push_back(bytes);
        }
    }

    /// The next verified bytes of the range (a group's part in it, or all of a group);
    /// `Ok(None)` when what was fed holds no further whole node (feed more, or
    /// [`SliceVerifier::finish`] at the end of the input). After an error every call fails.
    pub fn poll_verified(&mut self) -> Result<Option<Bytes>, SliceError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.advance();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn advance(&mut self) -> Result<Option<Bytes>, SliceError> {
        let checker = match &mut self.checker {
            Some(c) => c,
            None => {
                let Some(header) = self.input.take(HEADER) else {
                    return Ok(None);
                };
                let mut len = [0u8; HEADER];
                len.copy_from_slice(&header);
                self.checker
                    .insert(Checker::new(&self.hash, self.start, self.count, len)?)
            }
        };
        loop {
            match checker.need()? {
                None => return Ok(None),
                Some(Need::Parent) => {
                    let Some(node) = self.input.take(PARENT) else {
                        return Ok(None);
                    };
                    let mut pair = [0u8; PARENT];
                    pair.copy_from_slice(&node);
                    checker.parent(&pair)?;
                }
                Some(Need::Group { len }) => {
                    let Some(group) = self.input.take(len) else {
                        return Ok(None);
                    };
                    let keep = checker.group(&group)?;
                    if !keep.is_empty() {
                        return Ok(Some(group.slice(keep)));
                    }
                }
            }
        }
    }

    /// Whether every node of the slice verified (the whole range was handed out).
    pub fn is_done(&self) -> bool {
        self.failed.is_none() && self.checker.as_ref().is_some_and(Checker::is_done)
    }

    /// Called at the end of the input: `Ok` only if the slice was whole and nothing
    /// followed it; else why not ([`SliceError::Truncated`], [`SliceError::Trailing`], or
    /// the failure seen earlier).
    pub fn finish(&self) -> Result<(), SliceError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.is_done() {
            return Err(SliceError::Truncated);
        }
        if self.input.buffered > 0 {
            return Err(SliceError::Trailing {
                bytes: self.input.buffered,
            });
        }
        Ok(())
    }
}
