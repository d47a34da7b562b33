//! Fetching objects from peers with verification, and pushing replicas to them.
//!
//! A fetch streams the bao slice encoding from a holder into a decoder on a blocking
//! thread, which checks every 1 KiB chunk against the object's hash before passing its bytes
//! on. A holder that lies is caught within one chunk; the fetch then resumes from the last
//! verified byte at the next holder, so the client sees one continuous, verified stream.

use std::io::Read;

use bytes::Bytes;
use tokio::sync::mpsc;
use wire::object::{APP_PROTO_OBJECT, ByteRange, CHUNK, ObjectRequest, ObjectResponse};
use wire::{Limits, Status, message};

use super::Objects;
use crate::dht::NetPeer;
use crate::store::Hash;
use crate::transport::TransportError;

/// Verified pieces buffered between the decoder and the consumer.
const PIECES_MAX: usize = 8;

/// Why a fetch from one holder failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The transport failed (connect, timeout, reset).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The holder answered with a status other than 200/206.
    #[error("holder answered {0:?}")]
    Status(Status),
    /// The holder's answer is not a valid object response.
    #[error("malformed answer: {0}")]
    Message(#[from] wire::message::MessageError),
    /// The bytes failed verification against the id.
    #[error("holder sent bytes that fail verification")]
    Integrity,
    /// No holder is known.
    #[error("no holder found")]
    NoHolder,
}

/// Reads frame payloads from a channel as one byte stream, on a blocking thread.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

impl Objects {
    /// Streams `range` of object `hash` from one holder into `out`, verified. Returns the
    /// number of verified bytes sent to `out` (all of `range` on success).
    pub async fn fetch_from(
        &self,
        holder: &NetPeer,
        hash: Hash,
        range: ByteRange,
        out: &mpsc::Sender<Bytes>,
    ) -> Result<u64, (u64, FetchError)> {
        let t = &self.transport;
        let fail = |e: FetchError| (0u64, e);
        t.connect(holder.addr, Some(holder.id))
            .await
            .map_err(|e| fail(e.into()))?;
        let mut ex = t
            .open_exchange(holder.id, APP_PROTO_OBJECT, Bytes::new())
            .await
            .map_err(|e| fail(e.into()))?;
        let req = ObjectRequest::Get {
            hash,
            range: Some(range),
        };
        ex.send(message::encode(&req), true)
            .await
            .map_err(|e| fail(e.into()))?;
        let io = self.limits.io_timeout;
        let first = match tokio::time::timeout(io, ex.recv()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => return Err(fail(FetchError::Transport(TransportError::UnexpectedEnd))),
            Ok(Err(e)) => return Err(fail(e.into())),
            Err(_) => {
                return Err(fail(FetchError::Transport(TransportError::Timeout {
                    what: "object header",
                    after: io,
                })));
            }
        };
        let status = Status::from_code(first.code).unwrap_or(Status::Internal);
        if !matches!(status, Status::Ok | Status::Partial) {
            return Err(fail(FetchError::Status(status)));
        }
        let header = first
            .body(&Limits::default())
            .map_err(|e| fail(TransportError::Decode(e).into()))?;
        match message::decode::<ObjectResponse>(&header).map_err(|e| fail(e.into()))? {
            ObjectResponse::Found { range: r, .. } if r == range => {}
            _ => return Err(fail(FetchError::Status(Status::BadRequest))),
        }
        // Encoded bytes go to a decoder thread; verified bytes come back in pieces.
        let (enc_tx, enc_rx) = mpsc::channel::<Bytes>(PIECES_MAX);
        let (ok_tx, mut ok_rx) = mpsc::channel::<Result<Bytes, ()>>(PIECES_MAX);
        let decoder = tokio::task::spawn_blocking(move || {
            let reader = ChannelReader {
                rx: enc_rx,
                cur: Bytes::new(),
            };
            let mut dec = bao::decode::SliceDecoder::new(
                reader,
                &blake3::Hash::from(hash),
                range.start,
                range.len,
            );
            let mut buf = vec![0u8; CHUNK];
            loop {
                match dec.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if ok_tx
                            .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(_) => {
                        let _ = ok_tx.blocking_send(Err(()));
                        return;
                    }
                }
            }
        });
        // Two halves run together: the feeder moves frames to the decoder, the consumer
        // moves verified pieces out. (One loop doing both could deadlock on full channels.)
        let first_ended = first.flags.contains(wire::Flags::END);
        let feeder = async move {
            let mut ended = first_ended;
            while !ended {
                let frame = match tokio::time::timeout(io, ex.recv()).await {
                    Ok(Ok(Some(f))) => f,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => return Err(FetchError::from(e)),
                    Err(_) => {
                        return Err(FetchError::Transport(TransportError::Timeout {
                            what: "object body",
                            after: io,
                        }));
                    }
                };
                ended = frame.flags.contains(wire::Flags::END);
                let body = frame
                    .body(&Limits::default())
                    .map_err(|e| FetchError::from(TransportError::Decode(e)))?;
                if enc_tx.send(body).await.is_err() {
                    break; // the decoder stopped: the consumer reports why
                }
            }
            Ok(())
        };
        let consumer = async move {
            let mut delivered = 0u64;
            while let Some(piece) = ok_rx.recv().await {
                match piece {
                    Ok(b) => {
                        delivered += b.len() as u64;
                        if out.send(b).await.is_err() {
                            return (delivered, Ok(())); // the client went away
                        }
                    }
                    Err(()) => return (delivered, Err(FetchError::Integrity)),
                }
            }
            (delivered, Ok(()))
        };
        // Boxed so both halves (and the channel ends they own) can be dropped before waiting
        // for the decoder thread, which would otherwise block on a full channel forever.
        let mut feeder = Box::pin(feeder);
        let mut consumer = Box::pin(consumer);
        let mut fed: Option<Result<(), FetchError>> = None;
        let (delivered, consumed) = loop {
            tokio::select! {
                r = &mut feeder, if fed.is_none() => fed = Some(r),
                c = &mut consumer => break c,
            }
        };
        if fed.is_none() {
            // The feeder may have failed in the same instant the decoder starved: collect
            // its outcome if it has one, without waiting.
            fed = futures_util::FutureExt::now_or_never(&mut feeder);
        }
        drop(feeder);
        drop(consumer);
        let _ = decoder.await;
        match (consumed, fed) {
            // A transport failure starves the decoder; report the cause, not the symptom.
            (Err(FetchError::Integrity), Some(Err(e))) => Err((delivered, e)),
            (Err(e), _) => {
                if matches!(e, FetchError::Integrity) {
                    metrics::counter!("integrity_fail_total", "source" => "peer").increment(1);
                    self.stats
                        .integrity_fail_peer
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(peer = %holder.id, "holder sent bytes that fail verification");
                }
                Err((delivered, e))
            }
            (Ok(()), _) if delivered == range.len || out.is_closed() => Ok(delivered),
            (Ok(()), _) => Err((delivered, FetchError::Integrity)),
        }
    }

    /// Streams `range` of `hash` from the first holder that serves it, resuming at the next
    /// holder after a failure, from the last verified byte.
    pub async fn fetch_failover(
        &self,
        holders: &[NetPeer],
        hash: Hash,
        range: ByteRange,
        out: mpsc::Sender<Bytes>,
    ) -> Result<(), FetchError> {
        let mut done = 0u64;
        let mut last = FetchError::NoHolder;
        for h in holders {
            let rest = ByteRange {
                start: range.start + done,
                len: range.len - done,
            };
            match self.fetch_from(h, hash, rest, &out).await {
                Ok(n) => {
                    done += n;
                    if done == range.len || out.is_closed() {
                        return Ok(());
                    }
                }
                Err((n, e)) => {
                    done += n;
                    tracing::debug!(peer = %h.id, error = %e, "fetch failed; trying the next holder");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Whether `peer` holds `hash` (HAS).
    pub async fn has(&self, peer: &NetPeer, hash: Hash) -> Result<Option<u64>, FetchError> {
        self.transport.connect(peer.addr, Some(peer.id)).await?;
        let body = message::encode(&ObjectRequest::Has { hash });
        let (status, reply) = self
            .transport
            .request(peer.id, APP_PROTO_OBJECT, body)
            .await?;
        if status != Status::Ok {
            return Err(FetchError::Status(status));
        }
        match message::decode::<ObjectResponse>(&reply)? {
            ObjectResponse::Has { size } => Ok(size),
            _ => Err(FetchError::Status(Status::BadRequest)),
        }
    }

    /// Makes sure `peer` holds our copy of `hash`: HAS, then a PUT of the bytes if missing,
    /// each chunk re-verified as it is read from the store. `Ok(true)` when bytes moved,
    /// `Ok(false)` when the peer already had it.
    pub async fn push(&self, peer: &NetPeer, hash: Hash, size: u64) -> Result<bool, FetchError> {
        if self.has(peer, hash).await? == Some(size) {
            return Ok(false);
        }
        let t = &self.transport;
        let mut ex = t
            .open_exchange(peer.id, APP_PROTO_OBJECT, Bytes::new())
            .await?;
        ex.send(
            message::encode(&ObjectRequest::Put { hash, size }),
            size == 0,
        )
        .await?;
        if size > 0 {
            // Verified pieces from a blocking reader; a piece that fails verification ends
            // the push (the store has dropped the copy) instead of spreading bad bytes.
            let reader = self
                .store
                .verified_reader(&hash, 0, size)
                .map_err(|_| FetchError::Integrity)?;
            let (tx, mut rx) = mpsc::channel(4);
            tokio::task::spawn_blocking(move || super::pump(Box::new(reader), CHUNK, tx));
            let mut sent = 0u64;
            while let Some(piece) = rx.recv().await {
                let piece = piece.map_err(|_| FetchError::Integrity)?;
                sent += piece.len() as u64;
                ex.send(piece, sent == size).await?;
            }
            if sent != size {
                return Err(FetchError::Integrity);
            }
        }
        let (status, reply) =
            tokio::time::timeout(self.limits.io_timeout * 4, ex.read_response(1024))
                .await
                .map_err(|_| {
                    FetchError::Transport(TransportError::Timeout {
                        what: "replica ack",
                        after: self.limits.io_timeout * 4,
                    })
                })??;
        match (status, message::decode::<ObjectResponse>(&reply)) {
            (Status::Ok, Ok(ObjectResponse::Stored)) => Ok(true),
            (s, _) => Err(FetchError::Status(s)),
        }
    }
}
