//! The OAP/1 codec's cost, measured against a plain memcpy of the same bytes in the same run.
//!
//! PERFORMANCE.md promises "decode within a small factor of memcpy of the same bytes"; a
//! nanosecond figure alone means little on a noisy 2-core machine, so every payload size gets
//! four benchmarks in one criterion group, all with `Throughput::Bytes` of the encoded frame:
//!
//! - `encode`: `Frame::encode` into a preallocated `Vec` (header writes plus one copy of cap
//!   and payload);
//! - `decode`: `Frame::decode` of a whole frame already in a `Bytes` (validation only: cap
//!   and payload are slices of the input, nothing is copied);
//! - `decode_incremental_64KiB`: the same bytes through a long-lived `FrameDecoder` fed in
//!   64 KiB reads, the way a transport drives it (one copy into its buffer, then a split);
//! - `memcpy`: `copy_from_slice` of the same number of bytes into a preallocated buffer.
//!
//! Sizes are 64 B, 4 KiB, 64 KiB payloads and the largest legal frame (1 MiB including the
//! 38-byte header).

#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wire::{Frame, FrameDecoder, HEADER_LEN, Limits, MAX_FRAME, Status};

/// The read size of the incremental benchmark: the streaming chunk, not the frame cap.
const READ_LEN: usize = 64 * 1024;

/// Payload sizes and the names their groups print under.
const PAYLOADS: [(&str, usize); 4] = [
    ("64B", 64),
    ("4KiB", 4 * 1024),
    ("64KiB", 64 * 1024),
    ("1MiB_frame", MAX_FRAME as usize - HEADER_LEN),
];

/// A response frame with a non-trivial header and a payload of `len` patterned bytes.
fn frame_with_payload(len: usize) -> Frame {
    let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    let mut f = Frame::response(Status::Ok, 2, 0x0123_4567_89ab_cdef, Bytes::from(payload));
    f.tenant_id = 0xfeed_beef;
    f
}

fn bench_codec(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, payload_len) in PAYLOADS {
        let frame = frame_with_payload(payload_len);
        let encoded = frame.to_bytes();
        let frame_len = encoded.len();
        assert!(frame_len <= MAX_FRAME as usize);

        let mut group = c.benchmark_group(format!("oap1/{name}"));
        group.throughput(Throughput::Bytes(frame_len as u64));

        let mut out = Vec::with_capacity(frame_len);
        group.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                black_box(&frame).encode(&mut out);
                black_box(&mut out);
            })
        });

        group.bench_function("decode", |b| {
            b.iter(|| {
                let f = Frame::decode(black_box(encoded.clone()), &limits);
                black_box(f).unwrap_or_else(|e| panic!("decode: {e}"))
            })
        });

        let mut dec = FrameDecoder::new(limits);
        group.bench_function(BenchmarkId::new("decode_incremental", "64KiB_reads"), |b| {
            b.iter(|| {
                for piece in black_box(&encoded[..]).chunks(READ_LEN) {
                    let took = dec.feed(piece);
                    debug_assert_eq!(took, piece.len());
                }
                match dec.next_frame() {
                    Ok(Some(f)) => black_box(f),
                    other => panic!("incremental decode: {other:?}"),
                }
            })
        });

        let src = encoded.to_vec();
        let mut dst = vec![0u8; frame_len];
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src[..]));
                black_box(&mut dst);
            })
        });

        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_codec
}
criterion_main!(benches);
