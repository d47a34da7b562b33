//! The JSON form of a frame: the field names of `wire/tests/vectors/oap1.json`.
//!
//! One definition serves the vector tests and the `oap1-decode` tool, so what an operator
//! sees for a captured frame is exactly what the vectors pin down. `tenant_id` is a decimal
//! string because a u128 does not survive JSON numbers; byte fields are lowercase hex.

use serde_json::{Value, json};

use crate::frame::{Flags, Frame, Limits, VERSION};

/// The frame as the vectors spell it; COMP frames add `inflated_hex`.
pub fn frame_to_json(frame: &Frame, limits: &Limits) -> Value {
    let mut v = json!({
        "len": frame.encoded_len(),
        "ver": VERSION,
        "flags": frame.flags.bits(),
        "code": frame.code,
        "app_proto_id": frame.app_proto_id,
        "tenant_id": frame.tenant_id.to_string(),
        "cap_len": frame.cap.len(),
        "corr_id": frame.corr_id,
        "cap_hex": hex::encode(&frame.cap),
        "payload_hex": hex::encode(&frame.payload),
    });
    if frame.flags.contains(Flags::COMP) {
        if let (Ok(body), Some(obj)) = (frame.body(limits), v.as_object_mut()) {
            obj.insert("inflated_hex".into(), Value::String(hex::encode(body)));
        }
    }
    v
}

/// Why a JSON object does not describe a frame.
#[derive(Debug, thiserror::Error)]
#[error("field `{0}` is missing or has the wrong type")]
pub struct JsonFieldError(pub &'static str);

/// Builds the frame a JSON object describes (the inverse of [`frame_to_json`]; `len`,
/// `ver` and `cap_len` are derived and ignored here).
pub fn frame_from_json(v: &Value) -> Result<Frame, JsonFieldError> {
    let num = |k: &'static str| v.get(k).and_then(Value::as_u64).ok_or(JsonFieldError(k));
    let bytes = |k: &'static str| {
        v.get(k)
            .and_then(Value::as_str)
            .and_then(|s| hex::decode(s).ok())
            .ok_or(JsonFieldError(k))
    };
    let tenant_id = v
        .get("tenant_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u128>().ok())
        .ok_or(JsonFieldError("tenant_id"))?;
    let u16_of =
        |k: &'static str| num(k).and_then(|n| u16::try_from(n).map_err(|_| JsonFieldError(k)));
    let mut frame = Frame::new(
        Flags::from_bits_truncate(u16_of("flags")?),
        u16_of("app_proto_id")?,
        num("corr_id")?,
        bytes("payload_hex")?.into(),
    );
    frame.code = u16_of("code")?;
    frame.tenant_id = tenant_id;
    frame.cap = bytes("cap_hex")?.into();
    Ok(frame)
}
