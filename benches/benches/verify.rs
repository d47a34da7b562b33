//! Object verification by wall clock, next to BLAKE3 itself and a memcpy in the same run.
//!
//! Every byte the node stores or serves is checked against its BLAKE3 id (docs/DESIGN.md §5); this
//! bench says what that costs per MiB against the two physical references: hashing the same
//! bytes in one call (`blake3::hash`, what `b3sum` computes, here on one thread) and copying
//! them. `benches/gate` holds the instruction count of the same verification
//! (`objects/verify_object`); this is the human-readable, noisy, wall-clock view:
//!
//! - `verify_slice`: `node::store::decode_slice` of the slice of the whole object
//!   (`wire::tree`: the read path, 16 KiB group by group, each checked against the tree
//!   before it is handed out);
//! - `verify_groups`: `wire::tree::SliceDecoder::next_verified` in 64 KiB pieces over the
//!   same slice, as the node's fetcher runs it (one copy, from the input into the pieces);
//! - `verify_groups_plain_read`: the same through a reader that implements only `read`, as
//!   the fetcher's channel adapter does (its pieces are zeroed before the read);
//! - `verify_bytes`: `wire::tree::SliceVerifier` fed the slice in 64 KiB frame bodies
//!   (`Bytes`), handing out views of them (no copy);
//! - `blake3_hash` (the b3sum reference): `blake3::hash` of the same bytes;
//! - `memcpy`: `copy_from_slice` of the same bytes into a preallocated buffer.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Object size: 1 MiB.
const LEN: usize = 1 << 20;

/// Frame body size a holder streams a slice in (`wire::object::CHUNK`).
const FRAME: usize = wire::object::CHUNK;

/// A reader with only `read`, as the node's channel adapter is (std's `read_buf` then
/// zeroes what it reads into first).
struct PlainRead<R>(R);

impl<R: std::io::Read> std::io::Read for PlainRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

fn bench_verify(c: &mut Criterion) {
    let data: Vec<u8> = (0..LEN).map(|i| (i * 131 + 17) as u8).collect();
    let (hash, outboard) = wire::tree::outboard(&data);
    let mut encoded = Vec::new();
    std::io::Read::read_to_end(
        &mut wire::tree::SliceEncoder::new(
            std::io::Cursor::new(data.clone()),
            std::io::Cursor::new(outboard),
            LEN as u64,
            0,
            LEN as u64,
        )
        .unwrap_or_else(|e| panic!("encode: {e}")),
        &mut encoded,
    )
    .unwrap_or_else(|e| panic!("encode: {e}"));

    let mut group = c.benchmark_group("verify/1MiB");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("verify_slice", |b| {
        b.iter(|| {
            let out = node::store::decode_slice(black_box(&encoded), &hash, 0, LEN as u64)
                .unwrap_or_else(|e| panic!("verify: {e}"));
            debug_assert_eq!(out.len(), LEN);
            out
        })
    });
    let all = bytes::Bytes::from(encoded.clone());
    group.bench_function("verify_groups", |b| {
        b.iter(|| {
            let dec = wire::tree::SliceDecoder::new(
                std::io::Cursor::new(black_box(all.clone())),
                &hash,
                0,
                LEN as u64,
            );
            assert_eq!(verified_len(dec), LEN);
        })
    });
    // The node's fetcher reads through an adapter that implements only `read` (no
    // `read_buf`), handing out what each frame body holds: the same here.
    group.bench_function("verify_groups_plain_read", |b| {
        b.iter(|| {
            let reader = PlainRead(std::io::Cursor::new(black_box(all.clone())));
            let dec = wire::tree::SliceDecoder::new(reader, &hash, 0, LEN as u64);
            assert_eq!(verified_len(dec), LEN);
        })
    });
    let frames: Vec<bytes::Bytes> = (0..all.len())
        .step_by(FRAME)
        .map(|at| all.slice(at..(at + FRAME).min(all.len())))
        .collect();
    group.bench_function("verify_bytes", |b| {
        b.iter(|| {
            let mut v = wire::tree::SliceVerifier::new(&hash, 0, LEN as u64);
            let mut n = 0;
            for frame in black_box(&frames) {
                v.feed(frame.clone());
                while let Some(piece) = v.poll_verified().unwrap_or_else(|e| panic!("{e}")) {
                    n += piece.len();
                }
            }
            v.finish().unwrap_or_else(|e| panic!("verify: {e}"));
            assert_eq!(n, LEN);
        })
    });
    group.bench_function("blake3_hash", |b| b.iter(|| blake3::hash(black_box(&data))));
    let mut dst = vec![0u8; LEN];
    group.bench_function("memcpy", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&data));
            black_box(&mut dst);
        })
    });
    group.finish();
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
    targets = bench_verify
}
criterion_main!(benches);

/// Drains a decoder in pieces of `FRAME` bytes, as the fetcher does, and counts what it
/// handed out.
fn verified_len(mut dec: wire::tree::SliceDecoder) -> usize {
    let mut n = 0;
    while let Some(piece) = dec
        .next_verified(FRAME)
        .unwrap_or_else(|e| panic!("verify: {e}"))
    {
        n += piece.len();
    }
    n
}
