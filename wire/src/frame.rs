//! The OAP/1 frame: a 38-byte big-endian header, an optional capability, a payload.
//!
//! Decoding is two steps, as in mini-redis: [`check`] says whether a whole frame is buffered
//! (and rejects what is already known to be bad from the length alone), then
//! [`Frame::decode`] validates every header rule in the contract's order and splits the
//! buffer into capability and payload without copying. Encoding cannot fail: a [`Frame`]
//! built through its constructors always satisfies the rules it is encoded under.

use bytes::{Buf, BufMut, Bytes};

use crate::comp;
use crate::error::DecodeError;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 38;
/// The hard cap on a frame, header included (1 MiB). HELLO may lower it, never raise it.
pub const MAX_FRAME: u32 = 1_048_576;
/// A COMP payload may inflate to at most this many times `max_frame`.
pub const INFLATE_FACTOR: usize = 8;
/// The only protocol version.
pub const VERSION: u16 = 1;

/// The flag bits of a frame. Bits 8–15 are reserved and rejected on decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// A request frame.
    pub const REQ: Flags = Flags(0x0001);
    /// A response frame.
    pub const RESP: Flags = Flags(0x0002);
    /// An unsolicited event.
    pub const EVENT: Flags = Flags(0x0004);
    /// First frame of an exchange direction; the only one that may carry a capability.
    pub const START: Flags = Flags(0x0008);
    /// Last frame of an exchange direction.
    pub const END: Flags = Flags(0x0010);
    /// The sender asks for an acknowledgement.
    pub const ACK_REQ: Flags = Flags(0x0020);
    /// The payload is one zstd frame.
    pub const COMP: Flags = Flags(0x0040);
    /// The payload is end-to-end encrypted by the application.
    pub const APP_E2E: Flags = Flags(0x0080);
    /// The bits OAP/1 defines; everything else is reserved.
    pub const KNOWN: Flags = Flags(0x00ff);

    /// No flag set.
    pub const fn empty() -> Flags {
        Flags(0)
    }
    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }
    /// Flags from raw bits, refusing reserved bits.
    pub const fn from_bits(bits: u16) -> Option<Flags> {
        if bits & !Flags::KNOWN.0 == 0 {
            Some(Flags(bits))
        } else {
            None
        }
    }
    /// Flags from raw bits, dropping reserved bits.
    pub const fn from_bits_truncate(bits: u16) -> Flags {
        Flags(bits & Flags::KNOWN.0)
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// The union of two flag sets.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    /// These flags without the bits of `other`.
    pub const fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// Status codes a response may carry; any other code on a RESP frame is `bad_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// Success.
    Ok = 200,
    /// A byte range of the object.
    Partial = 206,
    /// Malformed request or invalid frame sequence.
    BadRequest = 400,
    /// A capability is needed.
    Unauthorized = 401,
    /// The capability does not allow this.
    Forbidden = 403,
    /// Unknown object, or an app protocol this node does not serve.
    NotFound = 404,
    /// Over a size limit.
    PayloadTooLarge = 413,
    /// Over a rate limit.
    TooManyRequests = 429,
    /// The responder failed.
    Internal = 500,
    /// The responder is overloaded or not ready.
    Unavailable = 503,
}

impl Status {
    /// The status for a wire code, if OAP/1 defines it.
    pub fn from_code(code: u16) -> Option<Status> {
        Some(match code {
            200 => Status::Ok,
            206 => Status::Partial,
            400 => Status::BadRequest,
            401 => Status::Unauthorized,
            403 => Status::Forbidden,
            404 => Status::NotFound,
            413 => Status::PayloadTooLarge,
            429 => Status::TooManyRequests,
            500 => Status::Internal,
            503 => Status::Unavailable,
            _ => return None,
        })
    }
    /// The wire code.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// The receiver's limits that decoding enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, header included; at most [`MAX_FRAME`].
    pub max_frame: u32,
    /// Largest inflated COMP payload accepted; capped at `INFLATE_FACTOR * max_frame`.
    pub max_inflate: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(MAX_FRAME)
    }
}

impl Limits {
    /// Limits for a negotiated `max_frame` (clamped to `38..=MAX_FRAME`), with the largest
    /// inflation bound the contract allows.
    pub fn new(max_frame: u32) -> Limits {
        let max_frame = max_frame.clamp(HEADER_LEN as u32, MAX_FRAME);
        Limits {
            max_frame,
            max_inflate: INFLATE_FACTOR * max_frame as usize,
        }
    }
    /// The inflation bound actually in force: the caller's, never above the contract's.
    pub fn inflate_bound(&self) -> usize {
        self.max_inflate
            .min(INFLATE_FACTOR * self.max_frame.min(MAX_FRAME) as usize)
    }
}

/// One OAP/1 frame. `len`, `ver` and `cap_len` are derived from the contents when encoding.
///
/// Build one with [`Frame::new`] (or its shorthands) and set the public fields; a decoded
/// COMP frame also keeps the body its validation inflated, so [`Frame::body`] does not
/// inflate the same bytes a second time.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Flag bits.
    pub flags: Flags,
    /// `0` on requests; a [`Status`] code on responses.
    pub code: u16,
    /// Which application protocol the payload belongs to.
    pub app_proto_id: u16,
    /// Tenant; `0` when unused.
    pub tenant_id: u128,
    /// Ties the frames of one exchange together.
    pub corr_id: u64,
    /// Opaque capability token; non-empty only with START.
    pub cap: Bytes,
    /// The payload as it stands on the wire (zstd-compressed when COMP is set).
    pub payload: Bytes,
    /// What decoding inflated from `payload`, kept with the payload it came from: a caller
    /// that later replaces `payload` gets a fresh inflation, never a stale body.
    inflated: Option<Inflated>,
}

/// A COMP payload's body, tied to the exact buffer it was inflated from.
#[derive(Debug, Clone)]
struct Inflated {
    from: Bytes,
    body: Bytes,
}

impl Inflated {
    /// Whether this body belongs to `payload`: the same buffer, not merely equal bytes
    /// (`Bytes` are immutable and `from` keeps the storage alive, so the address cannot be
    /// reused for other contents while this exists).
    fn belongs_to(&self, payload: &Bytes) -> bool {
        self.from.as_ptr() == payload.as_ptr() && self.from.len() == payload.len()
    }
}

/// Frames are equal when what goes on the wire is: the kept inflation is a cache.
impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.flags == other.flags
            && self.code == other.code
            && self.app_proto_id == other.app_proto_id
            && self.tenant_id == other.tenant_id
            && self.corr_id == other.corr_id
            && self.cap == other.cap
            && self.payload == other.payload
    }
}

impl Eq for Frame {}

impl Frame {
    /// A frame with the given flags, app protocol and correlation id, and nothing else.
    pub fn new(flags: Flags, app_proto_id: u16, corr_id: u64, payload: Bytes) -> Frame {
        Frame {
            flags,
            code: 0,
            app_proto_id,
            tenant_id: 0,
            corr_id,
            cap: Bytes::new(),
            payload,
            inflated: None,
        }
    }

    /// A one-frame request (`REQ|START|END`).
    pub fn request(app_proto_id: u16, corr_id: u64, payload: Bytes) -> Frame {
        Frame::new(
            Flags::REQ | Flags::START | Flags::END,
            app_proto_id,
            corr_id,
            payload,
        )
    }

    /// A one-frame response (`RESP|START|END`) with a status.
    pub fn response(status: Status, app_proto_id: u16, corr_id: u64, payload: Bytes) -> Frame {
        let mut f = Frame::new(
            Flags::RESP | Flags::START | Flags::END,
            app_proto_id,
            corr_id,
            payload,
        );
        f.code = status.code();
        f
    }

    /// This frame with its payload replaced by `body` compressed with zstd, and COMP set.
    pub fn compressed(mut self, body: &[u8], level: i32) -> Result<Frame, comp::CompressError> {
        self.payload = Bytes::from(comp::compress(body, level)?);
        self.flags = self.flags | Flags::COMP;
        Ok(self)
    }

    /// Total encoded length, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.cap.len() + self.payload.len()
    }

    /// Writes the frame. The caller keeps frames within `max_frame` and `cap` under 64 KiB;
    /// the codec does not re-check what it was given.
    pub fn encode(&self, out: &mut impl BufMut) {
        self.encode_head(out);
        out.put_slice(&self.payload);
    }

    /// Writes everything but the payload (header and capability), so a transport can send
    /// the payload's own buffer after it instead of copying it into one contiguous frame.
    pub fn encode_head(&self, out: &mut impl BufMut) {
        debug_assert!(
            self.cap.len() <= u16::MAX as usize,
            "capability over 64 KiB"
        );
        debug_assert!(
            self.encoded_len() <= MAX_FRAME as usize,
            "frame over the 1 MiB cap"
        );
        out.put_u32(self.encoded_len() as u32);
        out.put_u16(VERSION);
        out.put_u16(self.flags.bits());
        out.put_u16(self.code);
        out.put_u16(self.app_proto_id);
        out.put_u128(self.tenant_id);
        out.put_u16(self.cap.len() as u16);
        out.put_u64(self.corr_id);
        out.put_slice(&self.cap);
    }

    /// The frame as one contiguous buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        Bytes::from(out)
    }

    /// The status of a response frame (decoded frames always have a valid one).
    pub fn status(&self) -> Option<Status> {
        Status::from_code(self.code)
    }

    /// The payload with COMP undone, inflating at most `limits.inflate_bound()` bytes (a
    /// decoded frame hands back what its validation already inflated).
    pub fn body(&self, limits: &Limits) -> Result<Bytes, DecodeError> {
        if self.flags.contains(Flags::COMP) {
            if let Some(kept) = self
                .inflated
                .as_ref()
                .filter(|k| k.belongs_to(&self.payload))
            {
                if kept.body.len() <= limits.inflate_bound() {
                    return Ok(kept.body.clone());
                }
                return Err(DecodeError::DecompressBoundExceeded {
                    limit: limits.inflate_bound(),
                });
            }
            comp::inflate(&self.payload, limits.inflate_bound()).map(Bytes::from)
        } else {
            Ok(self.payload.clone())
        }
    }

    /// Decodes exactly one frame that fills all of `buf`, validating every rule.
    ///
    /// `buf` is sliced, not copied: `cap` and `payload` share its storage.
    pub fn decode(buf: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
        let len = check(&buf, limits)?;
        let extra = buf.len() - len;
        // Every frame rule is judged before the trailing bytes, so the reason reported for a
        // bad frame is the same whatever follows it.
        let frame = Frame::decode_exact(buf.slice(..len), limits)?;
        if extra > 0 {
            return Err(DecodeError::TrailingBytes { extra });
        }
        Ok(frame)
    }

    /// Decodes a buffer that [`check`] said holds exactly one frame.
    pub(crate) fn decode_exact(mut buf: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
        let mut h = &buf[..HEADER_LEN];
        let len = h.get_u32();
        let ver = h.get_u16();
        let flags_raw = h.get_u16();
        let code = h.get_u16();
        let app_proto_id = h.get_u16();
        let tenant_id = h.get_u128();
        let cap_len = h.get_u16();
        let corr_id = h.get_u64();

        if ver != VERSION {
            return Err(DecodeError::BadVersion { ver });
        }
        let flags =
            Flags::from_bits(flags_raw).ok_or(DecodeError::BadFlags { flags: flags_raw })?;
        if HEADER_LEN + cap_len as usize > len as usize {
            return Err(DecodeError::CapOutOfBounds { cap_len, len });
        }
        if cap_len > 0 && !flags.contains(Flags::START) {
            return Err(DecodeError::CapOnNonStart);
        }
        if flags.contains(Flags::RESP) && Status::from_code(code).is_none() {
            return Err(DecodeError::BadStatus { code });
        }
        buf.advance(HEADER_LEN);
        let cap = buf.split_to(cap_len as usize);
        let payload = buf;
        // Validating a COMP payload means inflating it; the body is kept for `body`.
        let inflated = if flags.contains(Flags::COMP) {
            let body = Bytes::from(comp::inflate(&payload, limits.inflate_bound())?);
            Some(Inflated {
                from: payload.clone(),
                body,
            })
        } else {
            None
        };
        Ok(Frame {
            flags,
            code,
            app_proto_id,
            tenant_id,
            corr_id,
            cap,
            payload,
            inflated,
        })
    }
}

/// Looks at the start of `buf` and returns the length of the frame there once all of it is
/// buffered; `Truncated` when more bytes are needed.
///
/// Rejects a frame over `max_frame` from its first four bytes, before it is buffered.
pub fn check(buf: &[u8], limits: &Limits) -> Result<usize, DecodeError> {
    let Some(len_bytes) = buf.get(..4) else {
        return Err(DecodeError::Truncated {
            have: buf.len(),
            need: 4,
        });
    };
    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    // The hard cap holds even for hand-built limits that ask for more.
    let max = limits.max_frame.min(MAX_FRAME);
    if len > max {
        return Err(DecodeError::FrameTooLarge { len, max });
    }
    if (len as usize) < HEADER_LEN {
        return Err(DecodeError::FrameTooSmall { len });
    }
    if buf.len() < len as usize {
        return Err(DecodeError::Truncated {
            have: buf.len(),
            need: len as usize,
        });
    }
    Ok(len as usize)
}
