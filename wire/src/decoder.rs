//! The incremental decoder a transport runs per stream.
//!
//! Bytes arrive in arbitrary splits; frames come out whole, and the same frames whatever the
//! split. The buffer never holds more than `max_buffered` bytes: [`FrameDecoder::feed`]
//! takes only what fits and says how much, so a reader that stops reading when the decoder
//! is full gets QUIC flow-control backpressure for free. A frame over `max_frame` is refused
//! from its first four bytes, before any of its body is buffered.

use bytes::buf::Limit;
use bytes::{BufMut, BytesMut};

use crate::error::DecodeError;
use crate::frame::{self, Frame, Limits};

/// The least room [`FrameDecoder::fill`] gives: small frames arrive several at once.
const FILL_MIN: usize = 4 * 1024;
/// The most room `fill` gives at once: a dozen packets' data per read, and what a stream
/// that stops sending holds of memory it did not fill.
const FILL_MAX: usize = 16 * 1024;
/// Spare room worth filling before more is reserved. A frame split off and kept by its
/// reader shares the buffer's memory: filling the rest of it packs small frames together,
/// where reserving would put each in a fresh allocation it alone keeps alive.
const SPARE_MIN: usize = 512;

/// Turns a byte stream into frames, holding a bounded number of bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    limits: Limits,
    max_buffered: usize,
}

impl FrameDecoder {
    /// A decoder that buffers at most one largest frame.
    pub fn new(limits: Limits) -> FrameDecoder {
        FrameDecoder::with_max_buffered(limits, limits.max_frame as usize)
    }

    /// A decoder with an explicit buffer cap, raised to at least `max_frame` so that any
    /// legal frame fits.
    pub fn with_max_buffered(limits: Limits, max_buffered: usize) -> FrameDecoder {
        let max_buffered = max_buffered.max(limits.max_frame as usize);
        FrameDecoder {
            buf: BytesMut::new(),
            limits,
            max_buffered,
        }
    }

    /// The limits frames are checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replaces the limits, e.g. after HELLO negotiated a smaller `max_frame`. The buffer
    /// cap grows if needed so that any frame the new limits allow still fits.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.max_buffered = self
            .max_buffered
            .max(limits.max_frame.min(frame::MAX_FRAME) as usize);
    }

    /// How many more bytes [`feed`](Self::feed) would take now.
    pub fn remaining_capacity(&self) -> usize {
        self.max_buffered - self.buf.len()
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Buffers as much of `data` as fits and returns how many bytes were taken. Fewer than
    /// `data.len()` means: drain frames with [`next_frame`](Self::next_frame), then feed the
    /// rest.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.remaining_capacity());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// Room to write received bytes straight into the buffer; what is put there counts as
    /// fed. A transport that copies many packets' data at once into memory it is given
    /// (quinn's `poll_read_buf`, under one lock of the connection) saves a call of
    /// [`feed`](Self::feed) and a hand-over per packet. The room is [`room`](Self::room)`(max)`.
    pub fn fill(&mut self, max: usize) -> Limit<&mut BytesMut> {
        let n = self.room(max);
        // Nothing to reserve when the spare room is used.
        self.buf.reserve(n);
        (&mut self.buf).limit(n)
    }

    /// How much room [`fill`](Self::fill)`(max)` gives: at most `max`, never past the cap,
    /// at most 16 KiB, and no more than the frame on its way still lacks once its length is
    /// in (4 KiB before that). Spare room already in the buffer is filled first. So a
    /// stream that stops sending holds little memory it did not fill, and a transport can
    /// count the room against its budget before it reads.
    pub fn room(&self, max: usize) -> usize {
        let missing = match frame::check(&self.buf, &self.limits) {
            Err(DecodeError::Truncated { have, need }) if have >= 4 => need - have,
            _ => 0,
        };
        let n = max
            .min(self.remaining_capacity())
            .min(missing.max(FILL_MIN))
            .min(FILL_MAX);
        let spare = self.buf.capacity() - self.buf.len();
        if spare >= SPARE_MIN { n.min(spare) } else { n }
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the rule it broke.
    ///
    /// After an error the stream is unusable (frame boundaries are lost): reset it.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        let len = match frame::check(&self.buf, &self.limits) {
            Ok(len) => len,
            Err(DecodeError::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = self.buf.split_to(len).freeze();
        Frame::decode_exact(bytes, &self.limits).map(Some)
    }

    /// Call at end of stream: an error if a partial frame is left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match frame::check(&self.buf, &self.limits) {
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
