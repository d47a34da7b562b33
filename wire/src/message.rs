//! How typed message bodies become payloads and back.
//!
//! Every app protocol's messages are postcard-encoded. Postcard itself bounds nothing but
//! the input it is given (at most one frame), so each message type also states its own
//! limits through [`Bounded`], checked right after decoding: a peer cannot hand us a
//! response with a thousand contacts or an address of a megabyte.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message body that broke its schema or its limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The bytes are not a valid postcard encoding of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes were left over after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A list field holds more items than allowed.
    #[error("{field} holds {len} items, at most {max} allowed")]
    TooMany {
        /// The field's name.
        field: &'static str,
        /// Items present.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A byte or string field is longer than allowed.
    #[error("{field} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// The field's name.
        field: &'static str,
        /// Length present.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field holds a value outside its domain.
    #[error("{field} is invalid: {why}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl MessageError {
    /// The stable name of the failure, used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            MessageError::Malformed(_) => "malformed_message",
            MessageError::Trailing(_) => "message_trailing_bytes",
            MessageError::TooMany { .. } => "too_many_items",
            MessageError::TooLong { .. } => "field_too_long",
            MessageError::Invalid { .. } => "invalid_field",
        }
    }
}

/// A message type's own limits, checked after every decode.
pub trait Bounded {
    /// `Err` when a field is over its limit or out of its domain.
    fn check_bounds(&self) -> Result<(), MessageError>;
}

/// Checks a list field's length.
pub fn check_count<T>(field: &'static str, items: &[T], max: usize) -> Result<(), MessageError> {
    if items.len() > max {
        return Err(MessageError::TooMany {
            field,
            len: items.len(),
            max,
        });
    }
    Ok(())
}

/// Checks a byte or string field's length.
pub fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), MessageError> {
    if len > max {
        return Err(MessageError::TooLong { field, len, max });
    }
    Ok(())
}

/// Encodes a message body. Serialising our own in-memory types into a `Vec` cannot fail.
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    match postcard::to_allocvec(msg) {
        Ok(v) => Bytes::from(v),
        // postcard only fails for unsupported serde shapes, which our types do not use;
        // an empty body then decodes as `Malformed` at the peer rather than panicking here.
        Err(_) => Bytes::new(),
    }
}

/// Decodes a whole payload as one message and checks its limits.
pub fn decode<T: DeserializeOwned + Bounded>(payload: &[u8]) -> Result<T, MessageError> {
    let (msg, rest) = postcard::take_from_bytes::<T>(payload)
        .map_err(|e| MessageError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MessageError::Trailing(rest.len()));
    }
    msg.check_bounds()?;
    Ok(msg)
}
