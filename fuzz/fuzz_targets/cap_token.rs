//! Fuzz target `cap_token`: see `macronode_fuzz::caps` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::caps::run(data));
