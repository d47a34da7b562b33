//! The gateway's limits, against a real node process over raw TCP: a client silent in the
//! middle of a body gets 408, a `Content-Length` over the object limit gets 413 before any
//! body byte is sent, and requests past the concurrency cap get 503 with `Retry-After`
//! instead of waiting in a queue. Each node runs with tiny limits set through its flags or
//! its config file (`--http-body-timeout-ms`, `--http-requests-max`, `--object-max-bytes`).
//! Every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testing::{NodeProcess, NodeSpec, poll_until};

/// Longest any single answer may take here.
const BOUND: Duration = Duration::from_secs(10);

/// One HTTP/1.1 response as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Opens a connection and writes `bytes` on it.
fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, BOUND).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s.write_all(bytes).unwrap();
    s
}

/// Reads one response (headers, then `Content-Length` bytes of body) within `within`.
fn read_answer(s: &mut TcpStream, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap().split(' ').nth(1).unwrap();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            if raw.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string();
                return Answer {
                    status: status.parse().unwrap(),
                    headers,
                    body,
                };
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no complete answer within {within:?}: {:?}",
            String::from_utf8_lossy(&raw)
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed before a complete answer: {:?}",
                String::from_utf8_lossy(&raw)
            ),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "reading the answer: {e}: {:?}",
                String::from_utf8_lossy(&raw)
            ),
        }
    }
}

fn put_head(addr: SocketAddr, content_length: u64) -> String {
    format!("PUT /o HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {content_length}\r\n\r\n")
}

/// A lone node with open writes and the given extra arguments, healthy.
fn node(name: &str, args: &[&str]) -> NodeProcess {
    let mut spec = NodeSpec::new(name);
    spec.args = ["--open-writes", "--amnesia"]
        .iter()
        .chain(args)
        .map(|a| a.to_string())
        .collect();
    let mut n = NodeProcess::start(spec).unwrap();
    n.wait_healthy(Duration::from_secs(20)).unwrap();
    n
}

#[test]
fn a_client_silent_in_the_middle_of_a_body_gets_408() {
    let n = node("slow-body", &["--http-body-timeout-ms", "300"]);
    let addr = n.http();
    let mut s = send(addr, put_head(addr, 100).as_bytes());
    s.write_all(&[7u8; 10]).unwrap();
    let started = Instant::now();
    let a = read_answer(&mut s, BOUND);
    let waited = started.elapsed();
    assert_eq!(a.status, 408, "{a:?}");
    assert!(a.body.contains("body_timeout"), "{a:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "answered after {waited:?}"
    );
    assert_eq!(
        n.metric("rejected_total{reason=\"slow_body\"}").unwrap(),
        Some(1.0)
    );
    // The node still stores a body sent in time.
    let mut s = send(addr, put_head(addr, 5).as_bytes());
    s.write_all(b"hello").unwrap();
    let a = read_answer(&mut s, BOUND);
    assert_eq!(a.status, 201, "{a:?}");
}

#[test]
fn a_content_length_over_the_limit_gets_413_before_any_body_byte() {
    // The limits come from the config file here, the other tests use flags.
    let mut spec = NodeSpec::new("too-large");
    spec.args = vec!["--open-writes".into(), "--amnesia".into()];
    spec.config_toml = Some("object_max_bytes = 1000\nhttp_body_timeout_ms = 5000\n".into());
    let mut n = NodeProcess::start(spec).unwrap();
    n.wait_healthy(Duration::from_secs(20)).unwrap();
    let addr = n.http();

    // Only the headers: the answer must not wait for a body (the body timeout is 5 s).
    let mut s = send(addr, put_head(addr, 1001).as_bytes());
    let started = Instant::now();
    let a = read_answer(&mut s, Duration::from_secs(3));
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.body.contains("too_large"), "{a:?}");
    println!("413 after {:?}", started.elapsed());

    // At the limit the same request is accepted: it waits for its body, and stores it.
    let mut s = send(addr, put_head(addr, 1000).as_bytes());
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = s.read(&mut byte);
    assert!(
        early.is_err(),
        "answered before the body was sent: {early:?}"
    );
    s.write_all(&[1u8; 1000]).unwrap();
    let a = read_answer(&mut s, BOUND);
    assert_eq!(a.status, 201, "{a:?}");
}

#[test]
fn requests_past_the_concurrency_cap_get_503_with_retry_after() {
    let n = node(
        "busy",
        &[
            "--http-requests-max",
            "1",
            "--http-body-timeout-ms",
            "20000",
        ],
    );
    let addr = n.http();
    assert_eq!(n.get("/healthz").unwrap().status, 200);

    // One PUT holds the only slot while its body is pending.
    let mut holder = send(addr, put_head(addr, 4).as_bytes());
    holder.write_all(b"ab").unwrap();
    let a = poll_until(
        "a request past the cap to be refused",
        BOUND,
        Duration::from_millis(20),
        || {
            let get = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let a = read_answer(&mut send(addr, get.as_bytes()), BOUND);
            (a.status == 503).then_some(a)
        },
    )
    .unwrap();
    assert!(a.body.contains("overloaded"), "{a:?}");
    let retry = a.header("retry-after").map(str::parse::<u64>);
    assert!(matches!(retry, Some(Ok(s)) if s >= 1), "{a:?}");

    // Nothing was queued: once the holder finishes, the next request is served at once.
    holder.write_all(b"cd").unwrap();
    let a = read_answer(&mut holder, BOUND);
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(n.get("/healthz").unwrap().status, 200);
    assert!(
        n.metric("rejected_total{reason=\"concurrency\"}")
            .unwrap()
            .is_some_and(|v| v >= 1.0)
    );
}
