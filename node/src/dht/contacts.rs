//! The routing table's contacts kept across restarts, as BitTorrent clients keep `dht.dat`.
//!
//! A node that restarts with an empty table and no bootstrap peer (the seed every other node
//! joined through) had nobody to return to, and the others found it again only at their
//! bootstrap check, ten minutes later (RELIABILITY.md, D9). So the node writes the contacts
//! of its routing table (node id and address, at most [`CONTACTS_MAX`], chosen by the table:
//! `overlay::RoutingTable::contacts_to_save`) to `data_dir/`[`CONTACTS_FILE`], and at start
//! dials them as extra bootstrap peers, each with the id it must prove (as
//! `--bootstrap ID@HOST:PORT`): a peer now holding another key is refused by the TLS
//! handshake.
//!
//! When it is written: as soon as the table first holds a peer (a node killed a second
//! after it joined still finds its way back), then every [`SAVE_EVERY`] if the set of
//! contacts changed, and on a graceful shutdown. An empty table never overwrites the file: a
//! node cut off for a while keeps the contacts it had. `--amnesia` neither reads nor writes
//! it. Each write is atomic: a temporary file, fsync, rename, directory fsync.
//!
//! The file is untrusted input (a disk can tear a write, an operator can copy the wrong
//! file): it is read only up to [`FILE_MAX`] bytes and parsed strictly; anything wrong is a
//! typed [`ContactsError`], which the node logs, counts in
//! `contacts_file_rejected_total{reason}` and otherwise ignores: it starts as if there were
//! no file, and its next save replaces it. Our own id and repeated ids are skipped.
//!
//! Format, version 1, all integers little-endian:
//!
//! ```text
//! "MNCT" | version: u32 = 1 | count: u32 (<= 200) | count × entry | BLAKE3 of all before (32)
//! entry (51 bytes): node id (32) | family: u8 (4 or 6) | IP (16; IPv4 in the first 4, rest 0) | port: u16 (not 0)
//! ```

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use wire::NodeId;

use super::{DhtHandle, NetPeer};
use crate::transport::Transport;

/// The file in the data directory holding the saved contacts.
pub const CONTACTS_FILE: &str = "contacts.dat";
/// Contacts saved at most: enough to find a way back into any mesh, small enough to dial.
pub const CONTACTS_MAX: usize = 200;
/// Largest file read at all; a longer one is refused before it is read.
pub const FILE_MAX: u64 = 64 << 10;
/// How often a changed set of contacts is written after the first save.
pub const SAVE_EVERY: Duration = Duration::from_secs(30);
/// How often the table is looked at until it first holds a peer (then saved at once).
pub const FIRST_SAVE_POLL: Duration = Duration::from_secs(1);
/// Saved contacts dialed at once at start.
pub const DIAL_PARALLEL: usize = 8;
/// Saved contacts reached after which no more are dialed: the join's self-lookup finds the
/// rest of the mesh through them.
pub const DIAL_ENOUGH: usize = 16;
/// Longest wait for saved contacts at a join attempt.
pub const DIAL_WAIT: Duration = Duration::from_secs(3);

const MAGIC: &[u8; 4] = b"MNCT";
/// The format version this node writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = 12;
const ENTRY: usize = 32 + 1 + 16 + 2;
const SUM: usize = 32;

/// Why a contacts file was refused. Every one leaves the node starting without it.
#[derive(Debug, thiserror::Error)]
pub enum ContactsError {
    /// The file could not be read.
    #[error("cannot read the contacts file: {0}")]
    Io(#[from] io::Error),
    /// Longer than [`FILE_MAX`]: not read at all.
    #[error("the contacts file has {len} bytes, over the cap of {FILE_MAX}")]
    TooLarge {
        /// Its length.
        len: u64,
    },
    /// Shorter than its header and the entries it announces.
    #[error("the contacts file is truncated: {len} bytes, expected {expected}")]
    Truncated {
        /// Its length.
        len: usize,
        /// The length its header implies (or the header's, if that is cut).
        expected: usize,
    },
    /// Not a contacts file.
    #[error("not a contacts file (bad magic)")]
    BadMagic,
    /// A contacts file of a version this node does not read.
    #[error("contacts file version {0}; this node reads version {VERSION}")]
    BadVersion(u32),
    /// More contacts than [`CONTACTS_MAX`].
    #[error("the contacts file announces {0} contacts, over the cap of {CONTACTS_MAX}")]
    TooMany(u32),
    /// Bytes after the last entry and the checksum.
    #[error("the contacts file has {0} bytes past its end")]
    Trailing(usize),
    /// The checksum does not match: a torn or altered file.
    #[error("the contacts file's checksum does not match")]
    Checksum,
    /// An entry that is no contact (a bad address family, padding, or port 0).
    #[error("contact {index} in the contacts file is malformed: {why}")]
    BadEntry {
        /// Its position.
        index: usize,
        /// What is wrong.
        why: &'static str,
    },
}

impl ContactsError {
    /// Every `reason` label of `contacts_file_rejected_total`.
    pub const REASONS: [&'static str; 9] = [
        "io",
        "too_large",
        "truncated",
        "bad_magic",
        "bad_version",
        "too_many",
        "trailing",
        "checksum",
        "bad_entry",
    ];

    /// This error's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            ContactsError::Io(_) => "io",
            ContactsError::TooLarge { .. } => "too_large",
            ContactsError::Truncated { .. } => "truncated",
            ContactsError::BadMagic => "bad_magic",
            ContactsError::BadVersion(_) => "bad_version",
            ContactsError::TooMany(_) => "too_many",
            ContactsError::Trailing(_) => "trailing",
            ContactsError::Checksum => "checksum",
            ContactsError::BadEntry { .. } => "bad_entry",
        }
    }
}

/// The file's bytes for `peers` (the first [`CONTACTS_MAX`]).
pub fn encode(peers: &[NetPeer]) -> Vec<u8> {
    let peers = &peers[..peers.len().min(CONTACTS_MAX)];
    let mut out = Vec::with_capacity(HEADER + peers.len() * ENTRY + SUM);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    // At most CONTACTS_MAX, far below u32::MAX.
    out.extend_from_slice(&(peers.len() as u32).to_le_bytes());
    for p in peers {
        out.extend_from_slice(p.id.as_bytes());
        let mut ip = [0u8; 16];
        match p.addr.ip() {
            IpAddr::V4(v4) => {
                out.push(4);
                ip[..4].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                ip.copy_from_slice(&v6.octets());
            }
        }
        out.extend_from_slice(&ip);
        out.extend_from_slice(&p.addr.port().to_le_bytes());
    }
    let sum = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&sum);
    out
}

/// The contacts in a file's bytes, checked strictly (see the module's format).
pub fn decode(bytes: &[u8]) -> Result<Vec<NetPeer>, ContactsError> {
    if bytes.len() as u64 > FILE_MAX {
        return Err(ContactsError::TooLarge {
            len: bytes.len() as u64,
        });
    }
    let truncated = |expected| ContactsError::Truncated {
        len: bytes.len(),
        expected,
    };
    let (Some(magic), Some(version), Some(count)) =
        (bytes.get(..4), bytes.get(4..8), bytes.get(8..12))
    else {
        // A file cut inside its magic is still refused for the right reason.
        if bytes.len() >= 4 && bytes.get(..4) != Some(MAGIC.as_slice()) {
            return Err(ContactsError::BadMagic);
        }
        return Err(truncated(HEADER));
    };
    if magic != MAGIC {
        return Err(ContactsError::BadMagic);
    }
    let version = u32::from_le_bytes(le4(version));
    if version != VERSION {
        return Err(ContactsError::BadVersion(version));
    }
    let count = u32::from_le_bytes(le4(count));
    if count as usize > CONTACTS_MAX {
        return Err(ContactsError::TooMany(count));
    }
    let expected = HEADER + count as usize * ENTRY + SUM;
    if bytes.len() < expected {
        return Err(truncated(expected));
    }
    if bytes.len() > expected {
        return Err(ContactsError::Trailing(bytes.len() - expected));
    }
    let (body, sum) = bytes.split_at(expected - SUM);
    if blake3::hash(body).as_bytes() != sum {
        return Err(ContactsError::Checksum);
    }
    body[HEADER..]
        .chunks_exact(ENTRY)
        .enumerate()
        .map(|(index, e)| decode_entry(e).map_err(|why| ContactsError::BadEntry { index, why }))
        .collect()
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    a
}

fn decode_entry(e: &[u8]) -> Result<NetPeer, &'static str> {
    let mut id = [0u8; 32];
    id.copy_from_slice(&e[..32]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&e[33..49]);
    let ip = match e[32] {
        4 if ip[4..].iter().all(|&b| b == 0) => {
            IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
        }
        4 => return Err("an IPv4 address with bytes past its fourth"),
        6 => IpAddr::V6(Ipv6Addr::from(ip)),
        _ => return Err("an unknown address family"),
    };
    let port = u16::from_le_bytes([e[49], e[50]]);
    if port == 0 {
        return Err("port 0");
    }
    if ip.is_unspecified() {
        return Err("an unspecified address");
    }
    Ok(NetPeer::new(NodeId(id), SocketAddr::new(ip, port)))
}

/// The contacts saved at `path`: `Ok(None)` when there is no file (a first start).
/// Blocking; reads at most [`FILE_MAX`] bytes.
pub fn load(path: &Path) -> Result<Option<Vec<NetPeer>>, ContactsError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = f.metadata()?.len();
    if len > FILE_MAX {
        return Err(ContactsError::TooLarge { len });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // One byte more than the cap: a file that grew since its length was read is refused too.
    f.take(FILE_MAX + 1).read_to_end(&mut bytes)?;
    decode(&bytes).map(Some)
}

/// Writes `peers` to `path` atomically (temporary file, fsync, rename, directory fsync).
/// Blocking.
pub fn save(path: &Path, peers: &[NetPeer]) -> io::Result<()> {
    let bytes = encode(peers);
    let tmp = path.with_extension("dat.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// The saved contacts worth dialing: not us, each id once (the first address kept).
pub fn usable(saved: Vec<NetPeer>, local: &NodeId) -> Vec<NetPeer> {
    let mut seen = BTreeSet::new();
    saved
        .into_iter()
        .filter(|p| p.id != *local && seen.insert(p.id))
        .collect()
}

/// The contacts file of one node and what was last written to it, so an unchanged table
/// is not written again.
#[derive(Debug)]
pub struct ContactBook {
    path: PathBuf,
    last: Mutex<BTreeSet<(NodeId, SocketAddr)>>,
}

impl ContactBook {
    /// The book at `path`; `saved` is what the file held at start (not written again
    /// while the table holds the same).
    pub fn new(path: PathBuf, saved: &[NetPeer]) -> ContactBook {
        ContactBook {
            path,
            last: Mutex::new(saved.iter().map(|p| (p.id, p.addr)).collect()),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `chosen` (the table's `contacts_to_save`) if it differs from the last
    /// contacts written; an empty table writes nothing. Returns whether it wrote. Blocking.
    pub fn save_if_changed(&self, chosen: &[NetPeer]) -> io::Result<bool> {
        if chosen.is_empty() {
            return Ok(false);
        }
        let set: BTreeSet<(NodeId, SocketAddr)> = chosen.iter().map(|p| (p.id, p.addr)).collect();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if *last == set {
            return Ok(false);
        }
        save(&self.path, chosen)?;
        *last = set;
        Ok(true)
    }
}

/// Reads the table from the driver and saves it if it changed (on the blocking pool).
/// Returns whether the table held a peer.
pub async fn save_now(book: &Arc<ContactBook>, dht: &DhtHandle) -> bool {
    let Ok(chosen) = dht.contacts_to_save(CONTACTS_MAX).await else {
        return false;
    };
    if chosen.is_empty() {
        return false;
    }
    let b = book.clone();
    match tokio::task::spawn_blocking(move || b.save_if_changed(&chosen)).await {
        Ok(Ok(wrote)) => {
            if wrote {
                tracing::debug!(file = %book.path().display(), "routing table contacts saved");
            }
        }
        Ok(Err(e)) => {
            metrics::counter!("contacts_file_save_failures_total").increment(1);
            tracing::warn!(file = %book.path().display(), error = %e, "saving the routing table's contacts failed");
        }
        Err(e) => tracing::warn!(error = %e, "saving the routing table's contacts failed"),
    }
    true
}

/// Saves the table's contacts as soon as it first holds a peer, then every [`SAVE_EVERY`]
/// when they changed, until `shutdown` flips.
pub fn keep_saved(
    book: Arc<ContactBook>,
    dht: DhtHandle,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let wait = if first { FIRST_SAVE_POLL } else { SAVE_EVERY };
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if save_now(&book, &dht).await {
                first = false;
            }
        }
    })
}

/// Reads the saved contacts at start, for the node whose id is `local`: the usable ones, or
/// none (with a warning and a count) when the file is refused.
pub fn load_for_start(path: &Path, local: &NodeId) -> Vec<NetPeer> {
    match load(path) {
        Ok(None) => Vec::new(),
        Ok(Some(saved)) => {
            let usable = usable(saved, local);
            tracing::info!(file = %path.display(), contacts = usable.len(), "saved contacts loaded");
            usable
        }
        Err(e) => {
            metrics::counter!("contacts_file_rejected_total", "reason" => e.reason()).increment(1);
            tracing::warn!(
                file = %path.display(),
                error = %e,
                "ignoring the saved contacts file; starting without it (the next save replaces it)"
            );
            Vec::new()
        }
    }
}

/// Dials saved contacts, [`DIAL_PARALLEL`] at a time, each with the id it must prove;
/// returns those that answered once [`DIAL_ENOUGH`] did, all were tried, or [`DIAL_WAIT`]
/// passed. Dials still running then finish on their own (each within the transport's
/// handshake timeout; a late answer still enters the table, as every dialed connection
/// does), and no new one starts: a list of dead contacts delays a join by [`DIAL_WAIT`] at
/// most.
pub async fn dial(transport: &Transport, saved: &[NetPeer]) -> Vec<NetPeer> {
    if saved.is_empty() {
        return Vec::new();
    }
    let permits = Arc::new(Semaphore::new(DIAL_PARALLEL));
    let stop = Arc::new(AtomicBool::new(false));
    let mut dials = JoinSet::new();
    for p in saved {
        let (p, transport) = (p.clone(), transport.clone());
        let (permits, stop) = (permits.clone(), stop.clone());
        dials.spawn(async move {
            let _permit = permits.acquire_owned().await.ok()?;
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            match transport.connect(p.addr, Some(p.id)).await {
                Ok(_) => Some(p),
                // A contact gone, or holding another key, since it was saved: expected.
                Err(e) => {
                    tracing::debug!(peer = %p.id, addr = %p.addr, error = %e, "saved contact unreachable");
                    None
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + DIAL_WAIT;
    let mut reached = Vec::new();
    while reached.len() < DIAL_ENOUGH {
        match tokio::time::timeout_at(deadline, dials.join_next()).await {
            Ok(Some(Ok(Some(p)))) => reached.push(p),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    dials.detach_all();
    tracing::info!(
        saved = saved.len(),
        reached = reached.len(),
        "dialed saved contacts"
    );
    reached
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn peer(i: u8, addr: &str) -> NetPeer {
        let mut id = [0u8; 32];
        id[0] = i;
        id[31] = 0xa5;
        NetPeer::new(NodeId(id), addr.parse().unwrap())
    }

    fn sample() -> Vec<NetPeer> {
        vec![
            peer(1, "127.0.0.1:4433"),
            peer(2, "[2001:db8::7]:9000"),
            peer(3, "10.1.2.3:65535"),
        ]
    }

    /// `bytes` with its checksum computed again, so a test reaches the checks after it.
    fn resum(mut bytes: Vec<u8>) -> Vec<u8> {
        let n = bytes.len() - SUM;
        let sum = *blake3::hash(&bytes[..n]).as_bytes();
        bytes[n..].copy_from_slice(&sum);
        bytes
    }

    #[test]
    fn round_trip() {
        for peers in [Vec::new(), sample()] {
            let bytes = encode(&peers);
            assert_eq!(bytes.len(), HEADER + peers.len() * ENTRY + SUM);
            assert_eq!(decode(&bytes).unwrap(), peers);
        }
    }

    #[test]
    fn encode_keeps_at_most_the_cap() {
        let many: Vec<NetPeer> = (0..=255u8).map(|i| peer(i, "127.0.0.1:1")).collect();
        let back = decode(&encode(&many)).unwrap();
        assert_eq!(back.len(), CONTACTS_MAX);
        assert_eq!(back[..], many[..CONTACTS_MAX]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&sample());
        for len in 0..bytes.len() {
            let e = decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(e, ContactsError::Truncated { .. }),
                "cut at {len}: {e:?}"
            );
        }
    }

    #[test]
    fn wrong_magic_version_count_and_trailing_bytes_are_refused() {
        let good = encode(&sample());
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(ContactsError::BadMagic)));
        assert!(matches!(
            decode(b"{\"json\": 1}"),
            Err(ContactsError::BadMagic)
        ));
        let mut b = good.clone();
        b[4..8].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(decode(&b), Err(ContactsError::BadVersion(2))));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&201u32.to_le_bytes());
        assert!(matches!(decode(&b), Err(ContactsError::TooMany(201))));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Err(ContactsError::TooMany(u32::MAX))));
        let mut b = good.clone();
        b.push(0);
        assert!(matches!(decode(&b), Err(ContactsError::Trailing(1))));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let good = encode(&sample());
        for i in 0..good.len() * 8 {
            let mut b = good.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(&b).is_err(), "bit {i} flipped was accepted");
        }
    }

    #[test]
    fn malformed_entries_are_refused_even_with_a_good_checksum() {
        let good = encode(&sample());
        let family = HEADER + 32;
        let mut b = good.clone();
        b[family] = 5;
        let e = decode(&resum(b)).unwrap_err();
        assert!(
            matches!(e, ContactsError::BadEntry { index: 0, .. }),
            "{e:?}"
        );
        // IPv4 with a byte past its fourth.
        let mut b = good.clone();
        b[family + 1 + 10] = 1;
        assert!(matches!(
            decode(&resum(b)),
            Err(ContactsError::BadEntry { index: 0, .. })
        ));
        // Port 0 in the second entry.
        let mut b = good.clone();
        let port = HEADER + ENTRY + 49;
        b[port..port + 2].copy_from_slice(&[0, 0]);
        assert!(matches!(
            decode(&resum(b)),
            Err(ContactsError::BadEntry { index: 1, .. })
        ));
        let unspecified = encode(&[peer(9, "0.0.0.0:4433")]);
        assert!(matches!(
            decode(&unspecified),
            Err(ContactsError::BadEntry { index: 0, .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("CONTACTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(7, |d| d.as_nanos() as u64)
            });
        println!("random_bytes_never_panic: seed {seed} (replay with CONTACTS_SEED={seed})");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let good = encode(&sample());
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..rng.gen_range(1..8) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.r#gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            let _ = decode(&b);
            let len = rng.gen_range(0..4096);
            let noise: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            assert!(decode(&noise).is_err());
        }
    }

    #[test]
    fn files_are_saved_atomically_and_refused_when_oversized() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTACTS_FILE);
        assert!(load(&path).unwrap().is_none(), "no file is a first start");
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap().unwrap(), sample());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [CONTACTS_FILE], "no temporary left behind");
        std::fs::write(&path, vec![0u8; FILE_MAX as usize + 1]).unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, ContactsError::TooLarge { .. }), "{e:?}");
        assert_eq!(e.reason(), "too_large");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load(&path), Err(ContactsError::BadMagic)));
        let local = NodeId([0xee; 32]);
        assert!(load_for_start(&path, &local).is_empty());
    }

    #[test]
    fn usable_skips_ourselves_and_repeats() {
        let me = peer(1, "127.0.0.1:1");
        let saved = vec![
            me.clone(),
            peer(2, "127.0.0.1:2"),
            peer(2, "127.0.0.1:3"),
            peer(3, "127.0.0.1:4"),
        ];
        let got = usable(saved, &me.id);
        assert_eq!(got, vec![peer(2, "127.0.0.1:2"), peer(3, "127.0.0.1:4")]);
    }

    #[test]
    fn a_book_writes_only_changes_and_never_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONTACTS_FILE);
        let book = ContactBook::new(path.clone(), &[]);
        assert!(!book.save_if_changed(&[]).unwrap());
        assert!(!path.exists());
        assert!(book.save_if_changed(&sample()).unwrap());
        let mut reordered = sample();
        reordered.reverse();
        assert!(!book.save_if_changed(&reordered).unwrap(), "same set");
        assert!(!book.save_if_changed(&[]).unwrap());
        assert_eq!(
            load(&path).unwrap().unwrap().len(),
            3,
            "kept over an empty table"
        );
        assert!(book.save_if_changed(&sample()[..2]).unwrap());
        assert_eq!(load(&path).unwrap().unwrap().len(), 2);
        // A book opened with what the file held does not write it again.
        let again = ContactBook::new(path, &sample()[..2]);
        assert!(!again.save_if_changed(&sample()[..2]).unwrap());
    }
}
