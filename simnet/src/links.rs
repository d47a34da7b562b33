//! What each node knows of the others at the link level: the connections it holds, and
//! how many messages it has sent to each peer (the number that keys each message's random
//! stream).
//!
//! A connection joins two incarnations and counts against both nodes' cap
//! (`latency.connections_max`, the node's `max_connections`); opening one past the cap
//! closes the least recently used connection of that node, at both ends, as the node's
//! transport does with idle connections. A connection is usable from `ready` on (the end of
//! its handshake): a message sent earlier waits for it, as concurrent requests wait behind
//! one dial in the node. Per slot, links are one `Vec` sorted by peer, 20 bytes each; a
//! node's links go with it when it stops.

/// One node's view of one peer.
#[derive(Debug, Clone, Copy)]
struct Link {
    peer: u32,
    /// The peer's incarnation the connection is to; 0: not connected.
    conn_inc: u32,
    /// Messages sent to the peer by this incarnation.
    sent: u32,
    /// Last use of the connection, ms of virtual time.
    last_used: u32,
    /// When the connection's handshake ends, ms of virtual time.
    ready: u32,
}

/// The links of every slot.
#[derive(Debug)]
pub struct Links {
    per_slot: Vec<Vec<Link>>,
    connected: Vec<u32>,
    cap: u32,
}

/// Virtual time as the links keep it (ms; runs are far shorter than 49 days).
pub fn ms_of(t: overlay::Instant) -> u32 {
    u32::try_from(t.as_duration().as_millis()).unwrap_or(u32::MAX)
}

impl Links {
    /// No links yet, for `slots` slots with `cap` connections each.
    pub fn new(slots: u32, cap: u32) -> Links {
        Links {
            per_slot: (0..slots).map(|_| Vec::new()).collect(),
            connected: vec![0; slots as usize],
            cap: cap.max(1),
        }
    }

    fn find(&self, slot: u32, peer: u32) -> Result<usize, usize> {
        self.per_slot[slot as usize].binary_search_by_key(&peer, |l| l.peer)
    }

    fn link_mut(&mut self, slot: u32, peer: u32) -> &mut Link {
        let i = match self.find(slot, peer) {
            Ok(i) => i,
            Err(i) => {
                self.per_slot[slot as usize].insert(
                    i,
                    Link {
                        peer,
                        conn_inc: 0,
                        sent: 0,
                        last_used: 0,
                        ready: 0,
                    },
                );
                i
            }
        };
        &mut self.per_slot[slot as usize][i]
    }

    /// The number of this message from `from` to `to` (0 for the first).
    pub fn next_message(&mut self, from: u32, to: u32) -> u32 {
        let l = self.link_mut(from, to);
        let n = l.sent;
        l.sent = l.sent.wrapping_add(1);
        n
    }

    /// When `from`'s connection to incarnation `to_inc` of `to` is (or was) ready, if it
    /// has one; marks it used at `now_ms`.
    pub fn use_connection(&mut self, from: u32, to: u32, to_inc: u32, now_ms: u32) -> Option<u32> {
        let i = self.find(from, to).ok()?;
        let l = &mut self.per_slot[from as usize][i];
        if l.conn_inc == 0 || l.conn_inc != to_inc {
            return None;
        }
        l.last_used = now_ms;
        Some(l.ready)
    }

    /// Opens a connection between incarnation `from_inc` of `from` and `to_inc` of `to`,
    /// usable from `ready_ms`; each end over its cap first closes its least recently used
    /// connection. Returns the connections so closed, as (node, peer) pairs.
    pub fn open(
        &mut self,
        (from, from_inc): (u32, u32),
        (to, to_inc): (u32, u32),
        now_ms: u32,
        ready_ms: u32,
    ) -> Vec<(u32, u32)> {
        let mut closed = Vec::new();
        for (a, b, b_inc) in [(from, to, to_inc), (to, from, from_inc)] {
            let was = {
                let l = self.link_mut(a, b);
                let was = l.conn_inc != 0;
                l.conn_inc = b_inc;
                l.last_used = now_ms;
                l.ready = ready_ms;
                was
            };
            if !was {
                self.connected[a as usize] += 1;
            }
        }
        for a in [from, to] {
            while self.connected[a as usize] > self.cap {
                let Some(victim) = self.least_recent(a, [from, to]) else {
                    break;
                };
                self.close(a, victim);
                closed.push((a, victim));
            }
        }
        closed
    }

    fn least_recent(&self, slot: u32, keep: [u32; 2]) -> Option<u32> {
        self.per_slot[slot as usize]
            .iter()
            .filter(|l| l.conn_inc != 0 && !keep.contains(&l.peer))
            .min_by_key(|l| (l.last_used, l.peer))
            .map(|l| l.peer)
    }

    /// Closes the connection between `a` and `b`, at both ends.
    pub fn close(&mut self, a: u32, b: u32) {
        for (x, y) in [(a, b), (b, a)] {
            if let Ok(i) = self.find(x, y) {
                let l = &mut self.per_slot[x as usize][i];
                if l.conn_inc != 0 {
                    l.conn_inc = 0;
                    self.connected[x as usize] -= 1;
                }
            }
        }
    }

    /// `slot`'s node stopped: its links go. Returns the peers that held a connection to it
    /// (their end stays open until they notice), and closes their ends.
    pub fn stop(&mut self, slot: u32) -> Vec<u32> {
        let links = std::mem::take(&mut self.per_slot[slot as usize]);
        self.connected[slot as usize] = 0;
        let mut held = Vec::new();
        for l in links.iter().filter(|l| l.conn_inc != 0) {
            if let Ok(i) = self.find(l.peer, slot) {
                let back = &mut self.per_slot[l.peer as usize][i];
                if back.conn_inc != 0 {
                    back.conn_inc = 0;
                    self.connected[l.peer as usize] -= 1;
                    held.push(l.peer);
                }
            }
        }
        held
    }

    /// Connections `slot` holds.
    pub fn connections(&self, slot: u32) -> u32 {
        self.connected[slot as usize]
    }

    /// Every node within its cap and the counts matching the links; `Err` names the first
    /// slot that breaks it.
    pub fn check(&self) -> Result<(), String> {
        for (slot, links) in self.per_slot.iter().enumerate() {
            let n = links.iter().filter(|l| l.conn_inc != 0).count() as u32;
            if n != self.connected[slot] || n > self.cap {
                return Err(format!(
                    "slot {slot}: {n} connections, counted {}, cap {}",
                    self.connected[slot], self.cap
                ));
            }
            if links.windows(2).any(|w| w[0].peer >= w[1].peer) {
                return Err(format!("slot {slot}: links out of order"));
            }
        }
        Ok(())
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
        assert_eq!(l.use_connection(2, 0, 1, 51), None, "closed at both ends");
        assert_eq!((l.connections(0), l.connections(2)), (2, 0));
        assert_eq!(l.stop(0), vec![1, 3]);
        assert_eq!((l.connections(1), l.connections(3)), (0, 0));
        l.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.next_message(4, 0), 0);
        assert_eq!(l.next_message(4, 0), 1);
    }
}
