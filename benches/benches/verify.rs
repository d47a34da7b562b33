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
