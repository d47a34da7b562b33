//! Target `range_header`: the gateway's `Range` header parser, on header text a client
//! controls and an object of any size.
//!
//! The first eight bytes are the object size (taken modulo a small bound half the time, so
//! small objects come up often), the rest is the header value. Checked: no panic; a range it
//! serves is non-empty and lies inside the object; "past the end" is only said when the
//! header's start is at or past the end (or a suffix of nothing); no header means the whole
//! object.

use node::gateway::objects::{RangeAsk, parse_range};

use super::input::Input;

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let raw = input.u64();
    let size = if raw & 1 == 0 {
        (raw >> 1) % 4096
    } else {
        raw >> 1
    };
    let text = String::from_utf8_lossy(input.rest());
    assert_eq!(parse_range(None, size), RangeAsk::Whole);
    match parse_range(Some(&text), size) {
        RangeAsk::Whole => {}
        RangeAsk::Part(r) => {
            assert!(r.len > 0, "an empty range for {text:?} of {size}");
            let end = r.start.checked_add(r.len);
            assert!(
                end.is_some_and(|e| e <= size),
                "{r:?} for {text:?} lies outside an object of {size} bytes"
            );
        }
        RangeAsk::Unsatisfiable => {
            // Only a start at or past the end, or a suffix of zero bytes (or of nothing).
            let spec = text.trim().strip_prefix("bytes=").map(str::trim);
            let ok = spec.and_then(|s| s.split_once('-')).is_some_and(|(a, b)| {
                let a = a.trim();
                if a.is_empty() {
                    size == 0 || b.trim().parse::<u64>() == Ok(0)
                } else {
                    a.parse::<u64>().is_ok_and(|s| s >= size)
                }
            });
            assert!(
                ok,
                "{text:?} called unsatisfiable for an object of {size} bytes"
            );
        }
    }
}
