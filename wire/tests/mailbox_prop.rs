//! Property tests of app protocol 3 (mailbox): any message within its bounds encodes and
//! decodes back to itself, and arbitrary or mutated bodies never panic the decoder and are
//! never accepted outside their bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use wire::NodeId;
use wire::mailbox::{
    ACK_IDS_MAX, BATCH_BYTES_MAX, Delivered, Envelope, FETCH_COUNT_MAX, IDEMPOTENCY_KEY_MAX,
    MailboxRequest, MailboxResponse, MsgId, PAYLOAD_MAX, REPLICATE_MAX, Refusal, VISIBILITY_MAX_MS,
};
use wire::message::{Bounded, decode, encode};

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId)
}

/// Payloads mostly small, sometimes at the cap.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..=64),
        1 => (0u8..=255).prop_map(|b| vec![b; PAYLOAD_MAX]),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        node_id(),
        node_id(),
        proptest::collection::vec(any::<u8>(), 1..=IDEMPOTENCY_KEY_MAX),
        any::<u64>(),
        any::<bool>(),
        payload(),
    )
        .prop_map(
            |(mailbox, sender, idempotency_key, ttl_ms, e2e, payload)| Envelope {
                mailbox,
                sender,
                idempotency_key,
                ttl_ms,
                e2e,
                payload,
            },
        )
}

/// Envelopes whose payloads stay under the batch byte cap together.
fn envelopes(max: usize) -> impl Strategy<Value = Vec<Envelope>> {
    proptest::collection::vec(envelope(), 0..=max.min(12))
        .prop_filter("batch over its byte cap", |v| {
            v.iter().map(|e| e.payload.len()).sum::<usize>() <= BATCH_BYTES_MAX as usize
        })
}

fn request() -> impl Strategy<Value = MailboxRequest> {
    prop_oneof![
        envelope().prop_map(MailboxRequest::Send),
        (
            node_id(),
            any::<u64>(),
            1..=FETCH_COUNT_MAX,
            0..=BATCH_BYTES_MAX,
            0..=VISIBILITY_MAX_MS
        )
            .prop_map(|(mailbox, after, max_count, max_bytes, visibility_ms)| {
                MailboxRequest::Fetch {
                    mailbox,
                    after,
                    max_count,
                    max_bytes,
                    visibility_ms,
                }
            }),
        (
            node_id(),
            proptest::collection::vec(any::<[u8; 32]>().prop_map(MsgId), 0..=ACK_IDS_MAX)
        )
            .prop_map(|(mailbox, ids)| MailboxRequest::Ack { mailbox, ids }),
        envelopes(REPLICATE_MAX).prop_map(|messages| MailboxRequest::Replicate { messages }),
        (envelope(), any::<[u8; 32]>(), any::<u32>(), any::<u64>()).prop_map(
            |(message, principal, messages_max, bytes_max)| MailboxRequest::SendFor {
                message,
                principal,
                messages_max,
                bytes_max,
            }
        ),
        (
            envelopes(REPLICATE_MAX),
            proptest::collection::vec(any::<Option<[u8; 32]>>(), REPLICATE_MAX)
        )
            .prop_map(|(messages, principals)| MailboxRequest::ReplicateFor {
                messages: messages.into_iter().zip(principals).collect(),
            }),
    ]
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::SenderQuota),
        Just(Refusal::MailboxQuota),
        Just(Refusal::StoreFull),
        Just(Refusal::TooLarge),
        Just(Refusal::NotHolder),
        Just(Refusal::NotOwner),
        Just(Refusal::BadSender),
        Just(Refusal::Unavailable),
    ]
}

fn response() -> impl Strategy<Value = MailboxResponse> {
    prop_oneof![
        any::<bool>().prop_map(|duplicate| MailboxResponse::Stored { duplicate }),
        (refusal(), any::<u64>()).prop_map(|(reason, retry_after_ms)| {
            MailboxResponse::Refused {
                reason,
                retry_after_ms,
            }
        }),
        (
            envelopes(FETCH_COUNT_MAX as usize),
            any::<u64>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(msgs, seq, deliveries, more)| MailboxResponse::Batch {
                messages: msgs
                    .into_iter()
                    .enumerate()
                    .map(|(i, message)| Delivered {
                        seq: seq.wrapping_add(i as u64),
                        deliveries,
                        message,
                    })
                    .collect(),
                next_cursor: seq,
                more,
            }),
        any::<u32>().prop_map(|deleted| MailboxResponse::Acked { deleted }),
        any::<u32>().prop_map(|stored| MailboxResponse::Replicated { stored }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip(req in request()) {
        let body = encode(&req);
        prop_assert!(body.len() <= wire::mailbox::BODY_MAX);
        prop_assert_eq!(decode::<MailboxRequest>(&body), Ok(req));
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let body = encode(&resp);
        prop_assert!(body.len() <= wire::mailbox::BODY_MAX);
        prop_assert_eq!(decode::<MailboxResponse>(&body), Ok(resp));
    }

    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = decode::<MailboxRequest>(&body) {
            prop_assert!(m.check_bounds().is_ok());
            prop_assert_eq!(decode::<MailboxRequest>(&encode(&m)), Ok(m));
        }
        if let Ok(m) = decode::<MailboxResponse>(&body) {
            prop_assert!(m.check_bounds().is_ok());
        }
    }

    #[test]
    fn mutated_bodies_never_panic(req in request(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut body = encode(&req).to_vec();
        if !body.is_empty() {
            let i = at.index(body.len());
            body[i] = byte;
        }
        if let Ok(m) = decode::<MailboxRequest>(&body) {
            prop_assert!(m.check_bounds().is_ok());
        }
        body.truncate(at.index(body.len().max(1)));
        let _ = decode::<MailboxRequest>(&body);
    }
}
