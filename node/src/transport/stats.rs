//! Counters of what the transport saw: frames each way, connections, and every rejection by
//! its reason.
//!
//! Each event is counted twice on purpose: in this struct, so tests and `/v1/status` can read
//! exact numbers without a global recorder, and through the `metrics` facade
//! (`oap_frames_total{dir}`, `oap_rejects_total{reason}`, `oap_connections_total{event}`,
//! `oap_handshake_failures_total`), which the node's Prometheus exporter renders: a
//! handshake flood shows as refused connections and failed handshakes, not only as a full
//! connection gauge. The reason strings are the stable `reason()` names from `wire`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Live counters, shared by every connection of one transport.
#[derive(Debug, Default)]
pub struct TransportStats {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    connections_dialed: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    handshakes_failed: AtomicU64,
    requests_served: AtomicU64,
    zero_rtt_accepted: AtomicU64,
    zero_rtt_rejected: AtomicU64,
    resumed_in: AtomicU64,
    early_held: AtomicU64,
    // Rejections are rare (they end a stream), so a lock is cheaper than it looks and keeps
    // any reason string countable without a fixed list.
    rejects: Mutex<BTreeMap<&'static str, u64>>,
    // Every frame is counted: the facade's handles are looked up once (a lookup hashes the
    // name and labels, ~1.3k instructions per round trip), then only incremented. Taken on
    // first use, after the process installed its recorder.
    frames_in_metric: OnceLock<metrics::Counter>,
    frames_out_metric: OnceLock<metrics::Counter>,
    // `oap_exchange_duration_seconds{app,side}`, by side then app slot (see `app_slot`).
    exchange_metric: [[OnceLock<metrics::Histogram>; APP_SLOTS]; 2],
}

/// Which end of an exchange a duration was measured at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We asked: from opening the stream to the whole answer.
    Client = 0,
    /// We answered: from the first frame to the handler's end.
    Server = 1,
}

/// App protocols with a label of their own; any other id is counted as "other".
const APP_SLOTS: usize = 5;

/// The slot and label of an app protocol id in `oap_exchange_duration_seconds`.
fn app_slot(app: u16) -> (usize, &'static str) {
    match app {
        wire::control::APP_PROTO_CONTROL => (0, "control"),
        wire::dht::APP_PROTO_DHT => (1, "dht"),
        wire::object::APP_PROTO_OBJECT => (2, "object"),
        wire::mailbox::APP_PROTO_MAILBOX => (3, "mailbox"),
        _ => (4, "other"),
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames decoded from peers.
    pub frames_in: u64,
    /// Frames written to peers.
    pub frames_out: u64,
    /// Connections we dialed that completed HELLO.
    pub connections_dialed: u64,
    /// Inbound connections that completed HELLO.
    pub connections_accepted: u64,
    /// Inbound connections refused at the connection limit or while closing.
    pub connections_refused: u64,
    /// Handshakes (TLS or HELLO, either direction) that failed or timed out.
    pub handshakes_failed: u64,
    /// Inbound exchanges that reached a handler, control, or a 404.
    pub requests_served: u64,
    /// Dials whose HELLO (and first request) went out as 0-RTT data and the peer accepted
    /// it (`oap_zero_rtt_total{outcome="accepted"}`).
    pub zero_rtt_accepted: u64,
    /// Dials that sent 0-RTT data the peer refused, and so sent HELLO again after the
    /// handshake (`oap_zero_rtt_total{outcome="rejected"}`).
    pub zero_rtt_rejected: u64,
    /// Inbound connections that resumed a session we issued a ticket for and were served
    /// before their handshake completed (`oap_connections_total{event="resumed"}`).
    pub resumed_in: u64,
    /// Inbound requests that arrived before the handshake completed and were not safe to
    /// replay, so waited for it (`oap_rejects_total` is not touched: nothing was refused).
    pub early_held: u64,
    /// Rejections by reason (`oap_rejects_total{reason}`).
    pub rejects: BTreeMap<&'static str, u64>,
}

impl TransportStats {
    /// How many rejections with this reason (0 if none).
    pub fn rejects(&self, reason: &str) -> u64 {
        self.lock_rejects().get(reason).copied().unwrap_or(0)
    }

    /// All counters at once.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
            connections_dialed: self.connections_dialed.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            requests_served: self.requests_served.load(Ordering::Relaxed),
            zero_rtt_accepted: self.zero_rtt_accepted.load(Ordering::Relaxed),
            zero_rtt_rejected: self.zero_rtt_rejected.load(Ordering::Relaxed),
            resumed_in: self.resumed_in.load(Ordering::Relaxed),
            early_held: self.early_held.load(Ordering::Relaxed),
            rejects: self.lock_rejects().clone(),
        }
    }

    pub(crate) fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.frames_in_metric
            .get_or_init(|| metrics::counter!("oap_frames_total", "dir" => "in"))
            .increment(1);
    }

    pub(crate) fn frame_out(&self) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
        self.frames_out_metric
            .get_or_init(|| metrics::counter!("oap_frames_total", "dir" => "out"))
            .increment(1);
    }

    /// Records how long one exchange of app protocol `app` took at this end.
    pub(crate) fn exchange_done(&self, side: Side, app: u16, took: std::time::Duration) {
        let (slot, label) = app_slot(app);
        let side_label = match side {
            Side::Client => "client",
            Side::Server => "server",
        };
        self.exchange_metric[side as usize][slot]
            .get_or_init(|| {
                metrics::histogram!(
                    "oap_exchange_duration_seconds",
                    "app" => label,
                    "side" => side_label
                )
            })
            .record(took.as_secs_f64());
    }

    pub(crate) fn reject(&self, reason: &'static str) {
        *self.lock_rejects().entry(reason).or_insert(0) += 1;
        metrics::counter!("oap_rejects_total", "reason" => reason).increment(1);
    }

    pub(crate) fn connection_dialed(&self) {
        self.connections_dialed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_connections_total", "event" => "dialed").increment(1);
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_connections_total", "event" => "accepted").increment(1);
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_connections_total", "event" => "refused").increment(1);
    }

    pub(crate) fn handshake_failed(&self) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_handshake_failures_total").increment(1);
    }

    /// The outcome of a dial that sent 0-RTT data.
    pub(crate) fn zero_rtt(&self, accepted: bool) {
        let (counter, outcome) = if accepted {
            (&self.zero_rtt_accepted, "accepted")
        } else {
            (&self.zero_rtt_rejected, "rejected")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_zero_rtt_total", "outcome" => outcome).increment(1);
    }

    pub(crate) fn resumed_in(&self) {
        self.resumed_in.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_connections_total", "event" => "resumed").increment(1);
    }

    pub(crate) fn early_held(&self) {
        self.early_held.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("oap_early_requests_held_total").increment(1);
    }

    pub(crate) fn request_served(&self) {
        self.requests_served.fetch_add(1, Ordering::Relaxed);
    }

    fn lock_rejects(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        // A panic elsewhere while holding this lock cannot leave the map inconsistent.
        self.rejects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
