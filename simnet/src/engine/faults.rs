//! Faults the swarm injects on top of a scenario, and the read-only views its checkers use.
//!
//! A scenario already expresses loss, churn and crashes; the swarm adds what must change in
//! the middle of a run: a partition (a [`Cut`] between groups of slots for a while) and the
//! loss rate (healed to zero for the liveness phase). The checkers judge the nodes from
//! outside, through [`NodeView`]s built from the real state machines' accessors, and through
//! the log of every announcement the engine made on a node's behalf.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use overlay::{Instant, Key};

use super::Sim;

/// A partition: while `from <= t < until`, no message crosses between slots of different
/// groups (QUIC gives up; handshakes fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Each slot's group.
    pub group: Vec<u8>,
    /// When the cut starts.
    pub from: Instant,
    /// When it heals.
    pub until: Instant,
}

impl Cut {
    /// Whether a message from `a` to `b` sent at `t` is cut.
    pub fn blocks(&self, a: u32, b: u32, t: Instant) -> bool {
        t >= self.from && t < self.until && self.group.get(a as usize) != self.group.get(b as usize)
    }
}

/// One live node as a checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its slot.
    pub slot: u32,
    /// Its id.
    pub key: Key,
    /// The ids in its routing table.
    pub table: Vec<Key>,
    /// Provider records it holds for others: (object key, provider id).
    pub records: Vec<(Key, Key)>,
    /// Objects it stores (and so announces).
    pub objects: Vec<Key>,
    /// The ids of its bootstrap contacts.
    pub bootstrap: Vec<Key>,
}

impl Sim {
    /// Changes the loss rate from now on. A run that does so with loss sets
    /// [`Extra::network_changes`] in its scenario.
    pub fn set_loss(&mut self, loss: f64) {
        self.net.set_loss(loss);
        self.check_numbered();
    }

    /// Changes the message faults from now on: the probability a DHT message is
    /// delivered twice, and the most extra delay each takes (ms). As with
    /// [`Sim::set_loss`], the scenario says [`Extra::network_changes`].
    pub fn set_message_faults(&mut self, dup: f64, reorder_ms: f64) {
        self.sc.faults.dup = dup.clamp(0.0, 1.0);
        self.sc.faults.reorder_ms = reorder_ms.max(0.0);
        self.check_numbered();
    }

    /// Whether a message's delivery draws from its random stream: loss, jitter or a
    /// message fault is on now, or may be turned on later.
    pub(super) fn draws_per_message(&self) -> bool {
        let f = &self.sc.faults;
        self.net.draws() || f.dup > 0.0 || f.reorder_ms > 0.0 || f.network_changes
    }

    /// A network that now draws per message must have numbered its messages from the
    /// start; one that did not would key its streams differently: a caller's bug.
    fn check_numbered(&mut self) {
        if self.draws_per_message() && !self.links.numbered() {
            self.fail(
                u32::MAX,
                "loss or message faults turned on in a run whose scenario did not say \
                 faults.network_changes"
                    .into(),
            );
        }
    }

    /// From now on, these slots lie in their answers (replacing any others).
    pub fn set_liars(&mut self, liars: BTreeSet<u32>) {
        self.sc.faults.liars = liars;
    }

    /// The ids of the swarm's liars (up or down).
    pub fn liar_keys(&self) -> Vec<Key> {
        self.sc
            .faults
            .liars
            .iter()
            .filter_map(|&s| self.slots.get(s as usize).map(|s| s.key))
            .collect()
    }

    /// Whether `slot` is one of the swarm's liars.
    pub fn lies(&self, slot: u32) -> bool {
        self.sc.faults.liars.contains(&slot)
    }

    /// Installs a partition (replacing any other).
    pub fn set_cut(&mut self, cut: Cut) {
        self.cut = Some(cut);
    }

    /// Whether a message from `a` to `b` sent now is cut by the partition.
    pub(super) fn cut_blocks(&self, a: u32, b: u32, t: Instant) -> bool {
        self.cut.as_ref().is_some_and(|c| c.blocks(a, b, t))
    }

    /// From now on, log every (object key, provider id) the engine announces.
    pub fn record_announcements(&mut self) {
        self.announced.get_or_insert_with(BTreeSet::new);
    }

    /// Every (object key, provider id) announced since [`Sim::record_announcements`].
    pub fn announced(&self) -> Option<&BTreeSet<(Key, Key)>> {
        self.announced.as_ref()
    }

    /// Every live node, in slot order, through its state machine's read-only accessors.
    pub fn node_views(&self) -> Vec<NodeView> {
        let mut out = Vec::new();
        for (slot, s) in self.slots.iter().enumerate() {
            let Some(dht) = s.dht.as_ref() else {
                continue;
            };
            out.push(NodeView {
                slot: slot as u32,
                key: dht.local().key(),
                table: dht.routing_table().iter().map(|e| e.peer.key()).collect(),
                records: dht
                    .provider_store()
                    .iter()
                    .map(|(k, p)| (*k, p.key()))
                    .collect(),
                objects: s
                    .store
                    .as_ref()
                    .map(|st| st.objects.keys().copied().collect())
                    .unwrap_or_default(),
                bootstrap: dht.bootstrap_contacts().iter().map(|p| p.key()).collect(),
            });
        }
        out
    }

    /// The true `n` closest live nodes to `target`, closest first.
    pub fn true_closest(&self, target: &Key, n: usize) -> Vec<Key> {
        self.live
            .closest(target, n, None)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

/// A node's clock: it reads `offset + rate × t` when the true time is `t`, so its timers
/// (deadlines in its own time) fire early or late by the same skew, consistently.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// How fast the clock runs (1.0: true time).
    pub rate: f64,
    /// What it reads at true time zero.
    pub offset: Duration,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            rate: 1.0,
            offset: Duration::ZERO,
        }
    }
}

impl Clock {
    fn is_true(&self) -> bool {
        self.rate == 1.0 && self.offset.is_zero()
    }

    /// What the clock reads at true time `t`.
    pub fn local(&self, t: Instant) -> Instant {
        if self.is_true() {
            return t;
        }
        let ns = (t.as_nanos() as f64 * self.rate).floor() as u64;
        Instant::ZERO + self.offset + Duration::from_nanos(ns)
    }

    /// The earliest true time at which the clock reads `local` or later.
    pub fn true_of(&self, local: Instant) -> Instant {
        if self.is_true() {
            return local;
        }
        let since = local.as_duration().saturating_sub(self.offset).as_nanos() as f64;
        let mut t = Instant::ZERO + Duration::from_nanos((since / self.rate).ceil() as u64);
        while self.local(t) < local {
            t = t + Duration::from_nanos(1);
        }
        t
    }
}

/// Faults beyond a scenario file's loss and churn, for the swarm (all off by default, so
/// a scenario runs exactly as before): duplicated and reordered messages, skewed clocks,
/// lying nodes and ids chosen by the swarm (its Sybils).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    /// Probability that a DHT request or answer is delivered twice.
    pub dup: f64,
    /// The second copy arrives up to this much later than the first, ms (uniform).
    pub dup_delay_ms: f64,
    /// Each DHT message takes up to this much longer, ms (uniform), so messages between a
    /// pair overtake each other.
    pub reorder_ms: f64,
    /// Per slot, its clock (slots past the end run on true time).
    pub clocks: Vec<Clock>,
    /// Slots that lie in their answers.
    pub liars: BTreeSet<u32>,
    /// Slots whose id the swarm chose (Sybils), instead of the seed's draw.
    pub keys: BTreeMap<u32, Key>,
    /// The run turns loss or message faults on as it goes ([`Sim::set_loss`],
    /// [`Sim::set_message_faults`]): messages are numbered from the start, so each keeps
    /// the random stream it would have had in a run that drew from time zero. Set in code
    /// (the swarm sets it), like every field here: a scenario file has no key for it.
    pub network_changes: bool,
}

impl Extra {
    /// Whether any fault here is on.
    pub fn any(&self) -> bool {
        self.dup > 0.0
            || self.reorder_ms > 0.0
            || self.clocks.iter().any(|c| !c.is_true())
            || !self.liars.is_empty()
            || !self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::queue::Msg;
    use overlay::{Request, Response, RpcId};
    use rand::{Rng, SeedableRng};

    fn net(n: u32, faults: Extra) -> Sim {
        let text = format!(
            "nodes = {n}\nseed = 5\nduration_s = 20\n[dht]\nliveness_interval_s = 0\n\
             [latency]\nmodel = \"constant\"\nms = 50\nhandshake = false\n\
             [workload]\nlookups = 200\n"
        );
        let mut sc = crate::scenario::parse_str(&text, std::path::Path::new("."), "t")
            .unwrap_or_else(|e| panic!("{e}"));
        sc.faults = faults;
        Sim::new(sc, true)
    }

    #[test]
    fn a_skewed_clock_reads_its_own_time_and_maps_deadlines_back() {
        let c = Clock {
            rate: 1.05,
            offset: Duration::from_secs(3),
        };
        let at = |ms| Instant::ZERO + Duration::from_millis(ms);
        assert_eq!(c.local(at(10_000)), at(13_500));
        assert_eq!(c.true_of(at(13_500)), at(10_000));
        assert_eq!(
            c.true_of(at(1_000)),
            Instant::ZERO,
            "before its offset: now"
        );
        let seed = 9;
        println!("seed {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..10_000 {
            let c = Clock {
                rate: rng.gen_range(0.9..1.1),
                offset: Duration::from_nanos(rng.gen_range(0..10_000_000_000)),
            };
            let local =
                Instant::ZERO + c.offset + Duration::from_nanos(rng.gen_range(0..1u64 << 40));
            let t = c.true_of(local);
            assert!(c.local(t) >= local, "{c:?} {local:?}");
            assert!(
                t == Instant::ZERO
                    || c.local(Instant::ZERO + Duration::from_nanos(t.as_nanos() - 1)) < local,
                "{c:?} {local:?}: not the earliest"
            );
        }
    }

    #[test]
    fn a_skewed_nodes_timer_fires_at_its_skewed_time() {
        let plain = net(2, Extra::default());
        let slow = Clock {
            rate: 0.5,
            offset: Duration::ZERO,
        };
        let skewed = net(
            2,
            Extra {
                clocks: vec![slow, Clock::default()],
                ..Extra::default()
            },
        );
        for sim in [&plain, &skewed] {
            let deadline = sim.slots[0]
                .dht
                .as_ref()
                .and_then(|d| d.poll_timeout())
                .unwrap_or_else(|| panic!("node 0 asks for a timer"));
            let armed = sim.slots[0].armed.unwrap_or_else(|| panic!("armed"));
            let rate = sim.sc.faults.clocks.first().map_or(1.0, |c| c.rate);
            // The deadline is in the node's time; the queue holds the true time it reads it.
            let want = deadline.as_nanos() as f64 / rate;
            assert_eq!(armed.as_nanos(), want as u64, "rate {rate}");
        }
        assert_ne!(plain.slots[0].armed, skewed.slots[0].armed);
        // Slot 1 runs on true time in both.
        assert_eq!(plain.slots[1].armed, skewed.slots[1].armed);
    }

    #[test]
    fn a_duplicated_message_is_delivered_twice_and_nodes_cope() {
        let mut sim = net(
            10,
            Extra {
                dup: 1.0,
                dup_delay_ms: 500.0,
                ..Extra::default()
            },
        );
        let before = sim.queue.messages_in_flight();
        let from = sim.peer_of(0);
        let to = sim.peer_of(1);
        let ping = Msg::Request {
            from,
            from_inc: 1,
            to,
            rpc: RpcId(u64::MAX),
            request: Request::Ping,
        };
        sim.send(0, 1, ping);
        assert_eq!(sim.queue.messages_in_flight(), before + 2, "two copies");
        assert_eq!(sim.metrics.duplicated, 1);
        // Every request and answer of a whole run arrives twice; with every invariant
        // checked after each step, the nodes take the late copies in their stride.
        sim.run().unwrap_or_else(|e| panic!("{e}"));
        let f = sim.finish();
        println!(
            "duplicated {}, lookups {} exact {}",
            f.metrics.duplicated, f.metrics.lookups_finished, f.metrics.lookups_exact
        );
        assert!(f.metrics.duplicated > 100);
        assert!(f.metrics.lookups_finished > 100);
        assert_eq!(f.metrics.lookups_exact, f.metrics.lookups_finished);
        assert_eq!(f.metrics.misbehaved, 0, "a duplicate is not misbehaviour");
    }

    #[test]
    fn a_liars_answer_is_what_the_liar_says() {
        let liar = 3;
        let mut sim = net(
            20,
            Extra {
                liars: [liar].into_iter().collect(),
                ..Extra::default()
            },
        );
        sim.stop_node(7); // a crashed node whose id a liar may name
        let me = sim.peer_of(liar);
        let target = Key([0x5a; 32]);
        let (mut named_self, mut named_crashed, mut named_nobody) = (0, 0, 0);
        for _ in 0..50 {
            sim.events += 1; // each lie is drawn at its event number
            let Response::Nodes(contacts) = sim.lie(liar, &Request::FindNode(target)) else {
                panic!("a FIND_NODE lie is a node list");
            };
            assert!((1..=sim.sc.dht.k).contains(&contacts.len()));
            for c in contacts {
                if c == me {
                    named_self += 1;
                } else if c == sim.peer_of(7) {
                    named_crashed += 1;
                } else {
                    assert!(!sim.is_current(&c), "{c:?} is a real live node");
                    named_nobody += 1;
                }
            }
            let Response::Providers { providers, .. } =
                sim.lie(liar, &Request::GetProviders(target))
            else {
                panic!("a GET_PROVIDERS lie is a provider list");
            };
            assert_eq!(
                providers.first(),
                Some(&me),
                "claims a record it does not hold"
            );
        }
        println!("self {named_self}, crashed {named_crashed}, nobody {named_nobody}");
        assert!(named_self > 0 && named_crashed > 0 && named_nobody > 0);
        assert!(!sim.lies(0) && sim.lies(liar));
    }

    #[test]
    fn messages_are_numbered_only_where_a_draw_reads_the_number() {
        let quiet = net(30, Extra::default());
        assert!(!quiet.links.numbered(), "nothing drawn per message");
        let dup = net(
            30,
            Extra {
                dup: 0.1,
                ..Extra::default()
            },
        );
        assert!(dup.links.numbered(), "duplicates are drawn");
        let mut later = net(
            30,
            Extra {
                network_changes: true,
                ..Extra::default()
            },
        );
        assert!(later.links.numbered(), "the scenario says loss comes later");
        later.set_loss(0.2);
        assert!(
            later
                .run_until(Instant::ZERO + Duration::from_secs(1))
                .is_ok()
        );

        // Turning loss on in a run that numbered nothing is the caller's bug, said as such.
        let mut quiet = quiet;
        quiet.set_loss(0.0);
        assert!(
            quiet
                .run_until(Instant::ZERO + Duration::from_secs(1))
                .is_ok()
        );
        quiet.set_loss(0.2);
        let err = quiet
            .run_until(Instant::ZERO + Duration::from_secs(2))
            .map(|()| "ran on".to_string())
            .unwrap_or_else(|e| e.to_string());
        assert!(err.contains("faults.network_changes"), "{err}");
    }
}
