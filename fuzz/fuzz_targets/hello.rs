//! Fuzz target `hello`: see `macronode_fuzz::hello` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::hello::run(data));
