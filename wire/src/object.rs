//! App protocol 2, object: fetching, probing and pushing content-addressed objects.
//!
//! Object bytes travel verifiably: a GET response streams the bao encoding of the requested
//! range (BLAKE3 tree nodes interleaved with 1 KiB chunks), so the receiver checks every
//! chunk against the object's hash as it arrives and a lying peer is caught within one
//! chunk. A PUT (replica push) streams plain bytes; the receiver hashes them and stores
//! nothing unless the hash matches.
//!
//! Frame layout of an exchange:
//! - GET: request `REQ|START|END` with [`ObjectRequest::Get`]; response: first frame
//!   [`ObjectResponse::Found`] (status 200, or 206 for a range), then the bao slice
//!   encoding in frames of at most one chunk-sized piece each, the last with END. Unknown
//!   object: one frame, status 404.
//! - TAIL: request [`ObjectRequest::Tail`]; response as for GET of the object's last byte
//!   (`Found` with range `size-1..size`, or `0..0` for the empty object, then the slice
//!   encoding). The slice ends in the final chunk, which authenticates the length header:
//!   the asker learns the size from verified data, not from the holder's word.
//! - HAS: one frame each way, [`ObjectResponse::Has`].
//! - PUT: first frame [`ObjectRequest::Put`] (with the capability, if any), then the bytes
//!   in frames, the last with END; response [`ObjectResponse::Stored`] or an error status.

use serde::{Deserialize, Serialize};

use crate::message::{Bounded, MessageError};

/// The app protocol id of object messages.
pub const APP_PROTO_OBJECT: u16 = 2;
/// Object bytes are read, sent and verified in pieces of this size: an I/O knob, not a
/// protocol limit (the frame cap is `max_frame`).
pub const CHUNK: usize = 64 * 1024;

/// A byte range of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Number of bytes.
    pub len: u64,
}

/// A request of app protocol 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectRequest {
    /// The object (or a range of it), bao-encoded.
    Get {
        /// BLAKE3 hash of the object.
        hash: [u8; 32],
        /// `None` for the whole object.
        range: Option<ByteRange>,
    },
    /// Whether the responder holds the object.
    Has {
        /// BLAKE3 hash of the object.
        hash: [u8; 32],
    },
    /// Push a replica: `size` bytes follow in the next frames.
    Put {
        /// BLAKE3 hash the bytes must have.
        hash: [u8; 32],
        /// Exact size of the object.
        size: u64,
    },
    /// The object's size, proven: answered as a GET of its last byte.
    Tail {
        /// BLAKE3 hash of the object.
        hash: [u8; 32],
    },
}

impl ByteRange {
    /// The range a TAIL answer covers for an object of `size` bytes: its last byte.
    pub fn tail(size: u64) -> ByteRange {
        ByteRange {
            start: size.saturating_sub(1),
            len: size.min(1),
        }
    }
}

/// A response of app protocol 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectResponse {
    /// The object exists; its bao slice encoding follows.
    Found {
        /// Size of the whole object.
        size: u64,
        /// The range the encoding covers (clamped to the object).
        range: ByteRange,
    },
    /// Answer to `Has`.
    Has {
        /// The object's size if held.
        size: Option<u64>,
    },
    /// The pushed replica is verified and durable.
    Stored,
    /// Answer to a push of an object the responder already holds: nothing was read. A claim,
    /// which the pusher checks with a verified read before it counts the copy.
    Held,
}

impl Bounded for ObjectRequest {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            ObjectRequest::Get { range: Some(r), .. } if r.start.checked_add(r.len).is_none() => {
                Err(MessageError::Invalid {
                    field: "range",
                    why: "start + len overflows",
                })
            }
            _ => Ok(()),
        }
    }
}

impl Bounded for ObjectResponse {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            // Checked, not saturating: with `size = u64::MAX` a saturated end would pass.
            ObjectResponse::Found { size, range }
                if range
                    .start
                    .checked_add(range.len)
                    .is_none_or(|end| end > *size) =>
            {
                Err(MessageError::Invalid {
                    field: "range",
                    why: "range past the end of the object",
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, encode};

    #[test]
    fn messages_round_trip_and_bad_ranges_are_refused() {
        let reqs = [
            ObjectRequest::Get {
                hash: [1; 32],
                range: None,
            },
            ObjectRequest::Get {
                hash: [1; 32],
                range: Some(ByteRange { start: 5, len: 10 }),
            },
            ObjectRequest::Has { hash: [2; 32] },
            ObjectRequest::Tail { hash: [4; 32] },
            ObjectRequest::Put {
                hash: [3; 32],
                size: 1 << 40,
            },
        ];
        for r in reqs {
            assert_eq!(decode::<ObjectRequest>(&encode(&r)), Ok(r));
        }
        let over = ObjectRequest::Get {
            hash: [1; 32],
            range: Some(ByteRange {
                start: u64::MAX,
                len: 2,
            }),
        };
        assert!(decode::<ObjectRequest>(&encode(&over)).is_err());
        let past = ObjectResponse::Found {
            size: 10,
            range: ByteRange { start: 5, len: 6 },
        };
        assert!(decode::<ObjectResponse>(&encode(&past)).is_err());
        // Found by fuzzing (object_messages): a range whose end overflows, in an object of
        // u64::MAX bytes, passed a saturating check.
        let wraps = ObjectResponse::Found {
            size: u64::MAX,
            range: ByteRange {
                start: u64::MAX - 1,
                len: 2,
            },
        };
        assert!(decode::<ObjectResponse>(&encode(&wraps)).is_err());
    }

    #[test]
    fn spec_examples() {
        let hex = |b: bytes::Bytes| hex::encode(b);
        let rep = |byte: &str| byte.repeat(32);
        let cases: Vec<(bytes::Bytes, String)> = vec![
            (
                encode(&ObjectRequest::Get {
                    hash: [1; 32],
                    range: None,
                }),
                format!("00{}00", rep("01")),
            ),
            (
                encode(&ObjectRequest::Get {
                    hash: [1; 32],
                    range: Some(ByteRange { start: 5, len: 10 }),
                }),
                format!("00{}01050a", rep("01")),
            ),
            (
                encode(&ObjectRequest::Has { hash: [2; 32] }),
                format!("01{}", rep("02")),
            ),
            (
                encode(&ObjectRequest::Put {
                    hash: [3; 32],
                    size: 100_000,
                }),
                format!("02{}a08d06", rep("03")),
            ),
            (
                encode(&ObjectRequest::Tail { hash: [4; 32] }),
                format!("03{}", rep("04")),
            ),
            (
                encode(&ObjectResponse::Found {
                    size: 300_000,
                    range: ByteRange::tail(300_000),
                }),
                "00e0a712dfa71201".into(),
            ),
            (
                encode(&ObjectResponse::Has {
                    size: Some(300_000),
                }),
                "0101e0a712".into(),
            ),
            (encode(&ObjectResponse::Has { size: None }), "0100".into()),
            (encode(&ObjectResponse::Stored), "02".into()),
            (encode(&ObjectResponse::Held), "03".into()),
        ];
        for (got, want) in cases {
            assert_eq!(hex(got), want);
        }
        assert_eq!(ByteRange::tail(0), ByteRange { start: 0, len: 0 });
    }
}
