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
use chatstream_core::fanout::FanOut;
use chatstream_core::log::EventLog;
use chatstream_core::store::ProjectionStore;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{Gateway, analytics, openai, ws};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .merge(openai::routes(&gateway.limits))
        .merge(analytics::routes())
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

/// Ready when startup finished and the log, the store and the fan-out answer.
async fn ready(State(gateway): State<Gateway>) -> Response {
    let core = &gateway.core;
    let mut checks = check_backends(
        core.log().as_ref(),
        core.store().as_ref(),
        core.fanout().as_ref(),
    )
    .await;
    let started = gateway.readiness.is_ready();
    checks.add("started", started, || "starting".to_owned());
    checks.into_response()
}

/// Outcome of the readiness checks, one entry per dependency.
pub struct ReadinessChecks {
    ready: bool,
    checks: serde_json::Map<String, serde_json::Value>,
}

impl ReadinessChecks {
    pub fn add(&mut self, name: &str, ok: bool, problem: impl FnOnce() -> String) {
        self.ready &= ok;
        let outcome = if ok { "ok".to_owned() } else { problem() };
        self.checks.insert(name.to_owned(), outcome.into());
    }
}

impl IntoResponse for ReadinessChecks {
    /// 200 with `status: ready`, or 503 naming what is not.
    fn into_response(self) -> Response {
        let (status, word) = if self.ready {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
        };
        (
            status,
            Json(json!({ "status": word, "checks": self.checks })),
        )
            .into_response()
    }
}

/// Pings the log, the store and the fan-out at once, each bounded by a timeout.
pub async fn check_backends(
    log: &dyn EventLog,
    store: &dyn ProjectionStore,
    fanout: &dyn FanOut,
) -> ReadinessChecks {
    let (log, store, fanout) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, log.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, store.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, fanout.ping()),
    );
    let mut checks = ReadinessChecks {
        ready: true,
        checks: serde_json::Map::new(),
    };
    checks.add("event_log", matches!(log, Ok(Ok(()))), || {
        format!("{log:?}")
    });
    checks.add("projection_store", matches!(store, Ok(Ok(()))), || {
        format!("{store:?}")
    });
    checks.add("fanout", matches!(fanout, Ok(Ok(()))), || {
        format!("{fanout:?}")
    });
    checks
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
