//! The HTTP edge of the node: a listener, a handler per connection, a cap on concurrent
//! requests, graceful shutdown (mini-redis's server, on hyper).
//!
//! Requests past the concurrency cap are answered at once with 503 and `Retry-After`
//! instead of queueing without bound; a request holds its slot until its response body is
//! sent, not just until its handler returns. A client that does not finish its request
//! headers within `header_read_timeout` is disconnected, and so is one that stops reading a
//! response for `write_stall_timeout`, so slow clients cannot pin a worker or a buffer.
//! Errors are JSON `{"code","message"}` everywhere. Every request is counted by route,
//! method and status and timed to its response head (`crate::telemetry`).
//!
//! Layout:
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/v1/status`, the status page `/`
//!   (public).
//! - [`operator`]: the admin plane on its own listener: `/v1/routing`, `/v1/lookup/{key}`.
//! - [`objects`]: `PUT /o`, `GET`/`HEAD /o/{id}`.
//! - [`mail`]: `POST /mb/{node_id}` (public, with a token; and on the admin plane), `GET
//!   /mb`, `DELETE /mb/{msg_id}` and `POST /mb/ack` (admin plane: the node's own mailbox).
//! - [`error`]: [`ApiError`], the JSON error body and its status codes.
//! - [`hold`]: response bodies that keep their slot and buffer until sent; the write stall
//!   guard.
//! - [`misses`]: the negative cache and per-client search budget for ids not held here.

pub mod admin;
pub mod error;
pub mod hold;
pub mod mail;
pub mod misses;
pub mod objects;
pub mod operator;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use error::ApiError;

/// hyper's read and write buffer cap per HTTP/1 connection.
pub const HTTP1_BUFFER_MAX: usize = 128 << 10;

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct GatewayLimits {
    /// Requests served at once; more get 503 with `Retry-After` (1,024).
    pub concurrent_requests_max: usize,
    /// Time a client has to send its request headers (10 s).
    pub header_read_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue (4,096).
    pub connections_max: usize,
    /// A connection whose client reads nothing of a response for this long is closed (30 s).
    pub write_stall_timeout: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            concurrent_requests_max: 1024,
            header_read_timeout: Duration::from_secs(10),
            connections_max: 4096,
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` flips to true, then lets requests in
/// flight finish (bounded by `grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: GatewayLimits,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.concurrent_requests_max));
    let router = router
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let slots = slots.clone();
            async move { limit_concurrency(slots, req, next).await }
        }))
        .layer(middleware::from_fn(observe));
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper pulls body pieces until its write buffer holds this much: with the pieces
        // the object layer queues, it bounds what one stalled client can make us hold.
        .max_buf_size(HTTP1_BUFFER_MAX);
    let builder = Arc::new(builder);
    let (conn_shutdown_tx, _) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let stream = hold::StallGuard::new(stream, limits.write_stall_timeout);
        // Each request learns its client's address (the per-client search budget).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(misses::ClientAddr(peer));
                req
            },
        ));
        let builder = builder.clone();
        let mut stop = conn_shutdown_tx.subscribe();
        tasks.spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow with every connection.
        while tasks.try_join_next().is_some() {}
    }
    let _ = conn_shutdown_tx.send(true);
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
}

/// Counts every request by route, method and status, and times it to its response head
/// (outermost, so requests refused for concurrency count too).
async fn observe(req: Request, next: Next) -> Response {
    let seen = crate::telemetry::HttpRequest::start(req.method(), req.uri().path());
    let response = next.run(req).await;
    seen.finish(response.status().as_u16());
    response
}

async fn limit_concurrency(slots: Arc<Semaphore>, req: Request, next: Next) -> Response {
    let Ok(permit) = slots.try_acquire_owned() else {
        metrics::counter!("rejected_total", "reason" => "concurrency").increment(1);
        return ApiError::overloaded("too many requests in flight").into_response();
    };
    // The slot is the response's until its body is sent or dropped.
    next.run(req)
        .await
        .map(|body| hold::Holding::wrap(body, vec![permit]))
}
