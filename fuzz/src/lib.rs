//! The checks behind every fuzz target, one module per target, as plain functions of the
//! input bytes: the targets in `fuzz_targets/` call them under libFuzzer, and
//! `testing/tests/fuzz_corpus.rs` replays the committed corpus (`fuzz/corpus/<target>/`)
//! through the same functions in `cargo test`, on the stable toolchain.
//!
//! Layout (module: target, what a peer or a user controls):
//! - [`frames`]: `decode`, OAP/1 frames and the incremental decoder.
//! - [`messages`]: `dht_messages` and `object_messages`, app protocol bodies.
//! - [`mailbox`]: `mailbox_messages`, app protocol 3 bodies.
//! - [`hello`]: `hello`, HELLO statements and their negotiation.
//! - [`range`]: `range_header`, the gateway's `Range` parser.
//! - [`caps`]: `cap_token`, capability tokens.
//! - [`config`]: `config_toml`, the node's configuration file.
//! - [`contacts`]: `contacts_file`, the saved contacts file in the data directory.
//! - [`overlay_machine`]: `overlay_machine`, the DHT state machine under arbitrary inputs.
//! - [`input`]: a cursor over the input bytes.

pub mod caps;
pub mod config;
pub mod contacts;
pub mod frames;
pub mod hello;
pub mod input;
pub mod mailbox;
pub mod messages;
pub mod overlay_machine;
pub mod range;
