//! The node's metrics as Prometheus sees them: every family described once (HELP text,
//! which `promtool check metrics` requires), latencies recorded as histograms with fixed
//! buckets (so they aggregate across a fleet, which summaries cannot), and the gateway's
//! golden signals (requests by route, method and status; latency; requests in flight).
//!
//! The counters themselves are recorded where things happen, through the `metrics` facade;
//! this module only installs the recorder and names what each family means.

use std::time::Instant;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of every `*_seconds` histogram: 0.5 ms to 30 s, roughly 2.5× apart.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds of lookup hop counts.
const HOPS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0];

/// Every metric family the node exports: name, kind, help text. The test of `/metrics`
/// and the Grafana dashboard are checked against this list.
pub const FAMILIES: &[(&str, Kind, &str)] = &[
    (
        "http_requests_total",
        Kind::Counter,
        "Gateway requests answered, by route template, method and status code.",
    ),
    (
        "http_request_duration_seconds",
        Kind::Histogram,
        "Gateway time from request to response head, by route template and method.",
    ),
    (
        "http_requests_in_flight",
        Kind::Gauge,
        "Gateway requests whose response head is not sent yet.",
    ),
    (
        "rejected_total",
        Kind::Counter,
        "Gateway requests refused before their handler finished, by reason.",
    ),
    (
        "dht_lookup_seconds",
        Kind::Histogram,
        "Duration of DHT lookups this node ran.",
    ),
    (
        "oap_exchange_duration_seconds",
        Kind::Histogram,
        "OAP/1 exchanges by app protocol and side: as client from opening the stream to the \
         whole answer, as server from the first frame to the handler's end.",
    ),
    (
        "object_locate_duration_seconds",
        Kind::Histogram,
        "Searches for the holders of an object this node does not hold, by outcome.",
    ),
    (
        "object_fetch_duration_seconds",
        Kind::Histogram,
        "Verified transfers of an object (or range) from other holders, start to end, by \
         outcome (ok, failed, abandoned: the reader left first).",
    ),
    (
        "dht_lookup_hops",
        Kind::Histogram,
        "Hops of DHT lookups this node ran.",
    ),
    (
        "dht_routing_table_peers",
        Kind::Gauge,
        "Contacts in the routing table.",
    ),
    (
        "dht_misbehaved_total",
        Kind::Counter,
        "Peers' DHT messages that broke a rule, by reason (object_proof: a proof under \
         the peer's key failed verification).",
    ),
    (
        "dht_liars_denied",
        Kind::Gauge,
        "Peers kept out of the routing table and lookups for now, each caught lying in a \
         proof (10 minutes each).",
    ),
    (
        "dht_rpcs_sent_total",
        Kind::Counter,
        "DHT requests this node sent, by kind (ping, find_node, get_providers, add_provider).",
    ),
    (
        "dht_requests_handled_total",
        Kind::Counter,
        "DHT requests from peers this node answered, by kind.",
    ),
    (
        "dht_rpcs_failed_total",
        Kind::Counter,
        "DHT requests that got no usable answer, by whose failure (peer, refused, local).",
    ),
    (
        "dht_rpcs_held_total",
        Kind::Counter,
        "DHT requests that waited for a slot: the node had rpcs_in_flight_max requests \
         in flight (lookup requests until their soft timeout).",
    ),
    (
        "dht_connections_lost_total",
        Kind::Counter,
        "Connections lost without a goodbye, whose peers became questionable.",
    ),
    (
        "bus_lagged_total",
        Kind::Counter,
        "Events an internal subscriber missed because it fell behind, by bus.",
    ),
    (
        "oap_frames_total",
        Kind::Counter,
        "OAP/1 frames, by direction.",
    ),
    (
        "oap_rejects_total",
        Kind::Counter,
        "OAP/1 frames, streams and pushes refused, by reason.",
    ),
    (
        "oap_connections_total",
        Kind::Counter,
        "QUIC connections dialed, accepted, refused, closed idle to make room, or resumed \
         from 0-RTT data (inbound), by event.",
    ),
    (
        "oap_zero_rtt_total",
        Kind::Counter,
        "Dials that sent 0-RTT data (transport.zero_rtt), by whether the peer accepted it.",
    ),
    (
        "oap_early_requests_held_total",
        Kind::Counter,
        "Inbound requests received as 0-RTT data that are not safe to replay, held until \
         the handshake completed.",
    ),
    (
        "oap_handshake_failures_total",
        Kind::Counter,
        "QUIC/TLS handshakes or HELLOs that failed or timed out, either direction.",
    ),
    (
        "bootstrap_resolve_failures_total",
        Kind::Counter,
        "Bootstrap peer names that did not resolve at a join attempt.",
    ),
    (
        "contacts_file_rejected_total",
        Kind::Counter,
        "Saved contacts files refused at start, by reason; the node started without them.",
    ),
    (
        "contacts_file_save_failures_total",
        Kind::Counter,
        "Writes of the routing table's saved contacts that failed.",
    ),
    (
        "transport_connections",
        Kind::Gauge,
        "Peers with a live connection.",
    ),
    (
        "integrity_fail_total",
        Kind::Counter,
        "Bytes that failed verification against their id, by where they came from.",
    ),
    (
        "repair_transfers_total",
        Kind::Counter,
        "Repair transfers this node ran, by outcome (copied, already_held, absent, failed, cut: still running at the repair cut).",
    ),
    (
        "repair_bytes_total",
        Kind::Counter,
        "Bytes this node sent to place repair copies.",
    ),
    (
        "store_bytes",
        Kind::Gauge,
        "Bytes of objects in the local store.",
    ),
    ("store_objects", Kind::Gauge, "Objects in the local store."),
    (
        "mailbox_queue_depth",
        Kind::Gauge,
        "Mailbox messages this node holds (for any mailbox), not yet acknowledged nor expired.",
    ),
    (
        "mailbox_journals_salvaged_total",
        Kind::Counter,
        "Mailbox journals found corrupt at start and cut before the bad record (what was cut \
         is kept beside the journal as .corrupt-<ms> where the disk had room).",
    ),
    (
        "mailbox_journals_failed",
        Kind::Gauge,
        "Mailbox shards whose journal write failed (a full disk, an I/O error): their changes \
         are answered as failed (not durable) until maintenance rewrites the journal, tried \
         at once, then after 5 s doubling to 5 min while the disk has no room.",
    ),
    (
        "mailbox_inflight",
        Kind::Gauge,
        "Mailbox messages this node holds that were delivered and are hidden until acknowledged \
         or their visibility timeout passes.",
    ),
    (
        "mailbox_dlq_total",
        Kind::Counter,
        "Mailbox messages this node dropped without an acknowledgement, by reason (expired, \
         deliveries_exhausted).",
    ),
    (
        "mailbox_enqueue_duration_seconds",
        Kind::Histogram,
        "Mailbox sends from this node, from the request to W durable copies (or the give-up), \
         by outcome: the enqueue latency.",
    ),
    (
        "mailbox_delivery_seconds",
        Kind::Histogram,
        "Receives of this node's own mail that returned messages: from the request to the \
         messages gathered from the holders (long-poll waits included).",
    ),
    (
        "mailbox_repair_copies_total",
        Kind::Counter,
        "Mailbox copies this node's repair pushed that were new to their receivers.",
    ),
    (
        "mailbox_sent_total",
        Kind::Counter,
        "Mailbox sends from this node acknowledged at W durable copies.",
    ),
    (
        "mailbox_received_total",
        Kind::Counter,
        "Messages of this node's own mailbox handed to its owner (redeliveries included).",
    ),
    (
        "rf_target",
        Kind::Gauge,
        "The replication factor this node aims for.",
    ),
    (
        "rf_observed",
        Kind::Gauge,
        "Mean copies per object this node leads, as last proven.",
    ),
    (
        "holders_too_slow_total",
        Kind::Counter,
        "Fetches left for the next holder because the holder moved less than the minimum rate.",
    ),
    (
        "fetch_failover_given_up_total",
        Kind::Counter,
        "Fetches that stopped with holders left untried, 40 s (failover_idle) having passed without a verified byte.",
    ),
    (
        "copies_fetched_back_total",
        Kind::Counter,
        "Tries to fetch back a copy of ours dropped as corrupt, by outcome (ok, failed; gave_up and not_tried per object).",
    ),
    (
        "repair_transfers_in_flight",
        Kind::Gauge,
        "Object transfers (repairs and writes' copies) started and not reported done yet.",
    ),
    (
        "replica_pushes_streamed_total",
        Kind::Counter,
        "Copies pushed beside a declared id's upload (PUT /o/{id}), by outcome: started, stored, held, pushed_again (from the store after the upload), left_behind (fell behind the upload), ended_early (ended by itself), abandoned (the upload fell behind the pace the write waits for), detached (the write was refused its slot after the body; left to end by itself, under its upload's streaming permit), detached_failed (such a push ended without a copy), detached_stopped (still running at four I/O timeouts, and stopped).",
    ),
    (
        "write_placements_cut_total",
        Kind::Counter,
        "Placements of a write (or of an operator's repair, run as one) still running at twice its wait, stopped and left to repair.",
    ),
    (
        "writes_in_flight",
        Kind::Gauge,
        "Gateway writes running, each until its last copy's placement reported (at most writes_max).",
    ),
    (
        "writes_committing",
        Kind::Gauge,
        "PUTs whose body is in and that are being hashed, made durable and placed up to their answer, their clients waiting or gone (at most 2 x writes_max).",
    ),
    (
        "store_writes_total",
        Kind::Counter,
        "Object files written, by path: direct (opened past the page cache), cached (through it); refused counts those of them that asked for direct I/O and were refused it, at open (then cached) or at a write (then on through the cache).",
    ),
    (
        "store_healed_total",
        Kind::Counter,
        "Rotten copies of small objects rewritten from the verified bytes kept in memory \
         instead of dropped (each is also counted in integrity_fail_total).",
    ),
    (
        "store_scrub_bytes_total",
        Kind::Counter,
        "Bytes the store's scrubber read back and verified (a copy found rotten is integrity_fail_total{source=\"store\"}).",
    ),
    (
        "store_scrub_passes_total",
        Kind::Counter,
        "Scrub passes over every object the store held when each began.",
    ),
    (
        "store_reads_total",
        Kind::Counter,
        "Object files opened for a read, by path: direct (an object of 4 MiB or more read for a copy pushed to a peer, past the page cache), cached (through it); refused counts those of them that asked for direct I/O and were refused it, at open (then cached) or at a read (then on through the cache).",
    ),
    (
        "uploads_streaming",
        Kind::Gauge,
        "Declared-id uploads whose copies are pushed beside them, and detached sets of such pushes (at most 16).",
    ),
];

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// A level read when scraped.
    Gauge,
    /// A distribution in fixed buckets.
    Histogram,
}

/// Installs the process-wide Prometheus recorder with the node's buckets and help texts.
/// Once per process: the binary calls it; in-process tests run without a recorder.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(Matcher::Full("dht_lookup_hops".into()), HOPS)?
        .install_recorder()?;
    for &(name, kind, help) in FAMILIES {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    // Failures and repairs show as 0 from the start, not only after the first one: a
    // dashboard or an alert on them has a series to read.
    for name in [
        "repair_bytes_total",
        "repair_transfers_total",
        "oap_handshake_failures_total",
        "bootstrap_resolve_failures_total",
        "contacts_file_save_failures_total",
        "store_healed_total",
        "mailbox_journals_salvaged_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for source in ["store", "peer", "push", "proof"] {
        metrics::counter!("integrity_fail_total", "source" => source).absolute(0);
    }
    for path in ["direct", "cached", "refused"] {
        metrics::counter!("store_writes_total", "path" => path).absolute(0);
        metrics::counter!("store_reads_total", "path" => path).absolute(0);
    }
    for reason in crate::dht::contacts::ContactsError::REASONS {
        metrics::counter!("contacts_file_rejected_total", "reason" => reason).absolute(0);
    }
    // The frame rules' reasons are a fixed list (the OAP/1 contract's): each starts at 0.
    for reason in wire::DecodeError::REASONS {
        metrics::counter!("oap_rejects_total", "reason" => reason).absolute(0);
    }
    Ok(handle)
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds recorded histogram samples into their buckets every few seconds. The recorder
/// keeps every sample until it is folded (a scrape does it too), so a node nobody scrapes
/// would otherwise hold 8 bytes per request for ever.
pub fn keep_up(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    })
}

/// One gateway request being answered: in flight until [`finish`](Self::finish).
#[derive(Debug)]
pub struct HttpRequest {
    route: &'static str,
    method: &'static str,
    started: Instant,
}

impl HttpRequest {
    /// A request for `path` with `method` arrived.
    pub fn start(method: &axum::http::Method, path: &str) -> HttpRequest {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        HttpRequest {
            route: route_of(path),
            method: method_label(method),
            started: Instant::now(),
        }
    }

    /// Its response head is ready with `status`.
    pub fn finish(self, status: u16) {
        let (route, method) = (self.route, self.method);
        metrics::histogram!("http_request_duration_seconds", "route" => route, "method" => method)
            .record(self.started.elapsed().as_secs_f64());
        metrics::counter!("http_requests_total", "route" => route, "method" => method, "status" => status.to_string())
            .increment(1);
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

/// The route template of `path`, so labels stay few whatever clients ask for.
fn route_of(path: &str) -> &'static str {
    match path {
        "/o" => "/o",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/v1/status" => "/v1/status",
        "/v1/routing" => "/v1/routing",
        "/v1/repair" => "/v1/repair",
        "/v1/tokens/reload" => "/v1/tokens/reload",
        "/" => "/",
        p if p.starts_with("/o/") => "/o/{id}",
        p if p.starts_with("/v1/lookup/") => "/v1/lookup/{key}",
        p if p.starts_with("/v1/repair/") => "/v1/repair/{id}",
        _ => "other",
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match *m {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_and_names_follow_conventions() {
        assert_eq!(route_of("/o/b3:00ff"), "/o/{id}");
        assert_eq!(route_of("/v1/lookup/abcd"), "/v1/lookup/{key}");
        assert_eq!(route_of("/../etc/passwd"), "other");
        for &(name, kind, help) in FAMILIES {
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(!help.is_empty() && help.ends_with('.'), "{name}");
        }
    }
}
