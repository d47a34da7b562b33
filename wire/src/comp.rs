//! COMP payloads: zstd with a hard bound on inflation.
//!
//! A peer controls the compressed bytes, so inflation is streamed through a fixed scratch
//! buffer and stops the moment the bound is passed, and zstd's own window is capped at the
//! contract's 8 MiB: a decompression bomb costs bounded memory and CPU, never its inflated
//! size. A payload must be exactly one complete zstd frame; trailing bytes or a second
//! frame are refused.

use zstd::zstd_safe::{self, DCtx, DParameter, InBuffer, OutBuffer};

use crate::error::DecodeError;

/// Bytes inflated per step while validating a payload.
const SCRATCH_LEN: usize = 16 * 1024;

/// Compression of our own bytes failed (only ever an allocation failure inside zstd).
#[derive(Debug, thiserror::Error)]
#[error("zstd compression failed: {0}")]
pub struct CompressError(#[from] std::io::Error);

/// Compresses `body` into one zstd frame.
pub fn compress(body: &[u8], level: i32) -> Result<Vec<u8>, CompressError> {
    Ok(zstd::bulk::compress(body, level)?)
}

/// Checks that `payload` is one complete zstd frame inflating to at most `bound` bytes,
/// without keeping the inflated bytes. Returns the inflated length.
pub fn validate(payload: &[u8], bound: usize) -> Result<usize, DecodeError> {
    inflate_with(payload, bound, |_| {})
}

/// Inflates `payload` (one complete zstd frame) into a buffer of at most `bound` bytes.
pub fn inflate(payload: &[u8], bound: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    inflate_with(payload, bound, |chunk| out.extend_from_slice(chunk))?;
    Ok(out)
}

fn inflate_with(
    payload: &[u8],
    bound: usize,
    mut sink: impl FnMut(&[u8]),
) -> Result<usize, DecodeError> {
    // Exactly one complete frame: its compressed size must be the whole payload.
    match zstd_safe::find_frame_compressed_size(payload) {
        Ok(n) if n == payload.len() => {}
        _ => return Err(DecodeError::BadCompression),
    }
    // A frame that declares its size lets us refuse a bomb before inflating a byte.
    if let Ok(Some(declared)) = zstd_safe::get_frame_content_size(payload) {
        if declared > bound as u64 {
            return Err(DecodeError::DecompressBoundExceeded { limit: bound });
        }
    }
    let mut dctx = DCtx::create();
    // zstd sizes its own window from the frame header, up to 128 MiB by default: a 48-byte
    // payload could make us reserve that much. Cap it at 8 MiB, the most any COMP payload
    // may inflate to (8 × the 1 MiB frame cap). Not at the negotiated bound: compressors
    // pick windows larger than small bodies, and those frames are legitimate.
    dctx.set_parameter(DParameter::WindowLogMax(WINDOW_LOG_MAX))
        .map_err(|_| DecodeError::BadCompression)?;
    let mut scratch = [0u8; SCRATCH_LEN];
    let mut input = InBuffer::around(payload);
    let mut total = 0usize;
    loop {
        let mut output = OutBuffer::around(&mut scratch[..]);
        let hint = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(|_| DecodeError::BadCompression)?;
        let produced = output.pos();
        total += produced;
        if total > bound {
            return Err(DecodeError::DecompressBoundExceeded { limit: bound });
        }
        sink(&scratch[..produced]);
        if hint == 0 {
            return Ok(total);
        }
        if produced == 0 && input.pos() == payload.len() {
            // No progress and no input left: the frame claims more than it holds.
            return Err(DecodeError::BadCompression);
        }
    }
}

/// log2 of the largest zstd window accepted: 8 MiB, `INFLATE_FACTOR × MAX_FRAME`.
const WINDOW_LOG_MAX: u32 = 23;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused_not_allocated() {
        // 48-byte frame (from fuzzing) whose zstd header asks for a 128 MiB window.
        let frame = hex_bytes(
            "000000300001005900000002000000000000000000000000000000000000000000000000000128b52ffd00880b0000ab",
        );
        let payload = &frame[38..];
        assert_eq!(validate(payload, 8 << 20), Err(DecodeError::BadCompression));
    }

    #[test]
    fn the_window_cap_is_the_largest_legal_inflation() {
        let max = crate::frame::INFLATE_FACTOR * crate::frame::MAX_FRAME as usize;
        assert_eq!(1usize << WINDOW_LOG_MAX, max);
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap_or_default()
    }
}
