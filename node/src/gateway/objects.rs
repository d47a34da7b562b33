//! Object routes: `PUT /o`, `PUT /o/{id}`, `GET /o/{id}`, `HEAD /o/{id}`.
//!
//! PUT streams the body into the store while hashing it (no full copy in memory, the file
//! work on the blocking pool), then replicates and answers 201 once W copies are durable,
//! each confirmed by its holder; short of W it answers 503 `insufficient_replicas` with the
//! count, keeps the local copy and leaves the rest to repair. `PUT /o/{id}` declares the id:
//! a body that hashes otherwise is refused (422), and the copies are pushed while the body
//! still arrives, each ending only once our own store found the bytes hash to the id. GET
//! serves a local copy or fetches from holders, verifying every chunk either way; a remote
//! object's size comes from a verified final chunk before the headers go out. Ids are strong ETags and immutable.
//! Ranges: one `a-b`, `a-` or `-n` range gives 206, an unsatisfiable one 416 with
//! `Content-Range: bytes */len`; several ranges are answered with the whole object.
//!
//! Errors tell the truth: 404 only after a search ran and found no holder; a search that
//! could not run is 503, one that timed out 504; a store that cannot read right now is 503
//! `store_unavailable` (the object stays); only a hash mismatch counts as corruption.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use wire::object::ByteRange;

use super::ApiError;
use super::hold::Holding;
use super::misses::{ClientAddr, Refused};
use crate::app::NodeContext;
use crate::caps::{CapError, Grant, Intent, Token};
use crate::objects::{
    Admitted, EarlyPushes, Ingest, LocateError, Located, Objects, Replicated, WritesBusy,
};
use crate::quota::{QuotaError, Reservation};
use crate::store::{Hash, StoreError, id_string, parse_id};

/// Ranges up to this size are read, verified and answered in one piece.
const WHOLE_READ_MAX: u64 = 256 << 10;
/// Larger local reads are verified and sent in pieces of this size.
const PIECE: u64 = 64 << 10;
/// Response buffer budget a streamed local body takes: the file's read buffer, the piece
/// being read, the one queued, and what hyper buffers for the connection (up to
/// `HTTP1_BUFFER_MAX` plus the piece that crossed it).
const LOCAL_STREAM_COST: u32 = 512 << 10;
/// Response buffer budget a remote body takes: the fetch pipeline's queued pieces on both
/// sides of the verifier, and what hyper buffers.
const REMOTE_STREAM_COST: u32 = 1 << 20;

/// The object routes.
pub fn routes() -> Router<Arc<NodeContext>> {
    Router::new()
        .route("/o", put(put_object))
        .route("/o/{id}", get(get_object).put(put_object_at))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks the capability of a gateway write for `method` (`PUT` for objects, `send` for
/// mail); returns what the token grants and the token's id, or nothing when the operator
/// opened writes.
pub(crate) fn authorize_for(
    ctx: &NodeContext,
    headers: &HeaderMap,
    method: &str,
    size: Option<u64>,
) -> Result<(Grant, Option<[u8; 16]>), ApiError> {
    if ctx.gateway.open_writes {
        return Ok((Grant::default(), None));
    }
    let refuse = |e: CapError| {
        metrics::counter!("rejected_total", "reason" => "capability").increment(1);
        let status = if e.is_unauthenticated() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        ApiError::new(
            status,
            if e.is_unauthenticated() {
                "unauthorized"
            } else {
                "forbidden"
            },
            e.to_string(),
        )
    };
    let text = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or_else(|| refuse(CapError::Missing))?;
    let token = Token::decode(text).map_err(refuse)?;
    let grant = ctx
        .gateway
        .keyring
        .grant(
            &token,
            &Intent {
                method,
                size,
                now_unix: now_unix(),
            },
        )
        .map_err(refuse)?;
    Ok((grant, Some(token.id())))
}

/// The credentials of an `Authorization: Bearer …` value (the scheme is case-insensitive,
/// RFC 9110 §11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// 429 for a tenant over its quota, with when to retry.
pub(crate) fn over_quota(e: &QuotaError) -> ApiError {
    metrics::counter!("rejected_total", "reason" => "quota").increment(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
        e.to_string(),
    )
    .retry_after(e.retry_after_secs())
}

/// `writes_busy`: 503 when `writes_max` writes are running or every commit permit is taken,
/// 429 when the writer's principal (its token's tenant, else its token) runs its share of
/// them. With `id`, the body was already stored: it stays here and repair places its copies
/// at its own pace.
fn writes_busy(objects: &crate::objects::Objects, busy: WritesBusy, id: Option<&str>) -> ApiError {
    let (status, reason, running) = match busy {
        WritesBusy::Node => (
            StatusCode::SERVICE_UNAVAILABLE,
            "writes",
            format!(
                "this node runs {} writes at once, counting the copies still being placed for writes already answered",
                objects.limits.writes_max
            ),
        ),
        WritesBusy::Commits => (
            StatusCode::SERVICE_UNAVAILABLE,
            "commits",
            format!(
                "this node commits {} uploads at once (hashing, syncing and placing them up to their answer); nothing was stored",
                objects.limits.writes_max * 2
            ),
        ),
        WritesBusy::Principal => (
            StatusCode::TOO_MANY_REQUESTS,
            "principal_writes",
            format!(
                "this token's writes (its tenant's, if it names one) run {} at once on this node, counting bodies being received and the copies still being placed for writes already answered",
                objects.writes_per_principal_max()
            ),
        ),
    };
    metrics::counter!("rejected_total", "reason" => reason).increment(1);
    let e = match id {
        None => ApiError::new(status, "writes_busy", format!("{running}; retry later")),
        Some(id) => ApiError::new(
            status,
            "writes_busy",
            format!(
                "{id} is durable on this node only: {running}; repair places its copies, retry the PUT later"
            ),
        )
        .with("id", id.to_string()),
    };
    e.retry_after(1)
}

/// `PUT /o`: the id is what the body hashes to.
async fn put_object(
    State(ctx): State<Arc<NodeContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put_body(&ctx, &headers, body, None).await
}

/// `PUT /o/{id}`: the client declares the id (`b3sum` of the body). The body is stored
/// only if it hashes to it (422 `id_mismatch` otherwise), and, since the id names the
/// object's closest nodes before its first byte, its replica pushes run beside the upload
/// instead of after it (`objects::tee`). Those copies may end once the bytes are checked,
/// before our own copy is durable: should our fsync then fail, the client hears 503 and the
/// pushes are stopped; a copy whose END was already taken stands (verified, and announced
/// by its holder).
async fn put_object_at(
    State(ctx): State<Arc<NodeContext>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let hash = parse_id(&id)
        .ok_or_else(|| ApiError::bad_request("bad_id", "an object id is b3:<64 hex>"))?;
    put_body(&ctx, &headers, body, Some(hash)).await
}

/// Bodies smaller than this are not worth pushes beside the upload: they arrive in one
/// batch.
const STREAMED_MIN: u64 = 1 << 20;

async fn put_body(
    ctx: &Arc<NodeContext>,
    headers: &HeaderMap,
    body: Body,
    declared_id: Option<Hash>,
) -> Result<Response, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Bodies are stored as sent and named by their hash: a compressed upload would be
    // stored compressed under the hash of the compressed bytes. Refuse it before reading.
    // Every Content-Encoding line counts, each a comma-separated list (RFC 9110 8.4): only
    // `identity` may appear; a value that is not visible ASCII is refused, not skipped.
    let encodings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(text) => text.split(',').map(|e| e.trim().to_string()).collect(),
            Err(_) => vec![String::from_utf8_lossy(v.as_bytes()).into_owned()],
        })
        .filter(|e| !e.is_empty())
        .collect();
    if let Some(enc) = encodings
        .iter()
        .find(|e| !e.eq_ignore_ascii_case("identity"))
    {
        metrics::counter!("rejected_total", "reason" => "content_encoding").increment(1);
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_encoding",
            format!(
                "Content-Encoding {enc:?} is not accepted: objects are stored as sent; upload the bytes themselves"
            ),
        ));
    }
    let (grant, token) = authorize_for(ctx, headers, "PUT", declared)?;
    let principal = token.map(|t| grant.principal(&t));
    let token_max = grant.max_bytes;
    let objects = &ctx.objects;
    // A node running all the writes it may (or the writer's share of them, bodies being
    // received included) answers at once, before the body is sent (the node's slot itself
    // is taken after it, so a client trickling its body holds none of the node's).
    let admitted = objects
        .admit_write(principal.as_ref())
        .map_err(|busy| writes_busy(objects, busy, None))?;
    // A tenant's write holds its bytes in the tenant's account from the start: the whole
    // declared size, or each piece of a body of unknown size as it comes.
    let mut reservation = match &grant.tenant {
        Some(q) => Some(
            objects
                .quotas
                .reserve(q, declared.unwrap_or(0))
                .map_err(|e| over_quota(&e))?,
        ),
        None => None,
    };
    let max = objects.limits.object_max;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("objects are at most {max} bytes"),
        )
    };
    if declared.is_some_and(|d| d > max) {
        return Err(too_large());
    }
    let mut ingest = Ingest::open(&objects.store, declared.unwrap_or(0))
        .await
        .map_err(store_error)?;
    // A declared id with a known size lets the copies start now (`objects::tee`), on a
    // node that places copies at all and is not streaming all the uploads it may.
    let mut early = None;
    if let (Some(id), Some(size)) = (declared_id, declared)
        && size >= STREAMED_MIN
        && objects.write_quorum() > 1
        && let Some(permit) = objects.streaming_permit()
        && let Some((tee, pushes)) = objects.start_streamed(id, size, permit).await
    {
        ingest.tee(tee);
        early = Some(pushes);
    }
    let mut stream = body.into_data_stream();
    let idle = ctx.gateway.body_idle_timeout;
    loop {
        let chunk = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(
                    "body_error",
                    format!("reading the body failed: {e}"),
                ));
            }
            Ok(None) => break,
            Err(_) => {
                metrics::counter!("rejected_total", "reason" => "slow_body").increment(1);
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!("no body bytes for {idle:?}"),
                ));
            }
        };
        let len = ingest.len() + chunk.len() as u64;
        if len > max {
            return Err(too_large());
        }
        if let Some(t) = token_max.filter(|t| len > *t) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("capability token allows at most {t} bytes"),
            ));
        }
        if let (Some(r), None) = (reservation.as_mut(), declared) {
            r.grow(chunk.len() as u64).map_err(|e| over_quota(&e))?;
        }
        ingest.write(&chunk).await.map_err(store_error)?;
    }
    let size = ingest.len();
    if declared.is_some_and(|d| d != size) {
        return Err(ApiError::bad_request(
            "body_error",
            format!("Content-Length said {declared:?} bytes, the body had {size}"),
        ));
    }
    // The rest runs as a task of its own: a client that hangs up now drops this future
    // with its connection, and a copy made durable after that must still be announced
    // and placed like any other.
    let Some(permit) = objects.commit_permit() else {
        return Err(writes_busy(objects, WritesBusy::Commits, None));
    };
    let objects = objects.clone();
    let committing = Commit {
        _permit: permit,
        ingest,
        declared_id,
        reservation,
        admitted,
        early,
        size,
    };
    tokio::spawn(committing.run(objects))
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "a PUT's commit task failed");
            Err(ApiError::internal("the write failed inside this node"))
        })
}

/// An upload whose body is all in: what is left is to check its hash, make it durable and
/// place its copies.
struct Commit {
    /// One of the node's commits in flight (`Objects::commit_permit`).
    _permit: tokio::sync::OwnedSemaphorePermit,
    ingest: Ingest,
    declared_id: Option<Hash>,
    reservation: Option<Reservation>,
    admitted: Admitted,
    early: Option<EarlyPushes>,
    size: u64,
}

impl Commit {
    /// Commits the upload and answers as the PUT does.
    async fn run(self, objects: Objects) -> Result<Response, ApiError> {
        let (objects, size) = (&objects, self.size);
        let hash = self
            .ingest
            .finish(self.declared_id)
            .await
            .map_err(|e| match e {
                StoreError::HashMismatch { .. } => {
                    metrics::counter!("rejected_total", "reason" => "id_mismatch").increment(1);
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "id_mismatch",
                        format!("nothing stored: the body {e}"),
                    )
                }
                other => store_error(other),
            })?;
        if let Some(r) = self.reservation {
            r.commit();
        }
        let id = id_string(&hash);
        // The write holds its slot until its last copy is placed, after the answer too.
        let slot = match objects.slot_for(self.admitted) {
            Ok(slot) => slot,
            Err(busy) => {
                // Our copy is durable: pushes that may be ending a whole copy are let be.
                if let Some(early) = self.early {
                    objects.detach(hash, early).await;
                }
                objects.announce(hash, size).await;
                return Err(writes_busy(objects, busy, Some(&id)));
            }
        };
        let Replicated { copies, want } =
            objects.replicate_with(hash, size, slot, self.early).await;
        if copies < want {
            metrics::counter!("rejected_total", "reason" => "insufficient_replicas").increment(1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "insufficient_replicas",
                format!(
                    "{id} is durable on {copies} of the {want} nodes a write needs; this node keeps its copy and repair goes on, retry the PUT later"
                ),
            )
            .retry_after(5)
            .with("id", id.clone())
            .with("replicas", copies)
            .with("w", want));
        }
        let mut resp = (
            StatusCode::CREATED,
            Json(json!({"id": id, "size": size, "replicas": copies})),
        )
            .into_response();
        if let Ok(loc) = HeaderValue::from_str(&format!("/o/{id}")) {
            resp.headers_mut().insert(header::LOCATION, loc);
        }
        Ok(resp)
    }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Full { .. } => {
            metrics::counter!("rejected_total", "reason" => "store_full").increment(1);
            ApiError::overloaded(e.to_string())
        }
        StoreError::Io(_) => store_unavailable(&e),
        other => ApiError::internal(other.to_string()),
    }
}

/// 503 for a store that failed to read or write right now; nothing was judged corrupt.
fn store_unavailable(e: &StoreError) -> ApiError {
    metrics::counter!("rejected_total", "reason" => "store_unavailable").increment(1);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!("the store could not be read: {e}"),
    )
    .retry_after(1)
}

/// What a `Range` header asks for, against an object of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable single range: the whole object.
    Whole,
    /// One satisfiable range.
    Part(ByteRange),
    /// A range that lies past the end.
    Unsatisfiable,
}

/// Parses a `Range` header value (RFC 9110 §14.2), single ranges only.
pub fn parse_range(value: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // Suffix: the last n bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        if n == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        let n = n.min(size);
        ByteRange {
            start: size - n,
            len: n,
        }
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return RangeAsk::Whole;
        };
        if start >= size {
            return RangeAsk::Unsatisfiable;
        }
        let end = if b.is_empty() {
            size - 1
        } else {
            match b.parse::<u64>() {
                Ok(e) if e >= start => e.min(size - 1),
                _ => return RangeAsk::Whole,
            }
        };
        ByteRange {
            start,
            len: end - start + 1,
        }
    };
    RangeAsk::Part(range)
}

fn etag(hash: &Hash) -> String {
    format!("\"{}\"", id_string(hash))
}

async fn get_object(
    State(ctx): State<Arc<NodeContext>>,
    client: Option<Extension<ClientAddr>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_id(&id).ok_or_else(|| {
        ApiError::bad_request(
            "bad_id",
            format!("{id:?} is not an object id: expected b3:<64 hex digits>"),
        )
    })?;
    let tag = etag(&hash);
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    // The id is the content: a client holding this ETag holds these bytes, with no lookup.
    if inm.is_some_and(|v| v.split(',').any(|t| t.trim() == tag)) {
        return Ok(with_object_headers(
            StatusCode::NOT_MODIFIED.into_response(),
            &tag,
        ));
    }
    let objects = &ctx.objects;
    // Small objects verified since written are served from memory: no thread hop, no
    // re-verification.
    let hot = objects.store.cached(&hash);
    let located = match (&hot, objects.store.size(&hash)) {
        (Some(b), _) => Ok(Located::Local {
            size: b.len() as u64,
        }),
        (None, Some(size)) => Ok(Located::Local { size }),
        (None, None) => {
            // Not here: a search of the mesh, which a client may not start without bound.
            let ip = client.map(|Extension(ClientAddr(a))| a.ip());
            let search = match ctx.misses.admit(ip, &hash) {
                Ok(search) => search,
                Err(Refused::RecentlyMissing) => {
                    return Err(ApiError::not_found(format!(
                        "no node holds {} (searched moments ago)",
                        id_string(&hash)
                    )));
                }
                Err(Refused::OverBudget { retry_after }) => {
                    metrics::counter!("rejected_total", "reason" => "search_budget").increment(1);
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "search_rate_limited",
                        "too many searches for ids no node holds from this client; retry later",
                    )
                    .retry_after(retry_after));
                }
            };
            // A client that hangs up mid-search drops `search` unsettled: charged.
            let found = objects.find_holders(hash).await;
            match &found {
                Err(LocateError::NotFound) => search.missed(),
                // Ran out of time: charged, not remembered.
                Err(LocateError::Timeout) => drop(search),
                Ok(_) | Err(LocateError::Overloaded(_) | LocateError::NoPeers) => search.free(),
            }
            found
        }
    };
    let located = located.map_err(|e| match e {
        LocateError::NotFound => ApiError::not_found(format!("no node holds {}", id_string(&hash))),
        LocateError::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "holders did not answer in time",
        ),
        LocateError::Overloaded(why) => {
            metrics::counter!("rejected_total", "reason" => "lookup_refused").increment(1);
            ApiError::overloaded(format!("the search for holders could not run: {why}"))
        }
        LocateError::NoPeers => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_peers",
            "this node has no peers (lost, or not reached yet) and cannot search the mesh; retry",
        )
        .retry_after(5),
    })?;
    // `*` matches any current representation: only an object that exists.
    if inm.is_some_and(|v| v.split(',').any(|t| t.trim() == "*")) {
        return Ok(with_object_headers(
            StatusCode::NOT_MODIFIED.into_response(),
            &tag,
        ));
    }
    let size = match &located {
        Located::Local { size } | Located::Remote { size, .. } => *size,
    };
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, range) = match parse_range(range_header, size) {
        RangeAsk::Whole => (
            StatusCode::OK,
            ByteRange {
                start: 0,
                len: size,
            },
        ),
        RangeAsk::Part(r) => (StatusCode::PARTIAL_CONTENT, r),
        RangeAsk::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "bad_range",
                format!("the object has {size} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let start = range.start as usize;
        let part = |b: Bytes| Body::from(b.slice(start..start + range.len as usize));
        match (hot, located) {
            (Some(bytes), _)
            | (
                None,
                Located::Remote {
                    whole: Some(bytes), ..
                },
            ) => part(bytes),
            (None, Located::Local { .. }) => local_body(&ctx, hash, range).await?,
            (None, Located::Remote { holders, .. }) => {
                remote_body(&ctx, holders, hash, range).await?
            }
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "bytes {}-{}/{size}",
            range.start,
            range.start + range.len - 1
        )) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(with_object_headers(resp, &tag))
}

fn with_object_headers(mut resp: Response, tag: &str) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

/// Takes `bytes` of the response buffer budget for one body, or answers 503: the node
/// holds at most the budget in response bytes waiting to be sent, whatever its clients do.
fn budget(ctx: &NodeContext, bytes: u32) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    ctx.gateway
        .response_budget
        .clone()
        .try_acquire_many_owned(bytes.max(1))
        .map_err(|_| {
            metrics::counter!("rejected_total", "reason" => "response_buffers").increment(1);
            ApiError::overloaded("response buffers are full; retry")
        })
}

/// A local range: verified whole when small, else verified piece by piece as it streams.
async fn local_body(ctx: &NodeContext, hash: Hash, range: ByteRange) -> Result<Body, ApiError> {
    let store = ctx.objects.store.clone();
    if range.len <= WHOLE_READ_MAX {
        let held = budget(ctx, range.len as u32)?;
        let read =
            tokio::task::spawn_blocking(move || store.read_verified(&hash, range.start, range.len))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        return match read {
            Ok(bytes) => Ok(Holding::wrap(Body::from(bytes), vec![held])),
            // The local copy was bad and is gone (counted): serve the read from the mesh,
            // under the remote read's budget alone.
            Err(StoreError::Corrupt) => {
                drop(held);
                match ctx.objects.find_holders(hash).await {
                    Ok(Located::Remote { holders, .. }) => {
                        remote_body(ctx, holders, hash, range).await
                    }
                    _ => Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "integrity",
                        "the stored copy failed verification and was dropped, and no other holder answered; retry",
                    )
                    .retry_after(1)),
                }
            }
            // Unreadable right now (EIO, EMFILE, ...): not a verdict on the object.
            Err(e @ StoreError::Io(_)) => Err(store_unavailable(&e)),
            Err(StoreError::NotFound) => Err(ApiError::not_found(format!(
                "{} was released while being read; retry",
                id_string(&hash)
            ))),
            Err(other) => Err(ApiError::internal(other.to_string())),
        };
    }
    // Larger ranges stream, verified piece by piece; a bad piece midway is replaced by
    // bytes from other holders (see `Objects::stream_local`).
    let held = budget(ctx, LOCAL_STREAM_COST)?;
    Ok(Holding::wrap(
        counted_body(
            None,
            ctx.objects.stream_local(hash, range, PIECE as usize),
            range.len,
        ),
        vec![held],
    ))
}

/// A remote range: verified by the fetcher; a stream that ends short aborts the response.
/// The headers wait for the first verified piece, so a read that every holder failed
/// before its first byte (a lossy link, a holder gone since it proved its copy) answers
/// 503 with `Retry-After` instead of a 200 cut at byte 0.
async fn remote_body(
    ctx: &NodeContext,
    holders: Vec<crate::dht::NetPeer>,
    hash: Hash,
    range: ByteRange,
) -> Result<Body, ApiError> {
    let held = budget(ctx, REMOTE_STREAM_COST)?;
    let mut rx = ctx.objects.stream_remote(holders, hash, range);
    let first = match rx.recv().await {
        Some(piece) => Some(piece),
        None if range.len == 0 => None,
        None => {
            metrics::counter!("rejected_total", "reason" => "holders_failed").increment(1);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "holders_failed",
                format!(
                    "every holder of {} failed before its first byte; retry",
                    id_string(&hash)
                ),
            )
            .retry_after(1));
        }
    };
    Ok(Holding::wrap(
        counted_body(first, rx, range.len),
        vec![held],
    ))
}

/// A body from verified pieces (`first`, then `rx`'s); if they stop before `len` bytes,
/// the body ends in an error, which aborts the response (past the headers, the only
/// honest signal left).
fn counted_body(first: Option<Bytes>, rx: tokio::sync::mpsc::Receiver<Bytes>, len: u64) -> Body {
    let state = (first, rx, 0u64);
    let stream = futures_util::stream::unfold(state, move |(first, mut rx, got)| async move {
        let next = match first {
            Some(piece) => Some(piece),
            None => rx.recv().await,
        };
        match next {
            Some(b) => {
                let got = got + b.len() as u64;
                Some((Ok::<Bytes, std::io::Error>(b), (None, rx, got)))
            }
            None if got < len => Some((
                Err(std::io::Error::other("no holder could finish the read")),
                (None, rx, len),
            )),
            None => None,
        }
    });
    Body::from_stream(stream)
}

/// Gateway settings that concern objects.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Accept writes without a capability (the operator's explicit choice).
    pub open_writes: bool,
    /// The keys and revocations capability tokens are checked against.
    pub keyring: crate::keyring::Keyring,
    /// Longest pause allowed while a client sends a body (30 s).
    pub body_idle_timeout: Duration,
    /// Bytes of response bodies the gateway may hold waiting to be sent, across all
    /// requests (256 MiB); a GET that would pass it gets 503 with `Retry-After`.
    pub response_budget: Arc<tokio::sync::Semaphore>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, len: u64) -> RangeAsk {
        RangeAsk::Part(ByteRange { start, len })
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |v: &str| parse_range(Some(v), 100);
        assert_eq!(r("bytes=0-0"), part(0, 1));
        assert_eq!(r("bytes=-1"), part(99, 1));
        assert_eq!(r("bytes=5-"), part(5, 95));
        assert_eq!(r("bytes=90-200"), part(90, 10), "end clamps to the object");
        assert_eq!(
            r("bytes=-500"),
            part(0, 100),
            "suffix longer than the object"
        );
        assert_eq!(r("bytes=100-"), RangeAsk::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAsk::Unsatisfiable);
        assert_eq!(
            r("bytes=0-1,5-6"),
            RangeAsk::Whole,
            "multiple ranges: whole object"
        );
        assert_eq!(r("bytes=9-3"), RangeAsk::Whole, "invalid: ignored");
        assert_eq!(r("items=0-1"), RangeAsk::Whole);
        assert_eq!(parse_range(None, 100), RangeAsk::Whole);
        assert_eq!(parse_range(Some("bytes=0-"), 0), RangeAsk::Unsatisfiable);
    }
}
