//! Threads on one store: senders to different mailboxes all get through with every count
//! right (contention itself is measured by the bench, not timed here), and racing retries
//! of the same messages store each exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use mailbox::{Config, FetchLimits, MailboxStore};
use wire::NodeId;
use wire::mailbox::Envelope;

const T0: Duration = Duration::from_secs(1_800_000_000);

fn msg(mailbox: NodeId, sender: NodeId, key: String) -> Envelope {
    Envelope {
        mailbox,
        sender,
        idempotency_key: key.into_bytes(),
        ttl_ms: 0,
        e2e: false,
        payload: vec![7; 256],
    }
}

fn mailbox_id(i: u8) -> NodeId {
    let mut id = [0u8; 32];
    id[0] = i;
    id[31] = 0xee;
    NodeId(id)
}

#[test]
fn threads_on_different_mailboxes_all_get_through() {
    const THREADS: u8 = 8;
    const PER: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = MailboxStore::open(Config::durable(dir.path()), T0).unwrap();
    let store = Arc::new(store);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mb = mailbox_id(t);
                for i in 0..PER {
                    let sent = store
                        .send(T0, msg(mb, NodeId([t; 32]), format!("{i}")))
                        .unwrap();
                    assert!(!sent.duplicate);
                }
                let mut got = 0;
                loop {
                    let b = store
                        .fetch(
                            T0,
                            &mb,
                            FetchLimits {
                                after: 0,
                                max_count: 64,
                                max_bytes: 1 << 20,
                                visibility_ms: 60_000,
                            },
                        )
                        .unwrap();
                    if b.messages.is_empty() {
                        break;
                    }
                    let ids: Vec<_> = b.messages.iter().map(|d| d.message.id()).collect();
                    got += store.ack(T0, &mb, &ids).unwrap() as usize;
                }
                got
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), PER);
    }
    let st = store.stats(T0);
    assert_eq!((st.messages, st.inflight, st.bytes), (0, 0, 0));
    assert_eq!(st.tombstones, THREADS as usize * PER);
}

#[test]
fn racing_retries_store_each_message_once() {
    const THREADS: usize = 4;
    const KEYS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = MailboxStore::open(Config::durable(dir.path()), T0).unwrap();
    let store = Arc::new(store);
    let mb = mailbox_id(1);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (0..KEYS)
                    .filter(|i| {
                        !store
                            .send(T0, msg(mb, NodeId([5; 32]), format!("{i}")))
                            .unwrap()
                            .duplicate
                    })
                    .count()
            })
        })
        .collect();
    let fresh: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        fresh, KEYS,
        "each key stored by exactly one of the racing sends"
    );
    assert_eq!(store.queue_depth(&mb), KEYS);
    drop(store);
    let (store, report) = MailboxStore::open(Config::durable(dir.path()), T0).unwrap();
    assert_eq!(report.messages, KEYS);
    assert_eq!(store.queue_depth(&mb), KEYS);
}
