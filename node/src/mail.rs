//! Mailboxes across the mesh (issue 17): app protocol 3 served over the node's
//! [`mailbox::MailboxStore`], and the three things the node does for its users: send a
//! message to a node id, receive its own mail, acknowledge it.
//!
//! Holders: the RF nodes closest to the mailbox's DHT key (`Key::for_node`), found like an
//! object's (`Objects::closest_set`). A send goes from this node to each holder (SEND, the
//! sender being this node, as its QUIC identity proves) and is acknowledged once W of them
//! answered `Stored` after their fsync; short of W it is an error, never a success.
//!
//! Trust (who may do what, checked on every inbound exchange):
//! - SEND: any authenticated peer, but `sender` must be that peer's id (else `BadSender`),
//!   and only at a node whose table puts it among the 2·RF closest to the mailbox, the
//!   set the owner's receive asks (else `NotHolder`, which the sender counts as no copy):
//!   a copy elsewhere would count toward W and never be delivered.
//!   SEND_FOR is a SEND on behalf of a principal behind the sender (a public client of its
//!   gateway, named by a hash of its tenant or token): the same check, and the message
//!   counts against that principal's share of the mailbox, at most the limits the request
//!   carries (the token's mail caveat) and the holder's sender quota. A node could name
//!   many principals to get many shares, but it could as well make many node ids: the
//!   sender quota is fairness, not a Sybil defence; the mailbox quota bounds them all.
//! - FETCH, ACK: only the peer whose authenticated id is the mailbox (else `NotOwner`).
//! - REPLICATE: only from a peer that our routing table puts among the 2·RF closest to
//!   every message's mailbox, we being among the RF closest (else `NotHolder`); each
//!   message keeps its original sender, which the receiver cannot check, so REPLICATE is
//!   for holders only. REPLICATE_FOR carries each copy's principal too, so the receiver
//!   counts it in the same share; a copy is checked against the receiver's own quotas
//!   only, as any replica is, never again against the token limits it was admitted under.
//!
//! Repair: every `--mailbox-repair-ms` (15 s) each holder pushes the visible messages of
//! the mailboxes it holds to the other RF closest its table knows (REPLICATE; copies
//! already held, or whose ack is remembered, are duplicates), each holder only what came
//! after what it confirmed, and everything again every few minutes. On start, a node pulls copies of its own
//! mail from the holders (drain on start).
//!
//! The owner receives by asking every holder (and, as the closest set moves with churn, the
//! next RF closest as well: twice RF in all), merging copies by message id, and long-polls
//! within a bound. An ack goes to the same nodes; a holder that missed it (down at the
//! time) and later delivers the message again is sent it once more, the owner's own store
//! remembering its acks until the messages would have expired.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mailbox::{FetchLimits, MailboxStore, Principal, SendError};
use overlay::{Key, MailAnswer, MailCursor, MailMerge, MailRepairLog, MailSent};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use wire::NodeId;
use wire::Status;
use wire::mailbox::{
    APP_PROTO_MAILBOX, BATCH_BYTES_MAX, BODY_MAX, Delivered, Envelope, FETCH_COUNT_MAX,
    MailboxRequest, MailboxResponse, MsgId, REPLICATE_MAX, Refusal,
};
use wire::message;

use crate::dht::{Clock, NetPeer};
use crate::objects::Objects;
use crate::transport::{InboundExchange, TransportError};

/// How long a message stays hidden from the owner after a receive, unless acknowledged.
pub const VISIBILITY: Duration = Duration::from_secs(30);
/// Longest long-poll of a receive.
pub const WAIT_MAX: Duration = Duration::from_secs(60);
/// How often a long-poll asks the holders again.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long a send waits for its W copies.
const SEND_WAIT: Duration = Duration::from_secs(10);
/// How long one holder may take to answer a FETCH or an ACK: a dead holder costs a receive
/// this, not a connect timeout per poll.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// Most mailboxes one repair round walks.
const REPAIR_MAILBOXES_MAX: usize = 4096;
/// How often expired messages are dropped and journals compacted.
const MAINTAIN_EVERY: Duration = Duration::from_secs(5);

/// Time since the Unix epoch, as the mailbox store takes it.
pub fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Why a send, receive or ack did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A holder (or this node) is over a quota for this sender or mailbox.
    #[error("over the mailbox quota ({reason})")]
    Quota {
        /// The refusal's stable name.
        reason: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
    /// The message is over its size limit.
    #[error("message too large: {0}")]
    TooLarge(String),
    /// Fewer than W holders stored the message durably.
    #[error("only {copies} of {want} durable copies")]
    Insufficient {
        /// Copies confirmed.
        copies: usize,
        /// Copies needed.
        want: usize,
    },
    /// The local store failed.
    #[error("mailbox store: {0}")]
    Store(String),
    /// No holder could be asked.
    #[error("no holder answered: {0}")]
    Unreachable(String),
}

/// Most messages one [`Mail::send_many`] takes.
pub const SEND_MANY_MAX: usize = 256;

/// One message to send: its idempotency key, TTL (`None`: the holders' default),
/// payload, and whether the sender encrypted it for the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Sender-chosen, 1 to 64 bytes: a retry with the same key is the same message.
    pub key: Vec<u8>,
    /// Time to live.
    pub ttl: Option<Duration>,
    /// The bytes, at most 64 KiB.
    pub payload: Vec<u8>,
    /// The payload is end-to-end encrypted for the owner (OAP/1's APP_E2E): holders
    /// keep the mark with the message and hand it to the owner, who alone can read it.
    pub e2e: bool,
}

/// The answer to a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The message's id.
    pub id: MsgId,
    /// Durable copies confirmed when the send returned.
    pub copies: usize,
    /// Copies needed (W).
    pub want: usize,
    /// Every copy confirmed was already held.
    pub duplicate: bool,
}

/// One message as the owner receives it (`overlay::MailReceived`).
pub type Received = overlay::MailReceived;

/// The mailbox layer of one node. Cheap to clone.
#[derive(Clone)]
pub struct Mail {
    /// The local store (this node as a holder).
    pub store: Arc<MailboxStore>,
    objects: Objects,
    repair_every: Duration,
    /// What repair pushed to the other holders (`overlay::MailRepairLog`), and the clock
    /// its full pushes are timed by.
    pushed: Arc<std::sync::Mutex<MailRepairLog<NodeId>>>,
    clock: Arc<Clock>,
}

/// Most pending messages one round reads for one holder (4 full REPLICATEs).
const PENDING_PER_ROUND: usize = 4 * REPLICATE_MAX;

impl Mail {
    /// The mailbox layer over `store`, placing copies through the object layer's closest
    /// set and write quorum.
    /// Repair runs every `repair_every`.
    pub fn new(store: MailboxStore, objects: Objects, repair_every: Duration) -> Mail {
        Mail {
            store: Arc::new(store),
            objects,
            repair_every,
            pushed: Arc::default(),
            clock: Arc::new(Clock::new()),
        }
    }

    fn me(&self) -> NodeId {
        self.objects.dht.local().id
    }

    fn rf(&self) -> usize {
        self.objects.limits.rf.max(1)
    }

    /// Runs a store call on the blocking pool (journal writes fsync).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&MailboxStore) -> T + Send + 'static,
    ) -> Result<T, MailError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| MailError::Store(e.to_string()))
    }

    /// One request to one peer, connected first (with HELLO, on a new connection); its
    /// decoded answer.
    async fn ask(
        &self,
        peer: &NetPeer,
        req: &MailboxRequest,
    ) -> Result<MailboxResponse, TransportError> {
        let t = &self.objects.transport;
        let (_, body) = t
            .request_to(peer.addr, peer.id, APP_PROTO_MAILBOX, message::encode(req))
            .await?;
        message::decode::<MailboxResponse>(&body).map_err(TransportError::Message)
    }

    /// Sends `payload` from this node to `mailbox` under `key`; returns once W holders
    /// (this node counting if it is one) hold it durably, or fails.
    /// With a `principal`, the message is sent on behalf of it (a public client of this
    /// gateway): every holder counts it against that principal's share (SEND_FOR).
    pub async fn send(
        &self,
        mailbox: NodeId,
        key: Vec<u8>,
        ttl: Option<Duration>,
        payload: Vec<u8>,
        e2e: bool,
        principal: Option<Principal>,
    ) -> Result<Sent, MailError> {
        let one = Outgoing {
            key,
            ttl,
            payload,
            e2e,
        };
        let mut sent = self.send_many(mailbox, vec![one], principal).await?;
        sent.pop()
            .ok_or_else(|| MailError::Store("a send returned no result".into()))
    }

    /// Sends several messages from this node to `mailbox` (at most [`SEND_MANY_MAX`]):
    /// this node stores its copies with one `send_batch` (one fsync per shard), each other
    /// holder gets them as SENDs in order. Returns once every message has W durable
    /// copies, or fails as a whole (a retry with the same keys stores nothing twice).
    pub async fn send_many(
        &self,
        mailbox: NodeId,
        msgs: Vec<Outgoing>,
        principal: Option<Principal>,
    ) -> Result<Vec<Sent>, MailError> {
        let started = std::time::Instant::now();
        if msgs.len() > SEND_MANY_MAX {
            return Err(MailError::TooLarge(format!(
                "{} messages in one send, at most {SEND_MANY_MAX}",
                msgs.len()
            )));
        }
        let me = self.me();
        let envs: Vec<Envelope> = msgs
            .into_iter()
            .map(|m| Envelope {
                mailbox,
                sender: me,
                idempotency_key: m.key,
                ttl_ms: m
                    .ttl
                    .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                e2e: m.e2e,
                payload: m.payload,
            })
            .collect();
        let n = envs.len();
        let want = self.objects.write_quorum();
        let key = Key::for_node(&mailbox);
        let (peers, self_in) = self
            .objects
            .closest_set(key, self.rf())
            .await
            .map_err(|e| MailError::Unreachable(e.to_string()))?;
        // A walk that came back short puts us in the set; our own copy counts only where a
        // receiving holder's would (the rule `send_here` applies).
        let self_in = self_in && self.objects.dht.holds_mailbox(key).await.unwrap_or(false);
        // Which holder is asked for which message next, and when the send is over, is
        // `overlay::MailSend`'s; this loop carries the requests, beside our own store's.
        let mut send = overlay::MailSend::new(n, peers.len(), want);
        let deadline = tokio::time::Instant::now() + SEND_WAIT;
        let (tx, mut rx) = mpsc::channel(peers.len().max(1));
        let ask = |send: &mut overlay::MailSend<(Refusal, u64)>| {
            while let Some((h, i)) = send.poll_send() {
                let mail = self.clone();
                let (peer, env) = (peers[h].clone(), envs[i].clone());
                // A task that panics still answers, so its holder is not waited for.
                let mut answer_to = AnswerTo {
                    tx: tx.clone(),
                    holder: h,
                    message: i,
                    answered: false,
                };
                tokio::spawn(async move {
                    let req = match principal {
                        None => MailboxRequest::Send(env),
                        Some(p) => MailboxRequest::SendFor {
                            message: env,
                            principal: p.id,
                            messages_max: u32::try_from(p.count_max).unwrap_or(u32::MAX),
                            bytes_max: p.bytes_max,
                        },
                    };
                    let answer = tokio::time::timeout_at(deadline, mail.ask(&peer, &req)).await;
                    let answer = match answer {
                        Ok(Ok(MailboxResponse::Stored { duplicate })) => {
                            MailAnswer::Stored { duplicate }
                        }
                        // Not a holder in its own view: no copy, and no advice for the
                        // client (any other refusal is: a quota, a size, unavailable).
                        Ok(Ok(MailboxResponse::Refused {
                            reason: Refusal::NotHolder,
                            ..
                        })) => MailAnswer::Failed,
                        Ok(Ok(MailboxResponse::Refused {
                            reason,
                            retry_after_ms,
                        })) => MailAnswer::Refused((reason, retry_after_ms)),
                        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => MailAnswer::Failed,
                    };
                    if answer == MailAnswer::Failed {
                        tracing::debug!(peer = %peer.id, "mailbox send to a holder failed");
                    }
                    answer_to.send(answer).await;
                });
            }
        };
        ask(&mut send);
        let ids: Vec<MsgId> = envs.iter().map(Envelope::id).collect();
        // Our own copies are stored while the holders are asked (one fsync per shard on the
        // blocking pool must not hold their next messages up).
        let mut local = self_in.then(|| {
            let (mail, envs) = (self.clone(), envs.clone());
            tokio::spawn(async move {
                let envs = envs.into_iter().map(|e| (e, principal)).collect();
                mail.blocking(move |s| s.send_batch_for(now(), envs)).await
            })
        });
        let mut timed_out = false;
        while local.is_some() || !(send.is_over() || timed_out) {
            tokio::select! {
                stored = async {
                    match local.as_mut() {
                        Some(task) => task.await,
                        None => std::future::pending().await,
                    }
                } => {
                    local = None;
                    let results = stored.map_err(|e| MailError::Store(e.to_string()))??;
                    for (i, r) in results.into_iter().enumerate() {
                        match r {
                            Ok(s) => send.handle_local(i, s.duplicate),
                            Err(e) => match refused(&e) {
                                Some(err) => return Err(err),
                                None => tracing::warn!(error = %e, "storing a mailbox copy here failed"),
                            },
                        }
                    }
                }
                next = tokio::time::timeout_at(deadline, rx.recv()), if !(send.is_over() || timed_out) => {
                    match next {
                        Ok(Some((h, i, answer))) => {
                            send.handle_answer(h, i, answer);
                            ask(&mut send);
                        }
                        Ok(None) | Err(_) => timed_out = true,
                    }
                }
            }
        }
        let outcome = send.outcome();
        let label = match outcome {
            MailSent::Acknowledged(_) => "ok",
            MailSent::Short { .. } => "short",
        };
        metrics::histogram!("mailbox_enqueue_duration_seconds", "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        match outcome {
            MailSent::Acknowledged(copies) => {
                metrics::counter!("mailbox_sent_total").increment(n as u64);
                Ok(ids
                    .into_iter()
                    .zip(copies)
                    .map(|(id, (copies, duplicate))| Sent {
                        id,
                        copies,
                        want,
                        duplicate,
                    })
                    .collect())
            }
            MailSent::Short {
                least,
                want,
                advice,
            } => Err(advice.map_or(
                MailError::Insufficient {
                    copies: least,
                    want,
                },
                |(reason, retry_ms)| refusal_error(reason, retry_ms),
            )),
        }
    }

    /// The nodes the owner asks for its mail (`overlay::mail_receive_set`: twice RF
    /// closest to its own key, so copies placed while the closest set was another are
    /// found too).
    async fn own_holders(&self) -> Result<(Vec<NetPeer>, bool), MailError> {
        let me = self.me();
        self.objects
            .closest_set(Key::for_node(&me), overlay::mail_receive_set(self.rf()))
            .await
            .map_err(|e| MailError::Unreachable(e.to_string()))
    }

    /// This node's own mail: at most `max` messages from every holder, merged by id, each
    /// hidden for [`VISIBILITY`] at its holders. Waits up to `wait` (at most [`WAIT_MAX`])
    /// for a first message.
    pub async fn recv(&self, wait: Duration, max: u32) -> Result<Vec<Received>, MailError> {
        let started = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + wait.min(WAIT_MAX);
        let max = max.clamp(1, FETCH_COUNT_MAX);
        // One lookup per receive, not one per poll: a 30 s long-poll would otherwise run
        // 150 lookups.
        let holders = self.own_holders().await?;
        loop {
            let got = self.recv_once(max, &holders).await?;
            if !got.is_empty() {
                metrics::histogram!("mailbox_delivery_seconds")
                    .record(started.elapsed().as_secs_f64());
                return Ok(got);
            }
            if tokio::time::Instant::now() + POLL_EVERY > deadline {
                return Ok(got);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn recv_once(
        &self,
        max: u32,
        holders: &(Vec<NetPeer>, bool),
    ) -> Result<Vec<Received>, MailError> {
        let me = self.me();
        let limits = FetchLimits {
            after: 0,
            max_count: max as usize,
            max_bytes: BATCH_BYTES_MAX as usize,
            visibility_ms: VISIBILITY.as_millis() as u64,
        };
        let (peers, self_in) = (holders.0.clone(), holders.1);
        let mut asks = JoinSet::new();
        for peer in peers {
            let mail = self.clone();
            let req = MailboxRequest::Fetch {
                mailbox: me,
                after: 0,
                max_count: max,
                max_bytes: BATCH_BYTES_MAX,
                visibility_ms: limits.visibility_ms,
            };
            asks.spawn(async move {
                match tokio::time::timeout(ASK_TIMEOUT, mail.ask(&peer, &req)).await {
                    Ok(Ok(MailboxResponse::Batch { messages, .. })) => Some((peer, messages)),
                    _ => None,
                }
            });
        }
        // Which copies make which message, and who is owed an ack again, is
        // `overlay::MailMerge`'s; this loop carries the requests.
        let mut merge = MailMerge::new(me);
        if self_in {
            match self.blocking(move |s| s.fetch(now(), &me, limits)).await? {
                Ok(b) => merge.take(b.messages, None),
                Err(e) => tracing::warn!(error = %e, "reading our own mailbox copy failed"),
            }
        }
        let asked = asks.len() + usize::from(self_in);
        while let Some(r) = asks.join_next().await {
            if let Ok(Some((peer, batch))) = r {
                merge.take(batch, Some(&peer));
            }
        }
        if merge.heard_from_none(asked) {
            return Err(MailError::Unreachable(format!(
                "none of {asked} holders answered"
            )));
        }
        self.drop_settled(&mut merge).await?;
        let out = merge.into_received(max as usize);
        metrics::counter!("mailbox_received_total").increment(out.len() as u64);
        Ok(out)
    }

    /// Takes out of a receive the messages this node already acknowledged (its own store
    /// remembers each ack until the message would have expired), and sends their acks
    /// again to the holders that delivered them: a holder down when the ack was given
    /// would otherwise deliver its copy again, and keep it, after it returns.
    async fn drop_settled(&self, merge: &mut MailMerge<NetPeer>) -> Result<(), MailError> {
        let ids = merge.ids();
        if ids.is_empty() {
            return Ok(());
        }
        let me = self.me();
        let settled = self.blocking(move |s| s.settled(now(), &me, &ids)).await?;
        if settled.is_empty() {
            return Ok(());
        }
        metrics::counter!("mailbox_acks_resent_total").increment(settled.len() as u64);
        for (peer, ids) in merge.settle(&settled) {
            let mail = self.clone();
            let req = MailboxRequest::Ack { mailbox: me, ids };
            tokio::spawn(async move {
                match tokio::time::timeout(ASK_TIMEOUT, mail.ask(&peer, &req)).await {
                    Ok(Ok(MailboxResponse::Acked { .. })) => {}
                    _ => tracing::debug!(peer = %peer.id, "a missed mailbox ack was not taken"),
                }
            });
        }
        Ok(())
    }

    /// Acknowledges `ids` of this node's own mail at every holder; returns the most copies
    /// of them any one holder deleted (so 0 means no holder held any).
    pub async fn ack(&self, ids: Vec<MsgId>) -> Result<u32, MailError> {
        let me = self.me();
        let (peers, self_in) = self.own_holders().await?;
        // When the ack is over and what it answers is `overlay::MailAck`'s; this carries
        // the requests.
        let mut tally = overlay::MailAck::new(peers.len(), self_in);
        let mut asks = JoinSet::new();
        for peer in peers {
            let mail = self.clone();
            let req = MailboxRequest::Ack {
                mailbox: me,
                ids: ids.clone(),
            };
            asks.spawn(async move {
                match tokio::time::timeout(ASK_TIMEOUT, mail.ask(&peer, &req)).await {
                    Ok(Ok(MailboxResponse::Acked { deleted })) => Some(deleted),
                    _ => None,
                }
            });
        }
        // Our own copy is acked beside the others, and its failure (a full disk) waits
        // for them: returning early would drop `asks` and abort the acks in flight, and
        // every holder would deliver the read mail again until it dead-letters it.
        let mut own_error = None;
        if self_in {
            let ids = ids.clone();
            match self
                .blocking(move |s| s.ack(now(), &me, &ids))
                .await
                .and_then(|r| r.map_err(|e| MailError::Store(e.to_string())))
            {
                Ok(d) => tally.handle_deleted(d),
                Err(e) => {
                    tally.handle_own_failed();
                    own_error = Some(e);
                }
            }
        }
        while let Some(r) = asks.join_next().await {
            if let Ok(Some(d)) = r {
                tally.handle_deleted(d);
            }
        }
        match tally.outcome() {
            overlay::MailAcked::Acked(deleted) => Ok(deleted),
            overlay::MailAcked::OwnFailed => {
                Err(own_error.unwrap_or_else(|| MailError::Store("our own ack failed".into())))
            }
            overlay::MailAcked::Unreachable { asked } => Err(MailError::Unreachable(format!(
                "none of {asked} holders answered the ack"
            ))),
        }
    }

    /// The `n` closest nodes to `mailbox`'s key in our table, us included, nearest first
    /// (no lookup: repair runs on what we know; it may push to a holder past a failing
    /// contact, which the receiver's rule, `Admission::takes_mail_replica`, accepts).
    async fn known_closest(&self, mailbox: &NodeId, n: usize) -> Vec<NetPeer> {
        let key = Key::for_node(mailbox);
        let me = self.objects.dht.local().clone();
        let mut set = self
            .objects
            .dht
            .closest_known(key, n)
            .await
            .unwrap_or_default();
        set.retain(|p| p.id != me.id);
        set.push(me);
        set.sort_by_key(|p| p.key.distance(&key));
        set.truncate(n);
        set
    }

    /// Whether `from` may REPLICATE messages of `mailbox` to us (the overlay's rule,
    /// `Admission::takes_mail_replica`: we among the RF closest, `from` among the 2·RF).
    async fn replica_source_ok(&self, from: &NodeId, mailbox: &NodeId) -> bool {
        self.objects
            .dht
            .takes_mail_replica(Key::for_node(mailbox), Key::for_node(from))
            .await
            .unwrap_or(false)
    }

    /// The messages of `mailbox` held here and visible, read without hiding them, at most
    /// [`REPLICATE_MAX`] and [`BATCH_BYTES_MAX`] from the message after `after`.
    async fn peek(&self, mailbox: NodeId, after: u64) -> Result<mailbox::Batch, MailError> {
        let limits = FetchLimits {
            after,
            max_count: REPLICATE_MAX,
            max_bytes: BATCH_BYTES_MAX as usize,
            visibility_ms: 0,
        };
        self.blocking(move |s| s.fetch(now(), &mailbox, limits))
            .await?
            .map_err(|e| MailError::Store(e.to_string()))
    }

    /// One repair round: every mailbox held here (up to [`REPAIR_MAILBOXES_MAX`]) has its
    /// visible messages pushed (REPLICATE) to the other RF closest nodes our table knows,
    /// each holder only the messages after those it already confirmed (`overlay::MailRepairLog`).
    /// Holders take copies they hold, or whose ack they remember, as duplicates; so a
    /// round after a change in the closest set fills the newcomer, and a round with no
    /// change and no new mail sends nothing. Returns the copies that were new to their
    /// receivers.
    pub async fn repair_round(&self) -> u64 {
        let me = self.me();
        // What to push to whom is the log's and its cursors' rule; this round reads the
        // store and carries the copies.
        let mut round = self
            .pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .start_round(self.clock.now());
        let mut stored = 0u64;
        let mut pushed = 0u64;
        for mailbox in self.store.mailboxes(REPAIR_MAILBOXES_MAX) {
            let mut peers: Vec<(NetPeer, MailCursor)> = self
                .known_closest(&mailbox, self.rf())
                .await
                .into_iter()
                .filter(|p| p.id != me)
                .map(|p| {
                    let c = round.cursor(&mailbox, &p.id);
                    (p, c)
                })
                .collect();
            // First what earlier batches passed over while it was in flight.
            for (peer, cursor) in peers.iter_mut() {
                if cursor.pending.is_empty() {
                    continue;
                }
                // The oldest first, a bounded number a round (their payloads are read at
                // once); a holder whose pending ones cannot be read or pushed, or that has
                // more than a round pushes, gets nothing newer this round: it is never sent
                // a later message ahead of an earlier one.
                let mut seqs = cursor.pending.clone();
                seqs.sort_unstable();
                let later = seqs.split_off(seqs.len().min(PENDING_PER_ROUND));
                let Ok((ready, mut waiting)) = self
                    .blocking(move |s| s.visible(now(), &mailbox, &seqs))
                    .await
                else {
                    cursor.leave_out();
                    continue;
                };
                match self.push_copies(peer, mailbox, &ready).await {
                    Ok(s) => {
                        stored += s;
                        pushed += ready.len() as u64;
                        if !later.is_empty() {
                            cursor.leave_out();
                        }
                        waiting.extend(later);
                        cursor.pending = waiting;
                    }
                    Err(()) => cursor.leave_out(),
                }
            }
            let Some(mut after) = peers.iter().map(|(_, c)| c.upto).min() else {
                continue;
            };
            loop {
                let Ok(batch) = self.peek(mailbox, after).await else {
                    break;
                };
                if batch.messages.is_empty() {
                    break;
                }
                after = batch.next_cursor;
                for (peer, cursor) in peers.iter_mut() {
                    let messages: Vec<Delivered> = batch
                        .messages
                        .iter()
                        .filter(|d| cursor.wants(d.seq))
                        .cloned()
                        .collect();
                    if messages.is_empty() {
                        continue;
                    }
                    match self.push_copies(peer, mailbox, &messages).await {
                        Ok(s) => {
                            stored += s;
                            pushed += messages.len() as u64;
                            cursor.pushed(batch.next_cursor, &batch.passed_over);
                        }
                        Err(()) => cursor.leave_out(),
                    }
                }
                if !batch.more || peers.iter().all(|(_, c)| c.is_out()) {
                    break;
                }
            }
            for (peer, cursor) in peers {
                round.keep(mailbox, peer.id, cursor);
            }
        }
        self.pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end_round(round);
        metrics::counter!("mailbox_repair_pushed_total").increment(pushed);
        metrics::counter!("mailbox_repair_copies_total").increment(stored);
        stored
    }

    /// Pushes `messages` of `mailbox` to `peer` (REPLICATE; REPLICATE_FOR when one of
    /// them was stored for a principal, so the receiver counts each copy as we do), in
    /// requests within the batch limits; the copies that were new to it, or `Err` at the
    /// first request that failed.
    async fn push_copies(
        &self,
        peer: &NetPeer,
        mailbox: NodeId,
        messages: &[Delivered],
    ) -> Result<u64, ()> {
        let mut stored = 0;
        for part in batches(messages) {
            let ids: Vec<MsgId> = part.iter().map(|d| d.message.id()).collect();
            let principals = self
                .blocking(move |s| s.principals(&mailbox, &ids))
                .await
                .map_err(|_| ())?;
            let messages: Vec<(Envelope, Option<[u8; 32]>)> = part
                .iter()
                .zip(principals)
                .map(|(d, p)| (d.message.clone(), p))
                .collect();
            // Copies without principals go as REPLICATE, which every version reads.
            let req = if messages.iter().any(|(_, p)| p.is_some()) {
                MailboxRequest::ReplicateFor { messages }
            } else {
                MailboxRequest::Replicate {
                    messages: messages.into_iter().map(|(m, _)| m).collect(),
                }
            };
            match tokio::time::timeout(ASK_TIMEOUT, self.ask(peer, &req)).await {
                Ok(Ok(MailboxResponse::Replicated { stored: s })) => stored += u64::from(s),
                _ => {
                    tracing::debug!(peer = %peer.id, "mailbox repair push failed");
                    return Err(());
                }
            }
        }
        Ok(stored)
    }

    /// Repair rounds every `repair_every` (see [`Mail::new`]), for ever.
    pub fn keep_repaired(&self) -> tokio::task::JoinHandle<()> {
        let mail = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(mail.repair_every).await;
                mail.repair_round().await;
            }
        })
    }

    /// Drain on start: once the node has joined, copies of its own mail held elsewhere are
    /// pulled here (read without hiding them, stored as replicas), so a node back from
    /// an absence holds its mailbox itself again, the closest node to its own key.
    /// Returns the copies that were new here.
    pub async fn drain_own(&self) -> u64 {
        let me = self.me();
        let Ok((peers, _)) = self.own_holders().await else {
            return 0;
        };
        let mut stored = 0u64;
        for peer in peers {
            let mut after = 0;
            loop {
                let req = MailboxRequest::Fetch {
                    mailbox: me,
                    after,
                    max_count: REPLICATE_MAX as u32,
                    max_bytes: BATCH_BYTES_MAX,
                    visibility_ms: 0,
                };
                let Ok(Ok(MailboxResponse::Batch {
                    messages,
                    next_cursor,
                    more,
                })) = tokio::time::timeout(ASK_TIMEOUT, self.ask(&peer, &req)).await
                else {
                    break;
                };
                if messages.is_empty() {
                    break;
                }
                after = next_cursor;
                let envs: Vec<Envelope> = messages
                    .into_iter()
                    .map(|d| d.message)
                    .filter(|m| m.mailbox == me)
                    .collect();
                let Ok(results) = self.blocking(move |s| s.send_batch(now(), envs)).await else {
                    break;
                };
                stored += results
                    .iter()
                    .filter(|r| matches!(r, Ok(s) if !s.duplicate))
                    .count() as u64;
                if !more {
                    break;
                }
            }
        }
        if stored > 0 {
            tracing::info!(stored, "own mailbox drained from its holders");
        }
        stored
    }

    /// Sets the mailbox gauges and dead-letter counters (for a scrape).
    pub fn publish_gauges(&self) {
        let s = self.store.stats(now());
        metrics::gauge!("mailbox_queue_depth").set(s.messages as f64);
        metrics::gauge!("mailbox_inflight").set(s.inflight as f64);
        metrics::gauge!("mailbox_journals_failed").set(s.journals_failed as f64);
        metrics::counter!("mailbox_dlq_total", "reason" => "expired").absolute(s.dead.expired);
        metrics::counter!("mailbox_dlq_total", "reason" => "deliveries_exhausted")
            .absolute(s.dead.deliveries_exhausted);
    }

    /// Drops expired messages and compacts journals every few seconds, for ever.
    pub fn keep_maintained(&self) -> tokio::task::JoinHandle<()> {
        let mail = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MAINTAIN_EVERY).await;
                match mail.blocking(|s| s.maintain(now())).await {
                    Ok(Err(e)) => tracing::warn!(error = %e, "mailbox maintenance failed"),
                    Err(e) => tracing::warn!(error = %e, "mailbox maintenance failed"),
                    Ok(Ok(m)) if m.recovered > 0 => tracing::warn!(
                        shards = m.recovered,
                        "mailbox journals that had failed were rewritten and take writes again"
                    ),
                    Ok(Ok(_)) => {}
                }
            }
        })
    }
}

/// The error a store refusal of a send becomes, if it is the sender's to hear (quota,
/// size); `None` for a failure of our own.
/// A holder's answer to a message, with the advice a refusal carries (reason, retry ms).
type HolderAnswer = MailAnswer<(Refusal, u64)>;

/// Where one holder's answer to one message goes: dropped unanswered (its task panicked),
/// it answers `Failed`, so the send does not wait for that holder until its deadline.
struct AnswerTo {
    tx: mpsc::Sender<(usize, usize, HolderAnswer)>,
    holder: usize,
    message: usize,
    answered: bool,
}

impl AnswerTo {
    async fn send(&mut self, answer: HolderAnswer) {
        self.answered = true;
        let _ = self.tx.send((self.holder, self.message, answer)).await;
    }
}

impl Drop for AnswerTo {
    fn drop(&mut self) {
        if !self.answered {
            // Room is certain: a holder has one message in flight at a time.
            let _ = self
                .tx
                .try_send((self.holder, self.message, MailAnswer::Failed));
        }
    }
}

fn refused(e: &SendError) -> Option<MailError> {
    match e {
        SendError::Quota { .. } => Some(MailError::Quota {
            reason: e.refusal().reason(),
            retry_after: e.retry_after().unwrap_or(Duration::from_secs(1)),
        }),
        SendError::TooLarge { .. } | SendError::BadKey(_) => {
            Some(MailError::TooLarge(e.to_string()))
        }
        SendError::Store(_) => None,
    }
}

fn refusal_error(reason: Refusal, retry_ms: u64) -> MailError {
    match reason {
        Refusal::SenderQuota | Refusal::MailboxQuota | Refusal::StoreFull => MailError::Quota {
            reason: reason.reason(),
            retry_after: Duration::from_millis(retry_ms.max(1000)),
        },
        Refusal::TooLarge => MailError::TooLarge(reason.reason().to_string()),
        _ => MailError::Unreachable(reason.reason().to_string()),
    }
}

fn status_of(reason: Refusal) -> Status {
    Status::from_code(reason.status()).unwrap_or(Status::Internal)
}

/// Answers with a refusal, counted by reason.
async fn refuse(
    ex: InboundExchange,
    mail: &Mail,
    reason: Refusal,
    retry_after: Option<Duration>,
) -> Result<(), TransportError> {
    mail.objects.transport.stats().reject(reason.reason());
    tracing::debug!(peer = %ex.peer(), reason = reason.reason(), "mailbox request refused");
    let body = MailboxResponse::Refused {
        reason,
        retry_after_ms: retry_after.map_or(0, |d| d.as_millis() as u64),
    };
    ex.respond(status_of(reason), message::encode(&body)).await
}

/// Serves one inbound exchange of app protocol 3 under the trust rules of this module.
pub async fn serve_mailbox(mut ex: InboundExchange, mail: Mail) -> Result<(), TransportError> {
    let body = match ex.read_body(BODY_MAX).await {
        Ok(b) => b,
        Err(e) => {
            if let Some(reason) = e.reject_reason() {
                mail.objects.transport.stats().reject(reason);
            }
            return ex.respond(Status::PayloadTooLarge, Bytes::new()).await;
        }
    };
    let request = match message::decode::<MailboxRequest>(&body) {
        Ok(r) => r,
        Err(e) => {
            mail.objects.transport.stats().reject(e.reason());
            return ex.respond(Status::BadRequest, Bytes::new()).await;
        }
    };
    let peer = ex.peer();
    let answer = match request {
        MailboxRequest::Send(env) => send_here(&mail, peer, env, None).await,
        MailboxRequest::SendFor {
            message,
            principal,
            messages_max,
            bytes_max,
        } => {
            let p = Principal {
                id: principal,
                count_max: messages_max as usize,
                bytes_max,
            };
            send_here(&mail, peer, message, Some(p)).await
        }
        MailboxRequest::Fetch {
            mailbox,
            after,
            max_count,
            max_bytes,
            visibility_ms,
        } => {
            if mailbox != peer {
                return refuse(ex, &mail, Refusal::NotOwner, None).await;
            }
            let limits = FetchLimits {
                after,
                max_count: max_count as usize,
                max_bytes: max_bytes as usize,
                visibility_ms,
            };
            match mail
                .blocking(move |s| s.fetch(now(), &mailbox, limits))
                .await
            {
                Ok(Ok(b)) => Ok(MailboxResponse::Batch {
                    messages: b.messages,
                    next_cursor: b.next_cursor,
                    more: b.more,
                }),
                _ => Err((Refusal::Unavailable, None)),
            }
        }
        MailboxRequest::Ack { mailbox, ids } => {
            if mailbox != peer {
                return refuse(ex, &mail, Refusal::NotOwner, None).await;
            }
            match mail.blocking(move |s| s.ack(now(), &mailbox, &ids)).await {
                Ok(Ok(deleted)) => Ok(MailboxResponse::Acked { deleted }),
                _ => Err((Refusal::Unavailable, None)),
            }
        }
        MailboxRequest::Replicate { messages } => {
            let messages = messages.into_iter().map(|m| (m, None)).collect();
            replicate_here(&mail, peer, messages).await
        }
        MailboxRequest::ReplicateFor { messages } => replicate_here(&mail, peer, messages).await,
    };
    match answer {
        Ok(answer) => ex.respond(Status::Ok, message::encode(&answer)).await,
        Err((reason, retry)) => refuse(ex, &mail, reason, retry).await,
    }
}

/// A refusal and its retry advice, for [`refuse`].
type Refused = (Refusal, Option<Duration>);

/// What a SEND or SEND_FOR (for `principal`) is answered.
async fn send_here(
    mail: &Mail,
    peer: NodeId,
    env: Envelope,
    principal: Option<Principal>,
) -> Result<MailboxResponse, Refused> {
    if env.sender != peer {
        return Err((Refusal::BadSender, None));
    }
    // A copy here must be one the owner's receive asks for, or it counts toward the
    // sender's W and is never delivered.
    match mail
        .objects
        .dht
        .holds_mailbox(Key::for_node(&env.mailbox))
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err((Refusal::NotHolder, None)),
        Err(_) => return Err((Refusal::Unavailable, None)),
    }
    match mail
        .blocking(move |s| s.send_for(now(), env, principal))
        .await
    {
        Ok(Ok(s)) => Ok(MailboxResponse::Stored {
            duplicate: s.duplicate,
        }),
        Ok(Err(e)) => Err((e.refusal(), e.retry_after())),
        Err(_) => Err((Refusal::Unavailable, None)),
    }
}

/// What a REPLICATE or REPLICATE_FOR is answered. Copies count against their principal's
/// share with no limits of their own: those were checked where the message was first
/// admitted, and the receiver's own quotas apply to every copy as before.
async fn replicate_here(
    mail: &Mail,
    peer: NodeId,
    messages: Vec<(Envelope, Option<[u8; 32]>)>,
) -> Result<MailboxResponse, Refused> {
    let mut boxes: Vec<NodeId> = messages.iter().map(|(m, _)| m.mailbox).collect();
    boxes.sort();
    boxes.dedup();
    for b in &boxes {
        if !mail.replica_source_ok(&peer, b).await {
            return Err((Refusal::NotHolder, None));
        }
    }
    let messages = messages
        .into_iter()
        .map(|(m, p)| (m, p.map(Principal::unlimited)))
        .collect();
    match mail
        .blocking(move |s| s.send_batch_for(now(), messages))
        .await
    {
        Ok(results) => {
            let mut stored = 0u32;
            for r in results {
                match r {
                    Ok(s) if !s.duplicate => stored += 1,
                    Ok(_) => {}
                    Err(e) => return Err((e.refusal(), e.retry_after())),
                }
            }
            Ok(MailboxResponse::Replicated { stored })
        }
        Err(_) => Err((Refusal::Unavailable, None)),
    }
}

/// `messages` cut into runs that one REPLICATE carries: at most [`REPLICATE_MAX`] each,
/// and [`BATCH_BYTES_MAX`] of payload unless one message alone is more.
fn batches(messages: &[Delivered]) -> Vec<&[Delivered]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, d) in messages.iter().enumerate() {
        let len = d.message.payload.len();
        if i > start && (i - start >= REPLICATE_MAX || bytes + len > BATCH_BYTES_MAX as usize) {
            out.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    /// One REPLICATE carries at most REPLICATE_MAX messages and BATCH_BYTES_MAX bytes.
    #[test]
    fn pushes_are_cut_within_the_batch_limits() {
        use wire::mailbox::{BATCH_BYTES_MAX, Delivered, Envelope, REPLICATE_MAX};
        let msg = |len: usize| Delivered {
            seq: 1,
            deliveries: 0,
            message: Envelope {
                mailbox: wire::NodeId([1; 32]),
                sender: wire::NodeId([2; 32]),
                idempotency_key: vec![1],
                ttl_ms: 0,
                e2e: false,
                payload: vec![0; len],
            },
        };
        let small: Vec<Delivered> = (0..REPLICATE_MAX * 2 + 1).map(|_| msg(1)).collect();
        let cut: Vec<usize> = super::batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(cut, vec![REPLICATE_MAX, REPLICATE_MAX, 1]);
        let half = BATCH_BYTES_MAX as usize / 2;
        let big = vec![msg(half), msg(half), msg(half + 1)];
        let cut: Vec<usize> = super::batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(cut, vec![2, 1]);
        assert!(super::batches(&[]).is_empty());
    }
}
