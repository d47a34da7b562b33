//! The tree's tests: hashing against BLAKE3, slices round-tripping through both readers,
//! and every way a slice can lie.

use std::io::{self, Cursor};

use bytes::Bytes;

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

/// What a [`SliceVerifier`] makes of `s` fed in pieces of `piece` bytes: the verified bytes
/// it handed out, and its verdict (the first error, or `finish`'s).
fn verify(
    s: &[u8],
    h: &Hash,
    start: u64,
    count: u64,
    piece: usize,
) -> (Vec<u8>, Result<(), SliceError>) {
    let all = Bytes::copy_from_slice(s);
    let mut v = SliceVerifier::new(h, start, count);
    let mut out = Vec::new();
    for at in (0..s.len()).step_by(piece.max(1)) {
        v.feed(all.slice(at..(at + piece).min(s.len())));
        loop {
            match v.poll_verified() {
                Ok(Some(b)) => {
                    assert!(!b.is_empty());
                    out.extend_from_slice(&b);
                }
                Ok(None) => break,
                Err(e) => {
                    // Failed for good.
                    assert_eq!(v.poll_verified(), Err(e.clone()));
                    assert_eq!(v.finish(), Err(e.clone()));
                    return (out, Err(e));
                }
            }
        }
    }
    (out, v.finish())
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

/// The ranges every size class is tried with: all of it, the first and last byte, the
/// second half, a third from a third in.
fn ranges(l: u64) -> Vec<(u64, u64)> {
    let mut ranges = vec![(0, l)];
    if l > 0 {
        ranges.extend([(0, 1), (l - 1, 1), (l / 2, l - l / 2), (l / 3, l / 3)]);
    }
    ranges
}

/// Every range of every size class round-trips through both readers (the verifier fed in
/// pieces of every size that matters: bytes, parents, groups, frames, all at once).
#[test]
fn every_range_round_trips_verified() {
    for len in SIZES {
        let d = data(len);
        let (h, ob) = outboard(&d);
        let l = len as u64;
        for (s, c) in ranges(l) {
            let enc = slice(&d, &ob, s, c);
            let want = &d[s as usize..(s + c) as usize];
            let got = decode(&enc, &h, s, c).unwrap_or_else(|e| panic!("{len} {s}+{c}: {e}"));
            assert!(got == want, "{len} {s}+{c}");
            for piece in [1, 7, 64, 1000, 16_384, 65_536, enc.len()] {
                let (got, verdict) = verify(&enc, &h, s, c, piece);
                assert_eq!(verdict, Ok(()), "{len} {s}+{c} in pieces of {piece}");
                assert!(got == want, "{len} {s}+{c} in pieces of {piece}");
            }
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

/// An encoder read in reads of every size (smaller than a node, exactly a group, more than
/// one: the reads that take a group straight from the data and those that go through the
/// encoder's buffer, mixed) gives the same slice; a decoder reading straight from an
/// encoder, as the store reads its files, gives the range through `read` and in pieces.
#[test]
fn an_encoder_read_in_any_sizes_gives_the_same_slice() {
    for len in [0usize, 1, 16_384, 16_385, 100_000, (1 << 20) + 16_385] {
        let d = data(len);
        let (h, ob) = outboard(&d);
        let l = len as u64;
        let encoder = |s, c| {
            SliceEncoder::new(Cursor::new(d.clone()), Cursor::new(ob.clone()), l, s, c)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        for (s, c) in ranges(l) {
            let whole = slice(&d, &ob, s, c);
            let want = &d[s as usize..(s + c) as usize];
            for size in [1, 7, 16_383, 16_384, 16_385, 40_000, 1 << 20] {
                let mut enc = encoder(s, c);
                let (mut got, mut buf) = (Vec::new(), vec![0u8; size]);
                loop {
                    match enc.read(&mut buf).unwrap_or_else(|e| panic!("{e}")) {
                        0 => break,
                        n => got.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(got == whole, "{len} {s}+{c} in reads of {size}");
                // Through the encoder's `Read`, and in step with it.
                let decoders = || {
                    [
                        SliceDecoder::new(encoder(s, c), &h, s, c),
                        SliceDecoder::of_encoder(encoder(s, c), &h, s, c),
                    ]
                };
                for mut dec in decoders() {
                    let mut got = Vec::new();
                    dec.read_to_end(&mut got)
                        .unwrap_or_else(|e| panic!("{len} {s}+{c}: {e}"));
                    assert!(got == want, "{len} {s}+{c} decoded from the encoder");
                }
                for mut dec in decoders() {
                    let mut got = Vec::new();
                    while let Some(piece) = dec
                        .next_verified(size)
                        .unwrap_or_else(|e| panic!("{len} {s}+{c}: {e}"))
                    {
                        got.extend_from_slice(&piece);
                    }
                    assert!(got == want, "{len} {s}+{c} in pieces of {size}");
                }
            }
        }
    }
}

/// After a parent or group fails, the decoder stays failed: later calls must not go on
/// reading nodes against expectations that no longer line up with the walk.
#[test]
fn a_failed_decoder_stays_failed() {
    let d = data(200_000);
    let (h, ob) = outboard(&d);
    let whole = slice(&d, &ob, 0, 200_000);
    // The first parent (just after the header), a parent deeper down, a group.
    for at in [HEADER + 3, HEADER + PARENT + 40, whole.len() - 100] {
        let mut bad = whole.clone();
        bad[at] ^= 0x80;
        let mut dec = SliceDecoder::new(Cursor::new(bad), &h, 0, 200_000);
        let mut failed = false;
        for _ in 0..40 {
            match dec.next_verified(1) {
                Ok(Some(_)) => assert!(!failed, "bytes handed out after a failure (flip at {at})"),
                Ok(None) => {
                    assert!(failed, "flip at {at} passed");
                    panic!("the decoder ended cleanly after a failure (flip at {at})");
                }
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "flip at {at}");
                    failed = true;
                }
            }
        }
        assert!(failed, "flip at {at} passed");
    }
}

/// Slices whose header claims a length no slice of 200 bytes can hold, or too large to be
/// an object at all: both readers must refuse them.
fn impossible_claims() -> impl Iterator<Item = Vec<u8>> {
    [u64::MAX, LEN_MAX + 1, 5].into_iter().map(|claim| {
        let mut s = claim.to_le_bytes().to_vec();
        s.extend_from_slice(&[0u8; 200]);
        s
    })
}

#[test]
fn impossible_claims_are_refused_without_panic() {
    let h = [0u8; 32];
    for s in impossible_claims() {
        assert!(decode(&s, &h, 10, 10).is_err());
    }
}

/// Flips one byte in every class of position a slice has (the length header, each half of
/// a parent, the first, a middle and the last byte of each group, the short final group),
/// for whole and partial ranges: both readers fail, with the typed error, and whatever they
/// handed out before failing is the object's true bytes at the true offsets.
#[test]
fn a_flipped_byte_in_any_position_class_fails_both_readers() {
    let d = data(100_000);
    let (h, ob) = outboard(&d);
    for (s, c) in [(0u64, 100_000u64), (20_000, 50_000), (99_999, 1)] {
        let enc = slice(&d, &ob, s, c);
        let want = &d[s as usize..(s + c) as usize];
        // Node boundaries of this slice, from the walk itself.
        let mut positions: Vec<usize> = (0..HEADER).collect();
        let mut at = HEADER;
        let mut walk = walk::Walk::new(d.len() as u64, s, s + c);
        while let Some(node) = walk.next() {
            let n = match node {
                walk::Node::Parent { .. } => PARENT,
                walk::Node::Group { len, .. } => len as usize,
            };
            positions.extend([at, at + n / 2 - 1, at + n / 2, at + n - 1]);
            at += n;
        }
        assert_eq!(at, enc.len());
        for i in positions {
            let mut bad = enc.clone();
            bad[i] ^= 0x01;
            // A partial range that does not reach the final group cannot authenticate the
            // length: a changed length may pass there, as long as the bytes are true. A
            // longer length than the slice holds reads as a truncated slice.
            let header_may_pass = i < HEADER && s + c < d.len() as u64;
            let truncated_ok = i < HEADER;
            for piece in [1000, 65_536] {
                let (got, verdict) = verify(&bad, &h, s, c, piece);
                assert!(want.starts_with(&got), "{s}+{c}: flip at {i}: untrue bytes");
                if (header_may_pass && verdict.is_ok())
                    || (truncated_ok && verdict == Err(SliceError::Truncated))
                {
                    continue;
                }
                assert!(
                    matches!(
                        verdict,
                        Err(SliceError::Parent { .. }
                            | SliceError::Group { .. }
                            | SliceError::LengthShort { .. }
                            | SliceError::LengthImpossible { .. })
                    ),
                    "{s}+{c}: flip at {i}: {verdict:?}"
                );
            }
            let mut dec = SliceDecoder::new(Cursor::new(bad), &h, s, c);
            let mut got = Vec::new();
            let verdict = loop {
                match dec.next_verified(65_536) {
                    Ok(Some(p)) => got.extend_from_slice(&p),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            assert!(want.starts_with(&got), "{s}+{c}: flip at {i}: untrue bytes");
            match verdict {
                Ok(()) => assert!(header_may_pass, "{s}+{c}: flip at {i} passed"),
                Err(e) if truncated_ok && e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "flip at {i}");
                    assert!(e.into_inner().is_some_and(|e| e.is::<SliceError>()));
                }
            }
        }
    }
}

#[test]
fn a_truncated_or_extended_slice_is_refused_by_the_verifier() {
    let d = data(100_000);
    let (h, ob) = outboard(&d);
    let whole = slice(&d, &ob, 0, 100_000);
    for cut in (0..whole.len()).step_by(331).chain([whole.len() - 1]) {
        let (got, verdict) = verify(&whole[..cut], &h, 0, 100_000, 4096);
        assert_eq!(verdict, Err(SliceError::Truncated), "cut at {cut}");
        assert!(d.starts_with(&got), "cut at {cut}: untrue bytes");
        // The Read side calls it an early end.
        let r = decode(&whole[..cut], &h, 0, 100_000);
        assert!(
            r.is_err_and(|e| e.kind() == io::ErrorKind::UnexpectedEof),
            "cut at {cut}"
        );
    }
    let mut longer = whole.clone();
    longer.extend_from_slice(&[0u8; 3]);
    let (got, verdict) = verify(&longer, &h, 0, 100_000, 65_536);
    assert_eq!(verdict, Err(SliceError::Trailing { bytes: 3 }));
    assert!(got == d, "the slice itself verified");
}

/// The point of the verifier: every byte it hands out is a view of what it was fed, never
/// a copy; a group split across two pieces comes out as two views.
#[test]
fn the_verifier_hands_out_views_of_what_it_was_fed() {
    let d = data(1 << 20);
    let (h, ob) = outboard(&d);
    let enc = Bytes::from(slice(&d, &ob, 0, 1 << 20));
    let span = enc.as_ptr() as usize..enc.as_ptr() as usize + enc.len();
    let mut v = SliceVerifier::new(&h, 0, 1 << 20);
    let (mut views, mut got) = (0, Vec::new());
    for at in (0..enc.len()).step_by(65_536) {
        v.feed(enc.slice(at..(at + 65_536).min(enc.len())));
        while let Some(b) = v.poll_verified().unwrap_or_else(|e| panic!("{e}")) {
            let p = b.as_ptr() as usize;
            assert!(
                span.contains(&p) && span.contains(&(p + b.len() - 1)),
                "a copy"
            );
            views += 1;
            got.extend_from_slice(&b);
        }
    }
    assert_eq!(v.finish(), Ok(()));
    assert!(got == d);
    // 64 groups, at most one split by each of the 16 piece boundaries.
    assert!((64..=80).contains(&views), "{views} views");
}

#[test]
fn the_verifier_refuses_impossible_claims_and_stays_failed() {
    let h = [0u8; 32];
    for s in impossible_claims() {
        let (got, verdict) = verify(&s, &h, 10, 10, 64);
        assert!(got.is_empty());
        assert!(
            matches!(
                verdict,
                Err(SliceError::LengthImpossible { .. } | SliceError::LengthShort { .. })
            ),
            "claim {:?}: {verdict:?}",
            &s[..8]
        );
    }
    // A wrong id: the first node fails, and so does every later poll (`verify` checks).
    let d = data(100_000);
    let (_, ob) = outboard(&d);
    let enc = slice(&d, &ob, 0, 100_000);
    let (got, verdict) = verify(&enc, &[7; 32], 0, 100_000, 100);
    assert!(got.is_empty());
    assert_eq!(verdict, Err(SliceError::Parent { start: 0 }));
}

/// `next_piece` produces the same slice as `Read`, in pieces of at most `max` bytes (one
/// node when a node alone is larger) cut between nodes: fed piece by piece, the verifier
/// never gathers a group across two pieces (every view it hands out lies in the piece
/// just fed), for every size class, range and piece size.
#[test]
fn pieces_are_cut_between_nodes() {
    for len in SIZES {
        let d = data(len);
        let (h, ob) = outboard(&d);
        let l = len as u64;
        for (s, c) in ranges(l) {
            let want = slice(&d, &ob, s, c);
            for max in [1, 100, 16_384, 16_384 + 64, 65_536, 256 << 10] {
                let mut enc =
                    SliceEncoder::new(Cursor::new(d.clone()), Cursor::new(ob.clone()), l, s, c)
                        .unwrap_or_else(|e| panic!("{e}"));
                let mut v = SliceVerifier::new(&h, s, c);
                let (mut joined, mut got) = (Vec::new(), Vec::new());
                while let Some(p) = enc.next_piece(max).unwrap_or_else(|e| panic!("{e}")) {
                    assert!(
                        p.len() <= max.max(GROUP as usize),
                        "{len} {s}+{c}: a piece of {} for max {max}",
                        p.len()
                    );
                    joined.extend_from_slice(&p);
                    let span = p.as_ptr() as usize..p.as_ptr() as usize + p.len();
                    v.feed(p);
                    while let Some(b) = v.poll_verified().unwrap_or_else(|e| panic!("{e}")) {
                        let at = b.as_ptr() as usize;
                        assert!(
                            span.contains(&at) && span.contains(&(at + b.len() - 1)),
                            "{len} {s}+{c} max {max}: a group split across pieces"
                        );
                        got.extend_from_slice(&b);
                    }
                }
                assert!(joined == want, "{len} {s}+{c} max {max}: not the slice");
                assert_eq!(v.finish(), Ok(()), "{len} {s}+{c} max {max}");
                assert!(got == d[s as usize..(s + c) as usize], "{len} {s}+{c}");
            }
        }
    }
}

/// A `Read + Seek` that records the size of every read asked of it.
struct Asked {
    inner: Cursor<Vec<u8>>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
}

impl io::Read for Asked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf.len());
        self.inner.read(buf)
    }
}

impl io::Seek for Asked {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

/// `next_piece` asks the data for each group in one read of the whole group, so a file
/// behind a buffer of a group's size hands it over past the buffer (`std`'s `read_to_end`
/// asks 8 KiB at a time, and each such read is copied through the buffer).
#[test]
fn next_piece_reads_each_group_in_one_read() {
    let len = (1usize << 20) + 16_385;
    let d = data(len);
    let (h, ob) = outboard(&d);
    let l = len as u64;
    for (s, c) in ranges(l) {
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let input = Asked {
            inner: Cursor::new(d.clone()),
            asked: asked.clone(),
        };
        let mut enc = SliceEncoder::new(input, Cursor::new(ob.clone()), l, s, c)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut v = SliceVerifier::new(&h, s, c);
        while let Some(p) = enc.next_piece(256 << 10).unwrap_or_else(|e| panic!("{e}")) {
            v.feed(p);
            while v
                .poll_verified()
                .unwrap_or_else(|e| panic!("{e}"))
                .is_some()
            {}
        }
        assert_eq!(v.finish(), Ok(()), "{s}+{c}");
        // The groups the range touches, each its whole length (the object's last may be
        // short), and nothing else.
        let g = GROUP;
        let want: Vec<usize> = (s / g..(s + c).div_ceil(g))
            .map(|i| (l.min((i + 1) * g) - i * g) as usize)
            .collect();
        let asked = asked.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(*asked, want, "{s}+{c}: the reads asked of the data");
    }
}

/// A data file shorter than its object (cut inside a group): `next_piece` fails with
/// `UnexpectedEof`, which the store reads as a copy that is not the object's.
#[test]
fn next_piece_of_a_short_file_fails_as_unexpected_eof() {
    let len = 100_000usize;
    let d = data(len);
    let (_, ob) = outboard(&d);
    let short = d[..len - 5_000].to_vec();
    let mut enc = SliceEncoder::new(
        Cursor::new(short),
        Cursor::new(ob),
        len as u64,
        0,
        len as u64,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = loop {
        match enc.next_piece(256 << 10) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a short file gave the whole slice"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}
