//! Fuzz target `overlay_machine`: see `macronode_fuzz::overlay_machine` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::overlay_machine::run(data));
