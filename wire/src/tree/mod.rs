//! Verified streaming in 16 KiB groups: the BLAKE3 tree of an object, cut at 16 KiB.
//!
//! An object's id is its BLAKE3 hash. BLAKE3 hashes 1 KiB chunks into a binary tree whose
//! shape depends only on the length, and every split above 16 KiB falls on a 16 KiB
//! boundary; so the tree above 16 KiB groups is the object's own tree, and a group's
//! chaining value (its subtree hash) is computed by BLAKE3's SIMD paths over 16 chunks at
//! once. We keep the parent nodes above the groups (64 bytes per group, 0.4 %) as the
//! object's outboard, in pre-order, and verify any byte range on its own: each parent on the
//! way down must hash to the value its parent names, each group to its chaining value, the
//! top to the id. (bao does the same with 1 KiB leaves, which leaves BLAKE3 one chunk at a
//! time: 15x slower than hashing the bytes.)
//!
//! A slice (what a holder sends for a range) is the object's length (8 bytes, little
//! endian) and then, in pre-order, every parent whose subtree overlaps the range and every
//! overlapping group, whole. The length is authenticated once the final group verifies
//! (the tree's shape follows from the length and the final group's bytes end exactly
//! there), which is why a request for the last byte proves an object's size.
//!
//! Layout:
//! - this file: the tree itself (group and parent values), [`TreeHasher`] and [`outboard`];
//! - `walk`: the pre-order walk over the nodes a slice of a range holds;
//! - `encode`: [`SliceEncoder`], a slice from an object's bytes and outboard (seekable);
//! - `check`: the rules of verification, no I/O, and [`SliceError`];
//! - `decode`: [`SliceDecoder`], verified bytes from a slice behind a `Read`;
//! - `verify`: [`SliceVerifier`], verified bytes from a slice fed as `Bytes`, without a
//!   copy (what a receiver that owns the frames should use).
//!
//! Both readers fail at the first group or parent that does not verify and yield only
//! bytes that did.

use std::io::{Read, Seek};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

mod check;
mod decode;
mod encode;
mod verify;
mod walk;

pub use check::SliceError;
pub use decode::SliceDecoder;
pub use encode::SliceEncoder;
pub use verify::SliceVerifier;

/// Bytes per group: the tree's leaves.
pub const GROUP: u64 = 16 * 1024;
/// Bytes per parent node in an outboard or a slice: two chaining values.
pub const PARENT: usize = 64;
/// Bytes of the length header that opens a slice.
pub const HEADER: usize = 8;
/// Largest object length a slice may claim (2^60 bytes); larger claims are refused.
pub const LEN_MAX: u64 = 1 << 60;

/// An object id (BLAKE3 hash).
pub type Hash = [u8; 32];

/// A seekable source of object bytes or outboard nodes.
pub trait ReadSeek: Read + Seek + Send {}

impl<T: Read + Seek + Send> ReadSeek for T {}

// The encoder and decoder take boxed readers, not generic ones: a generic type is compiled
// in the crate that names it, and the node's test builds are unoptimised; these loops are
// hot enough that it matters (the store's crash test ran 3x slower generic).

/// The length of the left subtree of a node covering `len` bytes (`len > GROUP`): the
/// largest power of two of chunks that leaves at least one byte on the right, as BLAKE3
/// has it.
pub(super) fn left_len(len: u64) -> u64 {
    len.div_ceil(2).next_power_of_two()
}

/// Groups (leaves) of an object of `len` bytes; an empty object has one empty group.
pub fn groups(len: u64) -> u64 {
    len.div_ceil(GROUP).max(1)
}

/// Bytes of the outboard of an object of `len` bytes.
pub fn outboard_len(len: u64) -> u64 {
    (groups(len) - 1) * PARENT as u64
}

/// The chaining value of the group of `data` that starts at `offset`; for the only group
/// of an object (`root`), the object's hash.
pub(super) fn group_cv(offset: u64, data: &[u8], root: bool) -> ChainingValue {
    group_cv_parts(offset, [data], root)
}

/// [`group_cv`] of a group that lies in several pieces (as it arrived), hashed where they
/// lie: BLAKE3 does not need the group contiguous, and keeps its wide SIMD path for every
/// whole run of chunks in a piece.
pub(super) fn group_cv_parts<'a>(
    offset: u64,
    parts: impl IntoIterator<Item = &'a [u8]>,
    root: bool,
) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    if !root {
        h.set_input_offset(offset);
    }
    for part in parts {
        h.update(part);
    }
    if root {
        *h.finalize().as_bytes()
    } else {
        h.finalize_non_root()
    }
}

pub(super) fn parent_cv(left: &ChainingValue, right: &ChainingValue, root: bool) -> ChainingValue {
    if root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

/// Hashes an object as it streams in, group by group, and builds its outboard at the end.
#[derive(Debug, Default)]
pub struct TreeHasher {
    /// Chaining values of the complete groups so far.
    leaves: Vec<ChainingValue>,
    /// The group being filled.
    pending: Vec<u8>,
    len: u64,
}

impl TreeHasher {
    /// A hasher for a new object.
    pub fn new() -> TreeHasher {
        TreeHasher::default()
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let room = GROUP as usize - self.pending.len();
            // A full group is hashed only once more bytes follow while it may be the
            // object's only group: that one is the root and is hashed differently.
            if room == 0 {
                let offset = self.leaves.len() as u64 * GROUP;
                self.leaves.push(group_cv(offset, &self.pending, false));
                self.pending.clear();
                continue;
            }
            let whole = data.len() > GROUP as usize
                || (data.len() == GROUP as usize && !self.leaves.is_empty());
            if self.pending.is_empty() && whole {
                // Whole groups straight from the input, without a copy (the last one too,
                // unless it may be the root).
                let offset = self.leaves.len() as u64 * GROUP;
                let (group, rest) = data.split_at(GROUP as usize);
                self.leaves.push(group_cv(offset, group, false));
                data = rest;
                continue;
            }
            let n = room.min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The object's hash and its outboard (parents in pre-order).
    pub fn finish(mut self) -> (Hash, Vec<u8>) {
        let single = self.leaves.is_empty();
        // An empty `pending` after whole groups: `update` hashed the last one already.
        if single || !self.pending.is_empty() {
            let offset = self.leaves.len() as u64 * GROUP;
            self.leaves.push(group_cv(offset, &self.pending, single));
        }
        if single {
            return (self.leaves[0], Vec::new());
        }
        let mut outboard = Vec::with_capacity(outboard_len(self.len) as usize);
        let root = build(&self.leaves, 0, self.len, true, &mut outboard);
        (root, outboard)
    }
}

/// Writes the parents of the subtree over `leaves` (covering `len` bytes from `start`) in
/// pre-order, returning its chaining value.
fn build(
    leaves: &[ChainingValue],
    start: u64,
    len: u64,
    root: bool,
    out: &mut Vec<u8>,
) -> ChainingValue {
    if len <= GROUP {
        return leaves[(start / GROUP) as usize];
    }
    let at = out.len();
    out.extend_from_slice(&[0u8; PARENT]);
    let l = left_len(len);
    let left = build(leaves, start, l, false, out);
    let right = build(leaves, start + l, len - l, false, out);
    out[at..at + 32].copy_from_slice(&left);
    out[at + 32..at + PARENT].copy_from_slice(&right);
    parent_cv(&left, &right, root)
}

/// The hash and outboard of `data` in one call.
pub fn outboard(data: &[u8]) -> (Hash, Vec<u8>) {
    let mut h = TreeHasher::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod speed {
    use std::io::Cursor;
    use std::time::Instant;

    use super::*;

    /// `cargo test --release -p wire --lib tree::speed -- --ignored --nocapture`: a quick
    /// look at verification against plain hashing (the benchmarks hold the real figures).
    #[test]
    #[ignore]
    fn verification_against_hashing() {
        let d: Vec<u8> = (0..64u32 << 20).map(|i| (i >> 3) as u8).collect();
        let t = Instant::now();
        let h = blake3::hash(&d);
        let hash_s = t.elapsed().as_secs_f64();
        let (root, ob) = outboard(&d);
        assert_eq!(&root, h.as_bytes());
        let mut enc = Vec::new();
        SliceEncoder::new(
            Cursor::new(d.clone()),
            Cursor::new(ob.clone()),
            d.len() as u64,
            0,
            d.len() as u64,
        )
        .and_then(|mut e| e.read_to_end(&mut enc))
        .unwrap_or_else(|e| panic!("{e}"));
        // Read out in 64 KiB pieces into one buffer, as the node streams.
        let t = Instant::now();
        let mut dec = SliceDecoder::new(Cursor::new(enc), &root, 0, d.len() as u64);
        let mut piece = vec![0u8; 64 << 10];
        let mut total = 0;
        loop {
            match dec.read(&mut piece) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(total, d.len());
        let verify_s = t.elapsed().as_secs_f64();
        println!(
            "64 MiB: blake3::hash {:.0} MiB/s, verify {:.0} MiB/s, ratio {:.2}",
            64.0 / hash_s,
            64.0 / verify_s,
            hash_s / verify_s
        );
    }
}
