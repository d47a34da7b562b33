//! The one event queue: a binary heap of small entries ordered by (time, sequence), with
//! message bodies kept in a slab beside it.
//!
//! Ties at the same instant break by insertion order (the sequence number), never by
//! anything a hash or a thread could change, so a run replays exactly. Heap entries are 24
//! bytes (time, sequence, an 8-byte event naming a slot or a slab index): with 100k nodes
//! each holding an armed timer the heap is large, and sifting small entries is what keeps
//! it fast. Message bodies (which carry up to k contacts) live in the slab, their slots
//! reused through a free list, so the queue's memory follows the messages in flight.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use overlay::{Instant, Key, Request, Response, RpcId, TransferId, TransferOutcome};

use crate::peer::SimPeer;

/// What happens at a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ev {
    /// Deliver the message in this slab slot.
    Msg(u32),
    /// This slot's timer (only the one still armed counts).
    Timer(u32),
    /// This slot's churn process changes state.
    Churn(u32),
    /// Apply churn trace transition number `n`.
    Trace(u32),
    /// This slot joins for the first time (bootstrap mode "join").
    Join(u32),
    /// The workload's next lookup.
    Lookup,
    /// The workload's next put.
    Put,
    /// The workload's next get.
    Get,
    /// End of a timeseries interval.
    Sample,
    /// The mass failure.
    Failure,
}

/// A message in flight.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// A DHT request; the answer goes back to incarnation `from_inc` of `from`.
    Request {
        from: SimPeer,
        from_inc: u32,
        to: SimPeer,
        rpc: RpcId,
        request: Request,
    },
    /// A DHT response, to exactly the incarnation that asked.
    Response {
        to_slot: u32,
        to_inc: u32,
        rpc: RpcId,
        response: Response<SimPeer>,
    },
    /// An object copy. `id` is the planner's transfer (repair); `None` for a put.
    Transfer {
        from: SimPeer,
        from_inc: u32,
        to: SimPeer,
        id: Option<TransferId>,
        key: Key,
        size: u64,
        /// False for the planner's verify-only transfers: ask whether `to` holds it.
        push: bool,
    },
    /// The outcome of a repair transfer, for the planner that started it.
    TransferDone {
        to_slot: u32,
        to_inc: u32,
        id: TransferId,
        outcome: TransferOutcome,
    },
    /// The connection to `peer` went silent (its node crashed) and timed out at this
    /// incarnation, without a goodbye.
    Lost {
        to_slot: u32,
        to_inc: u32,
        peer: Key,
    },
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at: Instant,
    seq: u64,
    ev: Ev,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, sequence) must compare greatest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The event queue and the slab of message bodies.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Entry>,
    seq: u64,
    slab: Vec<Option<Msg>>,
    free: Vec<u32>,
}

impl Queue {
    /// Schedules `ev` at `at`.
    pub fn push(&mut self, at: Instant, ev: Ev) {
        self.heap.push(Entry {
            at,
            seq: self.seq,
            ev,
        });
        self.seq += 1;
    }

    /// Schedules the delivery of `msg` at `at`.
    pub fn push_msg(&mut self, at: Instant, msg: Msg) {
        let idx = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(msg);
                i
            }
            None => {
                self.slab.push(Some(msg));
                (self.slab.len() - 1) as u32
            }
        };
        self.push(at, Ev::Msg(idx));
    }

    /// When the next event is due.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// The next event.
    pub fn pop(&mut self) -> Option<(Instant, Ev)> {
        self.heap.pop().map(|e| (e.at, e.ev))
    }

    /// Takes the body of message `idx` out of the slab.
    pub fn take_msg(&mut self, idx: u32) -> Option<Msg> {
        let msg = self.slab.get_mut(idx as usize)?.take();
        if msg.is_some() {
            self.free.push(idx);
        }
        msg
    }

    /// Events pending.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Messages in flight.
    pub fn messages_in_flight(&self) -> usize {
        self.slab.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_time_then_insertion_order() {
        let mut q = Queue::default();
        let t = |ms| Instant::ZERO + Duration::from_millis(ms);
        q.push(t(5), Ev::Timer(1));
        q.push(t(1), Ev::Timer(2));
        q.push(t(5), Ev::Timer(3));
        q.push(t(1), Ev::Timer(4));
        let order: Vec<Ev> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(
            order,
            [Ev::Timer(2), Ev::Timer(4), Ev::Timer(1), Ev::Timer(3)]
        );
    }
}
