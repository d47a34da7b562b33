//! Target `hello`: HELLO negotiation between two statements, each decoded from bytes a peer
//! controls, and the control messages that carry them.
//!
//! The first byte splits the rest into two bodies. Checked: decoding never panics; accepted
//! statements re-encode to themselves; negotiation never panics, and when it agrees the
//! terms are the highest common version, a `max_frame` no larger than either side's nor
//! 1 MiB (and at least 64 KiB when both sides stated that much), the peer's `max_inflight`,
//! and only flags both know; two sides that both agree reach the same version, frame size
//! and flags; and our own statement (`Hello::ours`) always agrees with itself.

use wire::control::{ControlRequest, ControlResponse, Hello, MIN_MAX_FRAME};
use wire::message;
use wire::{Flags, MAX_FRAME};

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    let [split, rest @ ..] = data else { return };
    let at = usize::from(*split).min(rest.len());
    let (a, b) = rest.split_at(at);
    for body in [a, b] {
        if let Ok(m) = message::decode::<ControlRequest>(body) {
            assert_eq!(
                message::decode::<ControlRequest>(&message::encode(&m)).ok(),
                Some(m)
            );
        }
        if let Ok(m) = message::decode::<ControlResponse>(body) {
            assert_eq!(
                message::decode::<ControlResponse>(&message::encode(&m)).ok(),
                Some(m)
            );
        }
    }
    let (Ok(a), Ok(b)) = (message::decode::<Hello>(a), message::decode::<Hello>(b)) else {
        // One statement from the input against ours.
        if let Ok(peer) = message::decode::<Hello>(rest) {
            let ours = Hello::ours(u32::from(*split) << 12, 64, vec![0, 1, 2], Vec::new());
            check_pair(&ours, &peer);
        }
        return;
    };
    check_pair(&a, &b);
    // Our own statements, at the frame sizes the input states, agree with each other.
    let ours_a = Hello::ours(
        a.max_frame,
        a.max_inflight.max(1),
        a.app_protos.clone(),
        Vec::new(),
    );
    let ours_b = Hello::ours(
        b.max_frame,
        b.max_inflight.max(1),
        Vec::new(),
        b.listen_addrs.clone(),
    );
    let n = ours_a
        .negotiate(&ours_b)
        .unwrap_or_else(|e| panic!("two conforming statements disagree: {e}"));
    assert!((MIN_MAX_FRAME..=MAX_FRAME).contains(&n.max_frame));
    check_pair(&ours_a, &ours_b);
}

/// Negotiation both ways between two statements.
fn check_pair(a: &Hello, b: &Hello) {
    let ab = a.negotiate(b);
    let ba = b.negotiate(a);
    for (us, peer, n) in [(a, b, &ab), (b, a, &ba)] {
        let Ok(n) = n else { continue };
        let common = us
            .versions
            .iter()
            .filter(|v| peer.versions.contains(v))
            .max();
        assert_eq!(Some(&n.version), common, "not the highest common version");
        assert!(n.max_frame <= us.max_frame && n.max_frame <= peer.max_frame);
        assert!(n.max_frame <= MAX_FRAME, "negotiated above 1 MiB");
        if us.max_frame >= MIN_MAX_FRAME {
            assert!(n.max_frame >= MIN_MAX_FRAME, "negotiated below the minimum");
        }
        assert_eq!(n.max_inflight, peer.max_inflight);
        assert!(n.max_inflight > 0, "agreed to no requests in flight");
        let both = us.flags & peer.flags & Flags::KNOWN.bits();
        assert_eq!(n.flags.bits(), both, "flags beyond what both know");
    }
    if let (Ok(x), Ok(y)) = (ab, ba) {
        assert_eq!(
            x.version, y.version,
            "the two sides speak different versions"
        );
        assert_eq!(
            x.max_frame, y.max_frame,
            "the two sides use different frame caps"
        );
        assert_eq!(x.flags, y.flags, "the two sides use different flags");
    }
}
