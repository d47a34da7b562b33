//! The pre-order walk over the nodes of a slice: which parents and groups a slice of a
//! byte range holds, in the order they travel. The encoder ([`super::SliceEncoder`]) and
//! the verifying side ([`super::check::Checker`]) both follow it, so they cannot disagree
//! on the order.

use std::io;

use super::{GROUP, groups, left_len};

/// One node of a traversal: a parent (its pre-order index in the outboard) or a group.
#[derive(Debug, Clone, Copy)]
pub(super) enum Node {
    Parent {
        start: u64,
        len: u64,
        index: u64,
        root: bool,
    },
    Group {
        start: u64,
        len: u64,
        root: bool,
    },
}

/// The pre-order traversal of the nodes a slice of `start..end` holds, over an object of
/// `len` bytes: parents whose subtree overlaps the range, and the groups it overlaps.
pub(super) struct Walk {
    stack: Vec<Node>,
    start: u64,
    end: u64,
}

impl Walk {
    pub(super) fn new(len: u64, start: u64, end: u64) -> Walk {
        let top = if len <= GROUP {
            Node::Group {
                start: 0,
                len,
                root: true,
            }
        } else {
            Node::Parent {
                start: 0,
                len,
                index: 0,
                root: true,
            }
        };
        Walk {
            stack: vec![top],
            start,
            end,
        }
    }

    pub(super) fn overlaps(&self, s: u64, l: u64) -> bool {
        // An empty range still walks to the node that holds its position.
        s < self.end.max(self.start + 1) && self.start < s + l.max(1)
    }

    fn child(start: u64, len: u64, index: u64) -> Node {
        if len <= GROUP {
            Node::Group {
                start,
                len,
                root: false,
            }
        } else {
            Node::Parent {
                start,
                len,
                index,
                root: false,
            }
        }
    }

    pub(super) fn next(&mut self) -> Option<Node> {
        let node = self.stack.pop()?;
        if let Node::Parent {
            start, len, index, ..
        } = node
        {
            let l = left_len(len);
            let right = Walk::child(start + l, len - l, index + groups(l));
            let left = Walk::child(start, l, index + 1);
            if self.overlaps(start + l, len - l) {
                self.stack.push(right);
            }
            if self.overlaps(start, l) {
                self.stack.push(left);
            }
        }
        Some(node)
    }

    /// The node [`Walk::next`] returns next, without moving on.
    pub(super) fn peek(&self) -> Option<&Node> {
        self.stack.last()
    }

    /// Whether the walk has visited every node.
    pub(super) fn is_done(&self) -> bool {
        self.stack.is_empty()
    }
}

/// Checks a requested range against an object length (the caller's mistake, so
/// `InvalidInput`); returns the range's end.
pub(super) fn check_range(len: u64, start: u64, count: u64) -> io::Result<u64> {
    let end = start
        .checked_add(count)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range overflows"))?;
    if end > len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range past the end of the object",
        ));
    }
    Ok(end)
}
