//! App protocol 3, mailbox: store-and-forward messages addressed to a node id.
//!
//! A mailbox is held by the RF nodes closest to its owner's DHT key ("holders"). Senders
//! push messages to holders (SEND), holders push them to each other when the closest set
//! changes (REPLICATE), and the owner drains them (FETCH, then ACK). This module is the
//! wire form only: who may do what is the node's business (wire/SPEC.md §6.6), and the
//! semantics (idempotency, visibility timeout, quotas, TTL) live in the `mailbox` crate.
//!
//! A message's id is never carried: every party derives it from the mailbox, the sender
//! and the sender's idempotency key ([`MsgId::derive`]), so a retried send is the same
//! message at every holder and a peer cannot make two messages collide on purpose.
//!
//! Bodies may span frames (a SEND at the 64 KiB payload cap does not fit a 64 KiB frame):
//! the body of an exchange is the concatenation of the payloads of its frames from START to
//! END, at most [`BODY_MAX`] bytes, decoded once END arrives. Every list and byte field is
//! bounded on decode ([`Bounded`]).

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::message::{Bounded, MessageError, check_count, check_len};

/// The app protocol id of mailbox messages.
pub const APP_PROTO_MAILBOX: u16 = 3;
/// Largest message payload, in bytes (opaque to holders).
pub const PAYLOAD_MAX: usize = 64 * 1024;
/// Longest idempotency key, in bytes (at least one byte is required).
pub const IDEMPOTENCY_KEY_MAX: usize = 64;
/// Most messages one FETCH may ask for, and one batch may carry.
pub const FETCH_COUNT_MAX: u32 = 256;
/// Most payload bytes one batch (or one REPLICATE) may carry: with [`FETCH_COUNT_MAX`]
/// headers it stays under [`BODY_MAX`].
pub const BATCH_BYTES_MAX: u32 = 768 * 1024;
/// Longest visibility timeout a FETCH may ask for (12 hours), in milliseconds.
pub const VISIBILITY_MAX_MS: u64 = 12 * 3600 * 1000;
/// Most message ids one ACK may carry.
pub const ACK_IDS_MAX: usize = 1024;
/// Most messages one REPLICATE may carry.
pub const REPLICATE_MAX: usize = 64;
/// Largest body of one exchange (the concatenated payloads of its frames), in bytes.
pub const BODY_MAX: usize = 1024 * 1024;

/// A message's identity: BLAKE3 (derive-key mode) of mailbox ‖ sender ‖ idempotency key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId(pub [u8; 32]);

/// The BLAKE3 derive-key context of message ids: changing it changes every id.
pub const MSG_ID_CONTEXT: &str = "macronode mailbox message id v1";

impl MsgId {
    /// The id of the message `sender` sends to `mailbox` under `key`. Fixed-width ids
    /// first, so the concatenation is unambiguous.
    pub fn derive(mailbox: &NodeId, sender: &NodeId, key: &[u8]) -> MsgId {
        let mut h = blake3::Hasher::new_derive_key(MSG_ID_CONTEXT);
        h.update(&mailbox.0);
        h.update(&sender.0);
        h.update(key);
        MsgId(*h.finalize().as_bytes())
    }
}

impl std::fmt::Display for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for MsgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MsgId({})", hex::encode(&self.0[..4]))
    }
}

/// One message as senders and holders pass it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The mailbox: its owner's node id.
    pub mailbox: NodeId,
    /// Who sent it: on SEND, the authenticated peer (checked by the holder).
    pub sender: NodeId,
    /// Sender-chosen, 1 to [`IDEMPOTENCY_KEY_MAX`] bytes: a retry with the same key is the
    /// same message.
    #[serde(with = "blob")]
    pub idempotency_key: Vec<u8>,
    /// Time to live in milliseconds; 0 asks for the holder's default, and holders cap it.
    /// In a batch or a REPLICATE: the time left.
    pub ttl_ms: u64,
    /// The payload is end-to-end encrypted for the owner (OAP/1's APP_E2E, kept per
    /// message so it survives holders and replication).
    pub e2e: bool,
    /// Opaque bytes, at most [`PAYLOAD_MAX`].
    #[serde(with = "blob")]
    pub payload: Vec<u8>,
}

impl Envelope {
    /// The message's id, derived (never read from the wire).
    pub fn id(&self) -> MsgId {
        MsgId::derive(&self.mailbox, &self.sender, &self.idempotency_key)
    }

    fn check(&self) -> Result<(), MessageError> {
        check_len("payload", self.payload.len(), PAYLOAD_MAX)?;
        check_len(
            "idempotency_key",
            self.idempotency_key.len(),
            IDEMPOTENCY_KEY_MAX,
        )?;
        if self.idempotency_key.is_empty() {
            return Err(MessageError::Invalid {
                field: "idempotency_key",
                why: "empty",
            });
        }
        Ok(())
    }
}

/// A message as a holder delivers it to the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The holder's sequence number of the message: a cursor for the next FETCH.
    pub seq: u64,
    /// How many times this holder has delivered it, this time included.
    pub deliveries: u32,
    /// The message (`ttl_ms` = time left).
    pub message: Envelope,
}

/// A request of app protocol 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxRequest {
    /// Store a message (sender to holder).
    Send(Envelope),
    /// The owner asks for messages of its mailbox.
    Fetch {
        /// The mailbox (the authenticated peer must own it).
        mailbox: NodeId,
        /// Only messages with a holder sequence number above this (0: from the start).
        after: u64,
        /// At most this many messages (1 to [`FETCH_COUNT_MAX`]).
        max_count: u32,
        /// At most this many payload bytes (up to [`BATCH_BYTES_MAX`]; one message is
        /// always returned if any is visible, whatever its size).
        max_bytes: u32,
        /// Messages returned stay invisible this long unless acknowledged (at most
        /// [`VISIBILITY_MAX_MS`]; 0 peeks without hiding them).
        visibility_ms: u64,
    },
    /// The owner deletes delivered messages.
    Ack {
        /// The mailbox.
        mailbox: NodeId,
        /// The ids to delete (at most [`ACK_IDS_MAX`]).
        ids: Vec<MsgId>,
    },
    /// A holder pushes messages to another holder (repair, or a SEND fanned out).
    Replicate {
        /// The messages, `ttl_ms` = time left (at most [`REPLICATE_MAX`], payloads at most
        /// [`BATCH_BYTES_MAX`] in all).
        messages: Vec<Envelope>,
    },
    /// Store a message a gateway sends on behalf of a principal behind it (a public
    /// client's token or tenant): checked and answered like `Send`, and counted against
    /// the principal's share of the mailbox, at most `messages_max` messages and
    /// `bytes_max` payload bytes (each cut to the holder's own sender quota), instead of
    /// the sender's own share. Appended last, so older encodings keep their meaning.
    SendFor {
        /// The message; `sender` is the authenticated peer, as for `Send`.
        message: Envelope,
        /// An opaque 32-byte name of the principal (the gateway hashes it).
        principal: [u8; 32],
        /// Most messages the principal may hold in this mailbox.
        messages_max: u32,
        /// Most payload bytes the principal may hold in this mailbox.
        bytes_max: u64,
    },
    /// `Replicate` for messages sent on behalf of principals: each keeps its principal
    /// (`None`: the sender's own), so the receiver counts it where the first holder did.
    /// A copy is checked against the receiver's own quotas only, as `Replicate`'s are:
    /// the principal's token limits were checked when the message was first admitted.
    ReplicateFor {
        /// The messages and their principals (bounds as `Replicate`'s).
        messages: Vec<(Envelope, Option<[u8; 32]>)>,
    },
}

/// Why a holder refused a request: each maps to one status code ([`Refusal::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The sender (for `SendFor`, its principal) holds too many messages or bytes in this
    /// mailbox (429).
    SenderQuota,
    /// The mailbox holds too many messages or bytes (429).
    MailboxQuota,
    /// The holder's store is full (429).
    StoreFull,
    /// The payload or the body is over its limit (413).
    TooLarge,
    /// The responder is not among the mailbox's holders (403).
    NotHolder,
    /// The asker does not own the mailbox (403).
    NotOwner,
    /// `sender` is not the authenticated peer, and no capability allows it (403).
    BadSender,
    /// The store cannot take or serve it now (503).
    Unavailable,
}

impl Refusal {
    /// The OAP/1 status code a response carrying this refusal has.
    pub fn status(self) -> u16 {
        match self {
            Refusal::SenderQuota | Refusal::MailboxQuota | Refusal::StoreFull => 429,
            Refusal::TooLarge => 413,
            Refusal::NotHolder | Refusal::NotOwner | Refusal::BadSender => 403,
            Refusal::Unavailable => 503,
        }
    }

    /// The stable name, a metric label and an error string.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::SenderQuota => "mailbox_sender_quota",
            Refusal::MailboxQuota => "mailbox_quota",
            Refusal::StoreFull => "mailbox_store_full",
            Refusal::TooLarge => "mailbox_too_large",
            Refusal::NotHolder => "mailbox_not_holder",
            Refusal::NotOwner => "mailbox_not_owner",
            Refusal::BadSender => "mailbox_bad_sender",
            Refusal::Unavailable => "mailbox_unavailable",
        }
    }
}

/// A response of app protocol 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxResponse {
    /// SEND_ACK: the message is durable at this holder (200).
    Stored {
        /// It was already held (or already delivered and acknowledged): nothing new stored.
        duplicate: bool,
    },
    /// The request was refused (status [`Refusal::status`]).
    Refused {
        /// Why.
        reason: Refusal,
        /// When to try again, in milliseconds (0: no advice); the gateway's `Retry-After`.
        retry_after_ms: u64,
    },
    /// Answer to FETCH (200).
    Batch {
        /// The messages, in the holder's order (per-sender FIFO).
        messages: Vec<Delivered>,
        /// The highest `seq` returned (or the request's `after` if none).
        next_cursor: u64,
        /// More messages were visible than returned.
        more: bool,
    },
    /// Answer to ACK (200).
    Acked {
        /// How many of the ids were held and are now deleted.
        deleted: u32,
    },
    /// Answer to REPLICATE (200): all are durable here.
    Replicated {
        /// How many were new to this holder.
        stored: u32,
    },
}

fn check_batch<'a>(
    field: &'static str,
    messages: impl Iterator<Item = &'a Envelope>,
) -> Result<(), MessageError> {
    let mut bytes = 0usize;
    for m in messages {
        m.check()?;
        bytes += m.payload.len();
    }
    check_len(field, bytes, BATCH_BYTES_MAX as usize)
}

impl Bounded for MailboxRequest {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            MailboxRequest::Send(env) | MailboxRequest::SendFor { message: env, .. } => env.check(),
            MailboxRequest::Fetch {
                max_count,
                max_bytes,
                visibility_ms,
                ..
            } => {
                if *max_count == 0 || *max_count > FETCH_COUNT_MAX {
                    return Err(MessageError::Invalid {
                        field: "max_count",
                        why: "not within 1..=FETCH_COUNT_MAX",
                    });
                }
                check_len("max_bytes", *max_bytes as usize, BATCH_BYTES_MAX as usize)?;
                if *visibility_ms > VISIBILITY_MAX_MS {
                    return Err(MessageError::Invalid {
                        field: "visibility_ms",
                        why: "over VISIBILITY_MAX_MS",
                    });
                }
                Ok(())
            }
            MailboxRequest::Ack { ids, .. } => check_count("ids", ids, ACK_IDS_MAX),
            MailboxRequest::Replicate { messages } => {
                check_count("messages", messages, REPLICATE_MAX)?;
                check_batch("messages.payload", messages.iter())
            }
            MailboxRequest::ReplicateFor { messages } => {
                check_count("messages", messages, REPLICATE_MAX)?;
                check_batch("messages.payload", messages.iter().map(|(m, _)| m))
            }
        }
    }
}

impl Bounded for MailboxResponse {
    fn check_bounds(&self) -> Result<(), MessageError> {
        match self {
            MailboxResponse::Batch { messages, .. } => {
                check_count("messages", messages, FETCH_COUNT_MAX as usize)?;
                check_batch("messages.payload", messages.iter().map(|d| &d.message))
            }
            _ => Ok(()),
        }
    }
}

/// Byte fields as postcard byte strings (length, then the raw bytes) read in one copy.
/// The encoding is the same as a `Vec<u8>`'s; only the speed differs.
mod blob {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::ser::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BlobVisitor)
    }

    struct BlobVisitor;

    impl<'de> Visitor<'de> for BlobVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Self-describing formats only; capped so a hint cannot allocate for us.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{decode, encode};

    fn env(payload: Vec<u8>) -> Envelope {
        Envelope {
            mailbox: NodeId([1; 32]),
            sender: NodeId([2; 32]),
            idempotency_key: b"k1".to_vec(),
            ttl_ms: 60_000,
            e2e: true,
            payload,
        }
    }

    #[test]
    fn ids_are_derived_from_mailbox_sender_and_key() {
        let a = env(vec![1]);
        let mut b = env(vec![2, 3]);
        b.ttl_ms = 5;
        assert_eq!(a.id(), b.id(), "payload and ttl are not part of the id");
        b.idempotency_key = b"k2".to_vec();
        assert_ne!(a.id(), b.id());
        let mut c = env(vec![1]);
        c.sender = NodeId([3; 32]);
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn bounds_are_checked_on_decode() {
        let big = MailboxRequest::Send(env(vec![0; PAYLOAD_MAX + 1]));
        assert!(matches!(
            decode::<MailboxRequest>(&encode(&big)),
            Err(MessageError::TooLong {
                field: "payload",
                ..
            })
        ));
        let at_cap = MailboxRequest::Send(env(vec![7; PAYLOAD_MAX]));
        assert_eq!(decode::<MailboxRequest>(&encode(&at_cap)), Ok(at_cap));
        let mut e = env(vec![]);
        e.idempotency_key.clear();
        assert!(decode::<MailboxRequest>(&encode(&MailboxRequest::Send(e))).is_err());
        let mut e = env(vec![]);
        e.idempotency_key = vec![1; IDEMPOTENCY_KEY_MAX + 1];
        assert!(decode::<MailboxRequest>(&encode(&MailboxRequest::Send(e))).is_err());
        let fetch = |max_count, max_bytes, visibility_ms| MailboxRequest::Fetch {
            mailbox: NodeId([1; 32]),
            after: 0,
            max_count,
            max_bytes,
            visibility_ms,
        };
        for bad in [
            fetch(0, 1, 0),
            fetch(FETCH_COUNT_MAX + 1, 1, 0),
            fetch(1, BATCH_BYTES_MAX + 1, 0),
            fetch(1, 1, VISIBILITY_MAX_MS + 1),
        ] {
            assert!(decode::<MailboxRequest>(&encode(&bad)).is_err(), "{bad:?}");
        }
        let ok = fetch(FETCH_COUNT_MAX, BATCH_BYTES_MAX, VISIBILITY_MAX_MS);
        assert_eq!(decode::<MailboxRequest>(&encode(&ok)), Ok(ok));
        let ack = MailboxRequest::Ack {
            mailbox: NodeId([1; 32]),
            ids: vec![MsgId([0; 32]); ACK_IDS_MAX + 1],
        };
        assert!(decode::<MailboxRequest>(&encode(&ack)).is_err());
        let rep = MailboxRequest::Replicate {
            messages: vec![env(vec![0; 16]); REPLICATE_MAX + 1],
        };
        assert!(decode::<MailboxRequest>(&encode(&rep)).is_err());
        // Twelve full payloads pass the count but not the byte cap.
        let rep = MailboxRequest::Replicate {
            messages: vec![env(vec![0; PAYLOAD_MAX]); 13],
        };
        assert!(decode::<MailboxRequest>(&encode(&rep)).is_err());
        let send_for = |payload| MailboxRequest::SendFor {
            message: env(payload),
            principal: [4; 32],
            messages_max: 1,
            bytes_max: 1,
        };
        assert!(decode::<MailboxRequest>(&encode(&send_for(vec![0; PAYLOAD_MAX + 1]))).is_err());
        let ok = send_for(vec![0; PAYLOAD_MAX]);
        assert_eq!(decode::<MailboxRequest>(&encode(&ok)), Ok(ok));
        let rep_for = |n, len| MailboxRequest::ReplicateFor {
            messages: vec![(env(vec![0; len]), Some([4; 32])); n],
        };
        assert!(decode::<MailboxRequest>(&encode(&rep_for(REPLICATE_MAX + 1, 16))).is_err());
        assert!(decode::<MailboxRequest>(&encode(&rep_for(13, PAYLOAD_MAX))).is_err());
        let ok = rep_for(REPLICATE_MAX, 16);
        assert_eq!(decode::<MailboxRequest>(&encode(&ok)), Ok(ok));
        let batch = MailboxResponse::Batch {
            messages: vec![
                Delivered {
                    seq: 1,
                    deliveries: 1,
                    message: env(vec![0; 1]),
                };
                FETCH_COUNT_MAX as usize + 1
            ],
            next_cursor: 1,
            more: false,
        };
        assert!(decode::<MailboxResponse>(&encode(&batch)).is_err());
    }

    #[test]
    fn largest_bodies_fit_body_max() {
        let key = vec![9; IDEMPOTENCY_KEY_MAX];
        let per = PAYLOAD_MAX;
        let n = BATCH_BYTES_MAX as usize / per;
        let mk = |p: usize| Envelope {
            idempotency_key: key.clone(),
            ttl_ms: u64::MAX,
            ..env(vec![0; p])
        };
        // Full payloads up to the byte cap, or the most messages with tiny payloads.
        for messages in [
            vec![mk(per); n],
            vec![mk(BATCH_BYTES_MAX as usize / FETCH_COUNT_MAX as usize); 256],
        ] {
            let batch = MailboxResponse::Batch {
                messages: messages
                    .into_iter()
                    .map(|message| Delivered {
                        seq: u64::MAX,
                        deliveries: u32::MAX,
                        message,
                    })
                    .collect(),
                next_cursor: u64::MAX,
                more: true,
            };
            let body = encode(&batch);
            assert!(body.len() <= BODY_MAX, "{} bytes", body.len());
            assert_eq!(decode::<MailboxResponse>(&body), Ok(batch));
        }
    }

    #[test]
    fn spec_examples() {
        let rep = |byte: &str| byte.repeat(32);
        let e = Envelope {
            mailbox: NodeId([1; 32]),
            sender: NodeId([2; 32]),
            idempotency_key: b"k1".to_vec(),
            ttl_ms: 60_000,
            e2e: true,
            payload: b"hi".to_vec(),
        };
        let env_hex = format!("{}{}026b31e0d403010268 69", rep("01"), rep("02")).replace(' ', "");
        let fetch = MailboxRequest::Fetch {
            mailbox: NodeId([1; 32]),
            after: 0,
            max_count: 100,
            max_bytes: 65_536,
            visibility_ms: 30_000,
        };
        let requests: Vec<(MailboxRequest, String)> = vec![
            (MailboxRequest::Send(e.clone()), format!("00{env_hex}")),
            (
                fetch,
                format!("01{}00648080 04b0ea01", rep("01")).replace(' ', ""),
            ),
            (
                MailboxRequest::Ack {
                    mailbox: NodeId([1; 32]),
                    ids: vec![MsgId([3; 32])],
                },
                format!("02{}01{}", rep("01"), rep("03")),
            ),
            (
                MailboxRequest::Replicate {
                    messages: vec![e.clone()],
                },
                format!("0301{env_hex}"),
            ),
            (
                MailboxRequest::SendFor {
                    message: e.clone(),
                    principal: [4; 32],
                    messages_max: 3,
                    bytes_max: 1000,
                },
                format!("04{env_hex}{}03e807", rep("04")),
            ),
            (
                MailboxRequest::ReplicateFor {
                    messages: vec![(e.clone(), Some([4; 32])), (e.clone(), None)],
                },
                format!("0502{env_hex}01{}{env_hex}00", rep("04")),
            ),
        ];
        let responses: Vec<(MailboxResponse, String)> = vec![
            (MailboxResponse::Stored { duplicate: false }, "0000".into()),
            (
                MailboxResponse::Refused {
                    reason: Refusal::MailboxQuota,
                    retry_after_ms: 5_000,
                },
                "01018827".into(),
            ),
            (
                MailboxResponse::Batch {
                    messages: vec![Delivered {
                        seq: 7,
                        deliveries: 1,
                        message: e.clone(),
                    }],
                    next_cursor: 7,
                    more: false,
                },
                format!("0201 0701 {env_hex} 0700").replace(' ', ""),
            ),
            (MailboxResponse::Acked { deleted: 1 }, "0301".into()),
            (MailboxResponse::Replicated { stored: 1 }, "0401".into()),
        ];
        for (value, want) in requests {
            assert_eq!(hex::encode(encode(&value)), want, "{value:?}");
            let bytes = hex::decode(&want).unwrap_or_default();
            assert_eq!(decode::<MailboxRequest>(&bytes), Ok(value));
        }
        for (value, want) in responses {
            assert_eq!(hex::encode(encode(&value)), want, "{value:?}");
            let bytes = hex::decode(&want).unwrap_or_default();
            assert_eq!(decode::<MailboxResponse>(&bytes), Ok(value));
        }
        assert_eq!(
            e.id().to_string(),
            "3fd0766a340efd4bcade41be83eca31d7fc7a18f4c33d7063674666b4a8468e9"
        );
    }
}
