//! Crash and reopen: what was acknowledged survives, a torn last record (a crash in the
//! middle of a write) is cut off and counted wherever the cut falls, corruption before the
//! last record (or a length no record can have) is refused, or with salvage on cut before,
//! and compaction keeps exactly the live state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use mailbox::{Config, FetchLimits, MailboxStore, StoreError};
use wire::NodeId;
use wire::mailbox::Envelope;

const OWNER: NodeId = NodeId([1; 32]);
const ALICE: NodeId = NodeId([2; 32]);
const T0: Duration = Duration::from_secs(1_800_000_000);

fn at(ms: u64) -> Duration {
    T0 + Duration::from_millis(ms)
}

fn msg(key: &str, len: usize) -> Envelope {
    Envelope {
        mailbox: OWNER,
        sender: ALICE,
        idempotency_key: key.as_bytes().to_vec(),
        ttl_ms: 0,
        e2e: false,
        payload: vec![key.len() as u8; len],
    }
}

fn one_shard(dir: &Path) -> Config {
    Config {
        shards: 1,
        ..Config::durable(dir)
    }
}

fn peek_keys(s: &MailboxStore, now: Duration) -> Vec<String> {
    s.fetch(
        now,
        &OWNER,
        FetchLimits {
            after: 0,
            max_count: 1000,
            max_bytes: 1 << 20,
            visibility_ms: 0,
        },
    )
    .unwrap()
    .messages
    .iter()
    .map(|d| String::from_utf8(d.message.idempotency_key.clone()).unwrap())
    .collect()
}

fn journal(dir: &Path) -> std::path::PathBuf {
    dir.join("shard-000.journal")
}

#[test]
fn reopening_keeps_messages_order_acks_and_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<_> = {
        let (s, _) = MailboxStore::open(Config::durable(dir.path()), T0).unwrap();
        ["a", "b", "c"]
            .iter()
            .map(|k| s.send(at(0), msg(k, 100)).unwrap().id)
            .collect()
    };
    {
        let (s, report) = MailboxStore::open(Config::durable(dir.path()), at(1)).unwrap();
        assert_eq!(
            (report.records, report.messages, report.torn_records),
            (3, 3, 0)
        );
        assert_eq!(s.ack(at(2), &OWNER, &ids[..1]).unwrap(), 1);
    }
    let (s, report) = MailboxStore::open(Config::durable(dir.path()), at(3)).unwrap();
    assert_eq!(report.messages, 2);
    assert_eq!(peek_keys(&s, at(3)), ["b", "c"]);
    assert!(
        s.send(at(4), msg("a", 100)).unwrap().duplicate,
        "tombstone kept"
    );
    assert_eq!(s.stats(at(4)).bytes, 200);
    // New sequence numbers follow the replayed ones: a new message comes last.
    s.send(at(5), msg("d", 1)).unwrap();
    assert_eq!(peek_keys(&s, at(6)), ["b", "c", "d"]);
}

#[test]
fn a_cut_anywhere_in_the_journal_loses_only_the_record_it_cuts() {
    let src = tempfile::tempdir().unwrap();
    let mut ends = vec![0u64];
    {
        let (s, _) = MailboxStore::open(one_shard(src.path()), T0).unwrap();
        for (i, k) in ["a", "bb", "ccc", "dddd"].iter().enumerate() {
            s.send(at(i as u64), msg(k, 40 + i)).unwrap();
            ends.push(std::fs::metadata(journal(src.path())).unwrap().len());
        }
        let id = msg("a", 0).id();
        s.ack(at(9), &OWNER, &[id]).unwrap();
        ends.push(std::fs::metadata(journal(src.path())).unwrap().len());
    }
    let full = std::fs::read(journal(src.path())).unwrap();
    assert_eq!(full.len() as u64, *ends.last().unwrap());
    let expect = |complete: usize| -> Vec<&str> {
        let all = ["a", "bb", "ccc", "dddd"];
        if complete == 5 {
            all[1..].to_vec()
        } else {
            all[..complete].to_vec()
        }
    };
    for cut in 0..=full.len() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shards"), "1\n").unwrap();
        std::fs::write(journal(dir.path()), &full[..cut]).unwrap();
        let (s, report) = MailboxStore::open(one_shard(dir.path()), at(10))
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = ends.iter().filter(|&&e| e <= cut as u64).count() - 1;
        let torn = u64::from(!ends.contains(&(cut as u64)));
        assert_eq!(report.torn_records, torn, "cut at {cut}");
        assert_eq!(peek_keys(&s, at(10)), expect(complete), "cut at {cut}");
        // The torn tail is gone from the file, and the store writes on after it.
        assert_eq!(
            std::fs::metadata(journal(dir.path())).unwrap().len(),
            ends[complete],
            "cut at {cut}"
        );
        s.send(at(11), msg("new", 5)).unwrap();
        drop(s);
        let (s, report) = MailboxStore::open(one_shard(dir.path()), at(12)).unwrap();
        assert_eq!(report.torn_records, 0);
        assert_eq!(
            peek_keys(&s, at(12)).last().map(String::as_str),
            Some("new")
        );
    }
}

#[test]
fn a_bad_record_before_the_last_is_corruption_and_in_the_last_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
        s.send(at(0), msg("a", 50)).unwrap();
        s.send(at(0), msg("b", 50)).unwrap();
    }
    let good = std::fs::read(journal(dir.path())).unwrap();
    let mut bad = good.clone();
    bad[30] ^= 1; // inside the first record's body
    std::fs::write(journal(dir.path()), &bad).unwrap();
    match MailboxStore::open(one_shard(dir.path()), T0) {
        Err(StoreError::Corrupt { offset: 0, .. }) => {}
        other => panic!("expected corruption at 0, got {other:?}"),
    }
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1; // inside the last record's body
    std::fs::write(journal(dir.path()), &bad).unwrap();
    let (s, report) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
    assert_eq!(report.torn_records, 1);
    assert_eq!(peek_keys(&s, T0), ["a"]);
}

#[test]
fn compaction_keeps_the_live_state_and_shrinks_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        compact_min_bytes: 10_000,
        ..one_shard(dir.path())
    };
    {
        let (s, _) = MailboxStore::open(cfg(), T0).unwrap();
        let mut ids = Vec::new();
        for i in 0..100 {
            ids.push(s.send(at(i), msg(&format!("m{i:03}"), 500)).unwrap().id);
        }
        assert_eq!(s.ack(at(200), &OWNER, &ids[..90]).unwrap(), 90);
        let before = s.stats(at(201)).journal_bytes;
        let m = s.maintain(at(201)).unwrap();
        assert_eq!(m.compacted, 1);
        let after = s.stats(at(201)).journal_bytes;
        assert!(after * 4 < before, "{before} -> {after}");
        assert_eq!(std::fs::metadata(journal(dir.path())).unwrap().len(), after);
        assert_eq!(s.maintain(at(202)).unwrap().compacted, 0, "nothing to gain");
        // Writes after compaction land in the new file.
        s.send(at(203), msg("late", 10)).unwrap();
    }
    let (s, report) = MailboxStore::open(cfg(), at(300)).unwrap();
    assert_eq!(report.torn_records, 0);
    let keys = peek_keys(&s, at(300));
    assert_eq!(keys.len(), 11);
    assert_eq!(keys[0], "m090");
    assert_eq!(keys[10], "late");
    assert!(
        s.send(at(301), msg("m000", 500)).unwrap().duplicate,
        "tombstones survive"
    );
}

#[test]
fn messages_expired_while_down_are_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(Config::durable(dir.path()), T0).unwrap();
        let mut short = msg("short", 10);
        short.ttl_ms = 1000;
        s.send(T0, short).unwrap();
        s.send(T0, msg("long", 10)).unwrap();
    }
    let (s, report) = MailboxStore::open(Config::durable(dir.path()), at(2000)).unwrap();
    assert_eq!(report.messages, 1);
    assert_eq!(peek_keys(&s, at(2000)), ["long"]);
}

#[test]
fn a_directory_keeps_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    drop(MailboxStore::open(Config::durable(dir.path()), T0).unwrap());
    let cfg = Config {
        shards: 4,
        ..Config::durable(dir.path())
    };
    assert!(matches!(
        MailboxStore::open(cfg, T0),
        Err(StoreError::BadConfig(_))
    ));
    let cfg = Config {
        shards: 0,
        ..Config::amnesia()
    };
    assert!(MailboxStore::open(cfg, T0).is_err());
}

#[test]
fn a_key_reused_after_its_tombstone_expired_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(Config::durable(dir.path()), T0).unwrap();
        let mut m = msg("k", 10);
        m.ttl_ms = 1000;
        let id = s.send(at(0), m).unwrap().id;
        assert_eq!(s.ack(at(1), &OWNER, &[id]).unwrap(), 1);
        assert!(s.send(at(2), msg("k", 10)).unwrap().duplicate);
        // The tombstone lives as long as the message would have.
        s.maintain(at(1000)).unwrap();
        assert!(!s.send(at(1001), msg("k", 10)).unwrap().duplicate);
    }
    let (s, report) = MailboxStore::open(Config::durable(dir.path()), at(1002)).unwrap();
    assert_eq!(report.messages, 1);
    assert_eq!(peek_keys(&s, at(1002)), ["k"]);
}

/// A length no record can have is corruption wherever it is; taken for a torn tail, it
/// cut every record after it unseen.
#[test]
fn a_garbled_length_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
        s.send(at(0), msg("a", 50)).unwrap();
        s.send(at(0), msg("b", 50)).unwrap();
    }
    let mut bad = std::fs::read(journal(dir.path())).unwrap();
    bad[3] ^= 0x80; // the first record's length, high byte
    std::fs::write(journal(dir.path()), &bad).unwrap();
    match MailboxStore::open(one_shard(dir.path()), T0) {
        Err(StoreError::Corrupt { offset: 0, .. }) => {}
        other => panic!("expected corruption at 0, got {other:?}"),
    }
}

/// With salvage on, a journal corrupt in its middle keeps the records before the bad one;
/// what is cut is copied aside as found, and the store takes writes after the cut.
#[test]
fn salvage_keeps_the_records_before_a_corrupt_one_and_the_file_aside() {
    let dir = tempfile::tempdir().unwrap();
    let salvaging = || Config {
        salvage: true,
        ..one_shard(dir.path())
    };
    {
        let (s, _) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
        for k in ["a", "b", "c"] {
            s.send(at(0), msg(k, 50)).unwrap();
        }
    }
    let good = std::fs::read(journal(dir.path())).unwrap();
    let record = good.len() / 3;
    let mut bad = good.clone();
    bad[record + 30] ^= 1; // inside b's body
    std::fs::write(journal(dir.path()), &bad).unwrap();

    let (s, report) = MailboxStore::open(salvaging(), at(1)).unwrap();
    assert_eq!(
        peek_keys(&s, at(1)),
        ["a"],
        "what came before the bad record"
    );
    assert_eq!(report.records, 1);
    assert_eq!(report.salvaged.len(), 1);
    let cut = &report.salvaged[0];
    assert_eq!(cut.offset, record as u64);
    assert_eq!(cut.dropped_bytes, (good.len() - record) as u64);
    assert_eq!(
        std::fs::read(cut.copy.as_ref().unwrap()).unwrap(),
        &bad[record..],
        "what was cut, as found, aside"
    );
    s.send(at(2), msg("d", 50)).unwrap();
    drop(s);
    let (s, report) = MailboxStore::open(one_shard(dir.path()), at(3)).unwrap();
    assert!(report.salvaged.is_empty());
    assert_eq!(peek_keys(&s, at(3)), ["a", "d"], "the cut journal is whole");

    // Without salvage, the same corruption still refuses to open.
    drop(s);
    std::fs::write(journal(dir.path()), &bad).unwrap();
    assert!(matches!(
        MailboxStore::open(one_shard(dir.path()), at(4)),
        Err(StoreError::Corrupt { .. })
    ));
}

/// A length that still fits a record but runs past the end, with whole records after it,
/// is a garbled length, not a torn write: cut as one, it dropped them unseen.
#[test]
fn a_length_running_past_the_end_with_records_after_it_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
        for k in ["a", "b", "c"] {
            s.send(at(0), msg(k, 50)).unwrap();
        }
    }
    let mut bad = std::fs::read(journal(dir.path())).unwrap();
    let record = bad.len() / 3;
    let past = (2 * record + 100) as u32; // b's length, now past the end of the file
    bad[record..record + 4].copy_from_slice(&past.to_le_bytes());
    std::fs::write(journal(dir.path()), &bad).unwrap();
    match MailboxStore::open(one_shard(dir.path()), T0) {
        Err(StoreError::Corrupt { offset, .. }) => assert_eq!(offset, record as u64),
        other => panic!("expected corruption at b, got {other:?}"),
    }
}

/// A record whose checksum matches but which this version cannot read (a newer version's
/// journal, after a rollback) is refused even with salvage on: it is not rot, and cutting
/// there would drop every good record after it.
#[test]
fn a_record_this_version_cannot_read_is_never_salvaged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
        s.send(at(0), msg("a", 50)).unwrap();
    }
    let mut bytes = std::fs::read(journal(dir.path())).unwrap();
    let body = [0x7fu8, 1, 2, 3]; // a tag no version of this one knows
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&blake3::hash(&body).as_bytes()[..8]);
    bytes.extend_from_slice(&body);
    let a_again = bytes[..bytes.len() - 16].to_vec();
    bytes.extend_from_slice(&a_again); // and a good record after it
    std::fs::write(journal(dir.path()), &bytes).unwrap();
    let salvaging = Config {
        salvage: true,
        ..one_shard(dir.path())
    };
    assert!(matches!(
        MailboxStore::open(salvaging, T0),
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(
        std::fs::read(journal(dir.path())).unwrap(),
        bytes,
        "nothing cut"
    );
}

/// Salvage on a disk with no room for the copy: the journal is cut anyway (the node must
/// start), no half-made copy is left, and the report says nothing was kept.
#[test]
fn salvage_without_room_for_the_copy_still_cuts_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = MailboxStore::open(one_shard(dir.path()), T0).unwrap();
        for k in ["a", "b"] {
            s.send(at(0), msg(k, 50)).unwrap();
        }
    }
    let mut bad = std::fs::read(journal(dir.path())).unwrap();
    bad[30] ^= 1; // inside a's body
    std::fs::write(journal(dir.path()), &bad).unwrap();
    // The copy's temporary file is /dev/full: every write of it fails with ENOSPC.
    let tmp = dir.path().join(format!(
        "shard-000.journal.corrupt-{}.tmp",
        at(5).as_millis()
    ));
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let salvaging = Config {
        salvage: true,
        ..one_shard(dir.path())
    };
    let (s, report) = MailboxStore::open(salvaging, at(5)).unwrap();
    assert_eq!(report.salvaged.len(), 1);
    assert_eq!(report.salvaged[0].copy, None, "nothing kept");
    assert!(
        std::fs::symlink_metadata(&tmp).is_err(),
        "the half-made copy is gone"
    );
    assert!(peek_keys(&s, at(5)).is_empty());
    assert_eq!(std::fs::metadata(journal(dir.path())).unwrap().len(), 0);
}
