//! Mailbox routes: `POST /mb/{node_id}` sends a message (public edge, with a capability
//! token allowing the method `send`; also on the admin plane, where the operator needs
//! none), `GET /mb?wait=30s` receives this node's own mail and `DELETE /mb/{msg_id}`
//! acknowledges it, `POST /mb/ack` with `{"ids": [...]}` many at once (admin plane only:
//! only the owner's own node reads its mailbox, with its own QUIC identity). On the admin
//! plane, `POST /mb/{node_id}/batch` sends up to 256 messages in one request
//! (`{"messages": [{"key", "payload" (base64), "ttl_ms"?, "e2e"?}]}`, at most 2 MiB): the local
//! copies take one fsync, and the answer (201 with every id) waits for W copies of each.
//!
//! A send answers 201 with the message id only once W holders stored it durably; short of
//! W it is 503 `insufficient_replicas`, over a quota 429 with `Retry-After`. The
//! idempotency key comes from the `Idempotency-Key` header (1 to 64 bytes; a random one
//! when absent). On the public edge it is mixed with the token's id, so two clients of one
//! gateway (whose messages all come from the gateway's node id) cannot collide on a key.
//! A TTL in milliseconds may be asked with `?ttl_ms=`; `?e2e=true` marks a payload the
//! sender encrypted for the owner (OAP/1's APP_E2E), which the receive reports as `e2e`. A public send keeps its token's
//! byte limit whether or not the body declares its size, and a token's tenant pays for the
//! message's bytes from its write quota, as for an object PUT. A public send goes out for
//! its principal (the token's tenant, else the token, hashed): every holder counts it
//! against that principal's share of the mailbox, within the token's mail caveat
//! (`token mint --mail-messages-max/--mail-bytes-max`), not against this gateway's share,
//! so one client cannot starve the gateway's others.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use base64::Engine;
use mailbox::Principal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wire::NodeId;
use wire::mailbox::{IDEMPOTENCY_KEY_MAX, MsgId, PAYLOAD_MAX};

use super::ApiError;
use crate::app::NodeContext;
use crate::caps::{Grant, MailQuota};
use crate::mail::{MailError, WAIT_MAX};

/// The header carrying the sender's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// The BLAKE3 derive-key context mixing a token's id into a public send's key.
const KEY_CONTEXT: &str = "macronode gateway mailbox key v1";

/// The public edge's mailbox route: sending, with a token.
pub fn public_routes() -> Router<Arc<NodeContext>> {
    Router::new().route("/mb/{id}", post(send_public))
}

/// The admin plane's mailbox routes: sending as the operator, receiving and acknowledging
/// this node's own mail.
pub fn admin_routes() -> Router<Arc<NodeContext>> {
    Router::new()
        .route("/mb/{id}", post(send_admin))
        .route("/mb", get(recv))
        .route("/mb/{id}", delete(ack))
        .route("/mb/ack", post(ack_many))
        .route("/mb/{id}/batch", post(send_batch))
}

/// Query of a send.
#[derive(Debug, Deserialize)]
struct SendQuery {
    ttl_ms: Option<u64>,
    /// The payload is end-to-end encrypted for the owner (APP_E2E).
    #[serde(default)]
    e2e: bool,
}

async fn send_public(
    State(ctx): State<Arc<NodeContext>>,
    Path(node_id): Path<String>,
    Query(q): Query<SendQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // A token's byte limit applies to the declared size (the body is capped at the
    // payload limit whatever it declares).
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (grant, token) = super::objects::authorize_for(&ctx, &headers, "send", declared)?;
    let sender = token.map(|id| TokenSender { id, grant });
    send(&ctx, &node_id, q, &headers, body, sender).await
}

/// A public send's token: its id (mixed into the idempotency key) and what it grants
/// (a byte limit that must also hold for a body of undeclared size; a tenant whose write
/// quota the message counts against, as an object PUT's bytes do).
struct TokenSender {
    id: [u8; 16],
    grant: Grant,
}

async fn send_admin(
    State(ctx): State<Arc<NodeContext>>,
    Path(node_id): Path<String>,
    Query(q): Query<SendQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    send(&ctx, &node_id, q, &headers, body, None).await
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("a message is at most {PAYLOAD_MAX} bytes"),
    )
}

/// The idempotency key of a send: the header's bytes (random without one), mixed with the
/// token's id when there is a token.
fn idempotency_key(headers: &HeaderMap, token: Option<[u8; 16]>) -> Result<Vec<u8>, ApiError> {
    let key = match headers.get(IDEMPOTENCY_HEADER) {
        Some(v) => {
            let k = v.as_bytes().to_vec();
            if k.is_empty() || k.len() > IDEMPOTENCY_KEY_MAX {
                return Err(ApiError::bad_request(
                    "bad_idempotency_key",
                    format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} bytes"),
                ));
            }
            k
        }
        None => {
            let mut k = vec![0u8; 16];
            getrandom::fill(&mut k)
                .map_err(|e| ApiError::internal(format!("no entropy for a key: {e}")))?;
            k
        }
    };
    Ok(match token {
        None => key,
        Some(id) => {
            let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
            h.update(&id);
            h.update(&key);
            h.finalize().as_bytes().to_vec()
        }
    })
}

async fn send(
    ctx: &NodeContext,
    node_id: &str,
    q: SendQuery,
    headers: &HeaderMap,
    body: Body,
    sender: Option<TokenSender>,
) -> Result<Response, ApiError> {
    let mailbox: NodeId = node_id
        .parse()
        .map_err(|_| ApiError::bad_request("bad_node_id", "a node id is 64 hex digits"))?;
    let key = idempotency_key(headers, sender.as_ref().map(|s| s.id))?;
    let payload = axum::body::to_bytes(body, PAYLOAD_MAX)
        .await
        .map_err(|_| too_large())?;
    // A public client's mail counts against its own share at every holder (its tenant's,
    // else its token's), within its token's mail caveat: not against this gateway's.
    let principal = sender.as_ref().map(|s| {
        let quota = s.grant.mail.unwrap_or(MailQuota::UNLIMITED);
        Principal {
            id: s.grant.principal(&s.id),
            count_max: usize::try_from(quota.messages_max).unwrap_or(usize::MAX),
            bytes_max: quota.bytes_max,
        }
    });
    let grant = sender.map(|s| s.grant).unwrap_or_default();
    // The declared size was checked against the token's limit before reading; a chunked
    // body declares none, so its real size is checked here.
    if let Some(t) = grant.max_bytes.filter(|t| payload.len() as u64 > *t) {
        metrics::counter!("rejected_total", "reason" => "capability").increment(1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("capability token allows at most {t} bytes"),
        ));
    }
    let reservation = match &grant.tenant {
        Some(quota) => Some(
            ctx.objects
                .quotas
                .reserve(quota, payload.len() as u64)
                .map_err(|e| super::objects::over_quota(&e))?,
        ),
        None => None,
    };
    let sent = ctx
        .mail
        .send(
            mailbox,
            key,
            q.ttl_ms.map(Duration::from_millis),
            payload.to_vec(),
            q.e2e,
            principal,
        )
        .await
        .map_err(mail_error)?;
    if let Some(r) = reservation.filter(|_| !sent.duplicate) {
        r.commit();
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": sent.id.to_string(),
            "copies": sent.copies,
            "want": sent.want,
            "duplicate": sent.duplicate,
        })),
    )
        .into_response())
}

/// The gateway's answer to a mailbox failure.
fn mail_error(e: MailError) -> ApiError {
    match e {
        MailError::Quota {
            reason,
            retry_after,
        } => {
            metrics::counter!("rejected_total", "reason" => "mailbox_quota").increment(1);
            let secs = u32::try_from(retry_after.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!("over the mailbox quota ({reason}); retry later"),
            )
            .retry_after(secs.max(1))
            .with("reason", reason)
        }
        MailError::TooLarge(why) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", why),
        MailError::Insufficient { copies, want } => {
            metrics::counter!("rejected_total", "reason" => "insufficient_replicas").increment(1);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "insufficient_replicas",
                format!(
                    "the message is durable on {copies} of the {want} holders a send needs; retry with the same Idempotency-Key"
                ),
            )
            .retry_after(5)
            .with("copies", copies)
            .with("want", want)
        }
        MailError::Store(why) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", why).retry_after(5)
        }
        MailError::Unreachable(why) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "holders_unreachable", why)
                .retry_after(1)
        }
    }
}

/// Query of a receive.
#[derive(Debug, Deserialize)]
struct RecvQuery {
    wait: Option<String>,
    max: Option<u32>,
}

/// `30s`, `500ms`, `2m` or plain seconds.
fn parse_wait(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(s) = t.strip_suffix('s') {
        return s.parse::<f64>().ok().and_then(secs);
    }
    if let Some(m) = t.strip_suffix('m') {
        return m.parse::<f64>().ok().and_then(|m| secs(m * 60.0));
    }
    t.parse::<f64>().ok().and_then(secs)
}

fn secs(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(WAIT_MAX.as_secs_f64())))
}

async fn recv(
    State(ctx): State<Arc<NodeContext>>,
    Query(q): Query<RecvQuery>,
) -> Result<Response, ApiError> {
    let wait = match q.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => parse_wait(w).ok_or_else(|| {
            ApiError::bad_request("bad_wait", "wait is like 30s, 500ms or 2m (at most 60s)")
        })?,
    };
    let got = ctx
        .mail
        .recv(wait, q.max.unwrap_or(wire::mailbox::FETCH_COUNT_MAX))
        .await
        .map_err(mail_error)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let messages: Vec<Received> = got
        .iter()
        .map(|r| Received {
            id: r.id.to_string(),
            sender: r.message.sender.to_string(),
            payload: b64.encode(&r.message.payload),
            e2e: r.message.e2e,
            deliveries: r.deliveries,
            ttl_ms: r.message.ttl_ms,
        })
        .collect();
    Ok(Json(ReceivedBatch { messages }).into_response())
}

/// One message of a receive's answer (typed, not a `serde_json::Value` per message: the
/// receive loop's answers are its largest per-message cost).
#[derive(Serialize)]
struct Received {
    id: String,
    sender: String,
    payload: String,
    e2e: bool,
    deliveries: u32,
    ttl_ms: u64,
}

/// A receive's answer: `{"messages": [...]}`.
#[derive(Serialize)]
struct ReceivedBatch {
    messages: Vec<Received>,
}

async fn ack(
    State(ctx): State<Arc<NodeContext>>,
    Path(msg_id): Path<String>,
) -> Result<Response, ApiError> {
    let mut id = [0u8; 32];
    hex::decode_to_slice(&msg_id, &mut id)
        .map_err(|_| ApiError::bad_request("bad_msg_id", "a message id is 64 hex digits"))?;
    let deleted = ctx.mail.ack(vec![MsgId(id)]).await.map_err(mail_error)?;
    if deleted == 0 {
        return Err(ApiError::not_found(format!(
            "no holder holds message {msg_id} (already acknowledged, or expired)"
        )));
    }
    Ok(Json(json!({ "id": msg_id, "deleted": deleted })).into_response())
}

/// One message of `POST /mb/{node_id}/batch`.
#[derive(Debug, Deserialize)]
struct BatchItem {
    key: String,
    payload: String,
    ttl_ms: Option<u64>,
    #[serde(default)]
    e2e: bool,
}

/// Body of `POST /mb/{node_id}/batch`.
#[derive(Debug, Deserialize)]
struct Batch {
    messages: Vec<BatchItem>,
}

/// Largest body of `POST /mb/{node_id}/batch`.
const BATCH_BODY_MAX: usize = 2 << 20;

/// Sends up to `SEND_MANY_MAX` messages to one mailbox in one request (admin plane).
async fn send_batch(
    State(ctx): State<Arc<NodeContext>>,
    Path(node_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let mailbox: NodeId = node_id
        .parse()
        .map_err(|_| ApiError::bad_request("bad_node_id", "a node id is 64 hex digits"))?;
    let bytes = axum::body::to_bytes(body, BATCH_BODY_MAX)
        .await
        .map_err(|_| too_large())?;
    let batch: Batch = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_body", format!("{{\"messages\": [...]}}: {e}")))?;
    if batch.messages.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "a batch holds at least one message",
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut msgs = Vec::with_capacity(batch.messages.len());
    for m in batch.messages {
        let key = m.key.into_bytes();
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX {
            return Err(ApiError::bad_request(
                "bad_idempotency_key",
                format!("a key must be 1 to {IDEMPOTENCY_KEY_MAX} bytes"),
            ));
        }
        let payload = b64
            .decode(m.payload.as_bytes())
            .map_err(|_| ApiError::bad_request("bad_payload", "a payload is base64"))?;
        if payload.len() > PAYLOAD_MAX {
            return Err(too_large());
        }
        msgs.push(crate::mail::Outgoing {
            key,
            ttl: m.ttl_ms.map(Duration::from_millis),
            payload,
            e2e: m.e2e,
        });
    }
    let sent = ctx
        .mail
        .send_many(mailbox, msgs, None)
        .await
        .map_err(mail_error)?;
    let ids: Vec<String> = sent.iter().map(|s| s.id.to_string()).collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ids": ids,
            "copies": sent.iter().map(|s| s.copies).min(),
            "want": sent.first().map(|s| s.want),
            "duplicates": sent.iter().filter(|s| s.duplicate).count(),
        })),
    )
        .into_response())
}

/// Body of `POST /mb/ack`.
#[derive(Debug, Deserialize)]
struct AckMany {
    ids: Vec<String>,
}

/// Acknowledges up to `ACK_IDS_MAX` messages in one request (one ACK per holder).
async fn ack_many(State(ctx): State<Arc<NodeContext>>, body: Body) -> Result<Response, ApiError> {
    let bytes = axum::body::to_bytes(body, ACK_BODY_MAX)
        .await
        .map_err(|_| too_large())?;
    let req: AckMany = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("bad_body", format!("{{\"ids\": [...]}}: {e}")))?;
    if req.ids.len() > wire::mailbox::ACK_IDS_MAX {
        return Err(ApiError::bad_request(
            "too_many_ids",
            format!("at most {} ids per ack", wire::mailbox::ACK_IDS_MAX),
        ));
    }
    let mut ids = Vec::with_capacity(req.ids.len());
    for text in &req.ids {
        let mut id = [0u8; 32];
        hex::decode_to_slice(text, &mut id)
            .map_err(|_| ApiError::bad_request("bad_msg_id", "a message id is 64 hex digits"))?;
        ids.push(MsgId(id));
    }
    let deleted = ctx.mail.ack(ids).await.map_err(mail_error)?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}

/// Largest body of `POST /mb/ack`: `ACK_IDS_MAX` quoted hex ids and their commas.
const ACK_BODY_MAX: usize = wire::mailbox::ACK_IDS_MAX * 70 + 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_and_are_capped() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_wait("10m"), Some(WAIT_MAX));
        assert_eq!(parse_wait("-1s"), None);
        assert_eq!(parse_wait("soon"), None);
    }
}
