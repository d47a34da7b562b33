//! Puts that wait for W acknowledgements (`workload.put_w`), through the node's own
//! decisions: `overlay::placement_targets` picks the copies' nodes and `overlay::Write`
//! decides when the put answers, as `Objects::replicate` does in the node.
//!
//! The writer stores the object first (its durable copy 1, as a node's gateway does) and
//! registers each placement with its planner, so repair does not repeat them. Each placement
//! is a pushed transfer running the node's `overlay::Placement` at its target (push, then
//! prove); how it ended and whether the copy counts (a `Stored` answer, the node's after its
//! fsync, or a proven `Held`) come back in one reply, a trip back. The put answers at W copies, or when every
//! placement reported, or when its wait (10 s + size at 4 MiB/s, the node's `put_wait`)
//! ran out; only a put answered with W copies is acknowledged, and the durability checker
//! holds simnet to never losing one. A placement to a node that is down never reports (the
//! node's dial would fail after its timeout instead): its put answers at the wait, which
//! makes a put's answer late, never wrong. A writer that goes down loses its writes.

use std::time::Duration;

use overlay::{
    FailureCause, Instant, Key, PlaceEnd, TransferFault, TransferId, TransferOutcome, Write,
};

use super::Sim;
use super::queue::Ev;
use crate::peer::SimPeer;

/// How long a put of `size` bytes waits for its copies: the node's rule
/// (`overlay::ObjectTimings::put_wait`, 10 s plus the size at 4 MiB/s).
pub fn put_wait(size: u64) -> Duration {
    overlay::ObjectTimings::default().put_wait(size)
}

/// One put waiting for its copies.
#[derive(Debug)]
pub(crate) struct Writing {
    slot: u32,
    inc: u32,
    key: Key,
    size: u64,
    write: Write<SimPeer>,
    /// The writer's planner's id for each placement not yet reported.
    planned: Vec<(Key, TransferId)>,
    answered: bool,
    /// The write's timer in the queue, if one is.
    timer: Option<Instant>,
}

impl Sim {
    /// The put of `key` at `slot` found `closest`: store it here, place it at the `rf`
    /// closest, and answer at `w` durable copies (by the node's rule,
    /// `overlay::write_quorum`).
    pub(super) fn start_write(&mut self, slot: u32, key: Key, closest: Vec<SimPeer>, w: usize) {
        let size = self.sc.workload.object_bytes;
        let rf = self.sc.workload.replication.rf;
        let had_peers = self.slots[slot as usize]
            .dht
            .as_ref()
            .is_some_and(|d| d.had_peers());
        let w = overlay::write_quorum(w, rf, had_peers);
        let me = self.peer_of(slot);
        let (targets, _) = overlay::placement_targets(me.key(), key, closest, rf);
        if self.store_object(slot, key, size, super::nodes::Announce::Now) {
            self.metrics.put_bytes += size;
        }
        let planned = match self.slots[slot as usize].store.as_mut() {
            Some(st) => targets
                .iter()
                .filter_map(|p| Some((p.key(), st.planner.begin_external(key, p.key())?)))
                .collect(),
            None => Vec::new(),
        };
        self.after_input(slot, false);
        let no = self.work.next_write;
        self.work.next_write = no.wrapping_add(1);
        let writing = Writing {
            slot,
            inc: self.slots[slot as usize].inc,
            key,
            size,
            write: Write::new(self.now, targets, w, put_wait(size)),
            planned,
            answered: false,
            timer: None,
        };
        self.work.writes.insert(no, writing);
        self.drive_write(no);
    }

    /// How write `no`'s placement at `from` ended, and whether its copy counts there.
    pub(super) fn on_stored(
        &mut self,
        to_slot: u32,
        to_inc: u32,
        no: u32,
        from: Key,
        (durable, end): (bool, PlaceEnd),
    ) {
        if !self.is_incarnation(to_slot, to_inc) {
            return;
        }
        let now = self.now;
        let Some(w) = self.work.writes.get_mut(&no) else {
            return;
        };
        if durable {
            w.write.handle_durable(&from);
        }
        if w.write.handle_placed(now, &from, end.result())
            && let Some(i) = w.planned.iter().position(|(k, _)| *k == from)
        {
            let (slot, (_, id)) = (w.slot, w.planned.remove(i));
            self.placement_over(slot, id, end.outcome());
        }
        self.drive_write(no);
    }

    /// Write `no`'s timer fired.
    pub(super) fn on_write_timer(&mut self, no: u32) {
        let now = self.now;
        if let Some(w) = self.work.writes.get_mut(&no)
            && w.timer.is_some_and(|t| t <= now)
        {
            w.timer = None;
        }
        self.drive_write(no);
    }

    /// Starts what write `no` asks for, answers it once it can, and arms its timer; drops
    /// it when it is over (or its writer is gone).
    fn drive_write(&mut self, no: u32) {
        let Some(mut w) = self.work.writes.remove(&no) else {
            return;
        };
        if !self.is_incarnation(w.slot, w.inc) {
            return;
        }
        let now = self.now;
        while let Some(to) = w.write.poll_place(now) {
            self.send_transfer(w.slot, to, (None, Some(no)), w.key, w.size, true);
        }
        if !w.answered
            && let Some(answer) = w.write.answer(now)
        {
            w.answered = true;
            if answer.copies >= answer.want {
                self.metrics.puts_acked += 1;
                self.acked.insert(w.key);
            } else {
                self.metrics.puts_short += 1;
            }
        }
        let deadline = w.write.deadline();
        if w.write.finished() || now >= deadline {
            // Placements that never reported (their target was down) end with the wait.
            for (_, id) in w.planned {
                let silent = TransferFault::Exchange(FailureCause::Silent);
                self.placement_over(w.slot, id, TransferOutcome::Failed(silent));
            }
            return;
        }
        let next = w.write.poll_timeout().unwrap_or(deadline).min(deadline);
        if w.timer != Some(next) {
            w.timer = Some(next);
            self.queue.push(next, Ev::WriteTimer(no));
        }
        self.work.writes.insert(no, w);
    }

    /// Tells the writer at `slot`'s planner that placement `id` is over.
    fn placement_over(&mut self, slot: u32, id: TransferId, outcome: TransferOutcome) {
        let local = self.local_now(slot);
        if let Some(st) = self.slots[slot as usize].store.as_mut() {
            st.planner.handle_transfer_done(local, id, outcome);
            self.after_input(slot, false);
        }
    }
}
