//! App protocol 0, control: HELLO and PING.
//!
//! HELLO is the first exchange on every new connection. Each side states what it speaks and
//! how much it accepts; [`Hello::negotiate`] turns the two statements into the terms both
//! sides then hold to. Negotiation only ever lowers a limit: a peer cannot talk us into
//! frames above our own `max_frame`, nor above the 1 MiB hard cap.

use serde::{Deserialize, Serialize};

use crate::frame::{Flags, MAX_FRAME, VERSION};
use crate::message::{Bounded, MessageError, check_count, check_len};

/// The app protocol id of control messages.
pub const APP_PROTO_CONTROL: u16 = 0;
/// Smallest `max_frame` a side may ask for (64 KiB): the largest DHT response (32 contacts
/// and 32 providers at their bounds, about 35 KB) must fit one frame, and object chunks
/// should not shrink to a trickle.
pub const MIN_MAX_FRAME: u32 = 65_536;
/// At most this many versions in a HELLO.
pub const VERSIONS_MAX: usize = 8;
/// At most this many app protocols in a HELLO.
pub const APP_PROTOS_MAX: usize = 32;
/// At most this many listen addresses in a HELLO.
pub const LISTEN_ADDRS_MAX: usize = 16;
/// Longest listen address, in bytes.
pub const ADDR_LEN_MAX: usize = 128;

/// What one side speaks and accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol versions spoken (`[1]`).
    pub versions: Vec<u16>,
    /// Largest frame this side accepts.
    pub max_frame: u32,
    /// Most concurrent requests this side serves on the connection.
    pub max_inflight: u32,
    /// Flag bits this side understands (a subset of [`Flags::KNOWN`]).
    pub flags: u16,
    /// App protocols this side serves.
    pub app_protos: Vec<u16>,
    /// Addresses this side listens on, as `host:port` text.
    pub listen_addrs: Vec<String>,
}

/// The terms two sides agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The highest version both speak.
    pub version: u16,
    /// The smaller of the two `max_frame`s, never above 1 MiB.
    pub max_frame: u32,
    /// How many requests we may have in flight towards the peer.
    pub max_inflight: u32,
    /// Flags both understand.
    pub flags: Flags,
}

/// HELLO statements that cannot be reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    /// No protocol version in common.
    #[error("no protocol version in common")]
    NoCommonVersion,
    /// The peer asked for frames smaller than [`MIN_MAX_FRAME`].
    #[error("peer max_frame {0} is below the minimum {MIN_MAX_FRAME}")]
    MaxFrameTooSmall(u32),
    /// The peer serves no requests at all.
    #[error("peer allows no requests in flight")]
    NoInflight,
}

impl Hello {
    /// Our own statement for OAP/1 with the given limits and protocols.
    pub fn ours(
        max_frame: u32,
        max_inflight: u32,
        app_protos: Vec<u16>,
        listen_addrs: Vec<String>,
    ) -> Hello {
        Hello {
            versions: vec![VERSION],
            max_frame: max_frame.clamp(MIN_MAX_FRAME, MAX_FRAME),
            max_inflight,
            flags: Flags::KNOWN.bits(),
            app_protos,
            listen_addrs,
        }
    }

    /// The terms for a connection between us (`self`) and a peer.
    pub fn negotiate(&self, peer: &Hello) -> Result<Negotiated, NegotiateError> {
        let version = self
            .versions
            .iter()
            .filter(|v| peer.versions.contains(v))
            .max()
            .copied()
            .ok_or(NegotiateError::NoCommonVersion)?;
        if peer.max_frame < MIN_MAX_FRAME {
            return Err(NegotiateError::MaxFrameTooSmall(peer.max_frame));
        }
        if peer.max_inflight == 0 {
            return Err(NegotiateError::NoInflight);
        }
        Ok(Negotiated {
            version,
            max_frame: self.max_frame.min(peer.max_frame).min(MAX_FRAME),
            max_inflight: peer.max_inflight,
            flags: Flags::from_bits_truncate(self.flags & peer.flags),
        })
    }
}

impl Bounded for Hello {
    fn check_bounds(&self) -> Result<(), MessageError> {
        check_count("versions", &self.versions, VERSIONS_MAX)?;
        check_count("app_protos", &self.app_protos, APP_PROTOS_MAX)?;
        check_count("listen_addrs", &self.listen_addrs, LISTEN_ADDRS_MAX)?;
        for a in &self.listen_addrs {
            check_len("listen_addrs[]", a.len(), ADDR_LEN_MAX)?;
        }
        Ok(())
    }
}

/// A request of app protocol 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Opens a connection: our statement.
    Hello(Hello),
    /// Liveness probe with a nonce to echo.
    Ping(u64),
}

/// A response of app protocol 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The responder's statement.
    Hello(Hello),
    /// The echoed nonce.
    Pong(u64),
}

impl Bounded for ControlRequest {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            ControlRequest::Hello(h) => h.check_bounds(),
            ControlRequest::Ping(_) => Ok(()),
        }
    }
}

impl Bounded for ControlResponse {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            ControlResponse::Hello(h) => h.check_bounds(),
            ControlResponse::Pong(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, encode};

    fn hello(max_frame: u32) -> Hello {
        Hello::ours(max_frame, 64, vec![0, 1, 2], vec!["127.0.0.1:4433".into()])
    }

    #[test]
    fn hello_round_trips_through_postcard() {
        let req = ControlRequest::Hello(hello(65_536));
        assert_eq!(decode::<ControlRequest>(&encode(&req)), Ok(req));
        let pong = ControlResponse::Pong(42);
        assert_eq!(decode::<ControlResponse>(&encode(&pong)), Ok(pong));
    }

    #[test]
    fn negotiation_lowers_and_never_raises() {
        let ours = hello(MAX_FRAME);
        let mut peer = hello(200_000);
        assert_eq!(ours.negotiate(&peer).map(|n| n.max_frame), Ok(200_000));
        peer.max_frame = u32::MAX;
        assert_eq!(ours.negotiate(&peer).map(|n| n.max_frame), Ok(MAX_FRAME));
        let small_ours = hello(100_000);
        assert_eq!(
            small_ours.negotiate(&peer).map(|n| n.max_frame),
            Ok(100_000)
        );
        assert_eq!(
            hello(100).max_frame,
            MIN_MAX_FRAME,
            "our own statement is clamped too"
        );
    }

    #[test]
    fn negotiation_refuses_what_cannot_work() {
        let ours = hello(MAX_FRAME);
        let mut peer = hello(MAX_FRAME);
        peer.versions = vec![2, 3];
        assert_eq!(ours.negotiate(&peer), Err(NegotiateError::NoCommonVersion));
        let mut peer = hello(MAX_FRAME);
        peer.max_frame = 100;
        assert_eq!(
            ours.negotiate(&peer),
            Err(NegotiateError::MaxFrameTooSmall(100))
        );
        let mut peer = hello(MAX_FRAME);
        peer.max_inflight = 0;
        assert_eq!(ours.negotiate(&peer), Err(NegotiateError::NoInflight));
    }

    #[test]
    fn negotiated_flags_are_the_intersection() {
        let ours = hello(MAX_FRAME);
        let mut peer = hello(MAX_FRAME);
        peer.flags = (Flags::REQ | Flags::RESP | Flags::START | Flags::END).bits() | 0xff00;
        let n = ours.negotiate(&peer).map(|n| n.flags);
        assert_eq!(n, Ok(Flags::REQ | Flags::RESP | Flags::START | Flags::END));
    }

    #[test]
    fn oversized_hello_is_refused_after_decode() {
        let mut h = hello(MAX_FRAME);
        h.listen_addrs = vec!["x".repeat(ADDR_LEN_MAX + 1)];
        let err = decode::<ControlRequest>(&encode(&ControlRequest::Hello(h)));
        assert!(
            matches!(
                err,
                Err(MessageError::TooLong {
                    field: "listen_addrs[]",
                    ..
                })
            ),
            "{err:?}"
        );
        let mut h = hello(MAX_FRAME);
        h.listen_addrs = vec!["a".into(); LISTEN_ADDRS_MAX + 1];
        let err = decode::<ControlRequest>(&encode(&ControlRequest::Hello(h)));
        assert!(
            matches!(
                err,
                Err(MessageError::TooMany {
                    field: "listen_addrs",
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn garbage_and_trailing_bytes_are_typed_errors() {
        assert!(matches!(
            decode::<ControlRequest>(&[0xff, 0xff]),
            Err(MessageError::Malformed(_))
        ));
        let mut bytes = encode(&ControlRequest::Ping(1)).to_vec();
        bytes.push(0);
        assert_eq!(
            decode::<ControlRequest>(&bytes),
            Err(MessageError::Trailing(1))
        );
    }
}
