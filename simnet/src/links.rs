//! What each node knows of the others at the link level: the connections it holds, and
//! how many messages it has sent to each peer (the number that keys each message's random
//! stream; not kept when the network draws nothing per message).
//!
//! A connection joins two incarnations and counts against both nodes' cap
//! (`latency.connections_max`, the node's `max_connections`); opening one past the cap
//! closes the least recently used connection of that node, at both ends, as the node's
//! transport does with idle connections. A connection is usable from `ready` on (the end of
//! its handshake): a message sent earlier waits for it, as concurrent requests wait behind
//! one dial in the node. Per slot, the message counts are one `Vec` of (peer, count) sorted
//! by peer, 8 bytes a peer ever messaged (tens of millions of them in a 100k-node run), and
//! the open connections another, short `Vec` (at most the cap) sorted by peer; a node's
//! links go with it when it stops.
//!
//! Session tickets (`latency.zero_rtt`, the node's `transport.zero_rtt`): a node that
//! completes a handshake it dialed holds a ticket for that incarnation of the peer, as the
//! node's dialer cache does: at most [`TICKETS_MAX`] per node, least recently issued out
//! first, good for [`TICKET_LIFETIME_MS`]. A ticket is single-use and each connection issues
//! a fresh one, so using it and receiving the next come to renewing it. A restarted peer
//! lost the server-side state its tickets named (a new incarnation: the ticket is refused and
//! the dial costs its full handshake); a restarted node lost its cache.

/// One end of an open connection.
#[derive(Debug, Clone, Copy)]
struct Conn {
    peer: u32,
    /// The peer's incarnation the connection is to (never 0).
    inc: u32,
    /// Last use of the connection, ms of virtual time.
    last_used: u32,
    /// When the connection's handshake ends, ms of virtual time.
    ready: u32,
}

/// A session ticket for one incarnation of a peer.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    peer: u32,
    inc: u32,
    /// When it was issued, ms of virtual time.
    issued: u32,
}

/// Tickets a node keeps (the node's dialer session cache).
pub const TICKETS_MAX: usize = 1024;
/// How long a ticket stays good (the node's ticket lifetime, 12 h).
pub const TICKET_LIFETIME_MS: u32 = 12 * 3600 * 1000;

/// The links of every slot.
#[derive(Debug)]
pub struct Links {
    /// Per slot: (peer, messages sent to it by this incarnation), sorted by peer.
    sent: Vec<Vec<(u32, u32)>>,
    /// Per slot: its open connections, sorted by peer.
    conns: Vec<Vec<Conn>>,
    /// Per slot: its session tickets, sorted by peer (empty unless tickets are on).
    tickets: Vec<Vec<Ticket>>,
    tickets_on: bool,
    /// Whether messages are numbered per pair (see [`Links::unnumbered`]).
    numbered: bool,
    cap: u32,
    /// Slots there are: every peer in a list is below this.
    slots: u32,
    /// Connections closed for room though used within [`IDLE_EVICT_AFTER_MS`]: the node
    /// would have refused the new connection instead (its `idle_evict_after`), so each is
    /// a place where simnet is kinder than the node.
    closed_busy: u64,
}

/// The node's `idle_evict_after` (1 s): a connection used more recently than this is not
/// closed for room there.
pub const IDLE_EVICT_AFTER_MS: u32 = 1000;

/// Virtual time as the links keep it (ms; runs are far shorter than 49 days).
pub fn ms_of(t: overlay::Instant) -> u32 {
    u32::try_from(t.as_duration().as_millis()).unwrap_or(u32::MAX)
}

impl Links {
    /// No links yet, for `slots` slots with `cap` connections each.
    pub fn new(slots: u32, cap: u32) -> Links {
        Links {
            sent: (0..slots).map(|_| Vec::new()).collect(),
            conns: (0..slots).map(|_| Vec::new()).collect(),
            tickets: (0..slots).map(|_| Vec::new()).collect(),
            tickets_on: false,
            numbered: true,
            cap: cap.max(1),
            slots,
            closed_busy: 0,
        }
    }

    /// Nodes keep session tickets from the handshakes they dial (`latency.zero_rtt`).
    pub fn keep_tickets(&mut self) {
        self.tickets_on = true;
    }

    /// Messages are not numbered: every one is number 0. For a network that draws nothing
    /// per message (no loss, no jitter, no message faults), where no stream is keyed by
    /// the number: the counts were 8 bytes for every pair that ever talked, and a search
    /// into a cold list (often an insert) on every message.
    pub fn unnumbered(&mut self) {
        self.numbered = false;
    }

    /// Whether messages are numbered per pair.
    pub fn numbered(&self) -> bool {
        self.numbered
    }

    /// Whether `from` holds a good ticket for incarnation `to_inc` of `to`, so a request
    /// may go with the handshake. A ticket for an earlier incarnation, or expired, is
    /// dropped.
    pub fn resume(&mut self, from: u32, to: u32, to_inc: u32, now_ms: u32) -> bool {
        let held = &mut self.tickets[from as usize];
        let Ok(i) = find(held, to, self.slots, |t| t.peer) else {
            return false;
        };
        let t = held[i];
        if t.inc == to_inc && now_ms.saturating_sub(t.issued) <= TICKET_LIFETIME_MS {
            return true;
        }
        held.remove(i);
        false
    }

    /// `from`'s dial of incarnation `to_inc` of `to` completed at `now_ms`: it holds a fresh
    /// ticket for it (when tickets are on), the least recently issued going past the cap.
    pub fn ticket_issued(&mut self, from: u32, to: u32, to_inc: u32, now_ms: u32) {
        if !self.tickets_on {
            return;
        }
        let held = &mut self.tickets[from as usize];
        let t = Ticket {
            peer: to,
            inc: to_inc,
            issued: now_ms,
        };
        match find(held, to, self.slots, |t| t.peer) {
            Ok(i) => held[i] = t,
            Err(i) => {
                held.insert(i, t);
                if held.len() > TICKETS_MAX {
                    if let Some(oldest) = (0..held.len()).min_by_key(|&j| (held[j].issued, j)) {
                        held.remove(oldest);
                    }
                }
            }
        }
    }

    fn find_conn(&self, slot: u32, peer: u32) -> Result<usize, usize> {
        find(&self.conns[slot as usize], peer, self.slots, |c| c.peer)
    }

    /// The number of this message from `from` to `to` (0 for the first; always 0 when
    /// [unnumbered](Links::unnumbered)).
    pub fn next_message(&mut self, from: u32, to: u32) -> u32 {
        if !self.numbered {
            return 0;
        }
        let sent = &mut self.sent[from as usize];
        match find(sent, to, self.slots, |&(p, _)| p) {
            Ok(i) => {
                let n = sent[i].1;
                sent[i].1 = n.wrapping_add(1);
                n
            }
            Err(i) => {
                sent.insert(i, (to, 1));
                0
            }
        }
    }

    /// When `from`'s connection to incarnation `to_inc` of `to` is (or was) ready, if it
    /// has one; marks it used at `now_ms`.
    pub fn use_connection(&mut self, from: u32, to: u32, to_inc: u32, now_ms: u32) -> Option<u32> {
        let i = self.find_conn(from, to).ok()?;
        let c = &mut self.conns[from as usize][i];
        if c.inc != to_inc {
            return None;
        }
        c.last_used = now_ms;
        Some(c.ready)
    }

    /// Opens a connection between incarnation `from_inc` of `from` and `to_inc` of `to`,
    /// usable from `ready_ms`; each end at its cap first closes its least recently used
    /// connection (by last use, then peer; never the pair's own). Returns the connections
    /// so closed, as (node, peer) pairs.
    ///
    /// At the cap the victim's place is taken in one move (the entries between the two
    /// places shift by one) rather than an insert and a remove, each shifting half of a
    /// cold list of 256. Evicting at `from` touches only `from`'s and its victim's lists,
    /// never `to`'s (the pair is kept), so handling the ends one after the other closes
    /// what opening both and then evicting did.
    pub fn open(
        &mut self,
        (from, from_inc): (u32, u32),
        (to, to_inc): (u32, u32),
        now_ms: u32,
        ready_ms: u32,
    ) -> Vec<(u32, u32)> {
        let mut closed = Vec::new();
        for (a, b, b_inc) in [(from, to, to_inc), (to, from, from_inc)] {
            let conn = Conn {
                peer: b,
                inc: b_inc,
                last_used: now_ms,
                ready: ready_ms,
            };
            let i = match self.find_conn(a, b) {
                Ok(i) => {
                    self.conns[a as usize][i] = conn;
                    continue;
                }
                Err(i) => i,
            };
            let victim = if self.connections(a) >= self.cap {
                self.least_recent(a, [from, to])
            } else {
                None
            };
            let Some((victim, last_used)) = victim else {
                let held = &mut self.conns[a as usize];
                grow_at_most_to(held, self.cap as usize);
                held.insert(i, conn);
                continue;
            };
            if last_used.saturating_add(IDLE_EVICT_AFTER_MS) > now_ms {
                self.closed_busy += 1;
            }
            if let Ok(j) = self.find_conn(victim, a) {
                self.conns[victim as usize].remove(j);
            }
            if let Ok(v) = self.find_conn(a, victim) {
                let held = &mut self.conns[a as usize];
                if v < i {
                    held[v..i].rotate_left(1);
                    held[i - 1] = conn;
                } else {
                    held[i..=v].rotate_right(1);
                    held[i] = conn;
                }
            }
            closed.push((a, victim));
        }
        closed
    }

    /// `slot`'s least recently used connection (by last use, then peer) outside `keep`:
    /// its peer and last use. One pass of branch-free minimums over (last use, peer) packed
    /// in a word; peers are slot numbers, so never `u32::MAX`, and the packed `u64::MAX`
    /// means none.
    fn least_recent(&self, slot: u32, keep: [u32; 2]) -> Option<(u32, u32)> {
        let least = self.conns[slot as usize]
            .iter()
            .map(|c| {
                if c.peer == keep[0] || c.peer == keep[1] {
                    u64::MAX
                } else {
                    (u64::from(c.last_used) << 32) | u64::from(c.peer)
                }
            })
            .min()
            .unwrap_or(u64::MAX);
        (least != u64::MAX).then_some((least as u32, (least >> 32) as u32))
    }

    /// Connections closed for room though used within the last
    /// [`IDLE_EVICT_AFTER_MS`] (the node would have refused the new one).
    pub fn closed_busy(&self) -> u64 {
        self.closed_busy
    }

    /// Closes the connection between `a` and `b`, at both ends.
    pub fn close(&mut self, a: u32, b: u32) {
        for (x, y) in [(a, b), (b, a)] {
            if let Ok(i) = self.find_conn(x, y) {
                self.conns[x as usize].remove(i);
            }
        }
    }

    /// `slot`'s node stopped: its links go. Returns the peers that held a connection to it
    /// (their end stays open until they notice), in peer order, and closes their ends.
    pub fn stop(&mut self, slot: u32) -> Vec<u32> {
        self.sent[slot as usize] = Vec::new();
        self.tickets[slot as usize] = Vec::new();
        let conns = std::mem::take(&mut self.conns[slot as usize]);
        let mut held = Vec::new();
        for c in &conns {
            if let Ok(i) = self.find_conn(c.peer, slot) {
                self.conns[c.peer as usize].remove(i);
                held.push(c.peer);
            }
        }
        held
    }

    /// Connections `slot` holds.
    pub fn connections(&self, slot: u32) -> u32 {
        self.conns[slot as usize].len() as u32
    }

    /// Every node within its cap, its connections and counts in peer order, and every
    /// connection held at both ends; `Err` names the first slot that breaks it.
    pub fn check(&self) -> Result<(), String> {
        for (slot, conns) in self.conns.iter().enumerate() {
            let n = conns.len() as u32;
            if n > self.cap {
                return Err(format!("slot {slot}: {n} connections, cap {}", self.cap));
            }
            if conns.windows(2).any(|w| w[0].peer >= w[1].peer)
                || self.sent[slot].windows(2).any(|w| w[0].0 >= w[1].0)
            {
                return Err(format!("slot {slot}: links out of order"));
            }
            if let Some(c) = conns
                .iter()
                .find(|c| self.find_conn(c.peer, slot as u32).is_err())
            {
                return Err(format!(
                    "slot {slot}: connection to {} open at one end",
                    c.peer
                ));
            }
        }
        Ok(())
    }
}

/// Where `peer` is in `list` (sorted by distinct peers, all below `slots`), or where it
/// would go: exactly what `binary_search_by_key` answers, found faster. Slots are spread
/// evenly over the lists (a node's peers are random nodes), so a peer's place is guessed
/// from its value, bracketed by galloping out from the guess, and only the bracket is
/// bisected: one or two cache misses where a binary search over a cold list of hundreds
/// took one per halving (the searches in `open` and `next_message` were 16 % of a long
/// static-100k run). A skewed list costs at worst about twice a binary search.
fn find<T>(list: &[T], peer: u32, slots: u32, key: impl Fn(&T) -> u32) -> Result<usize, usize> {
    let n = list.len();
    if n == 0 {
        return Err(0);
    }
    let guess = u64::from(peer) * n as u64 / u64::from(slots.max(1));
    let g = usize::try_from(guess).unwrap_or(n).min(n - 1);
    // The answer (the number of entries below `peer`) lies in lo..=hi, and an entry equal
    // to `peer` below hi.
    let (lo, hi) = if key(&list[g]) < peer {
        let (mut lo, mut step) = (g + 1, 1);
        loop {
            let probe = g + step;
            if probe >= n {
                break (lo, n);
            }
            if key(&list[probe]) >= peer {
                break (lo, probe + 1);
            }
            lo = probe + 1;
            step *= 2;
        }
    } else {
        let (mut hi, mut step) = (g + 1, 1);
        loop {
            if step > g {
                break (0, hi);
            }
            let probe = g - step;
            if key(&list[probe]) < peer {
                break (probe + 1, hi);
            }
            hi = probe + 1;
            step *= 2;
        }
    };
    match list[lo..hi].binary_search_by_key(&peer, key) {
        Ok(i) => Ok(lo + i),
        Err(i) => Err(lo + i),
    }
}

/// Makes room for one more connection in a list that never holds more than `max` (the
/// cap): capacity doubles as usual but stops at `max`. A node at its cap of 256 had
/// reserved 512 places, 4 KiB of every node's 8 KiB list left empty (400 MB at the end
/// of static-100k).
fn grow_at_most_to<T>(list: &mut Vec<T>, max: usize) {
    if list.len() == list.capacity() {
        let cap = (list.capacity() * 2).max(4).min(max).max(list.len() + 1);
        list.reserve_exact(cap - list.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_shared_capped_and_closed_least_recent_first() {
        let mut l = Links::new(5, 2);
        assert_eq!(l.use_connection(0, 1, 1, 0), None);
        assert!(l.open((0, 1), (1, 1), 0, 10).is_empty());
        assert_eq!(l.use_connection(0, 1, 1, 5), Some(10));
        assert_eq!(l.use_connection(1, 0, 1, 6), Some(10), "both ends");
        assert_eq!(l.use_connection(0, 1, 2, 7), None, "another incarnation");
        assert!(l.open((0, 1), (2, 1), 20, 30).is_empty());
        l.use_connection(0, 1, 1, 40);
        // Node 0 is at its cap: a third connection closes its least recently used (to 2).
        assert_eq!(l.open((0, 1), (3, 1), 50, 60), vec![(0, 2)]);
        assert_eq!(
            l.closed_busy(),
            1,
            "used 30 ms before, within the node's 1 s"
        );
        assert_eq!(l.use_connection(2, 0, 1, 51), None, "closed at both ends");
        assert_eq!((l.connections(0), l.connections(2)), (2, 0));
        assert_eq!(l.stop(0), vec![1, 3]);
        assert_eq!((l.connections(1), l.connections(3)), (0, 0));
        l.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.next_message(4, 0), 0);
        assert_eq!(l.next_message(4, 0), 1);
        l.unnumbered();
        assert_eq!(l.next_message(4, 0), 0);
        assert_eq!(l.next_message(4, 0), 0, "unnumbered: every message is 0");
        assert_eq!(l.next_message(3, 0), 0);
        assert_eq!(l.sent[3].len(), 0, "nothing kept");
    }

    /// The model `open` was first written as: both ends opened, then each end over its
    /// cap closes its least recently used connection.
    fn open_by_insert_then_evict(
        conns: &mut [Vec<(u32, u32)>],
        cap: usize,
        (from, to): (u32, u32),
        now: u32,
    ) -> Vec<(u32, u32)> {
        for (a, b) in [(from, to), (to, from)] {
            let held = &mut conns[a as usize];
            match held.binary_search_by_key(&b, |c| c.0) {
                Ok(i) => held[i].1 = now,
                Err(i) => held.insert(i, (b, now)),
            }
        }
        let mut closed = Vec::new();
        for a in [from, to] {
            while conns[a as usize].len() > cap {
                let Some(&(victim, _)) = conns[a as usize]
                    .iter()
                    .filter(|c| c.0 != from && c.0 != to)
                    .min_by_key(|c| (c.1, c.0))
                else {
                    break;
                };
                for (x, y) in [(a, victim), (victim, a)] {
                    conns[x as usize].retain(|c| c.0 != y);
                }
                closed.push((a, victim));
            }
        }
        closed
    }

    #[test]
    fn open_at_the_cap_closes_what_insert_then_evict_did() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (slots, cap) in [(6u32, 1u32), (12, 3), (40, 8)] {
            let mut l = Links::new(slots, cap);
            let mut model = vec![Vec::new(); slots as usize];
            for now in 0..4000u32 {
                let from = rng.gen_range(0..slots);
                let to = rng.gen_range(0..slots);
                if from == to {
                    continue;
                }
                // Some reuse and some ties of last use, so both orderings matter.
                let now = now / 3;
                if rng.gen_bool(0.3) && l.use_connection(from, to, 1, now).is_some() {
                    let held: &mut Vec<(u32, u32)> = &mut model[from as usize];
                    if let Ok(i) = held.binary_search_by_key(&to, |c| c.0) {
                        held[i].1 = now;
                    }
                    continue;
                }
                let got = l.open((from, 1), (to, 1), now, now + 1);
                let want = open_by_insert_then_evict(&mut model, cap as usize, (from, to), now);
                assert_eq!(got, want, "slots {slots}, cap {cap}, t {now}");
                for (slot, held) in model.iter().enumerate() {
                    let have: Vec<(u32, u32)> = l.conns[slot]
                        .iter()
                        .map(|c| (c.peer, c.last_used))
                        .collect();
                    assert_eq!(&have, held, "slot {slot}");
                }
                l.check().unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn find_answers_as_a_binary_search_does() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for slots in [1u32, 2, 10, 1000, 100_000] {
            for len in [0usize, 1, 2, 3, 17, 256, 600] {
                let len = len.min(slots as usize);
                // Spread evenly, and skewed into the lowest tenth of the slots.
                for spread in [slots, (slots / 10).max(len as u32)] {
                    let mut list: Vec<u32> = (0..len).map(|_| rng.gen_range(0..spread)).collect();
                    list.sort_unstable();
                    list.dedup();
                    for peer in
                        (0..slots.min(2000)).chain((0..200).map(|_| rng.gen_range(0..slots)))
                    {
                        assert_eq!(
                            find(&list, peer, slots, |&p| p),
                            list.binary_search(&peer),
                            "slots {slots}, list {list:?}, peer {peer}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_ticket_resumes_the_incarnation_it_came_from_until_it_expires() {
        let mut l = Links::new(3, 8);
        l.ticket_issued(0, 1, 1, 100);
        assert!(!l.resume(0, 1, 1, 200), "tickets are off unless asked for");
        l.keep_tickets();
        l.ticket_issued(0, 1, 1, 100);
        assert!(l.resume(0, 1, 1, 200));
        assert!(!l.resume(1, 0, 1, 200), "only the dialer holds one");
        assert!(l.resume(0, 1, 1, 100 + TICKET_LIFETIME_MS));
        assert!(!l.resume(0, 1, 1, 101 + TICKET_LIFETIME_MS), "expired");
        assert!(!l.resume(0, 1, 1, 200), "and dropped");
        l.ticket_issued(0, 1, 1, 300);
        assert!(
            !l.resume(0, 1, 2, 400),
            "the peer restarted: its ticket table is gone"
        );
        assert!(!l.resume(0, 1, 1, 400), "the stale ticket was dropped");
        l.ticket_issued(0, 2, 1, 500);
        l.stop(0);
        assert!(!l.resume(0, 2, 1, 600), "a restarted node lost its cache");
    }

    #[test]
    fn past_the_cap_the_least_recently_issued_ticket_goes() {
        let n = TICKETS_MAX as u32 + 2;
        let mut l = Links::new(n, 8);
        l.keep_tickets();
        for peer in 1..=TICKETS_MAX as u32 {
            l.ticket_issued(0, peer, 1, peer);
        }
        l.ticket_issued(0, 1, 1, 5000); // renewed by a reconnection: now the freshest
        l.ticket_issued(0, n - 1, 1, 5001);
        assert!(l.resume(0, 1, 1, 6000));
        assert!(!l.resume(0, 2, 1, 6000), "the oldest went");
        assert!(l.resume(0, 3, 1, 6000));
        assert!(l.resume(0, n - 1, 1, 6000));
    }
}
