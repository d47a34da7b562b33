//! An owner's receive of its own mail: which holders it asks ([`mail_receive_set`]) and
//! what it makes of their answers ([`MailMerge`]), for the node's `Mail::recv`.
//!
//! The owner asks twice RF of the nodes closest to its mailbox's key, so copies placed
//! while the closest set was another are found too; a holder takes mail only inside that
//! set (`Admission::holds_mailbox`), so no copy is ever where the receive does not look.
//! Copies of one message at several holders are one message (the most deliveries any
//! holder counted is its count), kept in the order first met; a copy for another mailbox
//! is ignored (a holder cannot make us receive someone else's mail). A message the owner
//! already acknowledged (its own store remembers each ack until the message would have
//! expired) is dropped, and its ack goes again to each holder that delivered it: that
//! holder was down when the ack was given, and would otherwise deliver it again, and keep
//! it, for ever.
//!
//! An ack ([`MailAck`]) goes to the same holders at once, the owner's own copy beside the
//! others, and is answered only when every holder has answered or timed out: an answer
//! given early would end the acks still in flight. The owner's own store is what makes an
//! ack stick (it remembers the ack, and the next receive sends it again to any holder that
//! missed it), so an ack its own store failed has failed, whatever the others deleted; and
//! an ack that no holder answered is unreachable, not "nothing to delete".

use std::collections::BTreeMap;

use wire::NodeId;
use wire::mailbox::{Delivered, Envelope, MsgId};

use crate::key::Key;
use crate::peer::Peer;

/// How many of a mailbox's closest nodes its owner's receive asks, for mail kept on `rf`
/// nodes: twice RF. Also the set a holder must be in to take a copy.
pub fn mail_receive_set(rf: usize) -> usize {
    2 * rf.max(1)
}

/// One message as the owner receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailReceived {
    /// Its id, for the ack.
    pub id: MsgId,
    /// The message.
    pub message: Envelope,
    /// The most deliveries any holder counted.
    pub deliveries: u32,
}

/// The answers of one receive's holders, merged; `H` is the driver's holder.
#[derive(Debug, Clone)]
pub struct MailMerge<H> {
    owner: NodeId,
    merged: BTreeMap<MsgId, MailReceived>,
    order: Vec<MsgId>,
    /// Which remote holders delivered each message.
    from: BTreeMap<MsgId, Vec<H>>,
    answered: usize,
}

impl<H: Peer> MailMerge<H> {
    /// A receive of `owner`'s mail, nothing heard yet.
    pub fn new(owner: NodeId) -> Self {
        MailMerge {
            owner,
            merged: BTreeMap::new(),
            order: Vec::new(),
            from: BTreeMap::new(),
            answered: 0,
        }
    }

    /// A holder answered with `batch` (`holder` is `None` for the owner's own copy).
    pub fn take(&mut self, batch: Vec<Delivered>, holder: Option<&H>) {
        self.answered += 1;
        for d in batch {
            if d.message.mailbox != self.owner {
                continue;
            }
            let id = d.message.id();
            if let Some(h) = holder {
                self.from.entry(id).or_default().push(h.clone());
            }
            match self.merged.get_mut(&id) {
                Some(r) => r.deliveries = r.deliveries.max(d.deliveries),
                None => {
                    self.order.push(id);
                    self.merged.insert(
                        id,
                        MailReceived {
                            id,
                            message: d.message,
                            deliveries: d.deliveries,
                        },
                    );
                }
            }
        }
    }

    /// Holders that answered.
    pub fn answered(&self) -> usize {
        self.answered
    }

    /// Whether a receive that asked `asked` holders (the owner's own copy included) heard
    /// from none: that is unreachable, not an empty mailbox (asking nobody is empty).
    pub fn heard_from_none(&self, asked: usize) -> bool {
        asked > 0 && self.answered == 0
    }

    /// The ids received so far, for the owner's store to say which it acknowledged.
    pub fn ids(&self) -> Vec<MsgId> {
        self.merged.keys().copied().collect()
    }

    /// The owner acknowledged `settled` already: they leave the receive, and each holder
    /// that delivered one is owed its ack again. Returns those holders, each with the ids
    /// it is owed, in key order.
    pub fn settle(&mut self, settled: &[MsgId]) -> Vec<(H, Vec<MsgId>)> {
        let mut owed: BTreeMap<Key, (H, Vec<MsgId>)> = BTreeMap::new();
        for id in settled {
            if self.merged.remove(id).is_none() {
                continue;
            }
            for h in self.from.remove(id).unwrap_or_default() {
                owed.entry(h.key())
                    .or_insert_with(|| (h, Vec::new()))
                    .1
                    .push(*id);
            }
        }
        self.order.retain(|id| self.merged.contains_key(id));
        owed.into_values().collect()
    }

    /// At most `max` messages, in the order first met.
    pub fn into_received(mut self, max: usize) -> Vec<MailReceived> {
        let mut out: Vec<MailReceived> = self
            .order
            .iter()
            .filter_map(|id| self.merged.remove(id))
            .collect();
        out.truncate(max);
        out
    }
}

/// One ack of an owner's messages at its holders, as the answers come in.
#[derive(Debug, Clone, Default)]
pub struct MailAck {
    asked: usize,
    answered: usize,
    deleted: u32,
    own_failed: bool,
}

/// How an ack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailAcked {
    /// Acknowledged: the most copies any one holder deleted (0: no holder held any).
    Acked(u32),
    /// The owner's own store failed to take the ack: the messages would come back to it.
    OwnFailed,
    /// No holder answered, of those asked (0 when there was none to ask).
    Unreachable {
        /// Holders asked, the owner's own copy included.
        asked: usize,
    },
}

impl MailAck {
    /// An ack sent to `remote` holders, and to the owner's own copy if `own`.
    pub fn new(remote: usize, own: bool) -> Self {
        MailAck {
            asked: remote + usize::from(own),
            ..MailAck::default()
        }
    }

    /// A holder (or the owner's own store) deleted `deleted` of the messages.
    pub fn handle_deleted(&mut self, deleted: u32) {
        self.answered += 1;
        self.deleted = self.deleted.max(deleted);
    }

    /// The owner's own store failed to take the ack.
    pub fn handle_own_failed(&mut self) {
        self.own_failed = true;
    }

    /// The answer, once every holder asked has answered or timed out.
    pub fn outcome(&self) -> MailAcked {
        if self.own_failed {
            MailAcked::OwnFailed
        } else if self.answered == 0 {
            MailAcked::Unreachable { asked: self.asked }
        } else {
            MailAcked::Acked(self.deleted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{TestPeer, peer_from_first as peer};

    fn msg(mailbox: u8, key: u8, deliveries: u32) -> Delivered {
        Delivered {
            seq: u64::from(key),
            deliveries,
            message: Envelope {
                mailbox: NodeId([mailbox; 32]),
                sender: NodeId([9; 32]),
                idempotency_key: vec![key],
                ttl_ms: 0,
                e2e: false,
                payload: vec![key],
            },
        }
    }

    #[test]
    fn copies_are_one_message_and_others_mail_is_ignored() {
        let mut m = MailMerge::<TestPeer>::new(NodeId([1; 32]));
        m.take(vec![msg(1, 10, 0), msg(1, 11, 2)], None);
        m.take(vec![msg(1, 11, 5), msg(2, 12, 0)], Some(&peer(0x20)));
        m.take(vec![msg(1, 13, 1), msg(1, 10, 1)], Some(&peer(0x30)));
        assert_eq!(m.answered(), 3);
        assert!(!m.heard_from_none(5));
        assert!(MailMerge::<TestPeer>::new(NodeId([1; 32])).heard_from_none(5));
        assert!(
            !MailMerge::<TestPeer>::new(NodeId([1; 32])).heard_from_none(0),
            "nobody to ask is an empty mailbox"
        );
        assert_eq!(m.ids().len(), 3, "10, 11, 13; 12 is another's");
        let got = m.into_received(10);
        let keys: Vec<u8> = got.iter().map(|r| r.message.idempotency_key[0]).collect();
        assert_eq!(keys, vec![10, 11, 13], "in the order first met");
        assert_eq!(got[1].deliveries, 5, "the most any holder counted");
    }

    #[test]
    fn acknowledged_messages_leave_and_their_holders_are_owed_the_ack() {
        let mut m = MailMerge::new(NodeId([1; 32]));
        let (a, b) = (peer(0x20), peer(0x30));
        m.take(vec![msg(1, 10, 0), msg(1, 11, 0)], None);
        m.take(vec![msg(1, 10, 0), msg(1, 11, 0)], Some(&a));
        m.take(vec![msg(1, 11, 0), msg(1, 12, 0)], Some(&b));
        let ids =
            |k: &[u8]| -> Vec<MsgId> { k.iter().map(|&k| msg(1, k, 0).message.id()).collect() };
        let owed = m.settle(&ids(&[11, 99]));
        assert_eq!(
            owed,
            vec![(a, ids(&[11])), (b, ids(&[11]))],
            "each holder that delivered it; an unknown id owes nothing"
        );
        let got = m.into_received(1);
        assert_eq!(got.len(), 1, "at most max");
        assert_eq!(got[0].id, ids(&[10])[0]);
    }

    #[test]
    fn an_ack_sticks_only_where_the_owner_keeps_it_and_someone_answered() {
        let mut a = MailAck::new(3, true);
        a.handle_deleted(2);
        a.handle_deleted(0);
        assert_eq!(
            a.outcome(),
            MailAcked::Acked(2),
            "the most any holder deleted"
        );
        a.handle_own_failed();
        assert_eq!(
            a.outcome(),
            MailAcked::OwnFailed,
            "the owner's copy would come back, whatever the others deleted"
        );

        let mut own_only = MailAck::new(3, true);
        own_only.handle_deleted(0);
        assert_eq!(
            own_only.outcome(),
            MailAcked::Acked(0),
            "the owner's store answered: nothing held, and the others are sent it again"
        );

        let silent = MailAck::new(4, false);
        assert_eq!(
            silent.outcome(),
            MailAcked::Unreachable { asked: 4 },
            "silence is not \"nothing to delete\""
        );
        assert_eq!(
            MailAck::new(0, false).outcome(),
            MailAcked::Unreachable { asked: 0 }
        );
    }

    #[test]
    fn the_receive_set_is_twice_rf() {
        assert_eq!(mail_receive_set(3), 6);
        assert_eq!(mail_receive_set(0), 2, "at least one holder's worth");
    }
}
