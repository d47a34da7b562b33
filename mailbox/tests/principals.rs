//! Principals behind a sender (a gateway's public clients): each has its own share of a
//! mailbox, capped by its limits and the sender quota, released by acks and expiry, kept
//! across a restart, and separate from the sender's own share.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mailbox::{Config, MailboxStore, Principal, QuotaScope, SendError};
use wire::NodeId;
use wire::mailbox::{Envelope, Refusal};

const OWNER: NodeId = NodeId([1; 32]);
const GATEWAY: NodeId = NodeId([2; 32]);
const T0: Duration = Duration::from_secs(1_800_000_000);
const P1: [u8; 32] = [11; 32];
const P2: [u8; 32] = [12; 32];

fn msg(key: &str, ttl_ms: u64) -> Envelope {
    Envelope {
        mailbox: OWNER,
        sender: GATEWAY,
        idempotency_key: key.as_bytes().to_vec(),
        ttl_ms,
        e2e: false,
        payload: vec![7; 10],
    }
}

fn two(id: [u8; 32]) -> Option<Principal> {
    Some(Principal {
        id,
        count_max: 2,
        bytes_max: 1 << 20,
    })
}

fn cfg() -> Config {
    let mut c = Config::amnesia();
    c.shards = 1;
    c.quotas.sender_count_max = 4;
    c
}

fn over(r: Result<mailbox::Sent, SendError>) -> Option<QuotaScope> {
    match r {
        Err(SendError::Quota { scope, .. }) => Some(scope),
        _ => None,
    }
}

#[test]
fn each_principal_has_its_own_share_released_by_acks_and_expiry() {
    let (s, _) = MailboxStore::open(cfg(), T0).unwrap();
    let a = s.send_for(T0, msg("a0", 0), two(P1)).unwrap();
    s.send_for(T0, msg("a1", 1000), two(P1)).unwrap();
    let e = s.send_for(T0, msg("a2", 0), two(P1)).unwrap_err();
    assert_eq!(e.refusal(), Refusal::SenderQuota, "429 to the sender");
    assert!(matches!(
        e,
        SendError::Quota {
            scope: QuotaScope::Principal,
            ..
        }
    ));
    assert_eq!(s.usage(&OWNER, &GATEWAY, Some(P1)), (2, 20));
    // Another principal of the same sender, and the sender's own share, are untouched;
    // a principal without limits of its own is capped by the sender quota (4).
    for i in 0..4 {
        let p = Some(Principal::unlimited(P2));
        s.send_for(T0, msg(&format!("b{i}"), 0), p).unwrap();
    }
    let p = Some(Principal::unlimited(P2));
    assert_eq!(
        over(s.send_for(T0, msg("b4", 0), p)),
        Some(QuotaScope::Principal)
    );
    for i in 0..4 {
        s.send(T0, msg(&format!("own{i}"), 0)).unwrap();
    }
    assert_eq!(over(s.send(T0, msg("own4", 0))), Some(QuotaScope::Sender));
    assert_eq!(s.usage(&OWNER, &GATEWAY, None), (4, 40));

    // An ack frees one message of P1's share, expiry the other.
    assert_eq!(s.ack(T0, &OWNER, &[a.id]).unwrap(), 1);
    assert_eq!(s.usage(&OWNER, &GATEWAY, Some(P1)), (1, 10));
    s.send_for(T0, msg("a2", 0), two(P1)).unwrap();
    let later = T0 + Duration::from_millis(1500);
    s.maintain(later).unwrap();
    assert_eq!(s.usage(&OWNER, &GATEWAY, Some(P1)), (1, 10));
    s.send_for(later, msg("a3", 0), two(P1)).unwrap();
    assert_eq!(
        over(s.send_for(later, msg("a4", 0), two(P1))),
        Some(QuotaScope::Principal)
    );
}

#[test]
fn a_principals_share_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.dir = Some(dir.path().to_path_buf());
    let ids = {
        let (s, _) = MailboxStore::open(c.clone(), T0).unwrap();
        let x = s.send_for(T0, msg("a0", 0), two(P1)).unwrap().id;
        let y = s.send_for(T0, msg("a1", 0), two(P1)).unwrap().id;
        let z = s.send(T0, msg("own", 0)).unwrap().id;
        vec![x, y, z]
    };
    let (s, report) = MailboxStore::open(c.clone(), T0).unwrap();
    assert_eq!(report.messages, 3);
    assert_eq!(s.usage(&OWNER, &GATEWAY, Some(P1)), (2, 20));
    assert_eq!(s.usage(&OWNER, &GATEWAY, None), (1, 10));
    assert_eq!(s.principals(&OWNER, &ids), vec![Some(P1), Some(P1), None]);
    assert_eq!(
        over(s.send_for(T0, msg("a2", 0), two(P1))),
        Some(QuotaScope::Principal)
    );
    // Compaction rewrites the records with their principals.
    s.compact(T0).unwrap();
    drop(s);
    let (s, _) = MailboxStore::open(c, T0).unwrap();
    assert_eq!(s.usage(&OWNER, &GATEWAY, Some(P1)), (2, 20));
}

#[test]
fn a_replicated_copy_keeps_its_principal_and_is_not_refused_for_its_limits() {
    let (s, _) = MailboxStore::open(cfg(), T0).unwrap();
    // Admitted elsewhere under a limit of 2; here as copies without that limit.
    let copies = (0..3)
        .map(|i| (msg(&format!("r{i}"), 0), Some(Principal::unlimited(P1))))
        .collect();
    for r in s.send_batch_for(T0, copies) {
        r.unwrap();
    }
    assert_eq!(s.usage(&OWNER, &GATEWAY, Some(P1)), (3, 30));
    assert_eq!(s.usage(&OWNER, &GATEWAY, None), (0, 0));
}
