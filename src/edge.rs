//! Starts the gateway's servers (HTTP with WebSocket and probes, gRPC) on
//! whichever backends the role opened.
use std::net::SocketAddr;
use std::sync::Arc;

use chatstream_config::Config;
use chatstream_config::tenants::TenantRegistry;
use chatstream_core::analytics::AnalyticsStore;
use chatstream_core::fanout::FanOut;
use chatstream_core::log::EventLog;
use chatstream_core::ratelimit::RateLimiter;
use chatstream_core::ratelimit::connections::ConnectionCounter;
use chatstream_core::sends::SendReservations;
use chatstream_core::store::ProjectionStore;
use chatstream_gateway::chat::ChatLimits;
use chatstream_gateway::connections::ConnectionLimits;
use chatstream_gateway::openai::ModelDirectory;
use chatstream_gateway::{ChatCore, EdgeLimits, Gateway, Readiness};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::{self, CoreBackends};
use crate::lifecycle::{bind, log_failure};

/// The backends the gateway reads and writes.
pub struct GatewayBackends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn ProjectionStore>,
    pub fanout: Arc<dyn FanOut>,
    pub rate_limiter: Arc<dyn RateLimiter>,
    pub connections: Arc<dyn ConnectionCounter>,
    /// Client message ids shared with other gateways (with Redis).
    pub send_reservations: Option<Arc<dyn SendReservations>>,
    /// What the analytics API reads.
    pub analytics: Arc<dyn AnalyticsStore>,
}

impl GatewayBackends {
    /// The gateway's own backends (rate limits, connection counts, send
    /// reservations) beside the log, store and fan-out it reads and writes.
    pub fn open(config: &Config, core: &CoreBackends) -> anyhow::Result<Self> {
        let CoreBackends {
            log,
            store,
            fanout,
            analytics,
        } = core.clone();
        Ok(Self {
            log,
            store,
            fanout,
            analytics,
            rate_limiter: backends::open_rate_limiter(config)?,
            connections: backends::open_connection_counter(config)?,
            send_reservations: backends::open_send_reservations(config)?,
        })
    }
}

/// A started gateway: where it listens, and the switch that makes it ready.
pub struct RunningGateway {
    pub http_address: SocketAddr,
    pub grpc_address: SocketAddr,
    /// Until set, chat requests are refused with a retryable error and
    /// `/ready` says not ready.
    pub readiness: Readiness,
}

/// Binds both ports (so a taken port fails startup with a clear message)
/// and serves them as tasks of `tasks` until `shutdown`.
pub async fn start(
    config: &Config,
    tenants: Arc<TenantRegistry>,
    backends: GatewayBackends,
    metrics: PrometheusHandle,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<RunningGateway> {
    let host = config.server.host.as_str();
    let http_listener = bind(host, config.server.http_port, "HTTP", "--http-port").await?;
    let grpc_listener = bind(host, config.server.grpc_port, "gRPC", "--grpc-port").await?;
    let readiness = Readiness::default();
    let mut core = ChatCore::new(
        backends.log,
        backends.store,
        backends.fanout,
        backends.rate_limiter,
        ChatLimits {
            max_message_bytes: config.limits.max_message_bytes,
            requests_per_second: config.limits.requests_per_second,
            burst: config.limits.burst,
        },
    );
    if let Some(reservations) = backends.send_reservations {
        core = core.with_send_reservations(reservations);
    }
    let core = Arc::new(core);
    tasks.spawn(
        core.refusals()
            .clone()
            .report_until(core.log().clone(), shutdown.clone()),
    );
    let gateway = Gateway {
        connections: ConnectionLimits::new(
            backends.connections,
            config.limits.max_connections,
            core.refusals().clone(),
        ),
        core,
        limits: EdgeLimits::for_max_message_bytes(largest_message_limit(config, &tenants)),
        tenants,
        models: Arc::new(ModelDirectory::new(config.models.clone())),
        analytics: backends.analytics,
        metrics: Some(metrics),
        readiness: readiness.clone(),
        shutdown: shutdown.clone(),
    };
    let running = RunningGateway {
        http_address: http_listener.local_addr()?,
        grpc_address: grpc_listener.local_addr()?,
        readiness,
    };
    tasks.spawn(log_failure(
        "HTTP server",
        chatstream_gateway::http::serve(gateway.clone(), http_listener),
    ));
    tasks.spawn(log_failure(
        "gRPC server",
        chatstream_gateway::grpc::serve(gateway, grpc_listener),
    ));
    Ok(running)
}

impl RunningGateway {
    /// The lines scripts and tests read to find the gateway.
    pub fn print_addresses(&self) {
        let (http, grpc) = (self.http_address, self.grpc_address);
        println!("  WebSocket  ws://{http}/api/v2/chat/ws");
        println!("  gRPC       {grpc}  (reflection on)");
        println!("  probes     http://{http}/health  /ready  /metrics");
    }
}

/// The WebSocket and gRPC frame limit must fit the largest message any tenant may send.
fn largest_message_limit(config: &Config, tenants: &TenantRegistry) -> usize {
    tenants
        .tenants()
        .iter()
        .filter_map(|t| t.limits.max_message_bytes)
        .fold(config.limits.max_message_bytes, usize::max)
}
