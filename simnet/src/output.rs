//! The files a run leaves in `--out`: `summary.json`, `timeseries.csv`, `params.txt` and the
//! SVG plots.
//!
//! Everything written is a function of the run's events, so the same scenario and seed give
//! byte-identical files, with three exceptions that measure the run itself and say so in
//! their names: `wall_seconds`, `events_per_wall_second` and `peak_rss_bytes`. Rates are
//! over lookups issued (refused and unfinished ones count as failures); hop, RPC and latency
//! statistics are over finished lookups; percentiles are nearest-rank.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::Finished;
use crate::metrics::{histogram_percentile, percentile};
use crate::plots;

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The file system refused.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A plot could not be drawn.
    #[error("cannot draw {path}: {message}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What plotters said.
        message: String,
    },
}

/// A value as a CSV cell (empty for a missing or non-finite number).
pub trait Cell {
    /// The cell text.
    fn cell(&self) -> String;
}

impl Cell for u64 {
    fn cell(&self) -> String {
        self.to_string()
    }
}
impl Cell for u32 {
    fn cell(&self) -> String {
        self.to_string()
    }
}
impl Cell for usize {
    fn cell(&self) -> String {
        self.to_string()
    }
}
impl Cell for f64 {
    fn cell(&self) -> String {
        if self.is_finite() {
            format!("{self}")
        } else {
            String::new()
        }
    }
}
impl Cell for String {
    fn cell(&self) -> String {
        self.clone()
    }
}
impl<T: Cell> Cell for Option<T> {
    fn cell(&self) -> String {
        self.as_ref().map_or_else(String::new, Cell::cell)
    }
}

macro_rules! summary {
    ($( $(#[$m:meta])* $name:ident : $ty:ty ),* $(,)?) => {
        /// The headline numbers of one run (`summary.json`, one row of `sweep.csv`).
        #[derive(Debug, Clone, PartialEq, Serialize)]
        pub struct Summary { $( $(#[$m])* pub $name: $ty, )* }

        impl Summary {
            /// Every field as `(name, cell)`, in declaration order.
            pub fn columns(&self) -> Vec<(&'static str, String)> {
                vec![ $( (stringify!($name), self.$name.cell()) ),* ]
            }
        }
    };
}

summary! {
    /// The scenario's name.
    scenario: String,
    /// Node slots.
    nodes: u32,
    /// Master seed.
    seed: u64,
    /// Bucket size.
    k: usize,
    /// Lookup parallelism.
    alpha: usize,
    /// Lookups issued.
    lookups: u64,
    /// Lookups that finished.
    lookups_finished: u64,
    /// Lookups the source could not start.
    lookups_refused: u64,
    /// Lookups lost with their node or still running at the end.
    lookups_unfinished: u64,
    /// Lookups whose closest result is the true closest live node, over lookups issued.
    lookup_success_rate: f64,
    /// Lookups whose result is exactly the true k closest live nodes, over lookups issued.
    lookup_exact_rate: f64,
    /// Mean hops of finished lookups (overlay `QueryStats::hops`).
    hops_mean: f64,
    /// Median hops.
    hops_p50: Option<u64>,
    /// 95th percentile of hops.
    hops_p95: Option<u64>,
    /// 99th percentile of hops.
    hops_p99: Option<u64>,
    /// Largest hop count.
    hops_max: Option<u64>,
    /// Mean requests per finished lookup.
    rpcs_per_lookup_mean: f64,
    /// Mean failed requests per finished lookup.
    timeouts_per_lookup_mean: f64,
    /// Mean lookup latency, ms (virtual).
    lookup_latency_ms_mean: f64,
    /// Median lookup latency, ms.
    lookup_latency_ms_p50: Option<f64>,
    /// 95th percentile of lookup latency, ms.
    lookup_latency_ms_p95: Option<f64>,
    /// 99th percentile of lookup latency, ms.
    lookup_latency_ms_p99: Option<f64>,
    /// Time-averaged live nodes over the run.
    alive_mean: f64,
    /// Live nodes at the end.
    alive_end: u64,
    /// nodes × E\[up\] / (E\[up\] + E\[down\]) for renewal churn.
    #[serde(skip_serializing_if = "Option::is_none")]
    alive_expected: Option<f64>,
    /// Messages sent.
    messages_sent: u64,
    /// Messages the loss model dropped.
    messages_lost: u64,
    /// PING requests sent (liveness probes and full-bucket probes).
    requests_ping: u64,
    /// FIND_NODE requests sent (workload, join and refresh lookups).
    requests_find_node: u64,
    /// GET_PROVIDERS requests sent.
    requests_get_providers: u64,
    /// ADD_PROVIDER requests sent.
    requests_add_provider: u64,
    /// Messages that found their node dead or replaced.
    messages_undeliverable: u64,
    /// Lost transmissions that were sent again (QUIC retransmission).
    retransmissions: u64,
    /// Connections opened (first contacts: a handshake each).
    handshakes: u64,
    /// Of those, dials whose first request went with the handshake (`latency.zero_rtt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    zero_rtt_sends: Option<u64>,
    /// Connections closed at a node's connection cap (least recently used first).
    connections_closed: u64,
    /// Of those, connections used within the last second, which the node would not have
    /// closed for room (it refuses the new connection then): where simnet is kinder.
    connections_closed_busy: u64,
    /// PeerMisbehaved events (all nodes are honest: anything but 0 is a bug).
    misbehaved_events: u64,
    /// Objects put.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_puts: Option<u64>,
    /// Puts answered with W durable copies (with `workload.put_w`).
    #[serde(skip_serializing_if = "Option::is_none")]
    object_puts_acked: Option<u64>,
    /// Puts answered with fewer than W copies (with `workload.put_w`).
    #[serde(skip_serializing_if = "Option::is_none")]
    object_puts_short: Option<u64>,
    /// Pushes (a put's copies, repairs) their receiver's admission rule refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_pushes_refused: Option<u64>,
    /// Gets issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_gets: Option<u64>,
    /// Gets that walked a second time (records in the first pass proved nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    object_gets_searched_again: Option<u64>,
    /// Gets served by their second walk.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_gets_served_again: Option<u64>,
    /// Gets that found a live holder, over gets issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_success_rate: Option<f64>,
    /// Median of successful get latency, ms (to the first verified byte).
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_latency_ms_p50: Option<f64>,
    /// 95th percentile of successful get latency, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_latency_ms_p95: Option<f64>,
    /// Successful gets served from the getter's own region (regions models).
    #[serde(skip_serializing_if = "Option::is_none")]
    object_gets_intra: Option<u64>,
    /// Median latency of gets served from the getter's own region, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_intra_ms_p50: Option<f64>,
    /// 95th percentile of gets served from the getter's own region, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_intra_ms_p95: Option<f64>,
    /// Successful gets served from another region.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_gets_inter: Option<u64>,
    /// Median latency of gets served from another region, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_inter_ms_p50: Option<f64>,
    /// 95th percentile of gets served from another region, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_inter_ms_p95: Option<f64>,
    /// Median of the provider-walk part of successful gets, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_search_ms_p50: Option<f64>,
    /// 95th percentile of the provider-walk part of successful gets, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_search_ms_p95: Option<f64>,
    /// Median of the holder-wait (TAIL probes) part of successful gets, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_probe_ms_p50: Option<f64>,
    /// 95th percentile of the holder-wait part of successful gets, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_probe_ms_p95: Option<f64>,
    /// Median of the fetch part of successful gets, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_fetch_ms_p50: Option<f64>,
    /// 95th percentile of the fetch part of successful gets, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_get_fetch_ms_p95: Option<f64>,
    /// Mean live copies per placed object at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas_mean: Option<f64>,
    /// Placed objects with at least one live copy at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    objects_available: Option<f64>,
    /// Bytes of copies made by puts.
    #[serde(skip_serializing_if = "Option::is_none")]
    put_bytes: Option<u64>,
    /// Bytes of copies made by repair.
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_bytes: Option<u64>,
    /// Objects tracked for durability (each from its first stored copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    objects_stored: Option<u64>,
    /// Objects with no live copy left at the end (lost, or waiting on a down holder).
    #[serde(skip_serializing_if = "Option::is_none")]
    objects_lost: Option<u64>,
    /// Object-seconds spent below RF live copies, over the run and its drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_seconds_below_rf: Option<f64>,
    /// Crashes of nodes that held at least one object.
    #[serde(skip_serializing_if = "Option::is_none")]
    holder_failures: Option<u64>,
    /// RF restored after a holder's crash took an object below it: how many times.
    #[serde(skip_serializing_if = "Option::is_none")]
    restores: Option<u64>,
    /// Median time from a holder's crash to RF live copies again, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_s_p50: Option<f64>,
    /// 95th percentile of the same, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    restore_s_p95: Option<f64>,
    /// Objects still below RF at the end, since a holder's crash.
    #[serde(skip_serializing_if = "Option::is_none")]
    unrestored_end: Option<u64>,
    /// Repair bytes per holder failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_bytes_per_failure: Option<f64>,
    /// With `[bandwidth]`: object bytes moved through the nodes' links.
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth_bytes_moved: Option<u64>,
    /// With `[bandwidth]`: median wait of an object transfer (put, repair, get fetch) for
    /// its sender's uplink and receiver's downlink, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer_queue_wait_ms_p50: Option<f64>,
    /// 95th percentile of the same, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    transfer_queue_wait_ms_p95: Option<f64>,
    /// 95th percentile of the repair transfers' waits, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    repair_queue_wait_ms_p95: Option<f64>,
    /// 95th percentile of the get fetches' waits, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    get_queue_wait_ms_p95: Option<f64>,
    /// Acknowledged writes: puts whose first copy was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    acked_writes: Option<u64>,
    /// Of those, with no copy left on any node, live or down, at the end (must be 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    acked_writes_lost: Option<u64>,
    /// A soak's verdict (`[soak]`): state at the checkpoints, violations, pass or fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    soak: Option<crate::soak::SoakReport>,
    /// Events processed.
    events: u64,
    /// Virtual seconds simulated (the run plus its drain).
    sim_seconds: f64,
    /// Wall-clock seconds the run took (measures the run, not the network).
    wall_seconds: f64,
    /// Events per wall-clock second (measures the run).
    events_per_wall_second: f64,
    /// Peak resident memory of the process, VmHWM (measures the run).
    peak_rss_bytes: u64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The `p` percentile of `sorted` nanoseconds in ms, when the figure applies (`on`).
fn pct_ms(on: bool, sorted: &[u64], p: f64) -> Option<f64> {
    if on {
        percentile(sorted, p).map(ms)
    } else {
        None
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

impl Summary {
    /// The summary of a finished run that took `wall_seconds` and peaked at `peak_rss_bytes`.
    pub fn new(f: &Finished, wall_seconds: f64, peak_rss_bytes: u64) -> Summary {
        let m = &f.metrics;
        let sc = &f.scenario;
        let hops_total: u64 = m
            .hop_histogram
            .iter()
            .enumerate()
            .map(|(h, c)| h as u64 * c)
            .sum();
        let objects = sc.workload.objects > 0;
        let bw = sc.bandwidth.is_some();
        let regions = objects
            && matches!(
                sc.latency.model,
                crate::scenario::LatencyModel::Regions { .. }
            );
        let lat_sum: u64 = m.latencies.iter().sum();
        let duration_ns = sc.duration.as_nanos().max(1);
        Summary {
            scenario: sc.name.clone(),
            nodes: sc.nodes,
            seed: sc.seed,
            k: sc.dht.k,
            alpha: sc.dht.alpha,
            lookups: m.lookups,
            lookups_finished: m.lookups_finished,
            lookups_refused: m.lookups_refused,
            lookups_unfinished: m.lookups_unfinished,
            lookup_success_rate: ratio(m.lookups_success, m.lookups),
            lookup_exact_rate: ratio(m.lookups_exact, m.lookups),
            hops_mean: ratio(hops_total, m.lookups_finished),
            hops_p50: histogram_percentile(&m.hop_histogram, 0.5),
            hops_p95: histogram_percentile(&m.hop_histogram, 0.95),
            hops_p99: histogram_percentile(&m.hop_histogram, 0.99),
            hops_max: m
                .hop_histogram
                .iter()
                .rposition(|&c| c > 0)
                .map(|h| h as u64),
            rpcs_per_lookup_mean: ratio(m.rpcs_sum, m.lookups_finished),
            timeouts_per_lookup_mean: ratio(m.timeouts_sum, m.lookups_finished),
            lookup_latency_ms_mean: ratio(lat_sum, m.lookups_finished) / 1e6,
            lookup_latency_ms_p50: percentile(&m.latencies, 0.5).map(ms),
            lookup_latency_ms_p95: percentile(&m.latencies, 0.95).map(ms),
            lookup_latency_ms_p99: percentile(&m.latencies, 0.99).map(ms),
            alive_mean: (m.alive_integral as f64) / duration_ns as f64,
            alive_end: m.rows.last().map_or(0, |r| r.alive_end),
            alive_expected: sc.churn_up_probability().map(|p| p * f64::from(sc.nodes)),
            messages_sent: m.messages_sent,
            messages_lost: m.messages_lost,
            requests_ping: m.requests_by_kind[0],
            requests_find_node: m.requests_by_kind[1],
            requests_get_providers: m.requests_by_kind[2],
            requests_add_provider: m.requests_by_kind[3],
            messages_undeliverable: m.messages_undeliverable,
            retransmissions: m.retransmissions,
            handshakes: m.handshakes,
            zero_rtt_sends: sc.latency.zero_rtt.then_some(m.zero_rtt_sends),
            connections_closed: m.connections_closed,
            connections_closed_busy: m.connections_closed_busy,
            misbehaved_events: m.misbehaved,
            object_puts: objects.then_some(m.puts),
            object_puts_acked: (objects && sc.workload.put_w.is_some()).then_some(m.puts_acked),
            object_puts_short: (objects && sc.workload.put_w.is_some()).then_some(m.puts_short),
            object_pushes_refused: objects.then_some(m.pushes_refused),
            object_gets: objects.then_some(m.gets),
            object_gets_searched_again: objects.then_some(m.gets_searched_again),
            object_gets_served_again: objects.then_some(m.gets_served_again),
            object_get_success_rate: objects.then(|| ratio(m.gets_ok, m.gets)),
            object_get_latency_ms_p50: pct_ms(objects, &m.get_latencies, 0.5),
            object_get_latency_ms_p95: pct_ms(objects, &m.get_latencies, 0.95),
            object_gets_intra: regions.then_some(m.get_latencies_intra.len() as u64),
            object_get_intra_ms_p50: pct_ms(regions, &m.get_latencies_intra, 0.5),
            object_get_intra_ms_p95: pct_ms(regions, &m.get_latencies_intra, 0.95),
            object_gets_inter: regions.then_some(m.get_latencies_inter.len() as u64),
            object_get_inter_ms_p50: pct_ms(regions, &m.get_latencies_inter, 0.5),
            object_get_inter_ms_p95: pct_ms(regions, &m.get_latencies_inter, 0.95),
            object_get_search_ms_p50: pct_ms(objects, &m.get_search, 0.5),
            object_get_search_ms_p95: pct_ms(objects, &m.get_search, 0.95),
            object_get_probe_ms_p50: pct_ms(objects, &m.get_probe, 0.5),
            object_get_probe_ms_p95: pct_ms(objects, &m.get_probe, 0.95),
            object_get_fetch_ms_p50: pct_ms(objects, &m.get_fetch, 0.5),
            object_get_fetch_ms_p95: pct_ms(objects, &m.get_fetch, 0.95),
            replicas_mean: objects.then_some(m.replicas_end),
            objects_available: objects.then_some(m.objects_available_end),
            put_bytes: objects.then_some(m.put_bytes),
            repair_bytes: objects.then_some(m.repair_bytes),
            objects_stored: objects.then_some(m.durability.objects() as u64),
            objects_lost: objects.then_some(m.durability.unavailable()),
            object_seconds_below_rf: objects.then_some(m.durability.below_ns as f64 / 1e9),
            holder_failures: objects.then_some(m.durability.holder_failures),
            restores: objects.then_some(m.durability.restore_ns.len() as u64),
            restore_s_p50: objects
                .then(|| percentile(&m.durability.restore_ns, 0.5).map(|ns| ns as f64 / 1e9))
                .flatten(),
            restore_s_p95: objects
                .then(|| percentile(&m.durability.restore_ns, 0.95).map(|ns| ns as f64 / 1e9))
                .flatten(),
            unrestored_end: objects.then_some(m.durability.unrestored() as u64),
            repair_bytes_per_failure: objects
                .then(|| ratio(m.repair_bytes, m.durability.holder_failures)),
            bandwidth_bytes_moved: bw.then_some(m.bytes_moved),
            transfer_queue_wait_ms_p50: pct_ms(bw, &m.transfer_waits, 0.5),
            transfer_queue_wait_ms_p95: pct_ms(bw, &m.transfer_waits, 0.95),
            repair_queue_wait_ms_p95: pct_ms(bw, &m.repair_waits, 0.95),
            get_queue_wait_ms_p95: pct_ms(bw, &m.get_waits, 0.95),
            acked_writes: objects.then_some(m.acked),
            acked_writes_lost: objects.then_some(m.acked_lost),
            soak: crate::soak::SoakReport::new(f),
            events: f.events,
            sim_seconds: f.sim_seconds,
            wall_seconds,
            events_per_wall_second: if wall_seconds > 0.0 {
                f.events as f64 / wall_seconds
            } else {
                0.0
            },
            peak_rss_bytes,
        }
    }

    /// The summary as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

/// `timeseries.csv`: one row per interval.
pub fn timeseries_csv(f: &Finished) -> String {
    let m = &f.metrics;
    let objects = f.scenario.workload.objects > 0;
    let mut s = String::from(
        "t_start_s,t_end_s,alive_mean,alive_end,lookups,lookups_finished,success_rate,\
         exact_rate,hops_mean,latency_ms_p50,latency_ms_p95,latency_ms_p99,messages,messages_lost",
    );
    if objects {
        s.push_str(
            ",gets,get_success_rate,replicas_mean,repair_bytes,objects_below_rf,objects_unavailable",
        );
    }
    let soak = f.scenario.soak.is_some();
    if soak {
        for name in crate::metrics::STATE_FIELDS {
            let _ = write!(s, ",{name}_mean,{name}_max");
        }
        s.push_str(",live_sampled,violations");
    }
    s.push('\n');
    for (i, r) in m.rows.iter().enumerate() {
        let (a, b) = m.row_span(i);
        let span = (b - a).as_nanos().max(1);
        let cells = [
            a.as_duration().as_secs_f64().cell(),
            b.as_duration().as_secs_f64().cell(),
            format!("{:.3}", r.alive_integral as f64 / span as f64),
            r.alive_end.cell(),
            r.lookups.cell(),
            r.finished.cell(),
            fixed(ratio(r.success, r.lookups)),
            fixed(ratio(r.exact, r.lookups)),
            fixed(ratio(r.hops_sum, r.finished)),
            percentile(&r.latencies, 0.5).map(ms).cell(),
            percentile(&r.latencies, 0.95).map(ms).cell(),
            percentile(&r.latencies, 0.99).map(ms).cell(),
            r.messages.cell(),
            r.messages_lost.cell(),
        ];
        s.push_str(&cells.join(","));
        if objects {
            let _ = write!(
                s,
                ",{},{},{},{},{},{}",
                r.gets,
                fixed(ratio(r.gets_ok, r.gets)),
                fixed(r.replicas_mean),
                r.repair_bytes,
                r.below_rf,
                r.unavailable
            );
        }
        if soak {
            let empty = crate::metrics::StateSample::default();
            let st = r.state.as_ref().unwrap_or(&empty);
            for i in 0..crate::metrics::STATE_FIELDS.len() {
                let _ = write!(s, ",{},{}", fixed(st.mean(i)), st.max[i]);
            }
            let _ = write!(s, ",{},{}", st.live, r.violations);
        }
        s.push('\n');
    }
    s
}

fn fixed(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        String::new()
    }
}

fn write(path: PathBuf, text: &str) -> Result<(), OutputError> {
    std::fs::write(&path, text).map_err(|source| OutputError::Io { path, source })
}

/// Writes every output file of a finished run into `dir` (created if missing).
pub fn write_all(dir: &Path, f: &Finished, summary: &Summary) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|source| OutputError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write(dir.join("summary.json"), &summary.to_json())?;
    write(dir.join("timeseries.csv"), &timeseries_csv(f))?;
    write(dir.join("params.txt"), &f.scenario.describe())?;
    if f.scenario.output.plots {
        plots::draw_all(dir, f)?;
    }
    Ok(())
}
