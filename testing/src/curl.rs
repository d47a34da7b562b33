//! `curl -i` from tests: a real HTTP client for the gateway's end-to-end tests, its answer
//! split into status, header lines and body.

use std::process::Command;

use serde_json::Value;

/// One HTTP answer: status, lowercased header lines, body.
pub struct Reply {
    /// The status code (0 if curl got no answer).
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The first header line named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl -i` with `args`, bounded; the last response of the exchange.
pub fn curl(args: &[String]) -> Reply {
    let out = match Command::new("curl")
        .args(["-s", "-i", "--max-time", "40"])
        .args(args)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            return Reply {
                status: 0,
                headers: Vec::new(),
                body: format!("curl did not run (scripts/install-test-deps.sh installs it): {e}"),
            };
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
