//! Target `decode`: the OAP/1 decoder against bytes a peer controls.
//!
//! Every byte a node decodes comes from a peer, so the decoder must not panic, must not grow
//! its buffer past its cap, and must give the same answer however the transport splits the
//! reads. The first two input bytes pick the receiver's limits, its buffer cap and the read
//! split; the rest is the stream. Checked on every input:
//!
//! - `Frame::decode` of the whole stream: a frame it accepts re-encodes to exactly the same
//!   bytes, and a COMP frame it accepts inflates within the bound it validated;
//! - a reference walk (`check`, then `Frame::decode` of each frame's bytes) and a
//!   `FrameDecoder` fed in data-derived pieces yield the same frames and stop on the same
//!   rule, and the whole-buffer decode agrees with the first frame of the walk;
//! - the decoder never buffers past its cap and never sits full without a frame to give.

use bytes::Bytes;
use wire::{DecodeError, Frame, FrameDecoder, HEADER_LEN, Limits, check};

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    let [sel, split, stream @ ..] = data else {
        return;
    };
    let limits = if sel & 0x80 == 0 {
        Limits::default()
    } else {
        // Small negotiated limits, so `frame_too_large` and a tight buffer are reachable
        // within the input sizes the fuzzer tries.
        Limits::new(HEADER_LEN as u32 + u32::from(sel & 0x7f) * 512)
    };
    let max_buffered = usize::from(sel & 0x0f) * 4096;

    let whole = Frame::decode(Bytes::copy_from_slice(stream), &limits);
    if let Ok(f) = &whole {
        assert_round_trip(f, stream, &limits);
    }

    let (walked, walk_err) = walk(stream, &limits);
    let (fed, fed_err) = feed_in_pieces(stream, &limits, max_buffered, *sel, *split);
    assert_eq!(
        fed, walked,
        "incremental and reference walk disagree on the frames"
    );
    assert_eq!(
        fed_err.as_ref().map(DecodeError::reason),
        walk_err.as_ref().map(DecodeError::reason),
        "incremental and reference walk stop on different rules"
    );

    match &whole {
        Ok(f) => {
            assert_eq!(walked.as_slice(), std::slice::from_ref(f));
            assert!(walk_err.is_none());
        }
        // No bytes at all: no frame for a whole decode, an empty stream for the others.
        Err(e) if stream.is_empty() => assert_eq!(e.reason(), "truncated"),
        Err(DecodeError::TrailingBytes { .. }) => assert!(!walked.is_empty() || walk_err.is_some()),
        Err(e) => {
            assert!(
                walked.is_empty(),
                "whole decode refused ({e}) what the walk accepted"
            );
            assert_eq!(walk_err.as_ref().map(DecodeError::reason), Some(e.reason()));
        }
    }
}

/// A decoded frame is exactly the bytes it came from, and its body is what was validated.
fn assert_round_trip(f: &Frame, bytes: &[u8], limits: &Limits) {
    assert_eq!(f.encoded_len(), bytes.len());
    assert_eq!(
        &f.to_bytes()[..],
        bytes,
        "decoded frame re-encodes differently"
    );
    match f.body(limits) {
        Ok(body) => assert!(body.len() <= limits.inflate_bound()),
        Err(e) => panic!("accepted frame has no body: {e}"),
    }
}

/// The reference: find each frame with `check`, decode its bytes whole.
fn walk(mut rest: &[u8], limits: &Limits) -> (Vec<Frame>, Option<DecodeError>) {
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let len = match check(rest, limits) {
            Ok(len) => len,
            Err(e) => return (frames, Some(e)),
        };
        let (one, tail) = rest.split_at(len);
        match Frame::decode(Bytes::copy_from_slice(one), limits) {
            Ok(f) => {
                assert_round_trip(&f, one, limits);
                frames.push(f);
            }
            Err(e) => return (frames, Some(e)),
        }
        rest = tail;
    }
    (frames, None)
}

/// The stream through a `FrameDecoder`, in pieces of pseudo-random sizes up to
/// `2^(split % 17)` bytes, draining after every piece.
fn feed_in_pieces(
    stream: &[u8],
    limits: &Limits,
    max_buffered: usize,
    sel: u8,
    split: u8,
) -> (Vec<Frame>, Option<DecodeError>) {
    let mut dec = FrameDecoder::with_max_buffered(*limits, max_buffered);
    let cap = max_buffered.max(limits.max_frame as usize);
    let max_piece = 1usize << (split % 17);
    let mut rng = u64::from(sel) << 8 | u64::from(split) | 0x9e37_79b9_7f4a_7c15;
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let piece = 1 + (rng % max_piece as u64) as usize;
        let end = (pos + piece).min(stream.len());
        let took = dec.feed(&stream[pos..end]);
        pos += took;
        assert!(
            dec.buffered() <= cap,
            "buffered {} > cap {cap}",
            dec.buffered()
        );
        let had = frames.len();
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(took > 0 || frames.len() > had, "decoder full and wedged");
    }
    (frames, dec.finish().err())
}
