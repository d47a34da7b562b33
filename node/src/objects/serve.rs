//! Answering inbound object requests (app protocol 2): GET a verified slice, TAIL, HAS, PUT
//! a replica.
//!
//! GET and TAIL answer with the slice of the range (`wire::tree`), so the asker verifies
//! every 16 KiB group (and, for TAIL, the length). PUT is a write, and every write is authorized: by a
//! capability in the request's START frame (checked against the node's capability root,
//! method `PUT`, the announced size), or by the overlay's admission rule for the mesh's own
//! copies (the sender is in our routing table, we are among the RF closest to the id, and
//! the sender is within its byte budget). Anything else is refused with 401/403 before a
//! byte of the body is read, and counted in `oap_rejects_total{reason}`. A second
//! concurrent push of one object is refused with 429; a transfer is bounded by its
//! progress (an idle timeout per frame and a minimum average rate), never by a fixed time;
//! nothing is stored until the bytes hash to the announced id and are fsynced, and only
//! then is `Stored` sent.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use overlay::{Key, Payer};
use wire::object::{ByteRange, ObjectRequest, ObjectResponse};
use wire::{Status, message};

use super::pace::Pace;
use super::{Ingest, Objects, PieceReader};
use crate::caps::{Intent, TenantQuota, Token};
use crate::store::{Hash, Store, StoreError};
use crate::transport::{InboundExchange, TransportError};

/// Largest object request header.
const HEADER_MAX: usize = 1024;
/// Bytes of slice per frame when serving a peer: large enough that the per-piece costs
/// (a blocking-pool trip, a frame) vanish, small beside the connection's buffer budget.
pub(crate) const TRANSFER_PIECE: usize = 256 * 1024;
/// Pieces read ahead of the one being sent.
pub(crate) const PREFETCH: usize = 2;

/// Serves one inbound object exchange.
pub async fn serve_object(mut ex: InboundExchange, objects: Objects) -> Result<(), TransportError> {
    let Some(first) = ex.recv().await? else {
        return Ok(());
    };
    let ended = first.flags.contains(wire::Flags::END);
    let header = first.body(ex.limits()).map_err(TransportError::Decode)?;
    if header.len() > HEADER_MAX {
        return ex.respond(Status::PayloadTooLarge, Bytes::new()).await;
    }
    let request = match message::decode::<ObjectRequest>(&header) {
        Ok(r) => r,
        Err(e) => {
            objects.transport.stats().reject(e.reason());
            return ex.respond(Status::BadRequest, Bytes::new()).await;
        }
    };
    match request {
        ObjectRequest::Has { hash } => {
            let size = objects.store.size(&hash);
            ex.respond(Status::Ok, message::encode(&ObjectResponse::Has { size }))
                .await
        }
        ObjectRequest::Get { hash, range } => serve_get(ex, &objects, hash, range).await,
        ObjectRequest::Tail { hash } => {
            let range = objects.store.size(&hash).map(ByteRange::tail);
            serve_get(ex, &objects, hash, range).await
        }
        ObjectRequest::Put { hash, size } => {
            if ended && size > 0 {
                return ex.respond(Status::BadRequest, Bytes::new()).await;
            }
            serve_put(ex, &objects, hash, size, ended).await
        }
    }
}

/// The longest range a holder verifies in its own store before serving it (four 16 KiB
/// groups: every proof and TAIL, and small objects whole).
const VERIFY_BEFORE_SERVING_MAX: u64 = 64 << 10;

async fn serve_get(
    mut ex: InboundExchange,
    objects: &Objects,
    hash: [u8; 32],
    range: Option<ByteRange>,
) -> Result<(), TransportError> {
    let Some(size) = objects.store.size(&hash) else {
        return ex.respond(Status::NotFound, Bytes::new()).await;
    };
    let range = range.unwrap_or(ByteRange {
        start: 0,
        len: size,
    });
    if range
        .start
        .checked_add(range.len)
        .is_none_or(|end| end > size)
    {
        return ex.respond(Status::BadRequest, Bytes::new()).await;
    }
    let status = if range.start == 0 && range.len == size {
        Status::Ok
    } else {
        Status::Partial
    };
    // The slice encoding is produced on the blocking pool a piece per trip and sent as it
    // comes, so a 1 GiB object costs a few pieces of memory and no parked thread. Pieces
    // are cut between groups (each frame carries whole groups, read from the file straight
    // into the frame's buffer), so the asker verifies each group where it lies.
    //
    // A short range (a proof, a TAIL, a small object) is verified here first, and the
    // bytes sent are the bytes verified: a copy that rotted on our disk is then dropped and
    // answered as missing, so the prover pushes us a good one, rather than failing our proof
    // and waiting for ever (its bytes, not ours, would look like the liar's). Long ranges
    // are verified by the asker alone.
    let store = objects.store.clone();
    let piece = TRANSFER_PIECE.min(ex.max_payload());
    let opened = tokio::task::spawn_blocking(move || open_slice(&store, &hash, range, piece))
        .await
        .map_err(|_| TransportError::UnexpectedEnd)?;
    let mut pieces = match opened {
        Ok(Opened::Checked(pieces)) => Outgoing::Checked(pieces.into_iter()),
        Ok(Opened::Encoder(reader)) => {
            Outgoing::Streamed(PieceReader::new(reader, piece).prefetch(PREFETCH))
        }
        Err(StoreError::NotFound | StoreError::Corrupt) => {
            return ex.respond(Status::NotFound, Bytes::new()).await;
        }
        // An unreadable file is not a verdict on the object: ask again later.
        Err(_) => return ex.respond(Status::Unavailable, Bytes::new()).await,
    };
    ex.send(
        status,
        message::encode(&ObjectResponse::Found { size, range }),
        false,
    )
    .await?;
    let mut pace = Pace::new(objects);
    // Hold one piece back so the last one can carry END.
    let mut held: Option<Bytes> = None;
    while let Some(next) = pieces.next().await {
        let Ok(next) = next else {
            // The store failed mid-stream: drop the exchange (the stream resets); the
            // asker's decoder sees a short slice and moves on to another holder.
            return Err(TransportError::UnexpectedEnd);
        };
        if let Some(p) = held.replace(next) {
            pace.progress(p.len())?;
            ex.send(status, p, false).await?;
        }
    }
    ex.send(status, held.unwrap_or_default(), true).await?;
    Ok(())
}

/// A GET's slice as the blocking pool hands it over: checked already, or to be read.
enum Opened {
    Checked(Vec<Bytes>),
    Encoder(wire::tree::SliceEncoder),
}

/// Opens the slice of `range` to serve it in pieces of `piece` bytes: a short range read
/// and checked whole (one read of the file: the pieces returned are the ones that
/// verified), a long one as an encoder read while it is sent. Blocking.
fn open_slice(
    store: &Store,
    hash: &Hash,
    range: ByteRange,
    piece: usize,
) -> Result<Opened, StoreError> {
    if range.len <= VERIFY_BEFORE_SERVING_MAX {
        let pieces = store.verified_slice(hash, range.start, range.len, piece)?;
        Ok(Opened::Checked(pieces))
    } else {
        store
            .slice_reader(hash, range.start, range.len)
            .map(Opened::Encoder)
    }
}

/// Where a GET's pieces come from: checked here already (a short range, held in memory),
/// or read from the file as they are sent (the asker verifies them).
enum Outgoing {
    Checked(std::vec::IntoIter<Bytes>),
    Streamed(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>),
}

impl Outgoing {
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        match self {
            Outgoing::Checked(pieces) => pieces.next().map(Ok),
            Outgoing::Streamed(rx) => rx.recv().await,
        }
    }
}

/// The one refusal of a push that comes after some of its bytes were read (and charged):
/// the pusher tells it from the others by this reason.
pub(super) const TOO_SLOW: &str = "push_too_slow";

/// Refuses a push: counted by reason, answered with `status`, nothing stored, and nothing
/// read but for [`TOO_SLOW`].
async fn refuse(
    ex: InboundExchange,
    objects: &Objects,
    status: Status,
    reason: &'static str,
) -> Result<(), TransportError> {
    objects.transport.stats().reject(reason);
    objects
        .stats
        .pushes_refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(peer = %ex.peer(), reason, "replica push refused");
    // The reason rides in the body, so a pusher can tell "a copy is already on its way"
    // (`push_in_progress`) from a refusal.
    ex.respond(status, Bytes::from_static(reason.as_bytes()))
        .await
}

/// Who a push writes as: a capability's tenant (if it names one), or, for a push without
/// a capability, the budget its bytes were charged to.
enum Pusher {
    Capability(Option<TenantQuota>),
    Budget(Payer),
}

/// Whether a push may write here: `Ok` with who it writes as, or the status and reason to
/// refuse it with.
async fn authorize(
    ex: &InboundExchange,
    objects: &Objects,
    hash: &Hash,
    size: u64,
) -> Result<Pusher, (Status, &'static str)> {
    if !ex.cap().is_empty() {
        let bad = (Status::Unauthorized, "push_bad_capability");
        let text = std::str::from_utf8(ex.cap()).map_err(|_| bad)?;
        let token = Token::decode(text).map_err(|_| bad)?;
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let intent = Intent {
            method: "PUT",
            size: Some(size),
            now_unix,
        };
        return match objects.keyring.grant(&token, &intent) {
            Ok(grant) => Ok(Pusher::Capability(grant.tenant)),
            Err(e) if e.is_unauthenticated() => Err(bad),
            Err(_) => Err((Status::Forbidden, "push_capability_refused")),
        };
    }
    let from = Key::for_node(&ex.peer());
    match objects.dht.admit_replica(from, Key(*hash), size).await {
        Ok(Ok(payer)) => Ok(Pusher::Budget(payer)),
        Ok(Err(refusal)) => Err((Status::Forbidden, refusal.reason())),
        Err(_) => Err((Status::Unavailable, "push_dht_stopped")),
    }
}

/// The bytes a push was charged (`overlay::Admission`) and has not delivered yet, given
/// back to its pusher's budget when the push ends without a stored copy.
struct Unreceived<'a> {
    objects: &'a Objects,
    payer: Option<Payer>,
    bytes: u64,
}

impl Drop for Unreceived<'_> {
    fn drop(&mut self) {
        if let Some(payer) = self.payer {
            self.objects.dht.refund_replica(payer, self.bytes);
        }
    }
}

async fn serve_put(
    mut ex: InboundExchange,
    objects: &Objects,
    hash: [u8; 32],
    size: u64,
    ended: bool,
) -> Result<(), TransportError> {
    if size > objects.limits.object_max {
        return refuse(ex, objects, Status::PayloadTooLarge, "push_too_large").await;
    }
    let (tenant, payer) = match authorize(&ex, objects, &hash, size).await {
        Ok(Pusher::Capability(t)) => (t, None),
        Ok(Pusher::Budget(payer)) => (None, Some(payer)),
        Err((status, reason)) => return refuse(ex, objects, status, reason).await,
    };
    // A push without a capability was charged its whole size against a budget; whatever
    // it does not deliver into a stored copy is given back to that budget when this ends.
    let mut unreceived = Unreceived {
        objects,
        payer,
        bytes: size,
    };
    let reservation = match tenant.map(|q| objects.quotas.reserve(&q, size)) {
        Some(Err(_)) => {
            return refuse(ex, objects, Status::TooManyRequests, "push_over_quota").await;
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    if objects.store.size(&hash).is_some() {
        // Already here: answer at once (the pusher stops sending, and checks our word).
        return ex
            .respond(Status::Ok, message::encode(&ObjectResponse::Held))
            .await;
    }
    let Some(_receiving) = objects.start_receiving(hash) else {
        return refuse(ex, objects, Status::TooManyRequests, "push_in_progress").await;
    };
    let mut ingest = match Ingest::open(&objects.store, size).await {
        Ok(w) => w,
        Err(_) => return refuse(ex, objects, Status::Unavailable, "push_store_unavailable").await,
    };
    let mut pace = Pace::new(objects);
    if !ended {
        while let Some(frame) = ex.recv().await? {
            let body = frame.body(ex.limits()).map_err(TransportError::Decode)?;
            if ingest.len() + body.len() as u64 > size {
                return ex.respond(Status::PayloadTooLarge, Bytes::new()).await;
            }
            if pace.progress(body.len()).is_err() {
                return refuse(ex, objects, Status::TooManyRequests, TOO_SLOW).await;
            }
            if ingest.write(&body).await.is_err() {
                return ex.respond(Status::Unavailable, Bytes::new()).await;
            }
            unreceived.bytes = unreceived.bytes.saturating_sub(body.len() as u64);
        }
    }
    if ingest.len() != size {
        return ex.respond(Status::BadRequest, Bytes::new()).await;
    }
    match ingest.finish(Some(hash)).await {
        Ok(_) => {
            unreceived.bytes = 0;
            if let Some(r) = reservation {
                r.commit();
            }
            objects
                .stats
                .pushes_stored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            objects.stored_replica(hash, size, ex.peer()).await;
            ex.respond(Status::Ok, message::encode(&ObjectResponse::Stored))
                .await
        }
        Err(StoreError::HashMismatch { .. }) => {
            metrics::counter!("integrity_fail_total", "source" => "push").increment(1);
            objects
                .stats
                .integrity_fail_push
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ex.respond(Status::BadRequest, Bytes::new()).await
        }
        Err(StoreError::Full { .. }) => ex.respond(Status::Unavailable, Bytes::new()).await,
        Err(_) => ex.respond(Status::Internal, Bytes::new()).await,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Cursor};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::fs::{Fs, ReadFile, RealFs, WriteFile};

    /// The real file system, but once armed every later open of an object's bytes reads
    /// them with one bit flipped: a disk that rots between two reads of one request.
    #[derive(Default)]
    struct RotsWhenArmed {
        armed: AtomicBool,
    }

    impl Fs for RotsWhenArmed {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            RealFs.create_dir_all(path)
        }
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            RealFs.create_dir(path)
        }
        fn read_dir(&self, path: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
            RealFs.read_dir(path)
        }
        fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
            RealFs.create(path)
        }
        fn open(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
            let object = path.extension().is_none();
            if !(object && self.armed.swap(false, Ordering::SeqCst)) {
                return RealFs.open(path);
            }
            // This open reads good bytes; the next one reads rotten ones.
            let good = std::fs::read(path)?;
            let mut rotten = good.clone();
            rotten[5_000] ^= 0x40;
            std::fs::write(path, &rotten)?;
            Ok(Box::new(Cursor::new(good)))
        }
        fn len(&self, path: &Path) -> io::Result<u64> {
            RealFs.len(path)
        }
        fn exists(&self, path: &Path) -> bool {
            RealFs.exists(path)
        }
        fn is_dir(&self, path: &Path) -> bool {
            RealFs.is_dir(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            RealFs.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            RealFs.remove_file(path)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            RealFs.sync_dir(path)
        }
    }

    /// A short range (a proof) whose file rots just after the check reads it: what is sent
    /// is what was checked, so the asker gets a slice that verifies. Before, the check and
    /// the pieces sent were two reads, and the second sent the rot: the asker counted an
    /// honest holder a liar.
    #[test]
    fn a_short_slice_sent_is_the_slice_checked() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fs = Arc::new(RotsWhenArmed::default());
        let store =
            Store::open_on(fs.clone(), dir.path(), 1 << 30).unwrap_or_else(|e| panic!("{e}"));
        let data: Vec<u8> = (0..12_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hash = store.put(&data, None).unwrap_or_else(|e| panic!("{e}"));
        // Not kept in memory: the rot is dropped, not rewritten from there.
        store.forget_cached(&hash);
        fs.armed.store(true, Ordering::SeqCst);
        let range = ByteRange {
            start: 0,
            len: data.len() as u64,
        };
        let pieces = match open_slice(&store, &hash, range, TRANSFER_PIECE) {
            Ok(Opened::Checked(pieces)) => pieces,
            Ok(Opened::Encoder(mut encoder)) => {
                let mut pieces = Vec::new();
                while let Some(p) = encoder
                    .next_piece(TRANSFER_PIECE)
                    .unwrap_or_else(|e| panic!("{e}"))
                {
                    pieces.push(p);
                }
                pieces
            }
            Err(e) => panic!("{e}"),
        };
        let mut verifier = wire::tree::SliceVerifier::new(&hash, 0, range.len);
        let mut got = Vec::new();
        for p in pieces {
            verifier.feed(p);
            while let Some(b) = verifier
                .poll_verified()
                .unwrap_or_else(|e| panic!("sent unverified bytes: {e}"))
            {
                got.extend_from_slice(&b);
            }
        }
        assert_eq!(verifier.finish(), Ok(()));
        assert!(got == data);
        // The rot is found by the next read, which drops the copy rather than send it.
        assert!(matches!(
            open_slice(&store, &hash, range, TRANSFER_PIECE),
            Err(StoreError::Corrupt)
        ));
        assert_eq!(store.corrupt_found(), 1);
    }
}
