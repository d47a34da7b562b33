//! Health routes of the public edge: liveness, readiness, metrics, status, and the status
//! page at `/` that draws `/v1/status` for a person.
//!
//! `/healthz` answers while the process serves; `/readyz` only once the node has joined the
//! mesh, and otherwise lists what is missing, so an orchestrator (or `devnet`) can wait on
//! it. `/metrics` is the Prometheus text of every counter the node keeps. What an operator
//! may *do* (lookups, routing, repair, revocation) is on the admin plane
//! ([`super::operator`]), not here.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::NodeContext;

/// The health and status routes of the public edge, on the node's context.
pub fn routes() -> Router<Arc<NodeContext>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/", get(page))
}

/// The status page: one self-contained HTML file (inline CSS and JS, no external assets,
/// works offline) that refreshes itself from `/v1/status`.
const STATUS_PAGE: &str = include_str!("status.html");

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STATUS_PAGE,
    )
        .into_response()
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
