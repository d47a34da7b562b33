//! The verifying side of a slice, without any I/O: given the slice's length header, it
//! names the node that comes next and checks each one handed to it against the value its
//! parent (or, at the top, the object's id) promised. Both readers of slices sit on it:
//! [`super::SliceDecoder`] (from a `Read`) and [`super::SliceVerifier`] (fed `Bytes`, no
//! copy), so the rules live in one place.
//!
//! Invariant: a byte range is reported as verified only after its group hashed to the
//! chaining value its verified parent named; after the first failure every call fails
//! again (the expectations no longer line up with the walk, so nothing later could be
//! trusted).

use std::ops::Range;

use blake3::hazmat::ChainingValue;

use super::walk::{Node, Walk};
use super::{GROUP, HEADER, Hash, LEN_MAX, PARENT, group_cv_parts, left_len, parent_cv};

/// Why a slice was refused. Every variant but [`SliceError::Truncated`] means the sender
/// lied (or the bytes were damaged); as an `io::Error` they are `InvalidData`, a truncation
/// `UnexpectedEof`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    /// The length header claims more than [`LEN_MAX`] bytes.
    #[error("slice claims an impossible length {len}")]
    LengthImpossible {
        /// The length claimed.
        len: u64,
    },
    /// The length header claims an object that ends before the requested range does.
    #[error("slice claims a length {len} short of the range")]
    LengthShort {
        /// The length claimed.
        len: u64,
    },
    /// A parent node does not hash to the value above it.
    #[error("the parent over bytes {start}.. does not verify")]
    Parent {
        /// Object offset where the parent's subtree starts.
        start: u64,
    },
    /// A group does not hash to the chaining value its parent names.
    #[error("the group at byte {start} does not verify")]
    Group {
        /// Object offset of the group.
        start: u64,
    },
    /// The slice ended before its last node.
    #[error("slice ends early")]
    Truncated,
    /// Bytes follow the slice's last node.
    #[error("{bytes} bytes after the end of the slice")]
    Trailing {
        /// How many (at least) were left over.
        bytes: usize,
    },
}

impl From<SliceError> for std::io::Error {
    fn from(e: SliceError) -> std::io::Error {
        let kind = match e {
            SliceError::Truncated => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// What a slice holds next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// A parent node: [`PARENT`] bytes.
    Parent,
    /// A group of `len` bytes.
    Group {
        /// Its length.
        len: usize,
    },
}

/// Checks the nodes of one slice in order (see the module doc).
pub(super) struct Checker {
    walk: Walk,
    /// Expected chaining values of the nodes the walk will visit, in visiting order.
    expected: Vec<ChainingValue>,
    /// The node [`Checker::need`] named, not checked yet, with its expected value.
    current: Option<(Node, ChainingValue)>,
    start: u64,
    end: u64,
    len: u64,
    failed: Option<SliceError>,
}

impl Checker {
    /// A checker for the slice of `start..start+count` of the object `hash`, whose length
    /// header said `header`.
    pub(super) fn new(
        hash: &Hash,
        start: u64,
        count: u64,
        header: [u8; HEADER],
    ) -> Result<Checker, SliceError> {
        let len = u64::from_le_bytes(header);
        if len > LEN_MAX {
            return Err(SliceError::LengthImpossible { len });
        }
        let end = start
            .checked_add(count)
            .filter(|&end| end <= len)
            .ok_or(SliceError::LengthShort { len })?;
        Ok(Checker {
            walk: Walk::new(len, start, end),
            expected: vec![*hash],
            current: None,
            start,
            end,
            len,
            failed: None,
        })
    }

    /// The object length the slice claims (authenticated once the final group verified).
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Whether every node verified.
    pub(super) fn is_done(&self) -> bool {
        self.failed.is_none() && self.current.is_none() && self.walk.is_done()
    }

    /// The node that comes next; `None` once every node verified.
    pub(super) fn need(&mut self) -> Result<Option<Need>, SliceError> {
        self.check_failed()?;
        if self.current.is_none() {
            let Some(node) = self.walk.next() else {
                return Ok(None);
            };
            // The walk and the expectations move in step (one value pushed per child the
            // walk will visit), so this only fails on a bug; refuse rather than panic.
            let Some(expected) = self.expected.pop() else {
                return self.fail(SliceError::Truncated);
            };
            self.current = Some((node, expected));
        }
        Ok(self.current.map(|(node, _)| match node {
            Node::Parent { .. } => Need::Parent,
            Node::Group { len, .. } => Need::Group { len: len as usize },
        }))
    }

    /// Checks the parent [`Checker::need`] named.
    pub(super) fn parent(&mut self, pair: &[u8; PARENT]) -> Result<(), SliceError> {
        self.check_failed()?;
        let Some((
            Node::Parent {
                start, len, root, ..
            },
            expected,
        )) = self.current.take()
        else {
            return self.fail(SliceError::Parent { start: 0 });
        };
        let mut left = [0u8; 32];
        let mut right = [0u8; 32];
        left.copy_from_slice(&pair[..32]);
        right.copy_from_slice(&pair[32..]);
        if parent_cv(&left, &right, root) != expected {
            return self.fail(SliceError::Parent { start });
        }
        // The walk pushed the children that overlap, right first: mirror it.
        let l = left_len(len);
        if self.walk.overlaps(start + l, len - l) {
            self.expected.push(right);
        }
        if self.walk.overlaps(start, l) {
            self.expected.push(left);
        }
        Ok(())
    }

    /// Checks the group [`Checker::need`] named (all of its bytes, in one or more parts as
    /// they arrived); returns the part of the group inside the requested range, as offsets
    /// into the group (empty for the group an empty range names).
    pub(super) fn group<'a>(
        &mut self,
        parts: impl IntoIterator<Item = &'a [u8]> + Clone,
    ) -> Result<Range<usize>, SliceError> {
        self.check_failed()?;
        let Some((Node::Group { start, len, root }, expected)) = self.current.take() else {
            return self.fail(SliceError::Group { start: 0 });
        };
        debug_assert!(len <= GROUP);
        let got: u64 = parts.clone().into_iter().map(|p| p.len() as u64).sum();
        if got != len || group_cv_parts(start, parts, root) != expected {
            return self.fail(SliceError::Group { start });
        }
        let from = self.start.max(start) - start;
        let to = self.end.min(start + len).saturating_sub(start);
        Ok(if from < to {
            from as usize..to as usize
        } else {
            0..0
        })
    }

    fn check_failed(&self) -> Result<(), SliceError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Records the first failure and returns it.
    pub(super) fn fail<T>(&mut self, e: SliceError) -> Result<T, SliceError> {
        self.failed.get_or_insert(e.clone());
        Err(e)
    }
}
