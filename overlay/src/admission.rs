//! Who may push us a replica without a capability: the rule for repair and replication.
//!
//! A write is authorized by a capability, or, for the mesh's own copies, by our view of the
//! mesh: we accept a pushed object only when (1) the sender is known to our routing table,
//! (2) we are among the RF nodes closest to the object's key as our table sees it (entries
//! with recent failures do not count as closer: they may be dead), and (3) the sender is
//! within its byte budget, a token bucket per contact (and one for all replacements). Everything else is refused with a
//! [`Refusal`] whose reason the driver counts. A stranger with a fresh key that never spoke
//! to us therefore cannot write into a node, and a known peer can write only what the node
//! would have to hold anyway, at a bounded rate.
//!
//! Known means a contact, or a peer waiting in a replacement cache: one that asked us
//! something in the DHT lately, under its authenticated key. The second matters as soon as
//! a mesh outgrows a few buckets: a gateway far from an object's key sends its lookup to the
//! key's closest nodes and then pushes them the copies, but in their tables its bucket is
//! the far half of the mesh, long full, so it waits as a replacement. Refusing it there
//! refused most writes' copies (simnet, 300 nodes: 33 of 150 puts reached W = 3). A
//! replacement costs a stranger one request, so all of them share one byte budget: fresh
//! keys gain nothing over one key, and far gateways together write at one peer's rate.
//! Contacts keep a budget each. The responsibility rule and the budgets are what bound a
//! peer that joined on purpose; a capability forwarded with a write's copies would be the
//! stronger rule (not built).
//!
//! Mail follows the same table rule, widened: a node stores a message for a mailbox only
//! when it is among the 2·RF closest to the mailbox's key ([`Admission::holds_mailbox`]),
//! the nodes its owner's receive asks, so a copy that counts toward a send's W is one the
//! owner can find. Holders hand copies on to each other (REPLICATE) only inside the
//! mailbox's closest set ([`Admission::takes_mail_replica`]).

use std::collections::BTreeMap;

use crate::config::ReplicationConfig;
use crate::key::{Distance, Key};
use crate::mail_receive::mail_receive_set;
use crate::peer::Peer;
use crate::routing::RoutingTable;
use crate::time::Instant;

/// Budgets kept at most; past this, full (idle) buckets are forgotten.
const BUDGETS_MAX: usize = 4096;

/// The budget [`Admission::check`] charged a push to. A refund goes back to this budget
/// even if the pusher has since joined or left the table, so no refund credits a budget
/// that was never charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payer(Key);

/// Why a replica push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sender is not a contact in our routing table.
    #[error("sender is not a known peer")]
    UnknownSender,
    /// We are not among the RF closest nodes to the object in our own table.
    #[error("this node is not among the RF closest to the object")]
    NotResponsible,
    /// The sender pushed more than its byte budget allows.
    #[error("sender is over its byte budget")]
    OverBudget,
}

impl Refusal {
    /// A stable name for metrics (`oap_rejects_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UnknownSender => "push_unknown_sender",
            Refusal::NotResponsible => "push_not_responsible",
            Refusal::OverBudget => "push_over_budget",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    /// May go negative: a push larger than the bucket is charged whole.
    tokens: i128,
    refilled: Instant,
}

/// The replica admission rule of one node, with its per-peer byte budgets.
#[derive(Debug)]
pub struct Admission {
    local: Key,
    rf: usize,
    rate: u64,
    burst: u64,
    budgets: BTreeMap<Key, Budget>,
}

impl Admission {
    /// The rule for the node with key `local`, with `config`'s RF and budgets.
    pub fn new(local: Key, config: &ReplicationConfig) -> Admission {
        Admission {
            local,
            rf: config.rf.max(1),
            rate: config.accept_bytes_per_second,
            burst: config.accept_burst_bytes,
            budgets: BTreeMap::new(),
        }
    }

    /// Whether we are among the RF closest to `object` in `table`, counting only contacts
    /// without recent failures as closer.
    pub fn is_responsible<P: Peer>(&self, table: &RoutingTable<P>, object: &Key) -> bool {
        self.among_closest(table, object, self.rf)
    }

    /// Whether a message for the mailbox whose key is `mailbox` may be stored here: we are
    /// among the 2·RF closest to it in `table`, the set its owner's receive asks (twice RF,
    /// so copies placed while the closest set was another are still found). A copy stored
    /// anywhere else is one the owner never asks for: it must not count toward a send's W.
    pub fn holds_mailbox<P: Peer>(&self, table: &RoutingTable<P>, mailbox: &Key) -> bool {
        self.among_closest(table, mailbox, mail_receive_set(self.rf))
    }

    /// Whether we take copies of a mailbox's messages that `from` hands on (REPLICATE):
    /// we are among the RF closest to the mailbox's key in `table`, and `from` is a contact
    /// among its 2·RF closest (us counted), so a holder the closest set just moved past
    /// still hands its copies on, and nobody farther can fill our store. As in every rule
    /// here, a contact with recent failures (perhaps dead) does not count as closer, for
    /// our rank or for `from`'s: a holder does not refuse copies because of a peer that
    /// may be gone.
    pub fn takes_mail_replica<P: Peer>(
        &self,
        table: &RoutingTable<P>,
        mailbox: &Key,
        from: &Key,
    ) -> bool {
        if !table.contains(from) || !self.among_closest(table, mailbox, self.rf) {
            return false;
        }
        let n = mail_receive_set(self.rf);
        let closer = closer_than(table, mailbox, n, from.distance(mailbox))
            + usize::from(self.local.distance(mailbox) < from.distance(mailbox));
        closer < n
    }

    /// Whether fewer than `n` contacts of `table` without recent failures are closer to
    /// `key` than we are.
    fn among_closest<P: Peer>(&self, table: &RoutingTable<P>, key: &Key, n: usize) -> bool {
        closer_than(table, key, n, self.local.distance(key)) < n
    }

    /// Decides a push of `size` bytes of `object` from `from`, charging its budget when
    /// admitted, and says which budget paid. `from` must be a contact in `table` (charged
    /// its own budget) or wait in one of its replacement caches (charged the budget all
    /// replacements share).
    pub fn check<P: Peer>(
        &mut self,
        now: Instant,
        table: &RoutingTable<P>,
        from: &Key,
        object: &Key,
        size: u64,
    ) -> Result<Payer, Refusal> {
        let contact = table.contains(from);
        if !contact && table.replacement(from).is_none() {
            return Err(Refusal::UnknownSender);
        }
        if !self.is_responsible(table, object) {
            return Err(Refusal::NotResponsible);
        }
        self.forget_idle(now);
        let burst = i128::from(self.burst);
        // Every replacement charges the one budget kept under our own key.
        let payer = if contact { *from } else { self.local };
        let b = self.budgets.entry(payer).or_insert(Budget {
            tokens: burst,
            refilled: now,
        });
        let add = ((now - b.refilled).as_nanos() * u128::from(self.rate) / 1_000_000_000) as i128;
        if add > 0 {
            b.tokens = (b.tokens + add).min(burst);
            b.refilled = now;
        }
        if b.tokens < i128::from(size.min(self.burst).max(1)) {
            return Err(Refusal::OverBudget);
        }
        b.tokens -= i128::from(size.max(1));
        Ok(Payer(payer))
    }

    /// Gives back `bytes` that [`check`](Self::check) charged `payer` for a push that ended
    /// without them (reset, refused, or answered that we hold the object already): the
    /// budget bounds the bytes a peer makes us take in, not the pushes it starts. The
    /// budget never goes past its burst.
    pub fn refund(&mut self, payer: Payer, bytes: u64) {
        if let Some(b) = self.budgets.get_mut(&payer.0) {
            b.tokens = (b.tokens + i128::from(bytes)).min(i128::from(self.burst));
        }
    }

    fn forget_idle(&mut self, now: Instant) {
        if self.budgets.len() < BUDGETS_MAX {
            return;
        }
        let (rate, burst) = (self.rate, i128::from(self.burst));
        self.budgets.retain(|_, b| {
            let add = ((now - b.refilled).as_nanos() * u128::from(rate) / 1_000_000_000) as i128;
            b.tokens + add < burst
        });
    }
}

/// How many contacts of `table` without recent failures are closer to `key` than
/// `distance`, counted among its `n + 8` closest (enough for a count that stops at `n`
/// past a few failing ones).
fn closer_than<P: Peer>(table: &RoutingTable<P>, key: &Key, n: usize, distance: Distance) -> usize {
    table
        .closest(key, n + 8)
        .iter()
        .filter(|p| p.key().distance(key) < distance)
        .filter(|p| table.get(&p.key()).is_some_and(|e| e.failures == 0))
        .count()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testnet::{TestPeer, key_from_first as key};

    fn table(now: Instant, peers: &[u8]) -> RoutingTable<TestPeer> {
        let mut t = RoutingTable::new(key(0), 20, 20, 2, None, now);
        for (i, first) in peers.iter().enumerate() {
            t.on_seen(
                now,
                TestPeer {
                    key: key(*first),
                    idx: i as u32,
                },
            );
        }
        t
    }

    /// Our admission at RF 3 with a small budget: 1,000 bytes a second, 10,000 deep.
    fn budgeted() -> Admission {
        let config = ReplicationConfig {
            rf: 3,
            accept_bytes_per_second: 1000,
            accept_burst_bytes: 10_000,
            ..ReplicationConfig::default()
        };
        Admission::new(key(0), &config)
    }

    /// A table whose bucket 0x80.. holds one contact (k = 1), 0x80..; the `asked` keys of
    /// that bucket asked us something and wait as replacements.
    fn full_bucket(now: Instant, asked: &[u8]) -> RoutingTable<TestPeer> {
        let mut t = RoutingTable::new(key(0), 1, 4, 2, None, now);
        t.on_seen(
            now,
            TestPeer {
                key: key(0x80),
                idx: 0,
            },
        );
        for (i, first) in asked.iter().enumerate() {
            t.on_asked(
                now,
                TestPeer {
                    key: key(*first),
                    idx: i as u32 + 1,
                },
            );
        }
        t
    }

    #[test]
    fn strangers_and_objects_we_are_not_responsible_for_are_refused() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let config = ReplicationConfig {
            rf: 2,
            ..ReplicationConfig::default()
        };
        let mut a = Admission::new(key(0), &config);
        let t = table(t0, &[0x01, 0x02, 0x04]);
        // A key we have never heard from.
        assert_eq!(
            a.check(t0, &t, &key(0x80), &key(0x00), 10).map(drop),
            Err(Refusal::UnknownSender)
        );
        // A key the table knows only as a replacement (it asked us something, its bucket
        // is full) is known.
        let full = full_bucket(t0, &[0x81]);
        assert!(!full.contains(&key(0x81)) && full.replacement(&key(0x81)).is_some());
        assert_eq!(
            a.check(t0, &full, &key(0x81), &key(0x00), 10).map(drop),
            Ok(())
        );
        // Object 0x03..: peers 0x02 (distance 0x01..) and 0x01 (0x02..) are closer than us
        // (0x03..): with RF = 2 it is not ours to hold.
        assert_eq!(
            a.check(t0, &t, &key(0x01), &key(0x03), 10).map(drop),
            Err(Refusal::NotResponsible)
        );
        // Object 0x01..: only peer 0x01 is closer: we are among the RF = 2 closest.
        assert_eq!(
            a.check(t0, &t, &key(0x02), &key(0x01), 10).map(drop),
            Ok(())
        );
    }

    #[test]
    fn replacements_share_one_budget_and_contacts_keep_their_own() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let mut a = budgeted();
        // 0x81.. and 0x82.. wait as replacements, as a stranger's fresh keys would.
        let t = full_bucket(t0, &[0x81, 0x82]);
        let obj = key(0x00);
        assert_eq!(a.check(t0, &t, &key(0x81), &obj, 9_000).map(drop), Ok(()));
        assert_eq!(
            a.check(t0, &t, &key(0x82), &obj, 2_000).map(drop),
            Err(Refusal::OverBudget),
            "a second fresh key gains nothing"
        );
        assert_eq!(
            a.check(t0, &t, &key(0x80), &obj, 9_000).map(drop),
            Ok(()),
            "a contact has its own budget"
        );
    }

    #[test]
    fn bytes_a_push_never_delivered_are_given_back_up_to_the_burst() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let mut a = budgeted();
        let t = full_bucket(t0, &[0x81]);
        let obj = key(0x00);
        let contact = a.check(t0, &t, &key(0x80), &obj, 9_000);
        assert_eq!(contact, Ok(Payer(key(0x80))), "a contact pays itself");
        assert_eq!(
            a.check(t0, &t, &key(0x80), &obj, 9_000).map(drop),
            Err(Refusal::OverBudget)
        );
        // The first push ended after 1,000 bytes: 8,000 come back.
        a.refund(Payer(key(0x80)), 8_000);
        assert_eq!(a.check(t0, &t, &key(0x80), &obj, 9_000).map(drop), Ok(()));
        // A refund never lifts a budget past its burst (10,000).
        a.refund(Payer(key(0x80)), 1_000_000);
        assert_eq!(a.check(t0, &t, &key(0x80), &obj, 9_000).map(drop), Ok(()));
        assert_eq!(
            a.check(t0, &t, &key(0x80), &obj, 2_000).map(drop),
            Err(Refusal::OverBudget)
        );
        // A replacement pays from the budget replacements share, and its refund goes
        // back there.
        let shared = a.check(t0, &t, &key(0x81), &obj, 9_000);
        assert_eq!(shared, Ok(Payer(key(0))));
        assert_eq!(
            a.check(t0, &t, &key(0x81), &obj, 9_000).map(drop),
            Err(Refusal::OverBudget)
        );
        a.refund(Payer(key(0)), 9_000);
        assert_eq!(a.check(t0, &t, &key(0x81), &obj, 9_000).map(drop), Ok(()));
    }

    #[test]
    fn a_refund_goes_to_the_budget_that_paid_though_the_table_changed() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let mut a = budgeted();
        let obj = key(0x00);
        // 0x81.. pushes as a replacement: the shared budget pays.
        let waiting = full_bucket(t0, &[0x81]);
        let Ok(payer) = a.check(t0, &waiting, &key(0x81), &obj, 9_000) else {
            panic!("admitted as a replacement");
        };
        // It becomes a contact with a budget of its own, spent.
        let joined = table(t0, &[0x81]);
        assert!(a.check(t0, &joined, &key(0x81), &obj, 10_000).is_ok());
        // The refund of its first push goes back where it was charged, not to the budget
        // it has now: that one stays spent.
        a.refund(payer, 9_000);
        assert_eq!(
            a.check(t0, &joined, &key(0x81), &obj, 1_000).map(drop),
            Err(Refusal::OverBudget)
        );
        assert!(a.check(t0, &waiting, &key(0x81), &obj, 9_000).is_ok());
    }

    #[test]
    fn a_contact_with_failures_does_not_count_as_closer() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let config = ReplicationConfig {
            rf: 1,
            ..ReplicationConfig::default()
        };
        let a = Admission::new(key(0), &config);
        let mut t = table(t0, &[0x01, 0x02]);
        let obj = key(0x01);
        assert!(!a.is_responsible(&t, &obj), "peer 0x01 is closer");
        t.on_failure(&key(0x01));
        assert!(a.is_responsible(&t, &obj), "a failing contact may be dead");
    }

    #[test]
    fn a_mailbox_is_held_by_the_twice_rf_closest() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let config = ReplicationConfig {
            rf: 1,
            ..ReplicationConfig::default()
        };
        let a = Admission::new(key(0), &config);
        let mut t = table(t0, &[0x01, 0x02, 0x04]);
        // Mailbox 0x03..: 0x02 (distance 0x01..) and 0x01 (0x02..) are closer than we are
        // (0x03..): with RF 1 the owner asks the 2 closest, and we are third.
        let mailbox = key(0x03);
        assert!(!a.holds_mailbox(&t, &mailbox));
        // Mailbox 0x01..: only 0x01 itself is closer; we are second of the two asked, though
        // not the RF closest that an object of that key would go to.
        assert!(a.holds_mailbox(&t, &key(0x01)));
        assert!(!a.is_responsible(&t, &key(0x01)));
        // A failing contact may be dead: it does not count as closer.
        t.on_failure(&key(0x02));
        assert!(a.holds_mailbox(&t, &mailbox));
    }

    #[test]
    fn mail_copies_are_handed_on_only_inside_the_closest_set() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let config = ReplicationConfig {
            rf: 2,
            ..ReplicationConfig::default()
        };
        // We are 0x00..; the mailbox 0x03.. is closest to 0x02 (distance 0x01..), then 0x01
        // (0x02..), us (0x03..), 0x07 (0x04..), 0x0f (0x0c..).
        let a = Admission::new(key(0), &config);
        let mut t = table(t0, &[0x01, 0x02, 0x07, 0x0f]);
        let mailbox = key(0x03);
        // We are third: not among the RF (2) closest, whoever hands copies on.
        assert!(!a.takes_mail_replica(&t, &mailbox, &key(0x02)));
        // A closer contact that failed may be dead: now we are second of the RF.
        t.on_failure(&key(0x01));
        assert!(a.takes_mail_replica(&t, &mailbox, &key(0x02)));
        // From 0x07: fourth with us counted, 0x01 not counted: third, inside 2·RF (4).
        assert!(a.takes_mail_replica(&t, &mailbox, &key(0x07)));
        // From 0x0f: fourth without 0x01 (0x02, us, 0x07 are closer): still inside.
        assert!(a.takes_mail_replica(&t, &mailbox, &key(0x0f)));
        // A stranger never hands copies on, however close.
        assert!(
            !a.takes_mail_replica(&t, &mailbox, &key(0x03)),
            "not a contact"
        );

        // Mailbox 0x04..: 0x07 (distance 0x03..), us (0x04..), 0x01, 0x02, then 0x0f.
        let t = table(t0, &[0x01, 0x02, 0x07, 0x0f]);
        let mailbox = key(0x04);
        assert!(
            a.takes_mail_replica(&t, &mailbox, &key(0x02)),
            "fourth: inside 2·RF"
        );
        assert!(
            !a.takes_mail_replica(&t, &mailbox, &key(0x0f)),
            "fifth: outside"
        );
    }

    #[test]
    fn each_peer_has_a_byte_budget_that_refills() {
        let t0 = Instant::from_duration(Duration::ZERO);
        let mut a = budgeted();
        let t = table(t0, &[0x01, 0x02]);
        let obj = key(0x00);
        assert_eq!(a.check(t0, &t, &key(0x01), &obj, 9_000).map(drop), Ok(()));
        assert_eq!(
            a.check(t0, &t, &key(0x01), &obj, 2_000).map(drop),
            Err(Refusal::OverBudget)
        );
        // Another peer has its own budget; a push larger than the bucket is charged whole.
        assert_eq!(a.check(t0, &t, &key(0x02), &obj, 50_000).map(drop), Ok(()));
        let t1 = t0 + Duration::from_secs(40);
        assert_eq!(
            a.check(t1, &t, &key(0x02), &obj, 1).map(drop),
            Err(Refusal::OverBudget),
            "still 10 s in debt"
        );
        assert_eq!(
            a.check(t1, &t, &key(0x01), &obj, 2_000).map(drop),
            Ok(()),
            "refilled"
        );
    }
}
