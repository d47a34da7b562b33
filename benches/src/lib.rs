//! Home of the workspace's criterion benchmarks; the library itself is empty.
//!
//! Cargo needs a library or binary target in every package, and the benchmarks live in
//! `benches/` beside it (`cargo bench -p benches --bench oap1`). Each benchmark measures a
//! hot path next to a reference taken in the same run (a plain memcpy of the same bytes for
//! the codec), because on the project's noisy 2-core machines only same-run ratios are
//! stable. Results and the commands that produced them are in `PERFORMANCE.md`.
//!
//! Layout:
//! - `benches/oap1.rs`: OAP/1 frame encode, whole-buffer decode and incremental decode.
