//! Answering inbound object requests (app protocol 2): GET a verified slice, HAS, PUT a
//! replica.
//!
//! GET answers with the bao encoding of the range, so the asker verifies every chunk; PUT
//! stores nothing until the bytes hash to the announced id, and refuses sizes over the
//! node's object limit before reading a byte of them.

use bytes::Bytes;
use wire::object::{ByteRange, CHUNK, ObjectRequest, ObjectResponse};
use wire::{Limits, Status, message};

use super::Objects;
use crate::store::StoreError;
use crate::transport::{InboundExchange, TransportError};

/// Largest object request header.
const HEADER_MAX: usize = 1024;

/// Serves one inbound object exchange.
pub async fn serve_object(mut ex: InboundExchange, objects: Objects) -> Result<(), TransportError> {
    let Some(first) = ex.recv().await? else {
        return Ok(());
    };
    let ended = first.flags.contains(wire::Flags::END);
    let header = first
        .body(&Limits::default())
        .map_err(TransportError::Decode)?;
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
        ObjectRequest::Put { hash, size } => {
            if ended && size > 0 {
                return ex.respond(Status::BadRequest, Bytes::new()).await;
            }
            serve_put(ex, &objects, hash, size, ended).await
        }
    }
}

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
    // The slice encoding is produced on a blocking thread in pieces and sent as it comes,
    // so a 1 GiB object costs a few pieces of memory, not 1 GiB.
    let reader = match objects.store.slice_reader(&hash, range.start, range.len) {
        Ok(r) => r,
        Err(StoreError::NotFound) => return ex.respond(Status::NotFound, Bytes::new()).await,
        Err(_) => return ex.respond(Status::Internal, Bytes::new()).await,
    };
    let piece = CHUNK.min(ex.max_payload());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || super::pump(reader, piece, tx));
    ex.send(
        status,
        message::encode(&ObjectResponse::Found { size, range }),
        false,
    )
    .await?;
    // Hold one piece back so the last one can carry END.
    let mut held: Option<Bytes> = None;
    while let Some(next) = rx.recv().await {
        let Ok(next) = next else {
            // The store failed mid-stream: drop the exchange (the stream resets); the
            // asker's decoder sees a short slice and moves on to another holder.
            return Err(TransportError::UnexpectedEnd);
        };
        if let Some(p) = held.replace(next) {
            ex.send(status, p, false).await?;
        }
    }
    ex.send(status, held.unwrap_or_default(), true).await?;
    Ok(())
}

async fn serve_put(
    mut ex: InboundExchange,
    objects: &Objects,
    hash: [u8; 32],
    size: u64,
    ended: bool,
) -> Result<(), TransportError> {
    if objects.store.size(&hash).is_some() {
        // Already held: drain nothing, answer at once (the pusher stops sending).
        return ex
            .respond(Status::Ok, message::encode(&ObjectResponse::Stored))
            .await;
    }
    if size > objects.limits.object_max {
        return ex.respond(Status::PayloadTooLarge, Bytes::new()).await;
    }
    let mut writer = match objects.store.writer(size) {
        Ok(w) => w,
        Err(_) => return ex.respond(Status::Unavailable, Bytes::new()).await,
    };
    if !ended {
        while let Some(frame) = ex.recv().await? {
            let body = frame
                .body(&Limits::default())
                .map_err(TransportError::Decode)?;
            if writer.len() + body.len() as u64 > size {
                return ex.respond(Status::PayloadTooLarge, Bytes::new()).await;
            }
            if writer.write(&body).is_err() {
                return ex.respond(Status::Unavailable, Bytes::new()).await;
            }
        }
    }
    if writer.len() != size {
        return ex.respond(Status::BadRequest, Bytes::new()).await;
    }
    let done = tokio::task::spawn_blocking(move || writer.finish(Some(&hash))).await;
    match done {
        Ok(Ok(_)) => {
            objects.stored_replica(hash, size, ex.peer()).await;
            ex.respond(Status::Ok, message::encode(&ObjectResponse::Stored))
                .await
        }
        Ok(Err(StoreError::HashMismatch { .. })) => {
            metrics::counter!("integrity_fail_total", "source" => "push").increment(1);
            objects
                .stats
                .integrity_fail_push
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ex.respond(Status::BadRequest, Bytes::new()).await
        }
        _ => ex.respond(Status::Internal, Bytes::new()).await,
    }
}
