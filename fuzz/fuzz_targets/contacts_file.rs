//! Fuzz target `contacts_file`: see `macronode_fuzz::contacts` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::contacts::run(data));
