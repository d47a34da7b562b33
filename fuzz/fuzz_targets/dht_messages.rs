//! Fuzz target `dht_messages`: see `macronode_fuzz::messages` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::messages::run_dht(data));
