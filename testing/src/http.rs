//! A tiny blocking HTTP/1.1 client: `GET` with `Connection: close`, status and body back.
//!
//! Enough for the node's admin routes (small JSON and Prometheus text, `Content-Length` or
//! chunked), without an HTTP client dependency. Every call is bounded by its timeout as a
//! whole, connect included; the body is capped at [`BODY_MAX`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::HarnessError;

/// Largest response read.
pub const BODY_MAX: usize = 8 << 20;

/// A response: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, HarnessError> {
        serde_json::from_str(&self.body).map_err(|e| HarnessError::Unexpected {
            what: "an HTTP body".into(),
            why: format!("not JSON ({e}): {:?}", self.body),
        })
    }
}

/// `GET path` on `addr`, all within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse, HarnessError> {
    let fail = |why: String| HarnessError::Http {
        addr,
        path: path.to_string(),
        why,
    };
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(e.to_string()))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.set_write_timeout(Some(timeout))
        .and_then(|()| s.write_all(req.as_bytes()))
        .map_err(|e| fail(format!("writing the request: {e}")))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(format!("no complete answer within {timeout:?}")));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| fail(e.to_string()))?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(format!("reading the answer: {e}"))),
        }
        if raw.len() > BODY_MAX {
            return Err(fail(format!("answer over {BODY_MAX} bytes")));
        }
    }
    parse(&raw).map_err(fail)
}

/// Splits a whole `Connection: close` response into status and body.
fn parse(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status = status_of(lines.next().unwrap_or_default())?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(n) => return Err(format!("body of {} bytes, {n} announced", rest.len())),
            None => rest.to_vec(),
        }
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The status code of a status line (`HTTP/1.1 200 OK`).
pub(crate) fn status_of(line: &str) -> Result<u16, String> {
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))
}

/// The body of a chunked response (also the chaos client's).
pub(crate) fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line not terminated")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("chunk cut short")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("chunk not terminated")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status, r.body.as_str()), (503, "{}"));
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((r.status, r.body.as_str()), (200, "abcde"));
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
