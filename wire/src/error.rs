//! Why a frame was refused.
//!
//! One variant per rule of the OAP/1 contract, in the contract's order: when a frame breaks
//! several rules the decoder reports the first, so every implementation names the same one.
//! Each variant has a stable `reason()` string that becomes the `reason` label of the
//! `oap_rejects_total` metric and the `error` field of the test vectors.

/// A frame that breaks a rule of OAP/1. Only ever caused by input bytes, never by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `len` is above the receiver's `max_frame` (known from the first four bytes).
    #[error("frame length {len} exceeds max_frame {max}")]
    FrameTooLarge {
        /// The length the frame announced.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// `len` is below the 38-byte header.
    #[error("frame length {len} is smaller than the 38-byte header")]
    FrameTooSmall {
        /// The length the frame announced.
        len: u32,
    },
    /// The input ended inside a frame.
    #[error("input ends inside a frame: {have} of {need} bytes")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the frame needs (at least the 4 length bytes).
        need: usize,
    },
    /// `ver` is not 1.
    #[error("unsupported version {ver}")]
    BadVersion {
        /// The version on the wire.
        ver: u16,
    },
    /// A reserved flag bit (8–15) is set.
    #[error("reserved flag bits set: {flags:#06x}")]
    BadFlags {
        /// The flags on the wire.
        flags: u16,
    },
    /// `38 + cap_len > len`.
    #[error("capability of {cap_len} bytes does not fit a {len}-byte frame")]
    CapOutOfBounds {
        /// The capability length on the wire.
        cap_len: u16,
        /// The frame length on the wire.
        len: u32,
    },
    /// A capability on a frame without START.
    #[error("capability on a frame without START")]
    CapOnNonStart,
    /// A RESP frame whose code is not a known status.
    #[error("response code {code} is not an OAP/1 status")]
    BadStatus {
        /// The code on the wire.
        code: u16,
    },
    /// COMP is set but the payload is not exactly one complete zstd frame.
    #[error("COMP payload is not one complete zstd frame")]
    BadCompression,
    /// The COMP payload inflates past the bound.
    #[error("COMP payload inflates past {limit} bytes")]
    DecompressBoundExceeded {
        /// The bound in force.
        limit: usize,
    },
    /// Bytes follow the frame where exactly one frame was expected. Not a frame rule: only
    /// [`Frame::decode`](crate::Frame::decode) on a whole buffer reports it, never the
    /// incremental decoder.
    #[error("{extra} bytes follow the frame")]
    TrailingBytes {
        /// How many bytes follow.
        extra: usize,
    },
}

impl DecodeError {
    /// The stable name of the rule, used as a metric label and in test vectors.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::FrameTooLarge { .. } => "frame_too_large",
            DecodeError::FrameTooSmall { .. } => "frame_too_small",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::BadVersion { .. } => "bad_version",
            DecodeError::BadFlags { .. } => "bad_flags",
            DecodeError::CapOutOfBounds { .. } => "cap_out_of_bounds",
            DecodeError::CapOnNonStart => "cap_on_non_start",
            DecodeError::BadStatus { .. } => "bad_status",
            DecodeError::BadCompression => "bad_compression",
            DecodeError::DecompressBoundExceeded { .. } => "decompress_bound_exceeded",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
        }
    }

    /// Every frame-rule reason string, in the contract's order (for metrics and docs).
    pub const REASONS: [&'static str; 10] = [
        "frame_too_large",
        "frame_too_small",
        "truncated",
        "bad_version",
        "bad_flags",
        "cap_out_of_bounds",
        "cap_on_non_start",
        "bad_status",
        "bad_compression",
        "decompress_bound_exceeded",
    ];
}
