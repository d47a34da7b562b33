//! Hostile OAP/1 peers: a fresh (or seeded) key, a QUIC connection to a node, and any bytes
//! on its streams. Built on the node crate's own `Transport` (`dial_raw`, `raw_hello`), so
//! TLS and HELLO are the real ones and only what follows is hostile.
//!
//! Also the payloads the scenarios throw: zstd bombs (a tiny COMP payload that inflates to
//! megabytes, with or without a declared content size), gzip and zstd bombs of gigabytes
//! for HTTP bodies, and partial frames for dribbling.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use node::transport::NoApps;
use node::{Identity, Transport, TransportConfig};
use wire::{Flags, Frame, NodeId, Status};

use crate::HarnessError;

fn unexpected(what: &str, why: impl std::fmt::Display) -> HarnessError {
    HarnessError::Unexpected {
        what: what.into(),
        why: why.to_string(),
    }
}

/// How a node answered one raw exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAnswer {
    /// A response frame with this status.
    Status(Status),
    /// The stream ended or was reset without a response.
    Reset,
    /// Nothing within the bound.
    TimedOut,
    /// The connection or stream could not be used (what quinn said).
    Failed(String),
}

/// A client endpoint with its own key and one connection to a node.
pub struct RawPeer {
    /// The endpoint (keep it alive as long as the connection).
    pub transport: Transport,
    /// The connection.
    pub conn: quinn::Connection,
}

impl std::fmt::Debug for RawPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawPeer")
            .field("local", &self.transport.local_addr())
            .field("remote", &self.conn.remote_address())
            .finish()
    }
}

/// A client endpoint on an ephemeral loopback port with the key from `seed` (fresh keys
/// that a run can replay).
pub fn endpoint(seed: [u8; 32]) -> Result<Transport, HarnessError> {
    let identity = Identity::from_seed(seed).map_err(|e| unexpected("a key from a seed", e))?;
    Transport::bind(
        Arc::new(identity),
        TransportConfig::with_listen(SocketAddr::from(([127, 0, 0, 1], 0))),
        Arc::new(NoApps),
    )
    .map_err(|e| unexpected("binding a client endpoint", e))
}

impl RawPeer {
    /// Connects to the node at `to` (checking its id if given), with HELLO if `hello`.
    /// Must run inside a tokio runtime.
    pub async fn connect(
        to: SocketAddr,
        id: Option<NodeId>,
        seed: [u8; 32],
        hello: bool,
    ) -> Result<RawPeer, HarnessError> {
        let transport = endpoint(seed)?;
        let conn = transport
            .dial_raw(to, id)
            .await
            .map_err(|e| unexpected(&format!("dialing {to}"), e))?;
        if hello {
            transport
                .raw_hello(&conn)
                .await
                .map_err(|e| unexpected(&format!("HELLO with {to}"), e))?;
        }
        Ok(RawPeer { transport, conn })
    }

    /// Writes `bytes` on a new stream, finishes it, and reads the answer within `bound`.
    pub async fn exchange(&self, bytes: &[u8], bound: Duration) -> RawAnswer {
        exchange(&self.conn, bytes, bound).await
    }

    /// Closes the connection and the endpoint.
    pub async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        self.transport.close().await;
    }
}

/// Writes `bytes` on a new stream of `conn`, finishes it, and reads the answer within
/// `bound`.
pub async fn exchange(conn: &quinn::Connection, bytes: &[u8], bound: Duration) -> RawAnswer {
    let opened = tokio::time::timeout(bound, conn.open_bi()).await;
    let (mut send, mut recv) = match opened {
        Err(_) => return RawAnswer::TimedOut,
        Ok(Err(e)) => return RawAnswer::Failed(e.to_string()),
        Ok(Ok(s)) => s,
    };
    // The node may stop our side as soon as it has seen enough: a failed write is fine.
    let _ = tokio::time::timeout(bound, send.write_all(bytes)).await;
    let _ = send.finish();
    match tokio::time::timeout(bound, recv.read_to_end(1 << 20)).await {
        Err(_) => RawAnswer::TimedOut,
        Ok(Err(_)) => RawAnswer::Reset,
        Ok(Ok(reply)) if reply.is_empty() => RawAnswer::Reset,
        Ok(Ok(reply)) => match Frame::decode(Bytes::from(reply.clone()), &wire::Limits::default())
            .ok()
            .or_else(|| first_frame(&reply))
            .and_then(|f| f.status())
        {
            Some(s) => RawAnswer::Status(s),
            None => RawAnswer::Failed(format!("an answer that is not a frame: {reply:02x?}")),
        },
    }
}

/// The first frame of a buffer holding several.
fn first_frame(buf: &[u8]) -> Option<Frame> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    Frame::decode(
        Bytes::copy_from_slice(buf.get(..len)?),
        &wire::Limits::default(),
    )
    .ok()
}

/// A zstd payload of `inflated` zero bytes, declaring its content size or not. A declared
/// size over the receiver's bound is refused before inflating; an undeclared one must be
/// caught while inflating.
pub fn bomb_payload(inflated: usize, declared: bool) -> Result<Vec<u8>, HarnessError> {
    let zeros = vec![0u8; inflated];
    if declared {
        return wire::comp::compress(&zeros, 19).map_err(|e| unexpected("compressing a bomb", e));
    }
    let mut enc =
        zstd::stream::Encoder::new(Vec::new(), 19).map_err(|e| unexpected("a zstd encoder", e))?;
    enc.include_contentsize(false)
        .map_err(|e| unexpected("a zstd encoder", e))?;
    enc.write_all(&zeros)
        .map_err(|e| unexpected("compressing a bomb", e))?;
    enc.finish()
        .map_err(|e| unexpected("compressing a bomb", e))
}

/// Zero bytes each bomb member inflates to: a gzip member or zstd frame this size is made
/// once and repeated, so a bomb of gigabytes costs a fraction of a second to build.
pub const BOMB_MEMBER: usize = 64 << 20;

/// A gzip stream of `members` members, each inflating to [`BOMB_MEMBER`] zero bytes (a
/// valid multi-member stream, as `cat a.gz b.gz` makes): about 1030:1, deflate's limit.
/// Made by the system's `gzip -9` (no deflate encoder in the workspace).
pub fn gzip_bomb(members: usize) -> Result<Vec<u8>, HarnessError> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| unexpected("running gzip (for a gzip bomb)", e))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| unexpected("gzip", "no stdin"))?;
    let feeder = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..BOMB_MEMBER / zeros.len() {
            stdin.write_all(&zeros)?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut member = Vec::new();
    let read = child
        .stdout
        .take()
        .ok_or_else(|| unexpected("gzip", "no stdout"))?
        .read_to_end(&mut member);
    let fed = feeder.join();
    let status = child.wait().map_err(|e| unexpected("gzip", e))?;
    match (read, fed) {
        (Ok(_), Ok(Ok(()))) if status.success() => Ok(member.repeat(members)),
        (r, f) => Err(unexpected(
            "gzip",
            format!("{status}; read {r:?}; fed {:?}", f.map_err(|_| "panicked")),
        )),
    }
}

/// A zstd stream of `frames` frames, each inflating to [`BOMB_MEMBER`] zero bytes and
/// declaring it (a decoder that trusts the declared sizes allocates it up front).
pub fn zstd_bomb(frames: usize) -> Result<Vec<u8>, HarnessError> {
    Ok(bomb_payload(BOMB_MEMBER, true)?.repeat(frames))
}

/// A one-frame request on `app` whose COMP payload is `payload`.
pub fn comp_request(app: u16, corr: u64, payload: Vec<u8>) -> Bytes {
    let f = Frame::new(
        Flags::REQ | Flags::START | Flags::END | Flags::COMP,
        app,
        corr,
        Bytes::from(payload),
    );
    f.to_bytes()
}

/// An object PUT of `size` bytes for `hash` carrying `token`, whose body is one COMP frame
/// with `payload`: a bomb where the bytes of a replica should be.
pub fn put_with_comp_body(hash: [u8; 32], size: u64, token: &str, payload: Vec<u8>) -> Bytes {
    push_frames(hash, size, token, Bytes::from(payload), Flags::COMP)
}

/// A replica push of `body` (its hash and size announced) carrying `token`: what a client
/// holding a tenant's capability may send a node directly, bypassing the gateway.
pub fn push_with_token(token: &str, body: Bytes) -> Bytes {
    let hash = *blake3::hash(&body).as_bytes();
    push_frames(hash, body.len() as u64, token, body, Flags::empty())
}

/// The two frames of an object PUT: the request (with `token` as its capability) and one
/// body frame with `flags` more.
fn push_frames(hash: [u8; 32], size: u64, token: &str, body: Bytes, flags: Flags) -> Bytes {
    let header = wire::message::encode(&wire::object::ObjectRequest::Put { hash, size });
    let mut start = Frame::new(
        Flags::REQ | Flags::START,
        wire::object::APP_PROTO_OBJECT,
        9,
        header,
    );
    start.cap = Bytes::copy_from_slice(token.as_bytes());
    let body = Frame::new(
        Flags::REQ | Flags::END | flags,
        wire::object::APP_PROTO_OBJECT,
        9,
        body,
    );
    let mut out = start.to_bytes().to_vec();
    out.extend_from_slice(&body.to_bytes());
    Bytes::from(out)
}

/// The ratio of inflated to sent bytes of a bomb.
pub fn ratio(inflated: usize, payload: &[u8]) -> f64 {
    inflated as f64 / payload.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bombs_are_small_and_inflate_past_the_cap() {
        let bound = wire::Limits::default().inflate_bound();
        for declared in [true, false] {
            let p = bomb_payload(bound + 1, declared).unwrap_or_else(|e| panic!("{e}"));
            assert!(ratio(bound + 1, &p) >= 1000.0, "{} bytes", p.len());
            let got = wire::comp::validate(&p, bound);
            assert!(
                matches!(got, Err(wire::DecodeError::DecompressBoundExceeded { .. })),
                "declared {declared}: {got:?}"
            );
        }
    }
}
