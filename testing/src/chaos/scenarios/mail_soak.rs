//! Mail soak (issue 17): 4 nodes (RF 3, W 2). Node 0 sends a message to node 1's mailbox
//! every 100 ms through its own admin plane; node 1 receives, acks and sends each back to
//! node 0 (the echo); node 0 receives and acks the echoes. Every 10 s one of nodes 2 and 3
//! (the other holders) is SIGKILLed and restarted 3 s later with its data.
//!
//! Goals: every message node 0 got a 201 for comes back as an echo (0 lost, after a
//! 20 s grace at the end); no message is delivered again after its ack (0 duplicates);
//! no 201 with fewer than W copies; node 0's and node 1's RSS flat (slope at most 2 MiB/min
//! after a 10 s warm-up); no crash. Sends refused (503 while a holder is down) are
//! retried with the same idempotency key and counted. Short: 30 s. Long: 10 minutes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Opts, secs, sleep_until};
use crate::HarnessError;
use crate::chaos::cluster::{Cluster, ClusterSpec, NetKind};
use crate::chaos::figures::{Goal, Report, slope};
use crate::chaos::procfs;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// `POST /mb/{to}` on an admin plane: `Some(copies)` on 201, `None` otherwise.
fn send(a: &ureq::Agent, admin: SocketAddr, to: &str, key: &str, body: &str) -> Option<u64> {
    let mut r = a
        .post(format!("http://{admin}/mb/{to}"))
        .header("Idempotency-Key", key)
        .send(body.as_bytes())
        .ok()?;
    if r.status().as_u16() != 201 {
        return None;
    }
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    v["copies"].as_u64()
}

/// The node's own mail: (id, payload text).
fn recv(a: &ureq::Agent, admin: SocketAddr) -> Vec<(String, String)> {
    let Ok(mut r) = a.get(format!("http://{admin}/mb?max=64")).call() else {
        return Vec::new();
    };
    let Ok(text) = r.body_mut().read_to_string() else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    v["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let id = m["id"].as_str()?.to_string();
            let payload = b64.decode(m["payload"].as_str()?).ok()?;
            Some((id, String::from_utf8_lossy(&payload).into_owned()))
        })
        .collect()
}

fn ack(a: &ureq::Agent, admin: SocketAddr, id: &str) -> bool {
    a.delete(format!("http://{admin}/mb/{id}"))
        .call()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// Runs the mail soak.
pub fn run(o: &Opts) -> Result<Report, HarnessError> {
    let duration = Duration::from_secs(if o.long { 600 } else { 30 });
    let grace = Duration::from_secs(20);
    let period = Duration::from_secs(10);
    let down = Duration::from_secs(3);
    let mut spec = ClusterSpec::new("mail", 4, 3, NetKind::Loopback, o.seed);
    spec.w = Some(2);
    spec.liveness = Some(Duration::from_secs(1));
    let mut c = Cluster::start(spec)?;
    let ids: Vec<String> = c.ids().iter().map(|i| i.to_string()).collect();
    let (a0, a1) = (c.admin(0)?, c.admin(1)?);
    let http = agent();

    let started = Instant::now();
    let mut next_kill = started + period;
    let mut kills = 0u64;
    let mut victim_turn = 0usize;
    let mut next_send = 0u64;
    // Messages node 0 has a 201 for, by payload; those still to (re)send.
    let mut acked_sends: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<u64> = Vec::new();
    let (mut refused, mut short_201) = (0u64, 0u64);
    let mut echoes: BTreeSet<String> = BTreeSet::new();
    let mut acked_ids: [BTreeSet<String>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut duplicates = 0u64;
    let mut echo_pending: BTreeMap<String, String> = BTreeMap::new();
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut last_rss = started;
    let mut failures = Vec::new();
    let mut tick = started;
    loop {
        let now = Instant::now();
        let sending = now < started + duration;
        if !sending && (echoes.len() >= acked_sends.len() || now > started + duration + grace) {
            break;
        }
        if sending && now >= next_kill {
            let victim = 2 + victim_turn % 2;
            victim_turn += 1;
            c.kill(victim)?;
            kills += 1;
            std::thread::sleep(down);
            if let Err(e) = c.restart(victim, Duration::from_secs(30)) {
                failures.push(format!("restart of node {victim}: {e}"));
            }
            next_kill += period;
        }
        if sending {
            pending.push(next_send);
            next_send += 1;
        }
        // Node 0 sends (new and retried).
        let mut still = Vec::new();
        for n in pending.drain(..) {
            let body = format!("msg-{n}");
            match send(&http, a0, &ids[1], &format!("k{n}"), &body) {
                Some(copies) => {
                    if copies < 2 {
                        short_201 += 1;
                    }
                    acked_sends.insert(body);
                }
                None => {
                    refused += 1;
                    still.push(n);
                }
            }
        }
        pending = still;
        // Node 1 echoes.
        for (id, payload) in recv(&http, a1) {
            if acked_ids[1].contains(&id) {
                duplicates += 1;
            }
            echo_pending.insert(id, payload);
        }
        let mut done = Vec::new();
        for (id, payload) in &echo_pending {
            if send(&http, a1, &ids[0], &format!("e-{payload}"), payload).is_some() {
                done.push(id.clone());
            }
        }
        for id in done {
            if ack(&http, a1, &id) {
                echo_pending.remove(&id);
                acked_ids[1].insert(id);
            }
        }
        // Node 0 takes the echoes.
        for (id, payload) in recv(&http, a0) {
            if acked_ids[0].contains(&id) {
                duplicates += 1;
            }
            if ack(&http, a0, &id) {
                acked_ids[0].insert(id);
                echoes.insert(payload);
            }
        }
        if now.duration_since(last_rss) >= Duration::from_secs(5)
            && now.duration_since(started) >= Duration::from_secs(10)
        {
            let minutes = secs(now.duration_since(started)) / 60.0;
            let mut total = 0.0;
            for i in [0, 1] {
                total += procfs::mib(procfs::rss_bytes(c.pid(i))?);
            }
            rss.push((minutes, total));
            last_rss = now;
        }
        // A slow round (a kill and its restart) is not made up for with a burst.
        tick = (tick + Duration::from_millis(100)).max(Instant::now());
        sleep_until(tick);
    }
    let crashed = c.crashed();
    let lost: Vec<&String> = acked_sends.difference(&echoes).collect();

    let mut r = Report::new("mail-soak", o.seed.0, o.long);
    r.zero("mail_lost", lost.len() as u64);
    r.zero("mail_duplicates_after_ack", duplicates);
    r.zero("mail_201_short_of_w", short_201);
    r.goal("rss_slope", slope(&rss), "MiB/min", Goal::AtMost(2.0));
    r.zero("restarts_failed", failures.len() as u64);
    r.zero("crashes", crashed.len() as u64);
    r.info("kills", kills as f64, "");
    r.info("sends_acked", acked_sends.len() as f64, "");
    r.info("sends_refused_then_retried", refused as f64, "");
    r.info("echoes", echoes.len() as f64, "");
    r.info("rss_first", rss.first().map_or(f64::NAN, |p| p.1), "MiB");
    r.info("rss_last", rss.last().map_or(f64::NAN, |p| p.1), "MiB");
    for l in lost.iter().take(10) {
        r.note(format!("lost: {l}"));
    }
    for f in failures {
        r.note(f);
    }
    for (i, status) in crashed {
        r.note(format!("node {i} crashed: {status}"));
    }
    Ok(r)
}
