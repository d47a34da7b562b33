//! Verifying a slice that arrives as `Bytes` (frame bodies off the network) without moving
//! its bytes: a group is verified and handed out as `Bytes` views of the pieces it was fed
//! in (two views for a group split across two pieces). A split group is copied once into a
//! reused buffer to be hashed (BLAKE3 runs fastest over whole runs of chunks), a split
//! header or parent gathered; what is handed out is never a copy.
//!
//! Sans-IO, in the shape of [`crate::FrameDecoder`]: feed what arrived, then poll until
//! there is nothing more to take; "needs more bytes" is not an error. At the end of the
//! input [`SliceVerifier::finish`] says whether the slice was whole (a truncated or
//! over-long slice is refused there).
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
/// `Ok(None)`; the verifier then holds less than one node (16 KiB) of what was fed.
pub struct SliceVerifier {
    hash: Hash,
    start: u64,
    count: u64,
    checker: Option<Checker>,
    input: Pieces,
    /// Verified views of one group not handed out yet.
    ready: VecDeque<Bytes>,
    /// Where a group split across pieces is put together to be hashed (reused).
    scratch: Vec<u8>,
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

    /// The next `n` bytes as views of the pieces they lie in, if that many are here.
    fn take_parts(&mut self, n: usize) -> Option<Parts> {
        if self.buffered < n {
            return None;
        }
        if n == 0 || self.queue.front().is_some_and(|f| f.len() >= n) {
            return self.take(n).map(Parts::One);
        }
        self.buffered -= n;
        let mut parts = Vec::new();
        let mut left = n;
        while left > 0 {
            let front = self.queue.front_mut()?;
            let k = front.len().min(left);
            parts.push(front.split_to(k));
            if front.is_empty() {
                self.queue.pop_front();
            }
            left -= k;
        }
        Some(Parts::Many(parts))
    }
}

/// A group's bytes as they arrived: in one piece (the common case, no allocation) or
/// split across several.
enum Parts {
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Parts {
    fn as_slice(&self) -> &[Bytes] {
        match self {
            Parts::One(b) => std::slice::from_ref(b),
            Parts::Many(v) => v,
        }
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
            ready: VecDeque::new(),
            scratch: Vec::new(),
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

    /// The next verified bytes of the range (a view of all or part of a group);
    /// `Ok(None)` when what was fed holds no further whole node (feed more, or
    /// [`SliceVerifier::finish`] at the end of the input). After an error every call fails.
    pub fn poll_verified(&mut self) -> Result<Option<Bytes>, SliceError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some(b) = self.ready.pop_front() {
            return Ok(Some(b));
        }
        let r = self.advance();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        Ok(r?.then(|| self.ready.pop_front()).flatten())
    }

    /// Verifies nodes until one group puts bytes in `ready` (true) or the input runs out.
    fn advance(&mut self) -> Result<bool, SliceError> {
        let checker = match &mut self.checker {
            Some(c) => c,
            None => {
                let Some(header) = self.input.take(HEADER) else {
                    return Ok(false);
                };
                let mut len = [0u8; HEADER];
                len.copy_from_slice(&header);
                self.checker
                    .insert(Checker::new(&self.hash, self.start, self.count, len)?)
            }
        };
        loop {
            match checker.need()? {
                None => return Ok(false),
                Some(Need::Parent) => {
                    let Some(node) = self.input.take(PARENT) else {
                        return Ok(false);
                    };
                    let mut pair = [0u8; PARENT];
                    pair.copy_from_slice(&node);
                    checker.parent(&pair)?;
                }
                Some(Need::Group { len }) => {
                    let Some(parts) = self.input.take_parts(len) else {
                        return Ok(false);
                    };
                    let parts = parts.as_slice();
                    let keep = match parts {
                        [one] => checker.group([&one[..]])?,
                        _ => {
                            // Hashed from one buffer: BLAKE3's wide path wants whole runs
                            // of chunks, and a piece boundary falls mid-chunk (hashing the
                            // parts where they lie measured 20 % slower than this copy).
                            self.scratch.clear();
                            self.scratch.reserve_exact(len);
                            for part in parts {
                                self.scratch.extend_from_slice(part);
                            }
                            checker.group([&self.scratch[..]])?
                        }
                    };
                    // Hand out each part's share of `keep`.
                    let mut at = 0;
                    for part in parts {
                        let from = keep.start.max(at);
                        let to = keep.end.min(at + part.len());
                        if from < to {
                            self.ready.push_back(part.slice(from - at..to - at));
                        }
                        at += part.len();
                    }
                    if !self.ready.is_empty() {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Whether every node of the slice verified (the whole range was handed out).
    pub fn is_done(&self) -> bool {
        self.failed.is_none()
            && self.ready.is_empty()
            && self.checker.as_ref().is_some_and(Checker::is_done)
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
