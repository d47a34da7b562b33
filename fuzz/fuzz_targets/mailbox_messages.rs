//! Fuzz target `mailbox_messages`: see `macronode_fuzz::mailbox` (fuzz/src/) for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| macronode_fuzz::mailbox::run(data));
