//! The admin plane: what an operator may ask a node to do or reveal, on its own listener
//! (`--admin`, loopback by default), never on the public edge.
//!
//! A lookup costs the mesh RPCs and the routing table names every peer's address: neither
//! is for anyone who can reach the gateway. The public listener answers 404 for these
//! paths. `/v1/routing` lists the table; `/v1/lookup/{key}` runs a FIND_NODE and reports
//! its result and hops; `POST /v1/tokens/reload` re-reads the capability roots and the
//! revocation list (`macronode token revoke` and `token rotate` call it), so a revocation
//! holds from the next request on.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use overlay::{Key, QueryResult};
use serde_json::{Value, json};

use super::ApiError;
use crate::app::NodeContext;
use crate::objects::RepairError;

/// The admin plane's routes, on the node's context.
pub fn routes() -> Router<Arc<NodeContext>> {
    Router::new()
        .route("/v1/routing", get(routing))
        .route("/v1/lookup/{key}", get(lookup))
        .route("/v1/tokens/reload", post(reload_tokens))
        .route("/v1/repair/{id}", post(repair_one))
        .route("/v1/repair", post(repair_all))
}

fn report_json(id: &str, r: &crate::objects::RepairReport) -> Value {
    let closest: Vec<Value> = r
        .closest
        .iter()
        .map(|p| json!({"id": p.id.to_string(), "holds": p.holds, "pushed": p.pushed, "error": p.error}))
        .collect();
    json!({
        "id": id,
        "rf": r.rf,
        "copies": r.copies(),
        "local_counts": r.local_counts,
        "closest": closest,
    })
}

/// Repairs one object now: the RF closest prove or receive a copy.
async fn repair_one(
    State(ctx): State<Arc<NodeContext>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let hash = crate::store::parse_id(&id)
        .ok_or_else(|| ApiError::bad_request("bad_id", "an object id is b3:<64 hex>"))?;
    let report = ctx.objects.repair_now(hash).await.map_err(|e| match e {
        RepairError::NotHeld => {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_held", e.to_string())
        }
        RepairError::Lookup(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "dht_unavailable",
            e.to_string(),
        ),
    })?;
    Ok(Json(report_json(&crate::store::id_string(&hash), &report)).into_response())
}

/// Repairs every object this node holds (up to `REPAIR_ALL_MAX`), one at a time.
async fn repair_all(State(ctx): State<Arc<NodeContext>>) -> Response {
    let mut reports = Vec::new();
    for (hash, _) in ctx
        .objects
        .store
        .list()
        .into_iter()
        .take(crate::objects::REPAIR_ALL_MAX)
    {
        if let Ok(r) = ctx.objects.repair_now(hash).await {
            reports.push(report_json(&crate::store::id_string(&hash), &r));
        }
    }
    Json(json!({"objects": reports})).into_response()
}

/// Re-reads the capability files; a file that does not parse leaves the keys in force.
async fn reload_tokens(State(ctx): State<Arc<NodeContext>>) -> Result<Response, ApiError> {
    let keyring = ctx.gateway.keyring.clone();
    let keys = tokio::task::spawn_blocking(move || keyring.reload())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(
        revoked = keys.revoked.len(),
        previous_until = ?keys.previous.map(|p| p.1),
        "capability keys reloaded"
    );
    Ok(Json(json!({
        "revoked": keys.revoked.len(),
        "previous_root_until": keys.previous.map(|p| p.1),
    }))
    .into_response())
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
