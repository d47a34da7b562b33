//! OAP/1: the framed protocol macronode nodes speak over QUIC streams, and the typed
//! messages of each application protocol. No I/O, no clock: bytes in, frames out (and verified object bytes out).
//!
//! The protocol contract, with the choices this implementation made and its test vectors,
//! is `wire/SPEC.md`.
//!
//! Layout:
//! - [`frame`]: the 38-byte header, [`Frame`], encode, two-step decode ([`check`] then
//!   [`Frame::decode`]), flags, status codes, limits.
//! - [`error`]: [`DecodeError`], one variant per rule, each with a stable `reason()`.
//! - [`comp`]: zstd payloads with bounded inflation.
//! - [`decoder`]: [`FrameDecoder`], the incremental per-stream decoder with a buffer cap.
//! - [`sequence`]: [`SequenceChecker`], the START … END rules of one stream direction.
//! - [`message`]: postcard bodies with per-type bounds ([`message::Bounded`]).
//! - [`object`]: app protocol 2, verified object transfer.
//! - [`tree`]: the verified slice format object bytes travel in (BLAKE3 tree cut at 16 KiB).
//! - [`control`]: app protocol 0, HELLO and PING, and HELLO negotiation.
//! - [`dht`]: app protocol 1, the Kademlia RPCs on the wire, with bounds.
//! - [`mailbox`]: app protocol 3, store-and-forward messages to a node id, with bounds.
//! - [`id`]: [`NodeId`], a peer's public key and its text form.
//! - [`json`]: the JSON form of a frame shared by the test vectors and `oap1-decode`.

pub mod comp;
pub mod control;
pub mod decoder;
pub mod dht;
pub mod error;
pub mod frame;
pub mod id;
pub mod json;
pub mod mailbox;
pub mod message;
pub mod object;
pub mod sequence;
pub mod tree;

pub use decoder::FrameDecoder;
pub use error::DecodeError;
pub use frame::{Flags, Frame, HEADER_LEN, Limits, MAX_FRAME, Status, check};
pub use id::NodeId;
pub use sequence::{Direction, SequenceChecker, SequenceError};
