//! Slots and what happens at them: nodes starting and crashing, inputs handed to a node's
//! `Dht` and planner, its outputs drained into the queue, its timer armed.
//!
//! A slot holds at most one incarnation at a time. While up it owns a boxed `Dht` (and,
//! once it stores an object, a boxed planner and object list); while down it owns nothing,
//! unless `rejoin_same_id` keeps its contacts and objects for its return. Every message
//! names the incarnation it is for: a request by the node's key (a node that came back with
//! the same id may answer it), a response by the exact incarnation that asked, so an answer
//! never reaches a state machine that did not send the request.
//!
//! Timers: each slot has at most one armed time, the earliest the node asked for. A new,
//! earlier request pushes a new entry; a later one waits until the armed entry fires and
//! re-arms (calling `handle_timeout` early is harmless). Entries that no longer match the
//! armed time are stale and skipped. After a timer fires, a timer still due is deferred by
//! [`TIMER_GRANULARITY`], like an OS timer, so a state machine that keeps asking for "now"
//! cannot stall virtual time.

use std::collections::BTreeMap;
use std::time::Duration;

use overlay::{
    Admission, ConnectionEvent, Dht, Event, FailureCause, Instant, Key, Payer, PlaceStep,
    Placement, PlanEvent, Planner, ProofAnswer, PushAnswer, ReplicationConfig, Request,
    TransferFault, TransferId, TransferOutcome, Transmit,
};

use super::Sim;
use super::queue::{Ev, Msg};
use crate::links;
use crate::peer::SimPeer;
use crate::seed::{self, Stream};

/// The smallest delay between a timer firing and the same node's next timer.
pub const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// How long a connection to a crashed node stays open before it times out (the node's QUIC
/// idle timeout): then the peer's DHT hears that the connection was lost without a goodbye.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Objects a node holds, and its replication planner.
#[derive(Debug)]
pub(crate) struct Store {
    pub planner: Planner<SimPeer>,
    /// Who may push this node a copy: the node's rule (`overlay::Admission`).
    pub admission: Admission,
    /// Object key to size.
    pub objects: BTreeMap<Key, u64>,
}

impl Store {
    fn new(now: Instant, local: Key, rc: &ReplicationConfig) -> Box<Store> {
        Box::new(Store {
            planner: Planner::new(now, local, rc.clone()),
            admission: Admission::new(local, rc),
            objects: BTreeMap::new(),
        })
    }
}

/// When a node announces an object it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Announce {
    /// At once: a put's or a transfer's new copy.
    Now,
    /// When an announcement slot frees: a restarted node's store.
    Paced,
}

/// What a node keeps while down, with `rejoin_same_id`.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    contacts: Vec<SimPeer>,
    objects: Vec<(Key, u64)>,
}

impl Saved {
    /// The objects the node will come back with.
    pub fn object_keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.objects.iter().map(|(k, _)| *k)
    }
}

/// One node slot.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The running state machine; `Some` exactly while the node is up.
    pub dht: Option<Box<Dht<SimPeer>>>,
    /// Objects held, once the node stores one.
    pub store: Option<Box<Store>>,
    /// Kept across a down period (`rejoin_same_id`).
    pub saved: Option<Box<Saved>>,
    /// The current (or last) incarnation's key.
    pub key: Key,
    /// The current (or last) incarnation's peer handle, once it started: every message
    /// and table entry naming it copies this one (a handle costs arena space).
    pub handle: Option<SimPeer>,
    /// Incarnations started so far; the current one's number.
    pub inc: u32,
    /// The earliest timer entry in the queue for this slot.
    pub armed: Option<Instant>,
    /// The churn process's state (a node is up only while this is true).
    pub churn_up: bool,
    /// Up by churn, waiting for its first join time (bootstrap mode "join").
    pub join_pending: bool,
    /// Removed for good by the mass failure.
    pub removed: bool,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            dht: None,
            store: None,
            saved: None,
            key: Key([0; 32]),
            handle: None,
            inc: 0,
            armed: None,
            churn_up: false,
            join_pending: false,
            removed: false,
        }
    }
}

impl Slot {
    /// The running node and its store (made on first use), or `None` while it is down.
    fn up_with_store(
        &mut self,
        now: Instant,
        rc: &ReplicationConfig,
    ) -> Option<(&mut Dht<SimPeer>, &mut Store)> {
        let dht = self.dht.as_deref_mut()?;
        let store = self
            .store
            .get_or_insert_with(|| Store::new(now, dht.local().key(), rc));
        Some((dht, store))
    }
}

impl Sim {
    /// What `slot`'s own clock reads now (the swarm's skewed clocks; true time otherwise):
    /// every input handed to its state machines carries this time.
    pub(super) fn local_now(&self, slot: u32) -> Instant {
        match self.sc.faults.clocks.get(slot as usize) {
            Some(c) => c.local(self.now),
            None => self.now,
        }
    }

    /// The true time at which `slot`'s clock reads `local`.
    fn true_time(&self, slot: u32, local: Instant) -> Instant {
        match self.sc.faults.clocks.get(slot as usize) {
            Some(c) => c.true_of(local),
            None => local,
        }
    }

    /// Whether `slot` lies in its answers (the swarm's liars).
    pub(super) fn is_liar(&self, slot: u32) -> bool {
        self.sc.faults.liars.contains(&slot)
    }

    /// The handle of `slot`'s current (or last) incarnation.
    pub(super) fn peer_of(&self, slot: u32) -> SimPeer {
        let s = &self.slots[slot as usize];
        s.handle.unwrap_or_else(|| SimPeer::new(s.key, slot))
    }

    /// The key `slot`'s first incarnation takes (see [`Sim::spawn`]).
    pub(super) fn first_key(&self, slot: u32) -> Key {
        self.sc
            .faults
            .keys
            .get(&slot)
            .copied()
            .unwrap_or_else(|| seed::node_key(self.sc.seed, slot, 1))
    }

    /// Starts a new incarnation at `slot`: identity, state machine, live set. The caller
    /// bootstraps it (or fills its table) and then drains it. `false` if it cannot start.
    pub(super) fn spawn(&mut self, slot: u32) -> bool {
        let now = self.local_now(slot);
        let chosen = self.sc.faults.keys.get(&slot).copied();
        let master = self.sc.seed;
        let same_id = self.sc.churn.rejoin_same_id;
        let s = &mut self.slots[slot as usize];
        if s.dht.is_some() || s.removed {
            return false;
        }
        s.join_pending = false;
        s.inc += 1;
        if !same_id || s.inc == 1 {
            s.key = chosen.unwrap_or_else(|| seed::node_key(master, slot, s.inc));
        }
        // The same id back (`rejoin_same_id`) keeps its handle; a new id needs a new one.
        let peer = match s.handle {
            Some(h) if h.key() == s.key => h,
            _ => SimPeer::new(s.key, slot),
        };
        s.handle = Some(peer);
        let dht_seed = seed::derive(master, Stream::DhtSeed, slot.into(), s.inc.into());
        if !self.live.insert(s.key, slot) {
            return false; // a 256-bit id collision: the slot stays down
        }
        let s = &mut self.slots[slot as usize];
        let mut dht = Dht::new(now, peer, self.dht_config.clone(), dht_seed);
        if let Some(saved) = s.saved.take() {
            for c in saved.contacts {
                dht.insert_peer(now, c);
                while dht.poll_event().is_some() {}
            }
            s.dht = Some(Box::new(dht));
            // A node back with its disk announces its store a few keys at a time, as the
            // node's start-up does (`Dht::provide_paced`).
            for (key, size) in saved.objects {
                self.store_object(slot, key, size, Announce::Paced);
            }
        } else {
            s.dht = Some(Box::new(dht));
        }
        self.metrics.set_alive(self.now, self.live.len() as u64);
        true
    }

    /// A random ready live node other than `not`, for a joining node to contact.
    pub(super) fn bootstrap_contact(&mut self, not: u32) -> Option<SimPeer> {
        use rand::Rng;
        let n = self.live.len();
        if n == 0 {
            return None;
        }
        let mut fallback = None;
        for _ in 0..32 {
            let (_, slot) = self.live.get(self.join_rng.gen_range(0..n))?;
            if slot == not {
                continue;
            }
            let peer = self.peer_of(slot);
            if self.slots[slot as usize]
                .dht
                .as_ref()
                .is_some_and(|d| d.is_ready())
            {
                return Some(peer);
            }
            fallback.get_or_insert(peer);
        }
        fallback
    }

    /// Brings `slot` up and joins it through a random live node (or starts a network).
    pub(super) fn start_node(&mut self, slot: u32) {
        if !self.spawn(slot) {
            return;
        }
        let contacts: Vec<SimPeer> = self.bootstrap_contact(slot).into_iter().collect();
        let now = self.local_now(slot);
        if let Some(d) = self.slots[slot as usize].dht.as_mut() {
            let _ = d.bootstrap(now, contacts);
        }
        self.after_input(slot, false);
    }

    /// Crashes `slot` without warning: its state is gone (or saved, with `rejoin_same_id`),
    /// and whatever it was measuring will never finish.
    pub(super) fn stop_node(&mut self, slot: u32) {
        let now = self.now;
        let keep = self.sc.churn.rejoin_same_id;
        let s = &mut self.slots[slot as usize];
        let Some(dht) = s.dht.take() else {
            s.join_pending = false;
            return;
        };
        s.armed = None;
        let store = s.store.take();
        if let Some(st) = store.as_ref() {
            for key in st.objects.keys() {
                self.metrics.durability.dropped(now, *key, true);
            }
            self.metrics.durability.holder_failures += u64::from(!st.objects.is_empty());
        }
        if keep {
            s.saved = Some(Box::new(Saved {
                contacts: dht.routing_table().iter().map(|e| e.peer).collect(),
                objects: store
                    .map(|st| st.objects.into_iter().collect())
                    .unwrap_or_default(),
            }));
        }
        let (key, inc) = (s.key, s.inc);
        self.live.remove(&key);
        if let Some(p) = self.pipes.as_mut() {
            p.clear(slot);
        }
        // Its peers' ends of its connections go silent and time out, unannounced.
        for peer in self.links.stop(slot) {
            let to_inc = self.slots[peer as usize].inc;
            self.queue.push_msg(
                now + IDLE_TIMEOUT,
                Msg::Lost {
                    to_slot: peer,
                    to_inc,
                    peer: key,
                },
            );
        }
        let mine: Vec<(u32, u32, u64)> = self
            .pending
            .range((slot, inc, 0)..=(slot, inc, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            if let Some(p) = self.pending.remove(&k) {
                self.abandon(p);
            }
        }
        self.metrics.set_alive(now, self.live.len() as u64);
    }

    /// The node at `slot` now holds `key`: store it, plan its copies, announce it.
    pub(super) fn store_object(
        &mut self,
        slot: u32,
        key: Key,
        size: u64,
        announce: Announce,
    ) -> bool {
        let now = self.local_now(slot);
        let rc = &self.sc.workload.replication;
        let Some((dht, store)) = self.slots[slot as usize].up_with_store(now, rc) else {
            return false;
        };
        if store.objects.insert(key, size).is_some() {
            return false;
        }
        self.metrics.durability.stored(self.now, key);
        store.planner.add_object(now, key, size);
        match announce {
            Announce::Now => {
                let _ = dht.start_providing(now, key);
            }
            Announce::Paced => dht.provide_paced(now, key),
        }
        let me = dht.local().key();
        if let Some(log) = self.announced.as_mut() {
            log.insert((key, me));
        }
        true
    }

    /// Drains the node's outputs into the queue until it is quiet, then re-arms its timer.
    /// `after_timer` defers a timer that is still due by [`TIMER_GRANULARITY`].
    pub(super) fn after_input(&mut self, slot: u32, after_timer: bool) {
        let i = slot as usize;
        if self.check {
            if let Some(Err(e)) = self.slots[i].dht.as_ref().map(|d| d.check_invariants()) {
                self.fail(slot, e);
            }
        }
        loop {
            let mut busy = false;
            while let Some(t) = self.slots[i].dht.as_mut().and_then(|d| d.poll_transmit()) {
                busy = true;
                self.send_request(slot, t);
            }
            while let Some(ev) = self.slots[i].dht.as_mut().and_then(|d| d.poll_event()) {
                busy = true;
                self.on_dht_event(slot, ev);
            }
            while let Some(ev) = self.slots[i]
                .store
                .as_mut()
                .and_then(|s| s.planner.poll_event())
            {
                busy = true;
                self.on_plan_event(slot, ev);
            }
            if !busy {
                break;
            }
        }
        self.arm(slot, after_timer);
    }

    fn arm(&mut self, slot: u32, after_timer: bool) {
        let now = self.now;
        let s = &self.slots[slot as usize];
        let Some(dht) = s.dht.as_ref() else {
            return;
        };
        let next = overlay::timer::next_timeout(dht, s.store.as_ref().map(|st| &st.planner));
        let Some(t) = next else {
            return;
        };
        let t = self.true_time(slot, t);
        let s = &mut self.slots[slot as usize];
        let earliest = if after_timer {
            now + TIMER_GRANULARITY
        } else {
            now
        };
        let t = t.max(earliest);
        if s.armed.is_none_or(|a| t < a) {
            s.armed = Some(t);
            self.queue.push(t, Ev::Timer(slot));
        }
    }

    pub(super) fn on_timer(&mut self, slot: u32, at: Instant) {
        let now = self.local_now(slot);
        let s = &mut self.slots[slot as usize];
        if s.armed != Some(at) {
            return; // superseded by an earlier entry that already fired
        }
        s.armed = None;
        let Some(dht) = s.dht.as_mut() else {
            return;
        };
        let planner = s.store.as_mut().map(|st| &mut st.planner);
        overlay::timer::handle_timeout(now, dht, planner);
        self.after_input(slot, true);
    }

    fn on_dht_event(&mut self, slot: u32, ev: Event<SimPeer>) {
        if self.slots[slot as usize].store.is_some() {
            let now = self.local_now(slot);
            if let Some(st) = self.slots[slot as usize].store.as_mut() {
                st.planner.handle_dht_event(now, &ev);
            }
        }
        match ev {
            Event::QueryFinished { id, result, stats } => {
                self.on_query_finished(slot, id, result, stats);
            }
            Event::PeerMisbehaved { .. } => self.metrics.misbehaved += 1,
            Event::PeerAdded(_) | Event::PeerRemoved(_) | Event::Ready | Event::Isolated => {}
        }
    }

    fn on_plan_event(&mut self, slot: u32, ev: PlanEvent<SimPeer>) {
        let now = self.now;
        match ev {
            PlanEvent::Transfer {
                id,
                key,
                size,
                to,
                push,
            } => {
                let sent = self.send_transfer(slot, to, (Some(id), None), key, size, push);
                // The transfer's own timeout; a success reported first makes it a no-op.
                // With `[bandwidth]` it counts from the last byte sent (the node's transfer
                // times out on silence, not while its bytes flow or wait their turn).
                let timeout = Msg::TransferDone {
                    to_slot: slot,
                    to_inc: self.slots[slot as usize].inc,
                    id,
                    outcome: TransferOutcome::Failed(TransferFault::Exchange(FailureCause::Silent)),
                };
                let from = sent.map_or(now, |end| end.max(now));
                self.queue.push_msg(from + self.sc.dht.rpc_timeout, timeout);
            }
            PlanEvent::Release { key } => {
                let s = &mut self.slots[slot as usize];
                if let Some(st) = s.store.as_mut() {
                    if st.objects.remove(&key).is_some() {
                        self.metrics.durability.dropped(now, key, false);
                    }
                    st.planner.remove_object(&key);
                }
                if let Some(d) = s.dht.as_mut() {
                    d.stop_providing(&key);
                }
            }
        }
    }

    /// Sends a message from `from` to `to` through the link model: a first contact opens
    /// a connection (a handshake round trip before the message leaves), then the message
    /// takes its pair's delay, its jitter, and its retransmissions. Answers travel back on
    /// the connection their request came on. With `[bandwidth]` an object push also waits
    /// for the sender's uplink and the receiver's downlink and takes its bytes' time there
    /// (`bandwidth`); its last byte's send time is returned (`None` for anything else).
    /// Sends `slot`'s transfer of `key` to `to`: its bytes (`push`), or only a request for
    /// proof, for repair transfer `id` or write `write` (neither: a put that waits for
    /// nothing). What [`send`](Self::send) returns.
    pub(super) fn send_transfer(
        &mut self,
        slot: u32,
        to: SimPeer,
        (id, write): (Option<TransferId>, Option<u32>),
        key: Key,
        size: u64,
        push: bool,
    ) -> Option<Instant> {
        let msg = Msg::Transfer {
            from: self.peer_of(slot),
            from_inc: self.slots[slot as usize].inc,
            to,
            id,
            write,
            key,
            size,
            push,
        };
        self.send(slot, to.slot(), msg)
    }

    pub(super) fn send(&mut self, from: u32, to: u32, msg: Msg) -> Option<Instant> {
        let now = self.now;
        if self.cut_blocks(from, to, now) {
            self.metrics.message_sent(now, true);
            return None;
        }
        let reply = matches!(
            msg,
            Msg::Response { .. } | Msg::TransferDone { .. } | Msg::Stored { .. }
        );
        let dht_msg = matches!(msg, Msg::Request { .. } | Msg::Response { .. });
        let n = self.links.next_message(from, to);
        let from_inc = self.slots[from as usize].inc;
        let mut rng = self.net.rng(from, from_inc, to, n);
        let mut leaves = now;
        if !reply && self.sc.latency.handshake {
            let to_inc = self.slots[to as usize]
                .dht
                .as_ref()
                .map_or(0, |_| self.slots[to as usize].inc);
            let now_ms = links::ms_of(now);
            match self.links.use_connection(from, to, to_inc, now_ms) {
                Some(ready) => {
                    leaves = leaves.max(Instant::ZERO + Duration::from_millis(u64::from(ready)))
                }
                None => {
                    self.metrics.handshakes += 1;
                    // A crashed node never completes a handshake: nothing is delivered.
                    let hs = (to_inc != 0)
                        .then(|| self.net.handshake(from, to, &mut rng))
                        .flatten();
                    let Some(hs) = hs else {
                        self.metrics.message_sent(now, true);
                        return None;
                    };
                    // A DHT read to a peer whose ticket we hold goes with the handshake
                    // (0-RTT); anything else waits for it, as in the node.
                    let replay_safe = matches!(
                        msg,
                        Msg::Request {
                            request: Request::Ping
                                | Request::FindNode(_)
                                | Request::GetProviders(_),
                            ..
                        }
                    );
                    let early = self.sc.latency.zero_rtt
                        && replay_safe
                        && self.links.resume(from, to, to_inc, now_ms);
                    let ready = links::ms_of(now + hs);
                    leaves = if early { now } else { now + hs };
                    self.metrics.zero_rtt_sends += u64::from(early);
                    let closed = self
                        .links
                        .open((from, from_inc), (to, to_inc), now_ms, ready);
                    self.links.ticket_issued(from, to, to_inc, ready);
                    self.metrics.connections_closed += closed.len() as u64;
                    self.metrics.connections_closed_busy = self.links.closed_busy();
                }
            }
        }
        let (delay, retransmissions) = self.net.transmit(from, to, &mut rng);
        self.metrics.retransmissions += u64::from(retransmissions);
        match delay {
            Some(d) => {
                self.metrics.message_sent(now, false);
                let f = &self.sc.faults;
                let (dup, dup_delay_ms, reorder_ms) = (f.dup, f.dup_delay_ms, f.reorder_ms);
                let mut at = leaves + d;
                let mut sent = None;
                if let Msg::Transfer {
                    push: true,
                    size,
                    id,
                    ..
                } = &msg
                    && let Some(end) = self.through_pipes(from, to, leaves, *size, id.is_some())
                {
                    at = end + d;
                    sent = Some(end);
                }
                if dht_msg && reorder_ms > 0.0 {
                    at = at + Duration::from_secs_f64(reorder_ms * rng.uniform() / 1e3);
                }
                if dht_msg && dup > 0.0 && rng.uniform() < dup {
                    let later = Duration::from_secs_f64(dup_delay_ms * rng.uniform() / 1e3);
                    self.metrics.duplicated += 1;
                    self.queue.push_msg(at + later, msg.clone());
                }
                self.queue.push_msg(at, msg);
                sent
            }
            None => {
                self.metrics.message_sent(now, true);
                None
            }
        }
    }

    /// With `[bandwidth]`: `bytes` ready to leave `from` for `to` at `ready` take the
    /// earliest free time on both links; the wait is recorded (as a repair's when
    /// `repair`) and the last byte's send time returned. `None` without the model.
    pub(super) fn through_pipes(
        &mut self,
        from: u32,
        to: u32,
        ready: Instant,
        bytes: u64,
        repair: bool,
    ) -> Option<Instant> {
        let pipes = self.pipes.as_mut()?;
        let (start, end) = pipes.reserve(self.now, from, to, ready, bytes);
        let wait = u64::try_from((start - ready).as_nanos()).unwrap_or(u64::MAX);
        self.metrics.transfer_waits.push(wait);
        if repair {
            self.metrics.repair_waits.push(wait);
        }
        self.metrics.bytes_moved += bytes;
        Some(end)
    }

    /// A request from `from` answered by `to` at once, through the link model (a connection
    /// opened if needed, both messages with their delays and retransmissions): its round
    /// trip, or `None` if `to` is down or a message was lost for good. For exchanges whose
    /// answer the engine computes rather than simulates (a get's TAIL probes and fetch).
    /// The request leaves at `at` (now or later: a fetch follows its probes' answers), so a
    /// connection whose handshake ended by then costs nothing more; whether `to` is up is
    /// judged now.
    pub(super) fn exchange(&mut self, from: u32, to: u32, at: Instant) -> Option<Duration> {
        self.exchange_legs(from, to, at).map(|(go, back)| go + back)
    }

    /// [`Sim::exchange`] in its two legs: from `at` until the request reaches `to` (the
    /// connection's handshake included), and the answer's way back.
    pub(super) fn exchange_legs(
        &mut self,
        from: u32,
        to: u32,
        at: Instant,
    ) -> Option<(Duration, Duration)> {
        let now = at.max(self.now);
        let to_inc = self.slots[to as usize]
            .dht
            .as_ref()
            .map(|_| self.slots[to as usize].inc)?;
        if self.cut_blocks(from, to, now) {
            return None;
        }
        let from_inc = self.slots[from as usize].inc;
        let now_ms = links::ms_of(now);
        let n = self.links.next_message(from, to);
        let mut rng = self.net.rng(from, from_inc, to, n);
        let mut leaves = Duration::ZERO;
        if self.sc.latency.handshake {
            match self.links.use_connection(from, to, to_inc, now_ms) {
                Some(ready) => {
                    leaves =
                        Duration::from_millis(u64::from(ready)).saturating_sub(now.as_duration())
                }
                None => {
                    self.metrics.handshakes += 1;
                    leaves = self.net.handshake(from, to, &mut rng)?;
                    let ready = links::ms_of(now + leaves);
                    let closed = self
                        .links
                        .open((from, from_inc), (to, to_inc), now_ms, ready);
                    self.links.ticket_issued(from, to, to_inc, ready);
                    self.metrics.connections_closed += closed.len() as u64;
                    self.metrics.connections_closed_busy = self.links.closed_busy();
                }
            }
        }
        let (there, r1) = self.net.transmit(from, to, &mut rng);
        let n = self.links.next_message(to, from);
        let mut back_rng = self.net.rng(to, to_inc, from, n);
        let (back, r2) = self.net.transmit(to, from, &mut back_rng);
        self.metrics.retransmissions += u64::from(r1 + r2);
        self.metrics.message_sent(now, there.is_none());
        self.metrics.message_sent(now, back.is_none());
        Some((leaves + there?, back?))
    }

    fn send_request(&mut self, slot: u32, t: Transmit<SimPeer>) {
        let kind = match t.request {
            Request::Ping => 0,
            Request::FindNode(_) => 1,
            Request::GetProviders(_) => 2,
            Request::AddProvider(_) => 3,
        };
        self.metrics.requests_by_kind[kind] += 1;
        let from = self.peer_of(slot);
        let from_inc = self.slots[slot as usize].inc;
        self.send(
            slot,
            t.to.slot(),
            Msg::Request {
                from,
                from_inc,
                to: t.to,
                rpc: t.rpc,
                request: t.request,
            },
        );
    }

    /// Whether `peer` names the node now up at its slot.
    pub(super) fn is_current(&self, peer: &SimPeer) -> bool {
        let (key, slot) = peer.pair();
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.dht.is_some() && s.key == key)
    }

    pub(super) fn is_incarnation(&self, slot: u32, inc: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.dht.is_some() && s.inc == inc)
    }

    /// A message arrives.
    pub(super) fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Request {
                from,
                from_inc,
                to,
                rpc,
                request,
            } => {
                if !self.is_current(&to) {
                    self.metrics.messages_undeliverable += 1;
                    return;
                }
                let (to_slot, from_slot) = (to.slot(), from.slot());
                let local = self.local_now(to_slot);
                let lie = self.is_liar(to_slot).then(|| self.lie(to_slot, &request));
                let Some(d) = self.slots[to_slot as usize].dht.as_mut() else {
                    return;
                };
                let honest = d.handle_request(local, from, request);
                self.after_input(to_slot, false);
                let response = lie.unwrap_or(honest);
                self.send(
                    to_slot,
                    from_slot,
                    Msg::Response {
                        to_slot: from_slot,
                        to_inc: from_inc,
                        rpc,
                        response,
                    },
                );
            }
            Msg::Response {
                to_slot,
                to_inc,
                rpc,
                response,
            } => {
                if !self.is_incarnation(to_slot, to_inc) {
                    self.metrics.messages_undeliverable += 1;
                    return;
                }
                let local = self.local_now(to_slot);
                if let Some(d) = self.slots[to_slot as usize].dht.as_mut() {
                    d.handle_response(local, rpc, response);
                    self.after_input(to_slot, false);
                }
            }
            Msg::Transfer {
                from,
                from_inc,
                to,
                id,
                write,
                key,
                size,
                push,
            } => self.deliver_transfer(from, from_inc, to, (id, write), key, size, push),
            Msg::Stored {
                to_slot,
                to_inc,
                write,
                from,
                durable,
                end,
            } => self.on_stored(to_slot, to_inc, write, from, (durable, end)),
            Msg::Lost {
                to_slot,
                to_inc,
                peer,
            } => {
                if !self.is_incarnation(to_slot, to_inc) {
                    return;
                }
                let local = self.local_now(to_slot);
                if let Some(d) = self.slots[to_slot as usize].dht.as_mut() {
                    d.handle_connection(local, ConnectionEvent::Lost(peer));
                    self.after_input(to_slot, false);
                }
            }
            Msg::TransferDone {
                to_slot,
                to_inc,
                id,
                outcome,
            } => {
                if !self.is_incarnation(to_slot, to_inc) {
                    return;
                }
                let local = self.local_now(to_slot);
                if let Some(st) = self.slots[to_slot as usize].store.as_mut() {
                    let failed = st.planner.stats().transfers_failed;
                    st.planner.handle_transfer_done(local, id, outcome);
                    if st.planner.stats().transfers_failed > failed {
                        self.metrics.transfers_failed += 1;
                    }
                    self.after_input(to_slot, false);
                }
            }
        }
    }

    /// Whether the node up at `slot` admits a push of `size` bytes of `key` from `from`
    /// (`overlay::Admission::check` against its own table, charging `from`'s budget), and
    /// the budget that paid.
    fn admit(&mut self, slot: u32, from: &Key, key: &Key, size: u64) -> Option<Payer> {
        let now = self.local_now(slot);
        let rc = &self.sc.workload.replication;
        let (dht, store) = self.slots[slot as usize].up_with_store(now, rc)?;
        store
            .admission
            .check(now, dht.routing_table(), from, key, size)
            .ok()
    }

    /// A transfer reaches its target: the node's placement (`overlay::Placement`) runs
    /// against the target's state, pushing through [`take_push`](Self::take_push) when it
    /// asks to, and a repair transfer (`id`) or a put waiting for its copies (`write`) is
    /// answered with how it ended. A verify-only transfer stores nothing and only answers
    /// whether the target holds the object.
    #[allow(clippy::too_many_arguments)]
    fn deliver_transfer(
        &mut self,
        from: SimPeer,
        from_inc: u32,
        to: SimPeer,
        (id, write): (Option<TransferId>, Option<u32>),
        key: Key,
        size: u64,
        push: bool,
    ) {
        if !self.is_current(&to) {
            self.metrics.messages_undeliverable += 1;
            return;
        }
        // With `[bandwidth]` the bytes take time to leave: a sender that crashed before its
        // copy arrived never finished sending it (judged at arrival, so up to one one-way
        // delay stricter than the last byte's send time).
        if push && self.pipes.is_some() && !self.is_incarnation(from.slot(), from_inc) {
            self.metrics.messages_undeliverable += 1;
            return;
        }
        // The node's placement runs here, its steps answered by the target's state at once
        // (a transfer costs one trip, whatever steps it takes): a put, waiting for its
        // copies or not, pushes first; the planner proves first and pushes only to a target
        // that lacks the object.
        let mut placement = if push && id.is_none() {
            Placement::push_first()
        } else {
            Placement::prove_first(push)
        };
        let mut durable = false;
        let end = loop {
            match placement.poll() {
                PlaceStep::Prove => {
                    let holds = self.slots[to.slot() as usize]
                        .store
                        .as_ref()
                        .is_some_and(|st| st.objects.contains_key(&key));
                    placement.handle_proof(if holds {
                        ProofAnswer::Proven
                    } else {
                        ProofAnswer::Lacks
                    });
                }
                PlaceStep::Push => {
                    let answer = self.take_push(from, to, (id, write), key, size);
                    placement.handle_push(answer);
                }
                PlaceStep::Durable => durable = true,
                PlaceStep::Done(end) => break end,
            }
        };
        if let Some(write) = write {
            let stored = Msg::Stored {
                to_slot: from.slot(),
                to_inc: from_inc,
                write,
                from: to.key(),
                durable,
                end,
            };
            self.send(to.slot(), from.slot(), stored);
        }
        if let Some(id) = id {
            let done = Msg::TransferDone {
                to_slot: from.slot(),
                to_inc: from_inc,
                id,
                outcome: end.outcome(),
            };
            self.send(to.slot(), from.slot(), done);
        }
    }

    /// The target takes a pushed copy in: admitted by its rule first (the node answers 403
    /// before it looks at its store: a pusher its table does not hold, or an object it does
    /// not think it should hold, is refused), then stored if new (counted as put or repair
    /// bytes) and the pusher confirmed as a holder when it keeps one; a copy it held
    /// already is answered `Held` and teaches it nothing, as in the node.
    fn take_push(
        &mut self,
        from: SimPeer,
        to: SimPeer,
        (id, write): (Option<TransferId>, Option<u32>),
        key: Key,
        size: u64,
    ) -> PushAnswer {
        let now = self.now;
        let Some(payer) = self.admit(to.slot(), &from.key(), &key, size) else {
            self.metrics.pushes_refused += 1;
            return PushAnswer::Failed(TransferFault::Declined);
        };
        let fresh = self.store_object(to.slot(), key, size, Announce::Now);
        if fresh {
            match (id, write) {
                (Some(_), _) => self.metrics.repair_arrived(now, size),
                (None, Some(_)) => self.metrics.put_bytes += size,
                // A put that waits for nothing: its first copy is its acknowledgement.
                (None, None) => {
                    self.metrics.put_bytes += size;
                    self.acked.insert(key);
                }
            }
        }
        // A pusher holds what it pushed (it read the bytes from its store), except the
        // writer of a put that waits for nothing, which keeps no copy.
        let from_holds = fresh && (id.is_some() || write.is_some());
        let local = self.local_now(to.slot());
        if let Some(st) = self.slots[to.slot() as usize]
            .store
            .as_mut()
            .filter(|_| from_holds)
        {
            st.planner.handle_holder_confirmed(local, &key, &from.key());
        }
        if !fresh {
            // The node answers `Held` before reading the bytes, and gives back what the
            // push was charged (`Admission::refund`): nothing was taken in.
            let now = self.local_now(to.slot());
            let rc = &self.sc.workload.replication;
            if let Some((_, store)) = self.slots[to.slot() as usize].up_with_store(now, rc) {
                store.admission.refund(payer, size);
            }
        }
        self.after_input(to.slot(), false);
        if fresh {
            PushAnswer::Stored
        } else {
            PushAnswer::Held
        }
    }
}
