//! Every OAP/1 test vector through the decoder, the incremental decoder, the encoder and the
//! `oap1-decode` tool. The vectors come from an independent Python encoder
//! (`tests/vectors/gen_vectors.py`), so these tests compare two readings of the contract.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use wire::json::{frame_from_json, frame_to_json};
use wire::{DecodeError, Frame, FrameDecoder, Limits};

fn vectors() -> Vec<Value> {
    let text = include_str!("vectors/oap1.json");
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(v)) => v,
        other => panic!("oap1.json is not a JSON array: {other:?}"),
    }
}

fn bytes_of(case: &Value) -> Vec<u8> {
    let hex_text = case["hex"].as_str().unwrap_or_default();
    hex::decode(hex_text).unwrap_or_else(|e| panic!("{}: bad hex: {e}", case["name"]))
}

/// Decodes with the incremental decoder fed `step` bytes at a time.
fn decode_incrementally(bytes: &[u8], step: usize) -> Result<Vec<Frame>, DecodeError> {
    let mut dec = FrameDecoder::new(Limits::default());
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let take = rest.len().min(step);
        let n = dec.feed(&rest[..take]);
        rest = &rest[n..];
        while let Some(f) = dec.next_frame()? {
            frames.push(f);
        }
        assert!(
            n > 0 || dec.remaining_capacity() > 0,
            "decoder full and not draining"
        );
    }
    dec.finish()?;
    Ok(frames)
}

#[test]
fn there_are_enough_vectors_and_every_reason_is_covered() {
    let v = vectors();
    let valid = v.iter().filter(|c| c["valid"] == true).count();
    assert!(valid >= 12, "{valid} valid vectors");
    assert!(v.len() - valid >= 12, "{} invalid vectors", v.len() - valid);
    for reason in DecodeError::REASONS {
        assert!(
            v.iter().any(|c| c["error"] == reason),
            "no vector for {reason}"
        );
    }
}

#[test]
fn decoder_matches_every_vector() {
    let limits = Limits::default();
    for case in vectors() {
        let name = &case["name"];
        let bytes = bytes_of(&case);
        let got = Frame::decode(bytes.into(), &limits);
        if case["valid"] == true {
            let frame = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(frame_to_json(&frame, &limits), case["frame"], "{name}");
        } else {
            let err = got
                .err()
                .unwrap_or_else(|| panic!("{name}: decoded an invalid vector"));
            assert_eq!(err.reason(), case["error"], "{name}: {err}");
        }
    }
}

#[test]
fn encoder_matches_every_valid_vector() {
    for case in vectors().into_iter().filter(|c| c["valid"] == true) {
        let frame =
            frame_from_json(&case["frame"]).unwrap_or_else(|e| panic!("{}: {e}", case["name"]));
        assert_eq!(
            hex::encode(frame.to_bytes()),
            case["hex"].as_str().unwrap_or_default(),
            "{}",
            case["name"]
        );
    }
}

#[test]
fn incremental_decoder_agrees_in_any_split() {
    for case in vectors() {
        let name = &case["name"];
        let bytes = bytes_of(&case);
        let whole = Frame::decode(bytes.clone().into(), &Limits::default());
        for step in [1, 7, 38, 4096, usize::MAX] {
            if step == 1 && bytes.len() > 100_000 {
                continue; // a byte at a time through 1 MiB adds nothing the others don't test
            }
            let got = decode_incrementally(&bytes, step);
            match (&whole, got) {
                (Ok(f), Ok(frames)) => assert_eq!(frames, vec![f.clone()], "{name} step {step}"),
                (Err(e), Err(g)) => assert_eq!(e.reason(), g.reason(), "{name} step {step}"),
                (w, g) => panic!("{name} step {step}: whole {w:?} vs incremental {g:?}"),
            }
        }
    }
}

#[test]
fn all_valid_vectors_concatenated_decode_in_order() {
    let valid: Vec<Value> = vectors()
        .into_iter()
        .filter(|c| c["valid"] == true)
        .collect();
    let stream: Vec<u8> = valid.iter().flat_map(bytes_of).collect();
    for step in [1000, 65_536, stream.len()] {
        let frames =
            decode_incrementally(&stream, step).unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(frames.len(), valid.len());
        for (f, case) in frames.iter().zip(&valid) {
            assert_eq!(
                frame_to_json(f, &Limits::default()),
                case["frame"],
                "{}",
                case["name"]
            );
        }
    }
}

#[test]
fn oap1_decode_tool_prints_every_vector() {
    let tool = env!("CARGO_BIN_EXE_oap1-decode");
    for case in vectors() {
        let name = &case["name"];
        let mut child = Command::new(tool)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(case["hex"].as_str().unwrap_or_default().as_bytes())
                .ok();
            stdin.write_all(b"\n").ok();
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let printed: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        if case["valid"] == true {
            assert!(out.status.success(), "{name}: exit {:?}", out.status);
            assert_eq!(printed, case["frame"], "{name}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{name}");
            assert_eq!(
                printed,
                serde_json::json!({"error": case["error"]}),
                "{name}"
            );
        }
    }
}

#[test]
fn oap1_decode_tool_refuses_non_hex() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oap1-decode"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"zz not hex").ok();
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"error":"not_hex"}"#
    );
}

#[test]
fn bytes_after_a_frame_never_change_the_reason_of_a_bad_frame() {
    let limits = Limits::default();
    for case in vectors() {
        let mut bytes = bytes_of(&case);
        bytes.push(0);
        let got = Frame::decode(bytes.into(), &limits)
            .err()
            .map(|e| e.reason());
        let want = if case["valid"] == true {
            "trailing_bytes"
        } else {
            case["error"].as_str().unwrap_or_default()
        };
        // A truncated frame with one more byte may simply be less truncated (or complete).
        if want != "truncated" {
            assert_eq!(got, Some(want), "{}", case["name"]);
        }
    }
}

#[test]
fn hand_built_limits_cannot_lift_the_hard_cap() {
    let limits = Limits {
        max_frame: u32::MAX,
        max_inflate: usize::MAX,
    };
    let header = (wire::MAX_FRAME + 1).to_be_bytes();
    assert_eq!(
        wire::check(&header, &limits).err().map(|e| e.reason()),
        Some("frame_too_large")
    );
}
