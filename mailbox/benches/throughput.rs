//! Throughput of the mailbox store: 1 KiB messages sent, fetched and acknowledged by
//! several threads at once, durable (fsync group commit) and in amnesia mode, next to
//! references measured in the same run: the same bytes appended to a file with one
//! fdatasync per batch of the same size (what durability costs at the least), and a memcpy
//! of the same bytes.
//!
//! Each thread owns a few mailboxes (so threads meet only when their mailboxes share a
//! shard, as unrelated mailboxes do in a node) and loops: send a batch of messages (one
//! `send` call each, or one `send_batch`), fetch them, ack them. One element = one message
//! sent, fetched and acked. Run:
//!
//! ```text
//! cargo bench -p mailbox --bench throughput
//! ```

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mailbox::{Config, FetchLimits, MailboxStore};
use wire::NodeId;
use wire::mailbox::Envelope;

const T0: Duration = Duration::from_secs(1_800_000_000);
const PAYLOAD: usize = 1024;
const THREADS: usize = 16;
const BATCH: usize = 64;

fn mailbox_of(thread: usize, i: usize) -> NodeId {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&((thread * 7 + i) as u64 * 0x9e37_79b9_7f4a_7c15).to_le_bytes());
    id[31] = thread as u8;
    NodeId(id)
}

/// One thread's loop for `msgs` messages; `batched` sends a batch in one call.
fn worker(store: &MailboxStore, thread: usize, msgs: u64, batched: bool, round: &mut u64) {
    let mb = mailbox_of(thread, (*round % 4) as usize);
    let sender = NodeId([thread as u8; 32]);
    let mut left = msgs as usize;
    while left > 0 {
        let n = left.min(BATCH);
        let envs: Vec<Envelope> = (0..n)
            .map(|i| Envelope {
                mailbox: mb,
                sender,
                idempotency_key: format!("{round}-{i}").into_bytes(),
                ttl_ms: 0,
                e2e: true,
                payload: vec![0x5a; PAYLOAD],
            })
            .collect();
        if batched {
            for r in store.send_batch(T0, envs) {
                assert!(r.is_ok_and(|s| !s.duplicate));
            }
        } else {
            for e in envs {
                assert!(store.send(T0, e).is_ok_and(|s| !s.duplicate));
            }
        }
        let limits = FetchLimits {
            after: 0,
            max_count: n,
            max_bytes: 1 << 20,
            visibility_ms: 30_000,
        };
        let Ok(b) = store.fetch(T0, &mb, limits) else {
            panic!("fetch failed")
        };
        assert_eq!(b.messages.len(), n);
        let ids: Vec<_> = b.messages.iter().map(|d| d.message.id()).collect();
        assert_eq!(store.ack(T0, &mb, &ids).ok(), Some(n as u32));
        *round += 1;
        left -= n;
    }
}

fn run_store(store: &Arc<MailboxStore>, iters: u64, batched: bool, epoch: &mut u64) -> Duration {
    let per = iters.div_ceil(THREADS as u64);
    let base = *epoch;
    *epoch += 1;
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = Arc::clone(store);
            s.spawn(move || {
                let mut round = base << 32;
                worker(&store, t, per, batched, &mut round);
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mailbox_1k");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let open = |cfg: Config| match MailboxStore::open(
        Config {
            tombstones_max: 10_000,
            ..cfg
        },
        T0,
    ) {
        Ok((s, _)) => Arc::new(s),
        Err(e) => panic!("open: {e}"),
    };
    let durable = open(Config::durable(dir.path().join("store")));
    let amnesia = open(Config::amnesia());
    let mut epoch = 0u64;
    for (name, store, batched) in [
        ("durable_send", &durable, false),
        ("durable_send_batch", &durable, true),
        ("amnesia_send", &amnesia, false),
        ("amnesia_send_batch", &amnesia, true),
    ] {
        g.bench_function(format!("{name}/threads_{THREADS}"), |b| {
            b.iter_custom(|iters| run_store(store, iters, batched, &mut epoch))
        });
    }
    // Reference: each thread appends the same bytes to its own file, one fdatasync per
    // batch of BATCH messages (what the journal must pay at the least).
    let refdir = dir.path().join("ref");
    std::fs::create_dir_all(&refdir).unwrap_or_else(|e| panic!("{e}"));
    g.bench_function(
        format!("ref_append_fdatasync_per_{BATCH}/threads_{THREADS}"),
        |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(THREADS as u64) as usize;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..THREADS {
                        let path = refdir.join(format!("{t}"));
                        s.spawn(move || {
                            let mut f = std::fs::OpenOptions::new()
                                .create(true)
                                .append(true)
                                .open(path)
                                .unwrap_or_else(|e| panic!("{e}"));
                            let rec = vec![0x5a; PAYLOAD + 100];
                            let mut left = per;
                            while left > 0 {
                                let n = left.min(BATCH);
                                for _ in 0..n {
                                    f.write_all(&rec).unwrap_or_else(|e| panic!("{e}"));
                                }
                                f.sync_data().unwrap_or_else(|e| panic!("{e}"));
                                left -= n;
                            }
                        });
                    }
                });
                start.elapsed()
            })
        },
    );
    g.bench_function("ref_memcpy_1k", |b| {
        let src = vec![0x5a_u8; PAYLOAD];
        let mut dst = vec![0u8; PAYLOAD];
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
