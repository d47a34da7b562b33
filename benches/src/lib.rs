//! Home of the workspace's benchmarks and the performance gate; the library itself is empty.
//!
//! Cargo needs a library or binary target in every package, and the benchmarks live in
//! `benches/` beside it. Two kinds, for two readers. The instruction-count benchmarks
//! (`icount`, gungraun under valgrind) are exact and repeatable, so `benches/gate` holds every
//! change to `baseline.json` with them, in CI. The criterion benchmarks measure wall-clock
//! time next to a reference taken in the same run (a memcpy of the same bytes, BLAKE3 itself),
//! because on the project's noisy 2-core machines only same-run ratios are stable; they are
//! for people and never gated. Results and the commands that produced them are in
//! `PERFORMANCE.md`.
//!
//! Layout:
//! - `benches/icount.rs`: gungraun benchmarks (codec, routing table, lookup, object and token
//!   verification), Callgrind instructions and DHAT heap bytes.
//! - `benches/oap1.rs`: criterion, OAP/1 encode and decode next to memcpy.
//! - `benches/verify.rs`: criterion, object verification next to `blake3::hash` and memcpy.
//! - `gate`, `baseline.json`, `sim/`: the regression gate, its baseline, its simnet scenario.
//! - `load/`: the gateway load harness (wrk + nginx reference); `ab`: paired A/B runs.
