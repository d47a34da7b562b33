//! Properties of verified slices (`wire::tree`) over random objects, ranges and ways of
//! cutting the input: both readers agree with the reference (the object's own bytes, its
//! id from `blake3::hash`, the slice from `SliceEncoder`), and with one byte of the slice
//! flipped anywhere they hand out nothing but true bytes. Proptest prints the failing
//! case (object length, seed of its bytes, range, piece size, flip position).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Cursor, Read};

use bytes::Bytes;
use proptest::prelude::*;
use wire::tree::{SliceDecoder, SliceEncoder, SliceError, SliceVerifier, TreeHasher, outboard};

/// `len` pseudo-random bytes from `seed` (xorshift).
fn object(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn encode(d: &[u8], ob: &[u8], start: u64, count: u64) -> Vec<u8> {
    let mut out = Vec::new();
    SliceEncoder::new(
        Cursor::new(d.to_vec()),
        Cursor::new(ob.to_vec()),
        d.len() as u64,
        start,
        count,
    )
    .and_then(|mut e| e.read_to_end(&mut out))
    .unwrap();
    out
}

/// The verifier's output for `s` fed in pieces of `piece`, and its verdict.
fn verify(s: &[u8], h: &[u8; 32], start: u64, count: u64, piece: usize) -> (Vec<u8>, bool) {
    let all = Bytes::copy_from_slice(s);
    let mut v = SliceVerifier::new(h, start, count);
    let mut out = Vec::new();
    for at in (0..s.len()).step_by(piece) {
        v.feed(all.slice(at..(at + piece).min(s.len())));
        loop {
            match v.poll_verified() {
                Ok(Some(b)) => out.extend_from_slice(&b),
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    let ok = v.finish().is_ok();
    (out, ok)
}

/// The decoder's output for `s` taken `at_least` bytes at a time, and its verdict.
fn decode(s: &[u8], h: &[u8; 32], start: u64, count: u64, at_least: usize) -> (Vec<u8>, bool) {
    let mut dec = SliceDecoder::new(Cursor::new(s.to_vec()), h, start, count);
    let mut out = Vec::new();
    loop {
        match dec.next_verified(at_least) {
            Ok(Some(p)) => out.extend_from_slice(&p),
            Ok(None) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// An object length, its seed, and a range in it (as fractions, scaled to the length).
fn case() -> impl Strategy<Value = (usize, u64, u64, u64)> {
    (
        prop_oneof![0usize..=40_000, 40_000usize..=300_000],
        any::<u64>(),
        0u64..=1000,
        0u64..=1000,
    )
        .prop_map(|(len, seed, a, b)| {
            let l = len as u64;
            let start = l * a.min(b) / 1000;
            let end = l * a.max(b) / 1000;
            (len, seed, start, end - start)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn both_readers_yield_the_range_and_agree_with_blake3(
        (len, seed, start, count) in case(),
        piece in prop_oneof![1usize..=100, 100usize..=70_000],
        at_least in 1usize..=100_000,
        cut in 1usize..=20_000,
    ) {
        let d = object(len, seed);
        let (h, ob) = outboard(&d);
        prop_assert_eq!(h, *blake3::hash(&d).as_bytes());
        // Any way of feeding the hasher gives the same id and outboard.
        let mut t = TreeHasher::new();
        for p in d.chunks(cut) {
            t.update(p);
        }
        prop_assert_eq!(t.finish(), (h, ob.clone()));
        let want = &d[start as usize..(start + count) as usize];
        let s = encode(&d, &ob, start, count);
        let (got, ok) = verify(&s, &h, start, count, piece);
        prop_assert!(ok);
        prop_assert!(got == want);
        let (got, ok) = decode(&s, &h, start, count, at_least);
        prop_assert!(ok);
        prop_assert!(got == want);
    }

    #[test]
    fn a_flipped_byte_never_yields_an_untrue_byte(
        (len, seed, start, count) in case(),
        piece in 1usize..=70_000,
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let d = object(len, seed);
        let (h, ob) = outboard(&d);
        let want = &d[start as usize..(start + count) as usize];
        let mut s = encode(&d, &ob, start, count);
        let at = flip.index(s.len());
        s[at] ^= 1 << bit;
        // Only the length header of a range short of the final group may change unnoticed
        // (the tree's shape above the range stays the same); any other flip fails.
        let may_pass = at < 8 && start + count < len as u64;
        for (got, ok) in [
            verify(&s, &h, start, count, piece),
            decode(&s, &h, start, count, piece),
        ] {
            prop_assert!(want.starts_with(&got), "untrue bytes, flip at {}", at);
            prop_assert!(!ok || (may_pass && got == want), "flip at {} passed", at);
        }
    }
}

#[test]
fn slice_errors_are_io_errors_of_the_right_kind() {
    let eof: std::io::Error = SliceError::Truncated.into();
    assert_eq!(eof.kind(), std::io::ErrorKind::UnexpectedEof);
    let bad: std::io::Error = SliceError::Group { start: 0 }.into();
    assert_eq!(bad.kind(), std::io::ErrorKind::InvalidData);
}
