//! Property tests of the OAP/1 codec: what the vectors pin down for a few dozen hand-picked
//! frames, these check for thousands of generated ones.
//!
//! - round trip: any valid frame (any known flags, a capability only with START, a valid
//!   status on RESP, payloads from empty to the 1 MiB cap, real zstd payloads under COMP)
//!   encodes and decodes back to itself, and a decoded frame re-encodes to the same bytes;
//! - robustness: arbitrary bytes, mutated frames and fuzzed headers never panic
//!   [`Frame::decode`] or [`FrameDecoder`], and the rule a broken header is refused for is
//!   the first one the contract lists (checked against an independent model of the rules);
//! - split independence: a stream of frames decodes to the same frames, and stops at the same
//!   error, whatever the split points of the reads, fed or written into the room `fill` gives;
//! - boundedness: the decoder never holds more than its cap, never gets stuck full, and
//!   refuses an oversized frame from its first four bytes.
//!
//! Case counts stay modest (frames can be 1 MiB) so the whole file runs in seconds in debug.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, Bytes};
use proptest::prelude::*;
use proptest::sample::Index;
use wire::{DecodeError, Flags, Frame, FrameDecoder, HEADER_LEN, Limits, MAX_FRAME, Status};

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

const STATUS_CODES: [u16; 10] = [200, 206, 400, 401, 403, 404, 413, 429, 500, 503];

/// `len` pseudo-random bytes from `seed` (xorshift, eight bytes a step): generating a 1 MiB
/// payload byte by byte through proptest would dominate the run time.
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// How big a generated payload is.
#[derive(Debug, Clone, Copy)]
enum PayloadSize {
    /// Exactly this many bytes.
    Exact(usize),
    /// This many bytes short of filling the frame to `MAX_FRAME`.
    NearMax(usize),
}

fn payload_size(max: usize) -> impl Strategy<Value = PayloadSize> {
    prop_oneof![
        8 => (0usize..=256).prop_map(PayloadSize::Exact),
        4 => (0usize..=max).prop_map(PayloadSize::Exact),
        1 => (0usize..4).prop_map(PayloadSize::NearMax),
    ]
}

/// Flags within `Flags::KNOWN`, without COMP (a COMP frame needs a real zstd payload).
fn plain_flags() -> impl Strategy<Value = Flags> {
    (0u16..=0xff).prop_map(|b| Flags::from_bits_truncate(b).without(Flags::COMP))
}

/// A code that is valid for `flags`: a status on RESP, anything otherwise (the decoder only
/// checks the code of responses).
fn code_for(flags: Flags, pick: Index, raw: u16) -> u16 {
    if flags.contains(Flags::RESP) {
        STATUS_CODES[pick.index(STATUS_CODES.len())]
    } else {
        raw
    }
}

/// Any valid frame without COMP; payloads up to `max_payload`, plus a few that fill the frame
/// to within 3 bytes of `MAX_FRAME` when `near_max` is set.
fn arb_frame(max_payload: usize, near_max: bool) -> impl Strategy<Value = Frame> {
    let size = if near_max {
        payload_size(max_payload).boxed()
    } else {
        (0usize..=max_payload).prop_map(PayloadSize::Exact).boxed()
    };
    (
        plain_flags(),
        any::<Index>(),
        any::<u16>(),
        any::<u16>(),
        any::<u128>(),
        any::<u64>(),
        prop_oneof![3 => Just(0usize), 1 => 0usize..=300],
        size,
        any::<u64>(),
    )
        .prop_map(
            |(flags, pick, raw_code, app, tenant, corr, cap_len, size, seed)| {
                let cap_len = if flags.contains(Flags::START) {
                    cap_len
                } else {
                    0
                };
                let payload_len = match size {
                    PayloadSize::Exact(n) => n,
                    PayloadSize::NearMax(k) => MAX_FRAME as usize - HEADER_LEN - cap_len - k,
                };
                let mut f = Frame::new(flags, app, corr, pattern(payload_len, seed));
                f.code = code_for(flags, pick, raw_code);
                f.tenant_id = tenant;
                f.cap = pattern(cap_len, seed.rotate_left(32));
                f
            },
        )
}

/// A body worth compressing: random bytes, runs of one byte, or a mix.
fn arb_body(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..=max.min(2048)),
        (0usize..=max, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        (0usize..=max, any::<u64>()).prop_map(|(n, s)| {
            // Half random, half zeros: compresses, but not to nothing.
            let mut v = pattern(n / 2, s).to_vec();
            v.resize(n, 0);
            v
        }),
    ]
}

/// A valid frame with COMP set and a real zstd payload; returns the frame and its body.
fn arb_comp_frame(max_body: usize) -> impl Strategy<Value = (Frame, Vec<u8>)> {
    (arb_frame(0, false), arb_body(max_body), 1i32..=3).prop_map(|(f, body, level)| {
        let f = f
            .compressed(&body, level)
            .unwrap_or_else(|e| panic!("compress: {e}"));
        (f, body)
    })
}

/// A small valid frame, sometimes compressed: the material of streams and mutations.
fn arb_small_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => arb_frame(2048, false),
        1 => arb_comp_frame(4096).prop_map(|(f, _)| f),
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Feeds `bytes` to `dec` in pieces ending at `cuts` (sorted or not, any values: each is
/// taken modulo the length), draining after every piece. Returns the frames and the first
/// error. Fails the test if the decoder is full yet has nothing to hand out.
fn feed_split(
    dec: &mut FrameDecoder,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<Frame>, Option<DecodeError>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut frames = Vec::new();
    let mut pos = 0;
    for (turn, end) in points.into_iter().enumerate() {
        while pos < end {
            // Every other piece is written into the room `fill` gives, as a transport
            // reading straight into the decoder does; the rest goes through `feed`.
            let n = if turn % 2 == 0 {
                dec.feed(&bytes[pos..end])
            } else {
                let mut room = dec.fill(end - pos);
                let n = room.remaining_mut().min(end - pos);
                room.put_slice(&bytes[pos..pos + n]);
                assert!(n > 0 || dec.remaining_capacity() == 0, "fill gave no room");
                n
            };
            pos += n;
            loop {
                match dec.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
            assert!(
                n > 0 || dec.remaining_capacity() > 0,
                "decoder is full ({} bytes) and hands out no frame",
                dec.buffered()
            );
        }
    }
    let end = dec.finish().err();
    (frames, end)
}

/// What decoding `frames` one by one, whole, gives: the frames up to the first error.
fn decode_each_whole(encoded: &[Bytes], limits: &Limits) -> (Vec<Frame>, Option<DecodeError>) {
    let mut frames = Vec::new();
    for b in encoded {
        match Frame::decode(b.clone(), limits) {
            Ok(f) => frames.push(f),
            Err(e) => return (frames, Some(e)),
        }
    }
    (frames, None)
}

/// Whole and incremental decoding of one buffer agree, and whatever decodes re-encodes to
/// the bytes it came from. Must not panic for any input.
fn check_one_buffer(bytes: &[u8], limits: &Limits, cuts: &[usize]) {
    let whole = Frame::decode(Bytes::copy_from_slice(bytes), limits);
    if let Ok(f) = &whole {
        assert_eq!(
            f.to_bytes(),
            bytes,
            "decoded frame does not re-encode to its bytes"
        );
        assert_eq!(f.encoded_len(), bytes.len());
    }
    let mut dec = FrameDecoder::new(*limits);
    let (frames, err) = feed_split(&mut dec, bytes, cuts);
    match whole {
        Ok(f) => {
            assert_eq!(frames, vec![f]);
            assert_eq!(err, None);
        }
        // Bytes after a frame: the incremental decoder sees the frame and then the start of
        // another; its first outcome must be what the first frame alone decodes to.
        Err(DecodeError::TrailingBytes { extra }) => {
            let first = Frame::decode(
                Bytes::copy_from_slice(&bytes[..bytes.len() - extra]),
                limits,
            );
            match first {
                Ok(f) => assert_eq!(frames.first(), Some(&f)),
                Err(e) => {
                    assert!(frames.is_empty());
                    assert_eq!(err.map(|g| g.reason()), Some(e.reason()));
                }
            }
        }
        // No bytes at all: no frame for a whole decode, an empty stream (no error) for the
        // incremental decoder. (A frame resized to nothing reaches this now and then.)
        Err(e) if bytes.is_empty() => {
            assert_eq!(e.reason(), "truncated");
            assert!(frames.is_empty() && err.is_none(), "{frames:?} {err:?}");
        }
        Err(e) => {
            assert!(
                frames.is_empty(),
                "incremental decoded {frames:?}, whole said {e}"
            );
            assert_eq!(err.map(|g| g.reason()), Some(e.reason()));
        }
    }
}

/// An independent reading of the contract's rule order for one whole buffer: the reason the
/// buffer must be refused for, `None` if it is a valid frame, or `Some("comp")` when it all
/// hinges on whether the COMP payload is good zstd (the model does not inflate).
fn model_reason(buf: &[u8], limits: &Limits) -> Option<&'static str> {
    if buf.len() < 4 {
        return Some("truncated");
    }
    let be16 = |at: usize| u16::from_be_bytes([buf[at], buf[at + 1]]);
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > limits.max_frame as usize {
        return Some("frame_too_large");
    }
    if len < HEADER_LEN {
        return Some("frame_too_small");
    }
    if buf.len() < len {
        return Some("truncated");
    }
    if buf.len() > len {
        return Some("trailing_bytes");
    }
    let (ver, flags, code, cap_len) = (be16(4), be16(6), be16(8), be16(28) as usize);
    if ver != 1 {
        return Some("bad_version");
    }
    if flags & 0xff00 != 0 {
        return Some("bad_flags");
    }
    if HEADER_LEN + cap_len > len {
        return Some("cap_out_of_bounds");
    }
    if cap_len > 0 && flags & 0x0008 == 0 {
        return Some("cap_on_non_start");
    }
    if flags & 0x0002 != 0 && !STATUS_CODES.contains(&code) {
        return Some("bad_status");
    }
    if flags & 0x0040 != 0 {
        return Some("comp");
    }
    None
}

/// A header whose every field may be right or wrong, then a body; the length prefix is
/// usually the buffer's length, so that the deeper rules get exercised.
fn arb_header_buf() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            6 => Just(None),
            1 => any::<u32>().prop_map(Some),
            1 => (0u32..HEADER_LEN as u32).prop_map(Some),
        ],
        prop_oneof![6 => Just(1u16), 1 => any::<u16>()],
        prop_oneof![4 => 0u16..=0xff, 1 => any::<u16>()],
        prop_oneof![
            2 => any::<Index>().prop_map(|i| STATUS_CODES[i.index(STATUS_CODES.len())]),
            1 => any::<u16>()
        ],
        any::<u16>(),
        any::<u128>(),
        prop_oneof![3 => Just(0u16), 2 => 0u16..=64, 1 => any::<u16>()],
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..=200),
    )
        .prop_map(
            |(len, ver, flags, code, app, tenant, cap_len, corr, body)| {
                let len = len.unwrap_or((HEADER_LEN + body.len()) as u32);
                let mut b = Vec::with_capacity(HEADER_LEN + body.len());
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(&ver.to_be_bytes());
                b.extend_from_slice(&flags.to_be_bytes());
                b.extend_from_slice(&code.to_be_bytes());
                b.extend_from_slice(&app.to_be_bytes());
                b.extend_from_slice(&tenant.to_be_bytes());
                b.extend_from_slice(&cap_len.to_be_bytes());
                b.extend_from_slice(&corr.to_be_bytes());
                b.extend_from_slice(&body);
                b
            },
        )
}

/// Small limits (so that the buffer cap and `frame_too_large` come into play) or the default.
fn arb_limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        1 => Just(Limits::default()),
        1 => (HEADER_LEN as u32..=8192).prop_map(Limits::new),
    ]
}

// ---------------------------------------------------------------------------------------
// (a) Round trip
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn any_valid_frame_round_trips(frame in arb_frame(65_536, true)) {
        let limits = Limits::default();
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        prop_assert!(bytes.len() <= MAX_FRAME as usize);
        let back = Frame::decode(bytes.clone(), &limits);
        prop_assert_eq!(back.as_ref(), Ok(&frame));
        // And the decoded frame's own encoding is the same bytes.
        if let Ok(back) = back {
            prop_assert_eq!(back.to_bytes(), bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn compressed_frames_round_trip((frame, body) in arb_comp_frame(256 * 1024)) {
        let limits = Limits::default();
        let back = Frame::decode(frame.to_bytes(), &limits);
        prop_assert_eq!(back.as_ref(), Ok(&frame));
        prop_assert_eq!(frame.body(&limits).map(|b| b.to_vec()), Ok(body.clone()));
        // The decoded frame hands back what decoding inflated: the same body.
        let mut back = back.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.body(&limits).map(|b| b.to_vec()), Ok(body.clone()));
        // A tighter bound at `body` still refuses a body over it, kept or not.
        if !body.is_empty() {
            let tight = Limits::new(64);
            if body.len() > tight.inflate_bound() {
                prop_assert_eq!(
                    back.body(&tight).map_err(|e| e.reason()),
                    Err("decompress_bound_exceeded")
                );
            }
        }
        // A payload replaced after decoding is inflated afresh, never answered from the
        // body kept for the old one.
        let other: Vec<u8> = body.iter().rev().copied().chain([1, 2, 3]).collect();
        back.payload = Bytes::from(wire::comp::compress(&other, 3).map_err(|e| TestCaseError::fail(e.to_string()))?);
        prop_assert_eq!(back.body(&limits).map(|b| b.to_vec()), Ok(other));
    }

    /// A COMP frame is accepted exactly when its body inflates within `8 × max_frame`, for
    /// any negotiated `max_frame`, with or without a declared content size.
    #[test]
    fn inflation_is_bounded_by_the_limits(
        max_frame in 64u32..=4096,
        extra in -64i64..=64,
        declare_size in any::<bool>(),
    ) {
        let limits = Limits::new(max_frame);
        let bound = limits.inflate_bound();
        prop_assert_eq!(bound, 8 * max_frame as usize);
        let body_len = (bound as i64 + extra) as usize;
        let body = vec![0u8; body_len];
        let payload = compress_declaring(&body, declare_size);
        let mut frame = Frame::request(1, 7, Bytes::from(payload));
        frame.flags = frame.flags | Flags::COMP;
        prop_assume!(frame.encoded_len() <= max_frame as usize);
        let got = Frame::decode(frame.to_bytes(), &limits);
        if body_len <= bound {
            prop_assert_eq!(got.as_ref(), Ok(&frame));
            prop_assert_eq!(frame.body(&limits).map(|b| b.len()), Ok(body_len));
        } else {
            prop_assert_eq!(got.map_err(|e| e.reason()), Err("decompress_bound_exceeded"));
        }
    }
}

/// One zstd frame of `body`, with or without the content size in its header (without it,
/// the bound can only be enforced while inflating).
fn compress_declaring(body: &[u8], declare_size: bool) -> Vec<u8> {
    use std::io::Write;
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1)
        .unwrap_or_else(|e| panic!("zstd encoder: {e}"));
    enc.include_contentsize(declare_size)
        .unwrap_or_else(|e| panic!("zstd param: {e}"));
    if declare_size {
        enc.set_pledged_src_size(Some(body.len() as u64))
            .unwrap_or_else(|e| panic!("zstd pledge: {e}"));
    }
    enc.write_all(body)
        .unwrap_or_else(|e| panic!("zstd write: {e}"));
    enc.finish().unwrap_or_else(|e| panic!("zstd finish: {e}"))
}

// ---------------------------------------------------------------------------------------
// (b) No panics, whatever the bytes
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..=2048),
        limits in arb_limits(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        check_one_buffer(&bytes, &limits, &cuts);
    }

    #[test]
    fn mutated_frames_never_panic(
        frame in arb_small_frame(),
        flips in proptest::collection::vec((any::<Index>(), 1u8..=255), 1..6),
        resize in prop_oneof![3 => Just(0i32), 1 => -40i32..=40],
        limits in arb_limits(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut bytes = frame.to_bytes().to_vec();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let new_len = (bytes.len() as i64 + i64::from(resize)).max(0) as usize;
        bytes.resize(new_len, 0xa5);
        check_one_buffer(&bytes, &limits, &cuts);
    }

    /// Headers with each field right or wrong are refused for the first broken rule in the
    /// contract's order, as an independent model of the rules says.
    #[test]
    fn broken_headers_name_the_first_broken_rule(
        bytes in arb_header_buf(),
        limits in arb_limits(),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        let got = Frame::decode(Bytes::copy_from_slice(&bytes), &limits);
        match (model_reason(&bytes, &limits), &got) {
            (None, Ok(_)) => {}
            (Some("comp"), Ok(_)) => {}
            (Some("comp"), Err(e)) => prop_assert!(
                matches!(e.reason(), "bad_compression" | "decompress_bound_exceeded"),
                "COMP frame refused for {}", e.reason()
            ),
            (Some(want), Err(e)) => prop_assert_eq!(e.reason(), want),
            (want, got) => prop_assert!(false, "model says {:?}, decoder {:?}", want, got),
        }
        check_one_buffer(&bytes, &limits, &cuts);
    }
}

// ---------------------------------------------------------------------------------------
// (c) Any split gives the same frames
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_split_decodes_the_same_frames(
        frames in proptest::collection::vec(arb_small_frame(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..32),
    ) {
        let limits = Limits::default();
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes()).collect();
        let mut dec = FrameDecoder::new(limits);
        let (got, err) = feed_split(&mut dec, &stream, &cuts);
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, frames);
        prop_assert_eq!(dec.buffered(), 0);
    }

    /// With small limits and a tight buffer some frames are too large: every split yields
    /// the frames before the first bad one and then that frame's error, as decoding each
    /// frame whole does; `feed` takes partial reads and the decoder never wedges.
    #[test]
    fn any_split_stops_at_the_same_error(
        frames in proptest::collection::vec(arb_small_frame(), 1..8),
        garbage in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
        max_frame in 256u32..=2200,
        max_buffered in 0usize..=4096,
        cuts in proptest::collection::vec(any::<usize>(), 0..32),
    ) {
        let limits = Limits::new(max_frame);
        let mut encoded: Vec<Bytes> = frames.iter().map(Frame::to_bytes).collect();
        if let Some(g) = garbage {
            encoded.push(Bytes::from(g));
        }
        let stream: Vec<u8> = encoded.iter().flat_map(|b| b.iter().copied()).collect();
        let (want_frames, want_err) = decode_each_whole(&encoded, &limits);
        let mut dec = FrameDecoder::with_max_buffered(limits, max_buffered);
        let (got_frames, got_err) = feed_split(&mut dec, &stream, &cuts);
        prop_assert_eq!(got_frames, want_frames);
        prop_assert_eq!(got_err.map(|e| e.reason()), want_err.map(|e| e.reason()));
    }
}

// ---------------------------------------------------------------------------------------
// (d) Bounded buffering, early refusal
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Reads of any size into a decoder with any cap, drained now and then: `feed` takes
    /// exactly what fits, `buffered()` never passes the cap, and the frames still come out.
    #[test]
    fn the_decoder_never_buffers_past_its_cap(
        frames in proptest::collection::vec(arb_frame(300, false), 1..12),
        max_frame in 700u32..=4096,
        max_buffered in 0usize..=8192,
        reads in proptest::collection::vec((0usize..=3000, any::<bool>()), 1..24),
    ) {
        let limits = Limits::new(max_frame);
        let cap = max_buffered.max(limits.max_frame as usize);
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.to_bytes()).collect();
        let mut dec = FrameDecoder::with_max_buffered(limits, max_buffered);
        prop_assert_eq!(dec.remaining_capacity(), cap);
        let mut got = Vec::new();
        let mut pos = 0;
        let drain = |dec: &mut FrameDecoder, got: &mut Vec<Frame>| {
            while let Some(f) = dec.next_frame().unwrap_or_else(|e| panic!("{e}")) {
                got.push(f);
            }
        };
        for (len, drain_now) in reads {
            let data = &stream[pos..(pos + len).min(stream.len())];
            let before = dec.buffered();
            let took = dec.feed(data);
            pos += took;
            prop_assert_eq!(took, data.len().min(cap - before));
            prop_assert!(dec.buffered() <= cap, "{} > {}", dec.buffered(), cap);
            prop_assert_eq!(dec.buffered() + dec.remaining_capacity(), cap);
            if drain_now {
                drain(&mut dec, &mut got);
            }
        }
        // Finish the stream in cap-sized reads; a full decoder always has a frame to give.
        while pos < stream.len() {
            let took = dec.feed(&stream[pos..]);
            pos += took;
            prop_assert!(dec.buffered() <= cap);
            let had = got.len();
            drain(&mut dec, &mut got);
            prop_assert!(took > 0 || got.len() > had, "decoder wedged");
        }
        drain(&mut dec, &mut got);
        prop_assert_eq!(dec.finish(), Ok(()));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn an_oversized_length_is_refused_after_four_bytes(
        max_frame in HEADER_LEN as u32..=MAX_FRAME,
        over in any::<u32>(),
        rest in proptest::collection::vec(any::<u8>(), 0..64),
        one_at_a_time in any::<bool>(),
    ) {
        let limits = Limits::new(max_frame);
        let len = limits.max_frame + 1 + over % (u32::MAX - limits.max_frame);
        let prefix = len.to_be_bytes();
        let mut dec = FrameDecoder::new(limits);
        if one_at_a_time {
            for (i, b) in prefix[..3].iter().enumerate() {
                prop_assert_eq!(dec.feed(std::slice::from_ref(b)), 1);
                prop_assert_eq!(dec.next_frame(), Ok(None), "refused after {} bytes", i + 1);
            }
            prop_assert_eq!(dec.feed(&prefix[3..]), 1);
        } else {
            prop_assert_eq!(dec.feed(&prefix), 4);
        }
        prop_assert_eq!(dec.buffered(), 4);
        let err = dec.next_frame().map_err(|e| e.reason());
        prop_assert_eq!(err, Err("frame_too_large"));
        prop_assert_eq!(wire::check(&prefix, &limits).map_err(|e| e.reason()), Err("frame_too_large"));
        // Whatever follows the prefix, a whole-buffer decode names the same rule.
        let mut whole = prefix.to_vec();
        whole.extend_from_slice(&rest);
        let whole = Frame::decode(Bytes::from(whole), &limits).map_err(|e| e.reason());
        prop_assert_eq!(whole, Err("frame_too_large"));
    }

    /// After good frames, an oversized prefix is refused as soon as its four bytes are in,
    /// with the good frames already handed out.
    #[test]
    fn an_oversized_frame_after_good_ones_is_refused_early(
        frames in proptest::collection::vec(arb_frame(512, false), 0..4),
        over in 1u32..=1000,
    ) {
        let limits = Limits::new(2048);
        let mut dec = FrameDecoder::new(limits);
        for f in &frames {
            prop_assert_eq!(dec.feed(&f.to_bytes()), f.encoded_len());
            prop_assert_eq!(dec.next_frame(), Ok(Some(f.clone())));
        }
        prop_assert_eq!(dec.feed(&(2048 + over).to_be_bytes()), 4);
        prop_assert_eq!(dec.buffered(), 4);
        prop_assert_eq!(dec.next_frame().map_err(|e| e.reason()), Err("frame_too_large"));
    }
}

/// The exact edges: `max_frame` itself is accepted, one more is refused from the prefix.
#[test]
fn the_cap_edges_are_exact() {
    let limits = Limits::default();
    let full = Frame::request(2, 1, pattern(MAX_FRAME as usize - HEADER_LEN, 9));
    assert_eq!(full.encoded_len(), MAX_FRAME as usize);
    let bytes = full.to_bytes();
    assert_eq!(Frame::decode(bytes.clone(), &limits).as_ref(), Ok(&full));
    let mut dec = FrameDecoder::new(limits);
    assert_eq!(dec.feed(&bytes), bytes.len());
    assert_eq!(dec.remaining_capacity(), 0);
    assert_eq!(dec.next_frame(), Ok(Some(full)));

    let mut dec = FrameDecoder::new(limits);
    assert_eq!(dec.feed(&(MAX_FRAME + 1).to_be_bytes()), 4);
    assert_eq!(
        dec.next_frame().map_err(|e| e.reason()),
        Err("frame_too_large")
    );
    // A valid RESP needs a status; 0 is not one.
    let mut bad = Frame::response(Status::Ok, 0, 0, Bytes::new());
    bad.code = 0;
    assert_eq!(
        Frame::decode(bad.to_bytes(), &limits).map_err(|e| e.reason()),
        Err("bad_status")
    );
}

/// Writes `bytes` through `fill` as a transport would, each time as much as the room
/// takes, checking every room against `fill`'s rules; returns the frames that came out.
fn fill_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Vec<Frame> {
    let (mut frames, mut pos) = (Vec::new(), 0);
    while pos < bytes.len() {
        let room = dec.room(usize::MAX);
        assert!(room > 0 || dec.remaining_capacity() == 0, "no room");
        assert!(room <= 16 * 1024, "{room} bytes of room at once");
        assert!(room <= dec.remaining_capacity(), "room past the cap");
        let n = room.min(bytes.len() - pos);
        let mut into = dec.fill(usize::MAX);
        assert_eq!(
            into.remaining_mut(),
            room,
            "fill gave other room than room()"
        );
        into.put_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(f) = dec.next_frame().unwrap() {
            frames.push(f);
        }
    }
    frames
}

/// `fill`'s room: 4 KiB for an idle stream, at most 16 KiB, no more than the frame on its
/// way lacks (beyond 4 KiB), never past the cap; and small frames kept by their reader
/// are packed into shared memory, not each given an allocation of its own.
#[test]
fn fill_gives_room_for_the_frame_on_its_way() {
    let limits = Limits::default();
    let mut dec = FrameDecoder::new(limits);
    assert_eq!(dec.room(1 << 20), 4096, "an idle stream");
    assert_eq!(dec.room(100), 100, "never more than asked");

    // A header declaring 100 kB, then silence: little room is held.
    let frame = Frame::request(2, 1, pattern(100_000, 3)).to_bytes();
    assert_eq!(dec.feed(&frame[..10]), 10);
    assert!(dec.room(1 << 20) <= 16 * 1024);
    assert_eq!(
        fill_all(&mut dec, &frame[10..]),
        vec![Frame::decode(frame, &limits).unwrap()]
    );

    // A frame as large as the cap, fed after its first four bytes.
    let full = Frame::request(2, 1, pattern(MAX_FRAME as usize - HEADER_LEN, 9)).to_bytes();
    let mut dec = FrameDecoder::new(limits);
    assert_eq!(dec.feed(&full[..4]), 4);
    assert_eq!(fill_all(&mut dec, &full[4..]).len(), 1);

    // A thousand 39-byte frames, each kept: their bodies lie side by side in a few blocks.
    let small: Vec<Bytes> = (0..1000u64)
        .map(|i| Frame::request(2, i, Bytes::from(vec![i as u8])).to_bytes())
        .collect();
    assert!(small.iter().all(|f| f.len() == 39));
    let mut dec = FrameDecoder::new(limits);
    let mut kept = Vec::new();
    for f in &small {
        kept.extend(fill_all(&mut dec, f));
    }
    assert_eq!(kept.len(), 1000);
    let apart = kept
        .windows(2)
        .filter(|w| w[1].payload.as_ptr() as usize != w[0].payload.as_ptr() as usize + 39)
        .count();
    assert!(apart <= 20, "{apart} of 999 frames in a block of their own");
}
