//! Fuzz target `range_header`: see `macronode_fuzz::range` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::range::run(data));
