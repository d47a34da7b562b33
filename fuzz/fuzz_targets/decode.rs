//! Fuzz target `decode`: see `macronode_fuzz::frames` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::frames::run(data));
