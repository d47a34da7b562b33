//! Admin routes: liveness, readiness, metrics, status.
//!
//! `/healthz` answers while the process serves; `/readyz` only once the node has joined the
//! mesh, and otherwise lists what is missing, so an orchestrator (or `devnet`) can wait on
//! it. `/metrics` is the Prometheus text of every counter the node keeps. `/v1/routing` and
//! `/v1/lookup/{key}` let an operator (and the mesh tests) see the DHT from this node.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use overlay::{Key, QueryResult};
use serde_json::{Value, json};

use super::ApiError;
use crate::app::NodeContext;

/// The admin routes, on the node's context.
pub fn routes() -> Router<Arc<NodeContext>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/routing", get(routing))
        .route("/v1/lookup/{key}", get(lookup))
}

async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

async fn readyz(State(ctx): State<Arc<NodeContext>>) -> Response {
    let missing = ctx.readiness_gaps();
    if missing.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "missing": missing})),
        )
            .into_response()
    }
}

async fn metrics(State(ctx): State<Arc<NodeContext>>) -> Response {
    ctx.publish_gauges();
    let body = ctx.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn status(State(ctx): State<Arc<NodeContext>>) -> Response {
    Json(ctx.status_json()).into_response()
}

/// The routing table: every contact's id and address.
async fn routing(State(ctx): State<Arc<NodeContext>>) -> Result<Response, ApiError> {
    let peers = ctx
        .dht
        .routing_table()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let list: Vec<Value> = peers
        .iter()
        .map(|p| json!({"id": p.id.to_string(), "addr": p.addr.to_string()}))
        .collect();
    Ok(Json(json!({"peers": list})).into_response())
}

/// Runs an iterative FIND_NODE for a 64-hex-digit key and reports what it found and how.
async fn lookup(
    State(ctx): State<Arc<NodeContext>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(&key, &mut k)
        .map_err(|_| ApiError::bad_request("bad_key", "a key is 64 hex digits"))?;
    let out = ctx
        .dht
        .find_node(Key(k))
        .await
        .map_err(|e| ApiError::overloaded(e.to_string()))?;
    let closest: Vec<String> = match &out.result {
        QueryResult::FindNode { closest } => closest.iter().map(|p| p.id.to_string()).collect(),
        _ => Vec::new(),
    };
    Ok(Json(json!({
        "closest": closest,
        "hops": out.stats.hops,
        "rpcs": out.stats.rpcs,
        "timeouts": out.stats.timeouts,
        "duration_ms": out.stats.duration.as_secs_f64() * 1000.0,
    }))
    .into_response())
}
