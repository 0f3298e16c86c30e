//! Health, readiness and metrics for a process without the gateway's edge
//! (a processor replica), so orchestrators probe every role the same way.
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chatstream_gateway::http::check_backends;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::processors::ProcessorBackends;

#[derive(Clone)]
struct Probes {
    backends: ProcessorBackends,
    metrics: PrometheusHandle,
}

pub async fn serve(
    listener: TcpListener,
    backends: ProcessorBackends,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(Probes { backends, metrics });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Ready when the log, the store and the fan-out all answer.
async fn ready(State(probes): State<Probes>) -> Response {
    let ProcessorBackends {
        log, store, fanout, ..
    } = &probes.backends;
    check_backends(log.as_ref(), store.as_ref(), fanout.as_ref())
        .await
        .into_response()
}

async fn render_metrics(State(probes): State<Probes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        probes.metrics.render(),
    )
        .into_response()
}
