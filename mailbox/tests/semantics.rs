//! Every delivery rule of the store, each as a short script on a fixed clock, run in
//! amnesia mode and durable (the rules must not depend on the mode).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mailbox::{Config, FetchLimits, MailboxStore, QuotaScope, SendError};
use wire::NodeId;
use wire::mailbox::{Envelope, MsgId, PAYLOAD_MAX, Refusal};

const OWNER: NodeId = NodeId([1; 32]);
const ALICE: NodeId = NodeId([2; 32]);
const BOB: NodeId = NodeId([3; 32]);
const T0: Duration = Duration::from_secs(1_800_000_000);

fn at(ms: u64) -> Duration {
    T0 + Duration::from_millis(ms)
}

fn msg(sender: NodeId, key: &str, payload: &[u8]) -> Envelope {
    Envelope {
        mailbox: OWNER,
        sender,
        idempotency_key: key.as_bytes().to_vec(),
        ttl_ms: 0,
        e2e: false,
        payload: payload.to_vec(),
    }
}

fn limits(visibility_ms: u64) -> FetchLimits {
    FetchLimits {
        after: 0,
        max_count: 100,
        max_bytes: 1 << 20,
        visibility_ms,
    }
}

/// Runs `script` on an amnesia store and on a durable one, each built from `cfg`.
fn both(cfg: impl Fn() -> Config, script: impl Fn(&MailboxStore)) {
    let (s, _) = MailboxStore::open(cfg(), T0).unwrap();
    script(&s);
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.dir = Some(dir.path().to_path_buf());
    let (s, _) = MailboxStore::open(c, T0).unwrap();
    script(&s);
}

fn keys(b: &mailbox::Batch) -> Vec<String> {
    b.messages
        .iter()
        .map(|d| String::from_utf8(d.message.idempotency_key.clone()).unwrap())
        .collect()
}

#[test]
fn a_retried_send_is_stored_once_and_answered_as_success() {
    both(Config::amnesia, |s| {
        let a = s.send(at(0), msg(ALICE, "k1", b"hello")).unwrap();
        assert!(!a.duplicate);
        let b = s.send(at(5), msg(ALICE, "k1", b"hello again")).unwrap();
        assert!(b.duplicate);
        assert_eq!(a.id, b.id);
        assert_eq!(a.id, MsgId::derive(&OWNER, &ALICE, b"k1"));
        assert_eq!(s.queue_depth(&OWNER), 1);
        // The same key from another sender is another message.
        assert!(!s.send(at(6), msg(BOB, "k1", b"x")).unwrap().duplicate);
        assert_eq!(s.queue_depth(&OWNER), 2);
    });
}

#[test]
fn a_send_retried_after_its_ack_is_not_delivered_again() {
    both(Config::amnesia, |s| {
        let id = s.send(at(0), msg(ALICE, "k1", b"a")).unwrap().id;
        s.fetch(at(1), &OWNER, limits(1000)).unwrap();
        assert_eq!(s.ack(at(2), &OWNER, &[id]).unwrap(), 1);
        assert!(s.send(at(3), msg(ALICE, "k1", b"a")).unwrap().duplicate);
        assert!(
            s.fetch(at(4), &OWNER, limits(1000))
                .unwrap()
                .messages
                .is_empty()
        );
    });
}

#[test]
fn an_acked_message_is_remembered_as_settled_until_it_would_have_expired() {
    let cfg = || Config {
        ttl_default: Duration::from_secs(60),
        ..Config::amnesia()
    };
    both(cfg, |s| {
        let acked = s.send(at(0), msg(ALICE, "acked", b"a")).unwrap().id;
        let held = s.send(at(0), msg(ALICE, "held", b"b")).unwrap().id;
        let never = MsgId([9; 32]);
        assert_eq!(s.settled(at(1), &OWNER, &[acked, held, never]), vec![]);
        assert_eq!(s.ack(at(2), &OWNER, &[acked]).unwrap(), 1);
        // Settled: acked here. Not: still held, or never seen (an ack of an unknown id
        // leaves nothing to remember), or asked under another mailbox.
        assert_eq!(s.settled(at(3), &OWNER, &[acked, held, never]), vec![acked]);
        assert_eq!(s.settled(at(3), &ALICE, &[acked]), vec![]);
        // Forgotten once the message would have expired.
        assert_eq!(s.settled(at(60_000), &OWNER, &[acked]), vec![]);
    });
}

#[test]
fn settled_messages_are_remembered_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        dir: Some(dir.path().to_path_buf()),
        ..Config::amnesia()
    };
    let (s, _) = MailboxStore::open(cfg(), T0).unwrap();
    let id = s.send(at(0), msg(ALICE, "k", b"a")).unwrap().id;
    assert_eq!(s.ack(at(1), &OWNER, &[id]).unwrap(), 1);
    drop(s);
    let (s, _) = MailboxStore::open(cfg(), at(2)).unwrap();
    assert_eq!(s.settled(at(3), &OWNER, &[id]), vec![id]);
}

#[test]
fn messages_of_one_sender_come_in_order_and_an_unacked_one_holds_the_rest_back() {
    both(Config::amnesia, |s| {
        for k in ["a1", "a2", "a3"] {
            s.send(at(0), msg(ALICE, k, b"x")).unwrap();
        }
        s.send(at(0), msg(BOB, "b1", b"y")).unwrap();
        let first = s
            .fetch(
                at(10),
                &OWNER,
                FetchLimits {
                    max_count: 1,
                    ..limits(1000)
                },
            )
            .unwrap();
        assert_eq!(keys(&first), ["a1"]);
        assert!(first.more);
        // a1 in flight: Alice's a2, a3 wait behind it; Bob's message does not.
        let second = s.fetch(at(20), &OWNER, limits(1000)).unwrap();
        assert_eq!(keys(&second), ["b1"]);
        // a1 reappears after its visibility timeout, followed by the rest, in order.
        let third = s.fetch(at(1011), &OWNER, limits(1000)).unwrap();
        assert_eq!(keys(&third), ["a1", "a2", "a3"]);
        assert_eq!(third.messages[0].deliveries, 2);
        assert_eq!(third.messages[1].deliveries, 1);
    });
}

#[test]
fn a_fetched_message_not_acked_reappears_after_the_timeout_and_an_ack_deletes_it() {
    both(Config::amnesia, |s| {
        let id = s.send(at(0), msg(ALICE, "k", b"x")).unwrap().id;
        assert_eq!(
            s.fetch(at(0), &OWNER, limits(500)).unwrap().messages.len(),
            1
        );
        assert_eq!(s.stats(at(1)).inflight, 1);
        assert!(
            s.fetch(at(499), &OWNER, limits(500))
                .unwrap()
                .messages
                .is_empty()
        );
        let again = s.fetch(at(500), &OWNER, limits(500)).unwrap();
        assert_eq!(again.messages.len(), 1);
        assert_eq!(again.messages[0].message.id(), id);
        assert_eq!(s.ack(at(600), &OWNER, &[id]).unwrap(), 1);
        assert_eq!(s.ack(at(601), &OWNER, &[id]).unwrap(), 0, "acked twice");
        assert!(
            s.fetch(at(5000), &OWNER, limits(500))
                .unwrap()
                .messages
                .is_empty()
        );
        assert_eq!(s.stats(at(5000)).messages, 0);
        assert_eq!(s.stats(at(5000)).inflight, 0);
    });
}

#[test]
fn a_peek_hides_nothing_and_the_cursor_pages() {
    both(Config::amnesia, |s| {
        for k in ["a", "b", "c"] {
            s.send(at(0), msg(ALICE, k, b"x")).unwrap();
        }
        let peek = |after| {
            s.fetch(
                at(1),
                &OWNER,
                FetchLimits {
                    after,
                    max_count: 2,
                    ..limits(0)
                },
            )
            .unwrap()
        };
        let p1 = peek(0);
        assert_eq!(keys(&p1), ["a", "b"]);
        assert!(p1.more);
        let p2 = peek(p1.next_cursor);
        assert_eq!(keys(&p2), ["c"]);
        assert!(!p2.more);
        assert_eq!(peek(p2.next_cursor).next_cursor, p2.next_cursor);
        assert_eq!(keys(&peek(0)), ["a", "b"], "a peek hides nothing");
    });
}

#[test]
fn the_byte_limit_cuts_a_batch_but_one_message_always_comes() {
    both(Config::amnesia, |s| {
        s.send(at(0), msg(ALICE, "big", &[0; 4000])).unwrap();
        s.send(at(0), msg(BOB, "small", &[0; 10])).unwrap();
        let lim = FetchLimits {
            max_bytes: 100,
            ..limits(1000)
        };
        let b = s.fetch(at(1), &OWNER, lim).unwrap();
        assert_eq!(keys(&b), ["big"]);
        assert!(b.more);
        assert_eq!(keys(&s.fetch(at(2), &OWNER, lim).unwrap()), ["small"]);
    });
}

#[test]
fn ttl_defaults_is_capped_and_expired_messages_are_dead_lettered() {
    let cfg = || Config {
        ttl_default: Duration::from_secs(60),
        ttl_max: Duration::from_secs(120),
        ..Config::amnesia()
    };
    both(cfg, |s| {
        s.send(at(0), msg(ALICE, "default", b"x")).unwrap();
        let mut long = msg(ALICE, "long", b"x");
        long.ttl_ms = 10 * 3600 * 1000;
        s.send(at(0), long).unwrap();
        let mut short = msg(BOB, "short", b"x");
        short.ttl_ms = 1000;
        s.send(at(0), short).unwrap();
        let b = s.fetch(at(0), &OWNER, limits(0)).unwrap();
        let ttls: Vec<u64> = b.messages.iter().map(|d| d.message.ttl_ms).collect();
        assert_eq!(ttls, [60_000, 120_000, 1000]);
        // Not delivered once expired, even before maintenance drops it.
        assert_eq!(
            keys(&s.fetch(at(1000), &OWNER, limits(0)).unwrap()),
            ["default", "long"]
        );
        let m = s.maintain(at(60_000)).unwrap();
        assert_eq!(m.expired, 2);
        assert_eq!(
            keys(&s.fetch(at(60_000), &OWNER, limits(0)).unwrap()),
            ["long"]
        );
        s.maintain(at(120_000)).unwrap();
        let st = s.stats(at(120_000));
        assert_eq!((st.messages, st.bytes, st.dead.expired), (0, 0, 3));
    });
}

#[test]
fn a_message_delivered_too_often_is_dead_lettered() {
    let cfg = || Config {
        deliveries_max: 2,
        ..Config::amnesia()
    };
    both(cfg, |s| {
        let id = s.send(at(0), msg(ALICE, "poison", b"x")).unwrap().id;
        assert_eq!(
            s.fetch(at(0), &OWNER, limits(10)).unwrap().messages.len(),
            1
        );
        assert_eq!(
            s.fetch(at(10), &OWNER, limits(10)).unwrap().messages.len(),
            1
        );
        assert!(
            s.fetch(at(20), &OWNER, limits(10))
                .unwrap()
                .messages
                .is_empty()
        );
        let st = s.stats(at(20));
        assert_eq!((st.messages, st.dead.deliveries_exhausted), (0, 1));
        assert!(
            s.send(at(21), msg(ALICE, "poison", b"x"))
                .unwrap()
                .duplicate
        );
        assert_eq!(s.ack(at(22), &OWNER, &[id]).unwrap(), 0);
    });
}

#[test]
fn quotas_refuse_with_their_scope_and_retry_advice() {
    let cfg = || Config {
        quotas: mailbox::Quotas {
            mailbox_count_max: 3,
            mailbox_bytes_max: 1000,
            sender_count_max: 2,
            sender_bytes_max: 500,
            store_bytes_max: 1500,
        },
        quota_retry_after: Duration::from_secs(7),
        ..Config::amnesia()
    };
    both(cfg, |s| {
        s.send(at(0), msg(ALICE, "1", b"x")).unwrap();
        s.send(at(0), msg(ALICE, "2", b"x")).unwrap();
        let e = s.send(at(0), msg(ALICE, "3", b"x")).unwrap_err();
        assert!(matches!(
            e,
            SendError::Quota {
                scope: QuotaScope::Sender,
                ..
            }
        ));
        assert_eq!(e.refusal(), Refusal::SenderQuota);
        assert_eq!(e.refusal().status(), 429);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        // A retry of a stored message is still a success, quota or not.
        assert!(s.send(at(0), msg(ALICE, "1", b"x")).unwrap().duplicate);
        let e = s.send(at(0), msg(BOB, "big", &[0; 501])).unwrap_err();
        assert_eq!(e.refusal(), Refusal::SenderQuota, "sender bytes");
        s.send(at(0), msg(BOB, "1", b"x")).unwrap();
        let e = s.send(at(0), msg(BOB, "2", b"x")).unwrap_err();
        assert_eq!(e.refusal(), Refusal::MailboxQuota, "mailbox count");
        // Another mailbox has room of its own, but the store's bytes run out.
        let mut other = msg(NodeId([10; 32]), "o", &[0; 500]);
        other.mailbox = NodeId([9; 32]);
        s.send(at(0), other.clone()).unwrap();
        other.sender = NodeId([11; 32]);
        s.send(at(0), other.clone()).unwrap();
        other.sender = BOB;
        let e = s.send(at(0), other).unwrap_err();
        assert_eq!(e.refusal(), Refusal::StoreFull);
        // Acks free the quota.
        let b = s.fetch(at(1), &OWNER, limits(100)).unwrap();
        let ids: Vec<MsgId> = b.messages.iter().map(|d| d.message.id()).collect();
        assert_eq!(s.ack(at(2), &OWNER, &ids).unwrap(), 3);
        s.send(at(3), msg(ALICE, "3", b"x")).unwrap();
    });
}

#[test]
fn oversized_payloads_and_bad_keys_are_refused() {
    both(Config::amnesia, |s| {
        let e = s
            .send(at(0), msg(ALICE, "k", &vec![0; PAYLOAD_MAX + 1]))
            .unwrap_err();
        assert_eq!(e.refusal(), Refusal::TooLarge);
        s.send(at(0), msg(ALICE, "k", &vec![0; PAYLOAD_MAX]))
            .unwrap();
        assert!(matches!(
            s.send(at(0), msg(ALICE, "", b"x")),
            Err(SendError::BadKey(0))
        ));
    });
}

#[test]
fn an_ack_names_messages_of_its_own_mailbox_only() {
    both(Config::amnesia, |s| {
        let id = s.send(at(0), msg(ALICE, "k", b"x")).unwrap().id;
        let stranger = NodeId([7; 32]);
        assert_eq!(s.ack(at(1), &stranger, &[id]).unwrap(), 0);
        assert_eq!(s.queue_depth(&OWNER), 1);
        assert!(
            s.fetch(at(1), &stranger, limits(10))
                .unwrap()
                .messages
                .is_empty()
        );
    });
}

#[test]
fn the_e2e_flag_and_the_payload_come_back_as_sent() {
    both(Config::amnesia, |s| {
        let mut m = msg(ALICE, "k", &[0xab; 1000]);
        m.e2e = true;
        m.ttl_ms = 5000;
        s.send(at(0), m.clone()).unwrap();
        let b = s.fetch(at(1000), &OWNER, limits(10)).unwrap();
        m.ttl_ms = 4000;
        assert_eq!(b.messages[0].message, m);
    });
}

#[test]
fn a_batch_send_answers_each_message_as_a_single_send_would() {
    both(
        || Config {
            quotas: mailbox::Quotas {
                sender_count_max: 2,
                ..mailbox::Quotas::default()
            },
            ..Config::amnesia()
        },
        |s| {
            let mut other = msg(ALICE, "o", b"x");
            other.mailbox = NodeId([0x80; 32]);
            let res = s.send_batch(
                at(0),
                vec![
                    msg(ALICE, "1", b"x"),
                    other,
                    msg(ALICE, "1", b"x"),
                    msg(ALICE, "2", b"x"),
                    msg(ALICE, "3", b"x"),
                    msg(BOB, "", b"x"),
                ],
            );
            let summary: Vec<String> = res
                .iter()
                .map(|r| match r {
                    Ok(sent) if sent.duplicate => "dup".to_string(),
                    Ok(_) => "new".to_string(),
                    Err(e) => e.refusal().reason().to_string(),
                })
                .collect();
            assert_eq!(
                summary,
                [
                    "new",
                    "new",
                    "dup",
                    "new",
                    "mailbox_sender_quota",
                    "mailbox_too_large"
                ]
            );
            assert_eq!(s.stats(at(1)).messages, 3);
        },
    );
}

/// A repair's peek (visibility 0) leaves out what is in flight and what waits behind it
/// in its share; the batch names what its cursor passes over, and `visible` hands those
/// over once they are visible, so a repair never loses them by moving its cursor on.
#[test]
fn a_peek_names_what_it_passed_over_and_hands_it_over_once_visible() {
    both(Config::amnesia, |s| {
        let seq = |b: &mailbox::Batch| b.messages.iter().map(|d| d.seq).collect::<Vec<_>>();
        s.send(at(0), msg(ALICE, "a1", b"1")).unwrap();
        s.send(at(0), msg(ALICE, "a2", b"2")).unwrap();
        s.send(at(0), msg(BOB, "b1", b"3")).unwrap();
        s.send(at(0), msg(BOB, "b2", b"4")).unwrap();
        let all = seq(&s.fetch(at(0), &OWNER, limits(0)).unwrap());
        let (a1, a2) = (all[0], all[1]);
        // The owner takes one message: ALICE's first, in flight for 10 s.
        let one = FetchLimits {
            max_count: 1,
            ..limits(10_000)
        };
        let taken = s.fetch(at(1), &OWNER, one).unwrap();
        assert_eq!(keys(&taken), ["a1"]);

        // A peek returns BOB's two; ALICE's are passed over (a2 waits behind a1).
        let peek = s.fetch(at(2), &OWNER, limits(0)).unwrap();
        assert_eq!(keys(&peek), ["b1", "b2"]);
        assert_eq!(peek.passed_over, vec![a1, a2]);
        // A peek that ends before them passes over nothing.
        let after_all = FetchLimits {
            after: peek.next_cursor,
            ..limits(0)
        };
        assert!(
            s.fetch(at(2), &OWNER, after_all)
                .unwrap()
                .passed_over
                .is_empty()
        );

        // While a1 is in flight both still wait; once it is visible again both are handed
        // over, in order, and a peek does not hide them.
        let (now, waiting) = s.visible(at(3), &OWNER, &[a1, a2]);
        assert!(now.is_empty());
        assert_eq!(waiting, vec![a1, a2]);
        let (now, waiting) = s.visible(at(10_002), &OWNER, &[a1, a2]);
        assert_eq!(now.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![a1, a2]);
        assert!(waiting.is_empty());
        assert_eq!(
            seq(&s.fetch(at(10_003), &OWNER, limits(0)).unwrap()).len(),
            4
        );

        // An acknowledged message is in neither list.
        let id = MsgId::derive(&OWNER, &ALICE, b"a1");
        assert_eq!(s.ack(at(10_004), &OWNER, &[id]).unwrap(), 1);
        let (now, waiting) = s.visible(at(10_005), &OWNER, &[a1, a2]);
        assert_eq!(now.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![a2]);
        assert!(waiting.is_empty());
    });
}
