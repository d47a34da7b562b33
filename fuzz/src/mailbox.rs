//! Target `mailbox_messages`: the bodies of app protocol 3 (mailbox), as a peer sends them.
//!
//! The first byte picks the message type (even: request, odd: response), the rest is the
//! body. Checked: decoding never panics; a body it accepts is within its bounds, fits
//! `BODY_MAX`, and re-encodes to a body that decodes to the same message; a message's id is
//! the derivation from its mailbox, sender and key, whatever else the body says.

use wire::mailbox::{
    BATCH_BYTES_MAX, BODY_MAX, Envelope, FETCH_COUNT_MAX, MailboxRequest, MailboxResponse, MsgId,
    PAYLOAD_MAX,
};
use wire::message::{self, Bounded};

/// Decodes `body` as `T`; an accepted message re-encodes to a body that decodes to itself.
fn round_trip<T>(body: &[u8]) -> Option<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Bounded + PartialEq + std::fmt::Debug,
{
    let msg = message::decode::<T>(body).ok()?;
    assert!(
        msg.check_bounds().is_ok(),
        "accepted out of bounds: {msg:?}"
    );
    let again = message::encode(&msg);
    assert!(again.len() <= BODY_MAX, "re-encoded over BODY_MAX");
    let back = message::decode::<T>(&again)
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
    assert_eq!(back, msg, "re-encoding changed the message");
    Some(msg)
}

fn check_envelopes<'a>(envs: impl Iterator<Item = &'a Envelope>) {
    let mut bytes = 0usize;
    for e in envs {
        assert!(e.payload.len() <= PAYLOAD_MAX && !e.idempotency_key.is_empty());
        assert_eq!(
            e.id(),
            MsgId::derive(&e.mailbox, &e.sender, &e.idempotency_key)
        );
        bytes += e.payload.len();
    }
    assert!(bytes <= BATCH_BYTES_MAX as usize, "batch over its byte cap");
}

/// Target `mailbox_messages`.
pub fn run(data: &[u8]) {
    let [sel, body @ ..] = data else { return };
    if sel & 1 == 0 {
        match round_trip::<MailboxRequest>(body) {
            Some(MailboxRequest::Send(e)) => check_envelopes(std::iter::once(&e)),
            Some(MailboxRequest::Replicate { messages }) => check_envelopes(messages.iter()),
            Some(MailboxRequest::SendFor { message, .. }) => {
                check_envelopes(std::iter::once(&message))
            }
            Some(MailboxRequest::ReplicateFor { messages }) => {
                assert!(messages.len() <= wire::mailbox::REPLICATE_MAX);
                check_envelopes(messages.iter().map(|(m, _)| m))
            }
            Some(MailboxRequest::Fetch { max_count, .. }) => {
                assert!((1..=FETCH_COUNT_MAX).contains(&max_count))
            }
            _ => {}
        }
        return;
    }
    if let Some(MailboxResponse::Batch { messages, .. }) = round_trip::<MailboxResponse>(body) {
        assert!(messages.len() <= FETCH_COUNT_MAX as usize);
        check_envelopes(messages.iter().map(|d| &d.message));
    }
}
