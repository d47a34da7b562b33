//! Blocking readers and writers driven from async code without parking a thread.
//!
//! Files are read, hashed and verified on tokio's blocking pool, one piece per trip: the
//! reader moves into the blocking task, reads a piece, and comes back. Between pieces no
//! thread is held, so a slow consumer (an HTTP client reading a byte a second, a peer
//! draining a stream slowly) costs a parked future, not a blocking thread. Writes batch the
//! incoming pieces and cross to the blocking pool once per batch.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::store::fs::DIRECT_ALIGN;
use crate::store::{Hash, ObjectWriter, Store, StoreError};

/// A blocking source of pieces: a store's verified reader, or a slice encoder, each cutting
/// its pieces between groups.
pub(crate) trait PieceSource: Send + 'static {
    /// The next piece of at most `max` bytes (a source may go over for a node that does
    /// not fit); `None` at the end.
    fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>>;

    /// Whether the source is known to have nothing left (saves a trip for `None`).
    fn is_done(&self) -> bool;
}

impl PieceSource for crate::store::VerifiedReader {
    fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        Ok(self.next_verified(max)?.map(Bytes::from))
    }

    fn is_done(&self) -> bool {
        crate::store::VerifiedReader::is_done(self)
    }
}

impl PieceSource for wire::tree::SliceEncoder {
    fn next_piece(&mut self, max: usize) -> std::io::Result<Option<Bytes>> {
        wire::tree::SliceEncoder::next_piece(self, max)
    }

    fn is_done(&self) -> bool {
        wire::tree::SliceEncoder::is_done(self)
    }
}

/// A blocking source consumed piece by piece from async code.
pub(crate) struct PieceReader {
    reader: Option<Box<dyn PieceSource>>,
    piece: usize,
}

impl PieceReader {
    /// Reads `source` in pieces of (about) `piece` bytes.
    pub(crate) fn new(source: impl PieceSource, piece: usize) -> PieceReader {
        PieceReader {
            reader: Some(Box::new(source)),
            piece: piece.max(1),
        }
    }

    /// The next piece; `None` at the end. After an error the reader is done.
    pub(crate) async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        let mut reader = self.reader.take()?;
        let piece = self.piece;
        let trip = tokio::task::spawn_blocking(move || {
            let got = reader.next_piece(piece);
            (reader, got)
        })
        .await;
        match trip {
            Ok((reader, Ok(Some(b)))) => {
                if !reader.is_done() {
                    self.reader = Some(reader);
                }
                Some(Ok(b))
            }
            Ok((_, Ok(None))) => None,
            Ok((_, Err(e))) => Some(Err(e)),
            Err(e) => Some(Err(std::io::Error::other(e))),
        }
    }
}

impl PieceReader {
    /// Reads ahead on a task of its own, at most `depth` pieces ahead of the consumer, so
    /// reading the next piece overlaps sending this one. The task holds no thread while the
    /// consumer is slow, and stops when the receiver is dropped.
    pub(crate) fn prefetch(mut self, depth: usize) -> mpsc::Receiver<std::io::Result<Bytes>> {
        let (tx, rx) = mpsc::channel(depth.max(1));
        tokio::spawn(async move {
            while let Some(piece) = self.next().await {
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
        rx
    }
}

/// Bytes gathered before one trip to the blocking pool.
const BATCH: usize = 1 << 20;

/// An empty batch whose first byte is aligned for a direct write, with room for exactly
/// one batch: a large object's batches, cut at [`BATCH`] bytes, then go to the disk as they
/// are (`store::fs`'s direct file writes aligned bytes without gathering them into its own
/// buffer).
fn aligned_batch() -> BytesMut {
    #[cfg(test)]
    tests::FRESH.with(|n| n.set(n.get() + 1));
    let mut b = BytesMut::with_capacity(BATCH + DIRECT_ALIGN);
    let off = b.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
    b.resize(off, 0);
    b.advance(off);
    b
}

/// How many sent batches an [`Ingest`] keeps to take back. A batch is held after its trip
/// by the streamed pushes: up to four queued per push (`tee::QUEUE`), then QUIC keeps the
/// bytes until the peer acknowledges them; eight reach back past those.
const SPENT_KEPT: usize = 8;

/// A spent batch, emptied, that nothing else holds any more and that still has an aligned
/// batch's room: its pages are already mapped, where a fresh batch's first write faults in
/// a megabyte of new ones (3–4 % of a streamed PUT's CPU, measured). Of the other batches
/// nothing holds, one stays as a spare (a write that came back early frees two at once;
/// without the spare the next batch would be fresh) and the rest are let go: `spent`
/// keeps one megabyte beyond the batches held elsewhere anyway.
fn reuse(spent: &mut VecDeque<Bytes>) -> Option<BytesMut> {
    let (mut again, mut spare) = (None, false);
    for batch in std::mem::take(spent) {
        if !batch.is_unique() {
            spent.push_back(batch);
        } else if again.is_none() {
            if let Ok(mut b) = batch.try_into_mut() {
                b.clear();
                again = (b.capacity() >= BATCH && b.as_ptr().align_offset(DIRECT_ALIGN) == 0)
                    .then_some(b);
            }
        } else if !spare {
            spare = true;
            spent.push_back(batch);
        }
    }
    again
}

/// A batch being written and hashed on the blocking pool; it gives the writer back.
type Trip = tokio::task::JoinHandle<Result<ObjectWriter, StoreError>>;

/// An object being written from async code: pieces are batched and written, hashed and
/// finally made durable on the blocking pool. One batch is on the pool while the next one
/// fills, so receiving the bytes and hashing them overlap; no thread is held between
/// batches, so a slow sender costs none. The temporary file is created on the first trip,
/// so a small object costs one trip in all.
pub(crate) struct Ingest {
    store: Store,
    size_hint: u64,
    /// The trip in flight; `None` before the first (which creates the temporary file).
    trip: Option<Trip>,
    batch: BytesMut,
    /// Batches are cut at [`BATCH`] and start aligned (an object written past the cache).
    aligned: bool,
    /// Aligned batches sent and still held elsewhere when the last one was sent (by the
    /// write, a push, QUIC), and one spare, at most [`SPENT_KEPT`]: one is taken back as
    /// soon as nothing else holds it.
    spent: VecDeque<Bytes>,
    len: u64,
    /// Streamed replica pushes fed every batch (a declared id's upload).
    tee: Option<super::tee::Tee>,
}

impl Ingest {
    /// Starts an object of (at most) `size_hint` bytes, refused now if it cannot fit.
    pub(crate) async fn open(store: &Store, size_hint: u64) -> Result<Ingest, StoreError> {
        store.check_room(size_hint)?;
        Ok(Ingest {
            store: store.clone(),
            size_hint,
            trip: None,
            batch: if store.uncached(size_hint) {
                aligned_batch()
            } else {
                BytesMut::new()
            },
            aligned: store.uncached(size_hint),
            spent: VecDeque::new(),
            len: 0,
            tee: None,
        })
    }

    /// The writer once the trip in flight (if any) is back, or a way to create it on the
    /// blocking pool if there was none yet.
    async fn writer_for_trip(
        &mut self,
    ) -> Result<impl FnOnce() -> Result<ObjectWriter, StoreError> + use<>, StoreError> {
        let existing = match self.trip.take() {
            None => None,
            Some(trip) => Some(
                trip.await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e)))??,
            ),
        };
        let store = self.store.clone();
        let hint = self.size_hint;
        Ok(move || match existing {
            Some(w) => Ok(w),
            None => store.writer(hint),
        })
    }

    /// Feeds every batch from now on to `tee` too; [`finish`](Self::finish) tells it the
    /// verdict once the bytes are hashed, before they are made durable.
    pub(crate) fn tee(&mut self, tee: super::tee::Tee) {
        self.tee = Some(tee);
    }

    /// Bytes received so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends bytes; they reach the file once a batch is full. An error of an earlier
    /// batch's trip (a full disk, the quota) is returned here.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.len += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            // Aligned batches are cut at BATCH exactly, so they never outgrow their room.
            let room = if self.aligned {
                BATCH - self.batch.len()
            } else {
                rest.len()
            };
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.batch.extend_from_slice(now);
            rest = later;
            if self.batch.len() >= BATCH {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// The full batch to send, leaving an empty one (aligned, if batches are).
    fn take_batch(&mut self) -> Bytes {
        if !self.aligned {
            return self.batch.split().freeze();
        }
        let next = reuse(&mut self.spent).unwrap_or_else(aligned_batch);
        let full = std::mem::replace(&mut self.batch, next).freeze();
        debug_assert!(
            full.len() <= BATCH && full.as_ptr().align_offset(DIRECT_ALIGN) == 0,
            "an aligned batch outgrew its room"
        );
        if self.spent.len() == SPENT_KEPT {
            self.spent.pop_front();
        }
        self.spent.push_back(full.clone());
        full
    }

    /// Sends the full batch on its trip once the previous one is back, without waiting
    /// for it.
    async fn flush(&mut self) -> Result<(), StoreError> {
        let batch = self.take_batch();
        if let Some(tee) = &mut self.tee {
            tee.send(batch.clone()).await;
        }
        let writer = self.writer_for_trip().await?;
        self.trip = Some(tokio::task::spawn_blocking(move || {
            let mut w = writer()?;
            w.write(&batch)?;
            Ok::<_, StoreError>(w)
        }));
        Ok(())
    }

    /// Writes the rest, verifies the hash (against `expected`, if given), makes the object
    /// durable and indexes it, all off the async workers.
    pub(crate) async fn finish(mut self, expected: Option<Hash>) -> Result<Hash, StoreError> {
        // No batch is filled again: what the last write and the fsync wait for, not these.
        self.spent.clear();
        let batch = self.batch.split().freeze();
        let verdict = match self.tee.take() {
            Some(mut tee) => {
                if !batch.is_empty() {
                    tee.send(batch.clone()).await;
                }
                Some(tee.close())
            }
            None => None,
        };
        let writer = self.writer_for_trip().await?;
        tokio::task::spawn_blocking(move || {
            let mut w = writer()?;
            w.write(&batch)?;
            w.finish_then(expected.as_ref(), || {
                // Only a declared id's check lets the pushes end.
                if let (Some(v), Some(_)) = (verdict, expected) {
                    let _ = v.send(super::tee::Verdict::Verified);
                }
            })
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    thread_local! {
        /// Fresh aligned batches made on this thread (`aligned_batch`).
        pub(super) static FRESH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Pieces of every size, batches cut anywhere: the object is the bytes in their order,
    /// and its id their BLAKE3.
    #[tokio::test]
    async fn pieces_of_every_size_make_the_object_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        let small = [1, 3, 16_384, 7, 16_383, BATCH + 5, 2, 300_000, 1, 900_000];
        // Past UNCACHED_MIN: aligned batches cut at BATCH, one piece of several batches.
        let large = [5, BATCH - 5, 3 * BATCH + 17, 700_000, BATCH, 1];
        for sizes in [&small[..], &large[..]] {
            let total: usize = sizes.iter().sum();
            let bytes: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
            let mut ingest = Ingest::open(&store, total as u64).await.unwrap();
            assert_eq!(ingest.aligned, total as u64 >= crate::store::UNCACHED_MIN);
            let mut at = 0;
            for &n in sizes {
                ingest.write(&bytes[at..at + n]).await.unwrap();
                at += n;
            }
            let hash = ingest.finish(None).await.unwrap();
            assert_eq!(&hash, blake3::hash(&bytes).as_bytes());
            let back = store.read_verified(&hash, 0, total as u64).unwrap();
            assert!(
                back == bytes,
                "the stored object differs from the bytes written"
            );
        }
    }

    /// A spent batch is taken back, emptied and at its own address, only once nothing
    /// else holds any part of it; one still held stays in line, one more free one stays as
    /// the spare, and further free ones are let go.
    #[test]
    fn a_spent_batch_comes_back_only_when_nothing_holds_it() {
        let sent = |fill: u8| {
            let mut batch = aligned_batch();
            batch.extend_from_slice(&[fill; BATCH]);
            batch.freeze()
        };
        let first = sent(1);
        let at = first.as_ptr();
        let held = first.slice(4096..8192);
        let mut spent = VecDeque::from([first, sent(2), sent(3), sent(4)]);
        let Some(again) = reuse(&mut spent) else {
            panic!("a free batch did not come back");
        };
        assert_eq!(spent.len(), 2, "not the held batch and one spare");
        assert!(again.is_empty() && again.capacity() >= BATCH);
        assert_eq!(again.as_ptr().align_offset(DIRECT_ALIGN), 0);
        assert!(reuse(&mut spent).is_some(), "the spare did not come back");
        assert_eq!(spent.len(), 1, "the held batch left the line");
        assert!(
            reuse(&mut spent).is_none(),
            "taken back while a push held a slice"
        );
        assert_eq!(spent.len(), 1);
        drop(held);
        let Some(again) = reuse(&mut spent) else {
            panic!("a batch nothing holds did not come back");
        };
        assert_eq!(again.as_ptr(), at, "not the same memory");
        assert!(spent.is_empty());
        assert!(reuse(&mut spent).is_none(), "nothing spent, nothing back");
    }

    /// A large upload fills batches it already had once nothing else holds them: with no
    /// push, a batch is free once its write is back, so ten batches take two fresh ones
    /// (ten without taking any back), each aligned, and the object is still the bytes
    /// written.
    #[tokio::test]
    async fn a_large_upload_fills_its_spent_batches_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30).unwrap();
        let bytes: Vec<u8> = (0..10 * BATCH).map(|i| (i * 7 % 253) as u8).collect();
        let mut ingest = Ingest::open(&store, bytes.len() as u64).await.unwrap();
        assert!(ingest.aligned);
        let fresh = FRESH.with(|n| n.get());
        for batch in bytes.chunks(BATCH) {
            let at = ingest.batch.as_ptr() as usize;
            assert_eq!(at % DIRECT_ALIGN, 0, "a batch that does not start aligned");
            ingest.write(batch).await.unwrap();
        }
        let fresh = FRESH.with(|n| n.get()) - fresh;
        assert!(fresh <= 2, "{fresh} fresh batches for 10");
        let hash = ingest.finish(None).await.unwrap();
        assert_eq!(&hash, blake3::hash(&bytes).as_bytes());
        let back = store.read_verified(&hash, 0, bytes.len() as u64).unwrap();
        assert!(back == bytes, "a batch filled again corrupted the object");
    }
}
