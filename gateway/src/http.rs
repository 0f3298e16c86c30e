//! The HTTP edge: the WebSocket upgrade route plus the operational probes
//! (`/health`, `/ready`, `/metrics`), which carry no tenant data and need
//! no API key so orchestrators and scrapers can reach them.
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{Gateway, ws};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v2/chat/ws", get(ws::upgrade))
        .fallback(not_found)
        .with_state(gateway)
}

/// Serves HTTP on `listener` until the gateway shuts down.
pub async fn serve(gateway: Gateway, listener: TcpListener) -> std::io::Result<()> {
    let shutdown = gateway.shutdown.clone();
    // Acks and deltas are small frames: send them now, not after Nagle's delay.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when startup finished and the log and the store answer.
async fn ready(State(gateway): State<Gateway>) -> Response {
    let log = tokio::time::timeout(PROBE_TIMEOUT, gateway.core.log().ping()).await;
    let store = tokio::time::timeout(PROBE_TIMEOUT, gateway.core.store().ping()).await;
    let describe = |ok: bool, error: String| if ok { "ok".to_owned() } else { error };
    let log_ok = matches!(log, Ok(Ok(())));
    let store_ok = matches!(store, Ok(Ok(())));
    let started = gateway.readiness.is_ready();
    let body = json!({
        "status": if log_ok && store_ok && started { "ready" } else { "not_ready" },
        "checks": {
            "started": if started { "ok" } else { "starting" },
            "event_log": describe(log_ok, format!("{log:?}")),
            "projection_store": describe(store_ok, format!("{store:?}")),
        }
    });
    let status = if log_ok && store_ok && started {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    match &gateway.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not_found" }))).into_response()
}
