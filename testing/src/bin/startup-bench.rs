//! `startup-bench`: how long a node with a large store takes to answer, from process start
//! to its first `/healthz` 200 and `/readyz` 200 (a lone node: ready once it listens and its
//! store is open), at 10^4, 10^5 and 10^6 stored objects.
//!
//! The objects (1 KiB each, distinct, valid: the file under its BLAKE3 name, in the store's
//! layout; objects of one 16 KiB group have no outboard file) are written straight into the
//! data directory by this tool, not through a gateway, so a million take seconds. Each size
//! is started twice: first with no index snapshot (the node walks every file before it
//! serves), then again after a clean stop wrote the snapshot (the node loads it and walks
//! the files in the background while it serves).
//!
//! Run it optimised: `cargo run --release -p testing --bin startup-bench -- [COUNTS...]`
//! (default `10000 100000 1000000`; needs ~1.3 GB and 1M inodes at the largest).

use std::path::Path;
use std::time::{Duration, Instant};

use testing::benchkit::loadavg;
use testing::node::{NodeProcess, NodeSpec};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes `count` distinct 1 KiB objects into `data_dir/objects`, on all cores.
fn generate(data_dir: &Path, count: u64) -> Result<(), BoxError> {
    let objects = data_dir.join("objects");
    for shard in 0..=255u8 {
        std::fs::create_dir_all(objects.join(hex::encode([shard])))?;
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let mut handles = Vec::new();
    for t in 0..threads {
        let objects = objects.clone();
        handles.push(std::thread::spawn(move || -> std::io::Result<()> {
            let mut body = vec![0u8; 1024];
            for i in (t..count).step_by(threads as usize) {
                body[..8].copy_from_slice(&i.to_le_bytes());
                let h = blake3::hash(&body);
                let hex = h.to_hex();
                std::fs::write(objects.join(&hex[..2]).join(hex.as_str()), &body)?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join().map_err(|_| "a writer thread panicked")??;
    }
    Ok(())
}

/// Restarts `node` (same directory) and measures (healthz, readyz) from the spawn.
fn restart_and_time(node: &mut NodeProcess) -> Result<(Duration, Duration), BoxError> {
    let started = Instant::now();
    node.restart()?;
    node.wait_healthy(Duration::from_secs(600))?;
    let health = started.elapsed();
    node.wait_ready(Duration::from_secs(600))?;
    Ok((health, started.elapsed()))
}

/// Stops `node` cleanly (SIGTERM, which also writes the index snapshot).
fn stop(node: &mut NodeProcess) -> Result<(), BoxError> {
    node.sigterm()?;
    node.process().wait_exit(Duration::from_secs(120))?;
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let counts: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let counts = if counts.is_empty() {
        vec![10_000, 100_000, 1_000_000]
    } else {
        counts
    };
    println!("startup-bench: load avg {} at start", loadavg());
    println!(
        "{:>9}  {:>12}  {:>12}  {:>14}  {:>14}",
        "objects", "walk healthz", "walk readyz", "snapshot hlthz", "snapshot ready"
    );
    for count in counts {
        let spec = NodeSpec {
            args: vec!["--open-writes".into()],
            ..NodeSpec::new(format!("startup-{count}"))
        };
        let mut node = NodeProcess::start(spec)?;
        node.wait_healthy(Duration::from_secs(30))?;
        stop(&mut node)?;
        let t = Instant::now();
        generate(&node.data_dir(), count)?;
        // The empty store's snapshot from the first stop would make the next start a
        // snapshot start; this one must walk.
        let _ = std::fs::remove_file(node.data_dir().join("objects").join("index.snap"));
        eprintln!("generated {count} objects in {:?}", t.elapsed());
        // First start: no snapshot, every file walked before the node serves.
        let (h1, r1) = restart_and_time(&mut node)?;
        let stored = node.status()?["objects"].as_u64().unwrap_or(0);
        stop(&mut node)?;
        // Second start: the snapshot the clean stop wrote; the walk runs behind.
        let (h2, r2) = restart_and_time(&mut node)?;
        let stored2 = node.status()?["objects"].as_u64().unwrap_or(0);
        stop(&mut node)?;
        println!(
            "{count:>9}  {:>10.0}ms  {:>10.0}ms  {:>12.0}ms  {:>12.0}ms   (indexed {stored}, then {stored2})",
            h1.as_secs_f64() * 1e3,
            r1.as_secs_f64() * 1e3,
            h2.as_secs_f64() * 1e3,
            r2.as_secs_f64() * 1e3,
        );
    }
    println!("startup-bench: load avg {} at end", loadavg());
    Ok(())
}
