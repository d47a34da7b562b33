//! A blocking HTTP/1.1 client for the gateway's object routes, with binary bodies: `PUT /o`
//! with a token, `GET /o/<id>`, and any `GET` path, each bounded as a whole by its timeout.
//!
//! The suite judges how a request ended, so the outcome is typed: an answer with a status
//! (clean, whatever the code), or no answer, split into "the client's timeout passed" (a
//! hang, as far as the node's promise goes) and "the connection failed" (refused, reset).
//! Every request is `Connection: close`; the body read is capped at [`BODY_MAX`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response body read (the suite's objects are at most 16 MiB).
pub const BODY_MAX: usize = 64 << 20;

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Header lines of the response, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, `Null` if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered.
    Answered(Answer),
    /// No complete answer within the timeout; what had arrived by then.
    TimedOut {
        /// The status, if the head had arrived.
        status: Option<u16>,
        /// Bytes of the response received (head included).
        got: usize,
    },
    /// The connection failed before a complete answer (what the OS said).
    Failed(String),
}

impl Outcome {
    /// The status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answered(a) => Some(a.status),
            _ => None,
        }
    }

    /// A short description for logs: `201`, `timeout`, `failed: reset`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered(a) if a.status >= 400 => {
                let text = a.text();
                format!(
                    "{} {}",
                    a.status,
                    text.chars().take(160).collect::<String>()
                )
            }
            Outcome::Answered(a) => a.status.to_string(),
            Outcome::TimedOut { status, got } => {
                format!("timeout (status {status:?}, {got} bytes of the answer received)")
            }
            Outcome::Failed(e) => format!("failed: {e}"),
        }
    }
}

/// One finished request: its outcome and how long it took.
#[derive(Debug, Clone)]
pub struct Timed {
    /// How it ended.
    pub outcome: Outcome,
    /// From connect to the end.
    pub took: Duration,
}

/// `PUT /o` with `body`, and a bearer token if given.
pub fn put(addr: SocketAddr, token: Option<&str>, body: &[u8], timeout: Duration) -> Timed {
    exchange(
        addr,
        put_head(addr, token, body.len()).as_bytes(),
        body,
        timeout,
    )
}

fn put_head(addr: SocketAddr, token: Option<&str>, len: usize) -> String {
    put_head_with(addr, token, &[], &format!("Content-Length: {len}"))
}

/// The head of a `PUT /o` with more header lines (`Content-Encoding: gzip`) and its
/// framing line (`Content-Length: N` or `Transfer-Encoding: chunked`).
fn put_head_with(addr: SocketAddr, token: Option<&str>, extra: &[String], framing: &str) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let extra: String = extra.iter().map(|h| format!("{h}\r\n")).collect();
    format!(
        "PUT /o HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}{framing}\r\nConnection: close\r\n\r\n"
    )
}

/// `PUT /o` with more header lines (each `Name: value`, sent as given), the body framed by
/// `Content-Length`, or chunked (64 KiB chunks) when `chunked`: for the headers a client
/// may add that the plain [`put`] does not (`Content-Encoding`).
pub fn put_with_headers(
    addr: SocketAddr,
    token: Option<&str>,
    extra: &[String],
    body: &[u8],
    chunked: bool,
    timeout: Duration,
) -> Timed {
    if !chunked {
        let head = put_head_with(
            addr,
            token,
            extra,
            &format!("Content-Length: {}", body.len()),
        );
        return exchange(addr, head.as_bytes(), body, timeout);
    }
    let head = put_head_with(addr, token, extra, "Transfer-Encoding: chunked");
    let mut framed = Vec::with_capacity(body.len() + body.len() / 8192 + 16);
    for piece in body.chunks(64 << 10) {
        framed.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
    }
    framed.extend_from_slice(b"0\r\n\r\n");
    exchange(addr, head.as_bytes(), &framed, timeout)
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Timed {
    exchange(addr, get_head(addr, path).as_bytes(), &[], timeout)
}

fn get_head(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// `GET /o/b3:<hex>` of an object id.
pub fn get_object(addr: SocketAddr, id: &[u8; 32], timeout: Duration) -> Timed {
    get(addr, &object_path(id), timeout)
}

/// `/o/b3:<hex>`.
pub fn object_path(id: &[u8; 32]) -> String {
    format!("/o/b3:{}", hex::encode(id))
}

fn exchange(addr: SocketAddr, head: &[u8], body: &[u8], timeout: Duration) -> Timed {
    exchange_paced(addr, head, body, timeout, Pace::default())
}

/// `GET path`, reading the answer at about `bytes_per_second`: a download that is still
/// going when the scenario acts (pauses the holder serving it, say).
pub fn get_paced(
    addr: SocketAddr,
    path: &str,
    bytes_per_second: usize,
    timeout: Duration,
) -> Timed {
    let head = get_head(addr, path);
    let pace = Pace {
        read: Some(((bytes_per_second / 20).max(1), Duration::from_millis(50))),
        ..Pace::default()
    };
    exchange_paced(addr, head.as_bytes(), &[], timeout, pace)
}

/// Pacing of one exchange: pieces of at most `.0` bytes, `.1` apart.
#[derive(Debug, Clone, Copy, Default)]
struct Pace {
    write: Option<(usize, Duration)>,
    read: Option<(usize, Duration)>,
}

/// Like [`put`], sending the body at about `bytes_per_second`: a PUT that is still
/// uploading when the scenario acts (pauses a holder, say).
pub fn put_paced(
    addr: SocketAddr,
    token: Option<&str>,
    body: &[u8],
    bytes_per_second: usize,
    timeout: Duration,
) -> Timed {
    let head = put_head(addr, token, body.len());
    let pace = Pace {
        write: Some(((bytes_per_second / 20).max(1), Duration::from_millis(50))),
        ..Pace::default()
    };
    exchange_paced(addr, head.as_bytes(), body, timeout, pace)
}

/// Sends `head` then `body` and reads the answer until the server closes, each side paced
/// if asked.
fn exchange_paced(
    addr: SocketAddr,
    head: &[u8],
    body: &[u8],
    timeout: Duration,
    pace: Pace,
) -> Timed {
    let started = Instant::now();
    let outcome = run(addr, head, body, timeout, pace, started);
    Timed {
        outcome,
        took: started.elapsed(),
    }
}

fn run(
    addr: SocketAddr,
    head: &[u8],
    body: &[u8],
    timeout: Duration,
    pace: Pace,
    started: Instant,
) -> Outcome {
    let deadline = started + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut s = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::TimedOut => return timed_out(&[]),
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    let _ = s.set_nodelay(true);
    // A write error is not the end: the server may have answered early (401, 413) and
    // closed; its answer is read below.
    let mut write_failed = None;
    if let Err(e) = write_bounded(&mut s, head, left()) {
        write_failed = Some(e);
    } else {
        let pieces: Vec<&[u8]> = match pace.write {
            Some((n, _)) => body.chunks(n).collect(),
            None => vec![body],
        };
        for piece in pieces {
            if left().is_zero() {
                return timed_out(&[]);
            }
            if let Err(e) = write_bounded(&mut s, piece, left()) {
                write_failed = Some(e);
                break;
            }
            if let Some((_, pause)) = pace.write {
                std::thread::sleep(pause.min(left()));
            }
        }
    }
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let l = left();
        if l.is_zero() {
            return timed_out(&raw);
        }
        if s.set_read_timeout(Some(l)).is_err() {
            return Outcome::Failed("set_read_timeout".into());
        }
        let want = pace.read.map_or(buf.len(), |(n, _)| n.min(buf.len()));
        if let Some((_, pause)) = pace.read {
            std::thread::sleep(pause.min(l));
        }
        match s.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > BODY_MAX {
                    return Outcome::Failed(format!("answer over {BODY_MAX} bytes"));
                }
                if complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return timed_out(&raw);
            }
            Err(e) => {
                // Reset after a complete answer is still an answer.
                if complete(&raw) {
                    break;
                }
                let w = write_failed.map(|w| format!(" (after write error: {w})"));
                return Outcome::Failed(format!("read: {e}{}", w.unwrap_or_default()));
            }
        }
    }
    match parse(&raw) {
        Ok(a) => Outcome::Answered(a),
        Err(why) => Outcome::Failed(why),
    }
}

/// A timeout, with what had arrived.
fn timed_out(raw: &[u8]) -> Outcome {
    let status = find(raw, b"\r\n")
        .and_then(|end| std::str::from_utf8(&raw[..end]).ok())
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok());
    Outcome::TimedOut {
        status,
        got: raw.len(),
    }
}

fn write_bounded(s: &mut TcpStream, bytes: &[u8], left: Duration) -> std::io::Result<()> {
    if left.is_zero() {
        return Err(std::io::Error::new(ErrorKind::TimedOut, "no time left"));
    }
    s.set_write_timeout(Some(left))?;
    s.write_all(bytes)
}

/// Whether `raw` holds a whole response with a `Content-Length` body (so we need not wait
/// for the close).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| raw.len() >= end + 4 + n) && !head.contains("transfer-encoding")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a whole response into status, headers and body (length-delimited, chunked, or
/// up to the close).
fn parse(raw: &[u8]) -> Result<Answer, String> {
    let end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        if raw.is_empty() {
            "closed without an answer".to_string()
        } else {
            format!("no end of headers in {} bytes", raw.len())
        }
    })?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = crate::http::status_of(lines.next().unwrap_or_default())?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let rest = &raw[end + 4..];
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        crate::http::dechunk(rest)?
    } else {
        match get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            Some(n) if n <= rest.len() => rest[..n].to_vec(),
            Some(n) => return Err(format!("body cut at {} of {n} bytes", rest.len())),
            None => rest.to_vec(),
        }
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bodies_and_knows_when_an_answer_is_whole() {
        let raw = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
        assert!(complete(raw));
        assert!(!complete(&raw[..raw.len() - 1]));
        let a = parse(raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.status, a.body.as_slice()), (201, &b"{}"[..]));
        let a = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.body, b"ab");
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(parse(b"").is_err());
    }
}
