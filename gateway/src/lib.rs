//! The gateway: authenticates clients, validates what they send, appends it
//! to the log and streams back what the processors produce. The edges
//! (WebSocket, gRPC, OpenAI-compatible HTTP) convert their wire format into
//! calls on one `ChatCore`; nothing below the edge knows the protocol.

pub mod analytics;
pub mod chat;
pub mod command;
pub mod error;
pub mod grpc;
pub mod http;
pub mod openai;
mod session;
pub mod traces;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use chatstream_config::tenants::TenantRegistry;
use chatstream_core::analytics::AnalyticsStore;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use chat::ChatCore;
/// Connection counts are part of admission; re-exported at the path the
/// binary wires them by.
pub use chat::admission::connections;

/// Everything the edges share.
#[derive(Clone)]
pub struct Gateway {
    pub core: Arc<ChatCore>,
    pub tenants: Arc<TenantRegistry>,
    /// Renders `/metrics`; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    pub readiness: Readiness,
    pub limits: EdgeLimits,
    /// Each tenant's maximum of open connections.
    pub connections: connections::ConnectionLimits,
    /// The models each tenant may ask for by name (OpenAI-compatible API).
    pub models: Arc<openai::ModelDirectory>,
    /// The analytics projection the analytics API reads.
    pub analytics: Arc<dyn AnalyticsStore>,
    /// Cancelled when the process shuts down: connections close with "going away".
    pub shutdown: CancellationToken,
}

#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Largest WebSocket frame or gRPC message accepted at all; bigger ones
    /// close the connection (WebSocket 1009) or fail the call.
    pub max_frame_bytes: usize,
    pub max_subscriptions_per_connection: usize,
    /// How long a request that waits for the assistant's reply (the
    /// OpenAI-compatible HTTP API) waits for it, or between two parts of a
    /// streamed reply, before answering 504.
    pub reply_timeout: Duration,
}

impl EdgeLimits {
    /// Room for a `max_message_bytes` text plus JSON escaping and envelope.
    pub fn for_max_message_bytes(max_message_bytes: usize) -> Self {
        Self {
            max_frame_bytes: max_message_bytes
                .saturating_mul(2)
                .saturating_add(64 * 1024),
            max_subscriptions_per_connection: 100,
            reply_timeout: Duration::from_secs(60),
        }
    }
}

/// Set once the process has finished starting (processors caught up);
/// until then the chat endpoints refuse with a retryable error.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<watch::Sender<bool>>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(watch::channel(false).0))
    }
}

impl Readiness {
    pub fn set_ready(&self) {
        self.0.send_replace(true);
    }

    pub fn is_ready(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait_ready(&self) {
        let mut ready = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = ready.wait_for(|ready| *ready).await;
    }
}
