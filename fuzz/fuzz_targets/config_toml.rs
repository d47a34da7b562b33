//! Fuzz target `config_toml`: see `macronode_fuzz::config` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::config::run(data));
