//! `mail-bench`: mailbox throughput of one `macronode` process from its local admin plane
//! (issue 17's target: 50k messages/s of 1 KiB, send + recv + ack), with the enqueue
//! latency of every send.
//!
//! A lone node (W = 1: it never had a peer) is started with quotas above the run's size.
//! Phase 1: `--threads` HTTP clients (8) send `--messages` (20,000) messages of `--size`
//! bytes (1,024) to the node's own mailbox, `POST /mb/{id}` each with its own idempotency
//! key, timing every send to its 201 (a durable journal record). Phase 2: batches of up to
//! 256 are received (`GET /mb?max=256`) and acknowledged, one `DELETE /mb/{id}` per
//! message spread over the same clients, or with `--batch-ack` one `POST /mb/ack` per
//! batch, until the mailbox is empty. `--batch-send N` sends N messages per request
//! (`POST /mb/{id}/batch`); every message's enqueue latency is then its request's. All of the node's sends come
//! from one sender (the node), and a sender's messages are delivered in order, so batches
//! are received one after another. Prints messages/s per phase and for the whole cycle,
//! p50/p99 enqueue latency, and the load average.
//!
//! Run it optimised: `cargo build --release -p node && cargo run --release -p testing --bin
//! mail-bench -- --messages 20000 --threads 8`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use testing::benchkit::loadavg;
use testing::node::{NodeProcess, NodeSpec};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(name: &str, default: usize) -> Result<usize, BoxError> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or_else(|| format!("{name} needs a value"))?
            .parse()?),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<(), BoxError> {
    let messages = arg("--messages", 20_000)?;
    let threads = arg("--threads", 8)?.clamp(1, 15);
    let size = arg("--size", 1024)?;
    let batch_ack = std::env::args().any(|a| a == "--batch-ack");
    // Messages per send request: 1 is `POST /mb/{id}`, more `POST /mb/{id}/batch`.
    let per_send = arg("--batch-send", 1)?.clamp(1, 256);
    let mut spec = NodeSpec::new("mail-bench");
    let cap = (messages + 1).to_string();
    let bytes = (messages as u64 + 1)
        .saturating_mul(size as u64)
        .to_string();
    spec.args = vec![
        "--mailbox-sender-count-max".into(),
        cap.clone(),
        "--mailbox-count-max".into(),
        cap,
        "--mailbox-sender-bytes-max".into(),
        bytes.clone(),
        "--mailbox-bytes-max".into(),
        bytes,
    ];
    let mut node = NodeProcess::start(spec)?;
    node.wait_ready(Duration::from_secs(30))?;
    let me = node.node_id()?.to_string();
    let admin = node.admin().ok_or("no admin plane")?;
    let base = Arc::new(format!("http://{admin}"));
    println!(
        "mail-bench: {messages} messages of {size} B, {threads} clients, load {}",
        loadavg()
    );

    // Phase 1: sends.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..threads {
        let (next, base, me) = (next.clone(), base.clone(), me.clone());
        workers.push(std::thread::spawn(move || -> Result<Vec<f64>, String> {
            let agent = agent();
            let body = vec![0x5au8; size];
            let mut lat = Vec::new();
            loop {
                if per_send > 1 {
                    let first = next.fetch_add(per_send, Ordering::Relaxed);
                    if first >= messages {
                        return Ok(lat);
                    }
                    let last = (first + per_send).min(messages);
                    use base64::Engine;
                    let payload = base64::engine::general_purpose::STANDARD.encode(&body);
                    let items: Vec<serde_json::Value> = (first..last)
                        .map(|i| serde_json::json!({"key": format!("bench-{i}"), "payload": payload}))
                        .collect();
                    let text = serde_json::json!({ "messages": items }).to_string();
                    let t = Instant::now();
                    let resp = agent
                        .post(format!("{base}/mb/{me}/batch"))
                        .header("Content-Type", "application/json")
                        .send(text.as_bytes())
                        .map_err(|e| e.to_string())?;
                    if resp.status().as_u16() != 201 {
                        return Err(format!("batch send {first}: {}", resp.status()));
                    }
                    // Each message of the batch waited as long as the request.
                    let took = t.elapsed().as_secs_f64();
                    lat.extend(std::iter::repeat_n(took, last - first));
                    continue;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= messages {
                    return Ok(lat);
                }
                let t = Instant::now();
                let resp = agent
                    .post(format!("{base}/mb/{me}"))
                    .header("Idempotency-Key", format!("bench-{i}"))
                    .send(&body[..])
                    .map_err(|e| e.to_string())?;
                if resp.status().as_u16() != 201 {
                    return Err(format!("send {i}: {}", resp.status()));
                }
                lat.push(t.elapsed().as_secs_f64());
            }
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.join().map_err(|_| "a sender panicked")??);
    }
    let send_secs = started.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);

    // Phase 2: receive a batch, ack it across the clients, until empty.
    let recv_started = Instant::now();
    let agents: Vec<ureq::Agent> = (0..threads).map(|_| agent()).collect();
    let mut received = 0usize;
    loop {
        let mut resp = agents[0].get(format!("{base}/mb?max=256")).call()?;
        let text = resp.body_mut().read_to_string()?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let ids: Vec<String> = v["messages"]
            .as_array()
            .ok_or("no messages array")?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        if ids.is_empty() {
            break;
        }
        received += ids.len();
        if batch_ack {
            let body = serde_json::json!({ "ids": ids }).to_string();
            let r = agents[0]
                .post(format!("{base}/mb/ack"))
                .header("Content-Type", "application/json")
                .send(body.as_bytes())?;
            if r.status().as_u16() != 200 {
                return Err(format!("batch ack: {}", r.status()).into());
            }
            continue;
        }
        let ids = Arc::new(ids);
        let cursor = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = agents
            .iter()
            .cloned()
            .map(|a| {
                let (ids, cursor, base) = (ids.clone(), cursor.clone(), base.clone());
                std::thread::spawn(move || -> Result<(), String> {
                    loop {
                        let i = cursor.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else {
                            return Ok(());
                        };
                        let r = a
                            .delete(format!("{base}/mb/{id}"))
                            .call()
                            .map_err(|e| e.to_string())?;
                        if r.status().as_u16() != 200 {
                            return Err(format!("ack {id}: {}", r.status()));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "an acker panicked")??;
        }
    }
    let recv_secs = recv_started.elapsed().as_secs_f64();
    let total = send_secs + recv_secs;
    println!(
        "send: {:.0} msg/s ({messages} in {send_secs:.2} s); enqueue p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        messages as f64 / send_secs,
        percentile(&lat, 0.50) * 1e3,
        percentile(&lat, 0.99) * 1e3,
        lat.last().copied().unwrap_or(f64::NAN) * 1e3,
    );
    println!(
        "recv+ack: {:.0} msg/s ({received} in {recv_secs:.2} s)",
        received as f64 / recv_secs
    );
    println!(
        "cycle (send + recv + ack): {:.0} msg/s; load {}",
        messages as f64 / total,
        loadavg()
    );
    if received != messages {
        return Err(format!("received {received} of {messages}").into());
    }
    node.sigterm()?;
    Ok(())
}
