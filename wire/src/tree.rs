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
//! [`SliceEncoder`] produces a slice from an object's bytes and outboard (both seekable);
//! [`SliceDecoder`] reads a slice and yields only bytes that verified, failing with
//! `InvalidData` at the first group or parent that does not.

use std::io::{self, Read, Seek, SeekFrom};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

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
fn left_len(len: u64) -> u64 {
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
fn group_cv(offset: u64, data: &[u8], root: bool) -> ChainingValue {
    if root {
        return *blake3::hash(data).as_bytes();
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

fn parent_cv(left: &ChainingValue, right: &ChainingValue, root: bool) -> ChainingValue {
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
            // A full group is hashed only once more bytes follow: the last group of an
            // object of one group is the root and is hashed differently.
            if room == 0 {
                let offset = self.leaves.len() as u64 * GROUP;
                self.leaves.push(group_cv(offset, &self.pending, false));
                self.pending.clear();
                continue;
            }
            if self.pending.is_empty() && data.len() > GROUP as usize {
                // Whole groups straight from the input, without a copy.
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
        let offset = self.leaves.len() as u64 * GROUP;
        self.leaves.push(group_cv(offset, &self.pending, single));
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

/// One node of a traversal: a parent (its pre-order index in the outboard) or a group.
#[derive(Debug, Clone, Copy)]
enum Node {
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
struct Walk {
    stack: Vec<Node>,
    start: u64,
    end: u64,
}

impl Walk {
    fn new(len: u64, start: u64, end: u64) -> Walk {
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

    fn overlaps(&self, s: u64, l: u64) -> bool {
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

    fn next(&mut self) -> Option<Node> {
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
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Checks a requested range against an object length.
fn check_range(len: u64, start: u64, count: u64) -> io::Result<u64> {
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

/// Produces the slice of `start..start+count` of an object from its bytes and outboard.
pub struct SliceEncoder {
    data: Box<dyn ReadSeek>,
    outboard: Box<dyn ReadSeek>,
    /// Where each reader stands, so sequential reads do not seek (a seek drops a
    /// `BufReader`'s buffer).
    data_at: Option<u64>,
    outboard_at: Option<u64>,
    len: u64,
    walk: Walk,
    /// Bytes produced and not yet read out.
    buf: Vec<u8>,
    pos: usize,
    header_sent: bool,
}

impl SliceEncoder {
    /// An encoder for `start..start+count` of an object of `len` bytes.
    pub fn new(
        data: impl ReadSeek + 'static,
        outboard: impl ReadSeek + 'static,
        len: u64,
        start: u64,
        count: u64,
    ) -> io::Result<SliceEncoder> {
        let end = check_range(len, start, count)?;
        Ok(SliceEncoder {
            data: Box::new(data),
            outboard: Box::new(outboard),
            data_at: None,
            outboard_at: None,
            len,
            walk: Walk::new(len, start, end),
            buf: Vec::new(),
            pos: 0,
            header_sent: false,
        })
    }

    /// Fills `buf` with the next piece of the slice; false at the end.
    fn produce(&mut self) -> io::Result<bool> {
        self.buf.clear();
        self.pos = 0;
        if !self.header_sent {
            self.header_sent = true;
            self.buf.extend_from_slice(&self.len.to_le_bytes());
            return Ok(true);
        }
        match self.walk.next() {
            None => Ok(false),
            Some(Node::Parent { index, .. }) => {
                let at = index * PARENT as u64;
                if self.outboard_at != Some(at) {
                    self.outboard.seek(SeekFrom::Start(at))?;
                }
                self.outboard_at = None;
                self.buf.resize(PARENT, 0);
                self.outboard.read_exact(&mut self.buf)?;
                self.outboard_at = Some(at + PARENT as u64);
                Ok(true)
            }
            Some(Node::Group { start, len, .. }) => {
                if self.data_at != Some(start) {
                    self.data.seek(SeekFrom::Start(start))?;
                }
                self.data_at = None;
                self.buf.resize(len as usize, 0);
                self.data.read_exact(&mut self.buf)?;
                self.data_at = Some(start + len);
                Ok(true)
            }
        }
    }
}

impl Read for SliceEncoder {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if !self.produce()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Reads a slice of `start..start+count` of the object `hash` and yields its verified
/// bytes; `InvalidData` at the first parent or group that does not verify (or a length
/// claim that cannot be), `UnexpectedEof` if the slice ends early.
pub struct SliceDecoder {
    input: Box<dyn Read + Send>,
    hash: Hash,
    start: u64,
    count: u64,
    walk: Option<Walk>,
    /// Expected chaining values of the nodes the walk will visit, in visiting order.
    expected: Vec<ChainingValue>,
    buf: Vec<u8>,
    pos: usize,
    len: Option<u64>,
}

impl SliceDecoder {
    /// A decoder of the slice of `start..start+count` of the object `hash`.
    pub fn new(
        input: impl Read + Send + 'static,
        hash: &Hash,
        start: u64,
        count: u64,
    ) -> SliceDecoder {
        SliceDecoder {
            input: Box::new(input),
            hash: *hash,
            start,
            count,
            walk: None,
            expected: Vec::new(),
            buf: Vec::new(),
            pos: 0,
            len: None,
        }
    }

    /// The object length the slice claims (authenticated once the final group verified).
    pub fn claimed_len(&self) -> Option<u64> {
        self.len
    }

    fn begin(&mut self) -> io::Result<()> {
        let mut header = [0u8; HEADER];
        self.input.read_exact(&mut header)?;
        let len = u64::from_le_bytes(header);
        if len > LEN_MAX {
            return Err(invalid("slice claims an impossible length"));
        }
        let end = check_range(len, self.start, self.count)
            .map_err(|_| invalid("slice claims a length short of the range"))?;
        self.len = Some(len);
        self.walk = Some(Walk::new(len, self.start, end));
        self.expected.push(self.hash);
        Ok(())
    }

    /// Verifies the next node; fills `buf` with the range's bytes of a group.
    fn step(&mut self) -> io::Result<bool> {
        self.buf.clear();
        self.pos = 0;
        let Some(walk) = self.walk.as_mut() else {
            return Ok(false);
        };
        let Some(node) = walk.next() else {
            return Ok(false);
        };
        let expected = self
            .expected
            .pop()
            .ok_or_else(|| invalid("slice walk out of step"))?;
        match node {
            Node::Parent {
                start, len, root, ..
            } => {
                let mut pair = [0u8; PARENT];
                self.input.read_exact(&mut pair)?;
                let mut left = [0u8; 32];
                let mut right = [0u8; 32];
                left.copy_from_slice(&pair[..32]);
                right.copy_from_slice(&pair[32..]);
                if parent_cv(&left, &right, root) != expected {
                    return Err(invalid("a parent node does not verify"));
                }
                // The walk pushed the children that overlap, right first: mirror it.
                let l = left_len(len);
                let walk = self.walk.as_ref().ok_or_else(|| invalid("no walk"))?;
                if walk.overlaps(start + l, len - l) {
                    self.expected.push(right);
                }
                if walk.overlaps(start, l) {
                    self.expected.push(left);
                }
                Ok(true)
            }
            Node::Group { start, len, root } => {
                // Read into the buffer kept from the last group (no allocation, no zeroing
                // once it has grown), verify in place, hand out the part in the range.
                self.buf.resize(len as usize, 0);
                self.input.read_exact(&mut self.buf)?;
                if group_cv(start, &self.buf, root) != expected {
                    self.buf.clear();
                    return Err(invalid("a group does not verify"));
                }
                let from = self.start.max(start) - start;
                let to = (self.start + self.count).min(start + len) - start;
                if from < to {
                    self.buf.truncate(to as usize);
                    self.pos = from as usize;
                } else {
                    self.buf.clear();
                }
                Ok(true)
            }
        }
    }
}

impl SliceDecoder {
    /// The next verified bytes of the range, as an owned buffer (a group's part in the
    /// range, or several groups up to `at_least` bytes), without the copy `read` makes;
    /// `None` at the end.
    pub fn next_verified(&mut self, at_least: usize) -> io::Result<Option<Vec<u8>>> {
        if self.len.is_none() {
            self.begin()?;
        }
        let mut out: Vec<u8> = Vec::new();
        loop {
            if self.pos < self.buf.len() {
                if out.is_empty() && self.pos == 0 && self.buf.len() >= at_least {
                    // A whole group: hand over the buffer itself.
                    let next = Vec::with_capacity(self.buf.capacity());
                    out = std::mem::replace(&mut self.buf, next);
                    return Ok(Some(out));
                }
                out.extend_from_slice(&self.buf[self.pos..]);
                self.pos = self.buf.len();
            }
            if out.len() >= at_least {
                return Ok(Some(out));
            }
            if !self.step()? {
                return Ok((!out.is_empty()).then_some(out));
            }
        }
    }
}

impl Read for SliceDecoder {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.len.is_none() {
            self.begin()?;
        }
        while self.pos == self.buf.len() {
            if !self.step()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    }

    const SIZES: [usize; 14] = [
        0,
        1,
        1023,
        1024,
        1025,
        16_383,
        16_384,
        16_385,
        32_768,
        32_769,
        49_152,
        100_000,
        1 << 20,
        (1 << 20) + 16_385,
    ];

    fn slice(d: &[u8], ob: &[u8], start: u64, count: u64) -> Vec<u8> {
        let mut enc = SliceEncoder::new(
            Cursor::new(d.to_vec()),
            Cursor::new(ob.to_vec()),
            d.len() as u64,
            start,
            count,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        enc.read_to_end(&mut out).unwrap_or_else(|e| panic!("{e}"));
        out
    }

    fn decode(s: &[u8], h: &Hash, start: u64, count: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SliceDecoder::new(Cursor::new(s.to_vec()), h, start, count).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn the_root_is_what_blake3_says_and_the_outboard_has_its_length() {
        for len in SIZES {
            let d = data(len);
            let (h, ob) = outboard(&d);
            assert_eq!(&h, blake3::hash(&d).as_bytes(), "len {len}");
            assert_eq!(ob.len() as u64, outboard_len(len as u64), "len {len}");
            // Fed in odd pieces, the same.
            let mut t = TreeHasher::new();
            for piece in d.chunks(7_777) {
                t.update(piece);
            }
            assert_eq!(t.finish(), (h, ob), "len {len} in pieces");
        }
    }

    #[test]
    fn every_range_round_trips_verified() {
        for len in SIZES {
            let d = data(len);
            let (h, ob) = outboard(&d);
            let l = len as u64;
            let mut ranges = vec![(0, l)];
            if l > 0 {
                ranges.extend([(0, 1), (l - 1, 1), (l / 2, l - l / 2), (l / 3, l / 3)]);
            }
            for (s, c) in ranges {
                let enc = slice(&d, &ob, s, c);
                let got = decode(&enc, &h, s, c).unwrap_or_else(|e| panic!("{len} {s}+{c}: {e}"));
                assert!(got == d[s as usize..(s + c) as usize], "{len} {s}+{c}");
            }
        }
    }

    #[test]
    fn any_flipped_byte_after_the_header_fails_and_the_tail_proves_the_length() {
        let d = data(100_000);
        let (h, ob) = outboard(&d);
        let whole = slice(&d, &ob, 0, 100_000);
        for i in (HEADER..whole.len()).step_by(997) {
            let mut bad = whole.clone();
            bad[i] ^= 1;
            let e = decode(&bad, &h, 0, 100_000);
            assert!(
                e.is_err_and(|e| e.kind() == io::ErrorKind::InvalidData),
                "flip at {i} passed"
            );
        }
        // A slice of the last byte under a wrong length fails, smaller or larger.
        let tail = slice(&d, &ob, 99_999, 1);
        for lie in [99_000u64, 99_999, 100_001, 200_000, 1 << 40] {
            let mut bad = tail.clone();
            bad[..8].copy_from_slice(&lie.to_le_bytes());
            let r = decode(&bad, &h, lie.saturating_sub(1).min(99_999), 1);
            assert!(r.is_err(), "length {lie} accepted");
        }
        assert!(decode(&tail, &h, 99_999, 1).is_ok());
        // A truncated slice is an early end, not a success.
        let r = decode(&whole[..whole.len() - 10], &h, 0, 100_000);
        assert!(r.is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof));
        // Another object's hash: nothing verifies.
        assert!(decode(&whole, &[7; 32], 0, 100_000).is_err());
    }

    #[test]
    fn owned_pieces_are_the_same_bytes() {
        let d = data(200_000);
        let (h, ob) = outboard(&d);
        for (s, c, at_least) in [
            (0u64, 200_000u64, 65_536usize),
            (5, 150_000, 1),
            (199_000, 1000, 16_384),
        ] {
            let enc = slice(&d, &ob, s, c);
            let mut dec = SliceDecoder::new(Cursor::new(enc), &h, s, c);
            let mut got = Vec::new();
            while let Some(piece) = dec
                .next_verified(at_least)
                .unwrap_or_else(|e| panic!("{e}"))
            {
                assert!(!piece.is_empty());
                got.extend_from_slice(&piece);
            }
            assert!(got == d[s as usize..(s + c) as usize], "{s}+{c}");
        }
    }

    #[test]
    fn impossible_claims_are_refused_without_panic() {
        let h = [0u8; 32];
        for claim in [u64::MAX, LEN_MAX + 1, 5] {
            let mut s = claim.to_le_bytes().to_vec();
            s.extend_from_slice(&[0u8; 200]);
            assert!(decode(&s, &h, 10, 10).is_err());
        }
    }
}

#[cfg(test)]
mod speed {
    use std::io::Cursor;
    use std::time::Instant;

    use super::*;

    /// `cargo test --release -p node --lib tree::speed -- --ignored --nocapture`: a quick
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
