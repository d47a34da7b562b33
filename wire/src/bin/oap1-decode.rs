//! `oap1-decode`: reads one OAP/1 frame as hex on stdin, prints it as JSON.
//!
//! For operators looking at a captured frame: the output uses the field names of the test
//! vectors. A frame that breaks a rule prints `{"error":"<reason>"}` and exits 1; input that
//! is not hex prints `{"error":"not_hex"}` and exits 2. Whitespace in the input is ignored.

use std::io::Read;
use std::process::ExitCode;

use wire::json::frame_to_json;
use wire::{Frame, Limits};

fn main() -> ExitCode {
    let mut input = String::new();
    if std::io::stdin().read_to_string(&mut input).is_err() {
        println!("{}", serde_json::json!({"error": "unreadable_input"}));
        return ExitCode::from(2);
    }
    let hex_text: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    let Ok(bytes) = hex::decode(hex_text) else {
        println!("{}", serde_json::json!({"error": "not_hex"}));
        return ExitCode::from(2);
    };
    let limits = Limits::default();
    match Frame::decode(bytes.into(), &limits) {
        Ok(frame) => {
            println!("{}", frame_to_json(&frame, &limits));
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", serde_json::json!({"error": e.reason()}));
            ExitCode::from(1)
        }
    }
}
