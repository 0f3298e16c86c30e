//! `chatstream gateway`: the gateway alone, as one replica of many, on the
//! shared backends (Kafka, ScyllaDB, Redis). Processors run elsewhere.
use std::sync::Arc;

use anyhow::Context;
use chatstream_config::Config;
use chatstream_config::tenants::TenantRegistry;
use chatstream_projector::ConversationProjector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::CoreBackends;
use crate::edge::GatewayBackends;
use crate::{ServeArgs, backends, edge, lifecycle, telemetry};

/// The service name in traces (unless `OTEL_SERVICE_NAME` sets one).
const SERVICE: &str = "chatstream-gateway";

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load_config(|_| {})?;
    backends::require_shared(&config, "gateway")?;
    let tenants = config.load_tenants()?.context(
        "the gateway needs a tenants file: pass --tenants or set CHATSTREAM_TENANTS_FILE",
    )?;
    let runtime = lifecycle::runtime()?;
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(&config.log_level, config.log_format, SERVICE)?
    };
    let metrics = telemetry::init_metrics()?;
    let result = runtime.block_on(serve(config, Arc::new(tenants), metrics));
    telemetry.shutdown();
    result
}

async fn serve(
    config: Config,
    tenants: Arc<TenantRegistry>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    tracing::info!(environment = %config.environment, "starting chatstream gateway");
    let core = CoreBackends::open(&config).await?;
    let backends = GatewayBackends::open(&config, &core)?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let gateway = edge::start(&config, tenants, backends, metrics, &shutdown, &tasks).await?;

    // The history clients read must include what was on the log at start.
    lifecycle::wait_until_caught_up(core.log.as_ref(), ConversationProjector::NAME).await;
    gateway.readiness.set_ready();
    println!(
        "chatstream gateway is running ({} environment)",
        config.environment
    );
    gateway.print_addresses();
    println!(
        "  event log  Kafka topic {} at {}",
        config.kafka.topic, config.kafka.bootstrap_servers
    );

    lifecycle::run_until_stopped(&config, shutdown, tasks).await;
    Ok(())
}
