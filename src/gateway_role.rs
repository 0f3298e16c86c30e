//! `chatstream gateway`: the gateway alone, as one replica of many, on the
//! shared backends (Kafka, ScyllaDB, Redis). Processors run elsewhere.
use anyhow::Context;
use chatstream_config::Config;
use chatstream_projector::ConversationProjector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::edge::GatewayBackends;
use crate::{ServeArgs, backends, edge, lifecycle, telemetry};

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    backends::require_shared(&config, "gateway")?;
    telemetry::init_logging(&config.log_level, &config.log_format)?;
    let metrics = telemetry::init_metrics()?;
    lifecycle::runtime()?.block_on(serve(config, metrics))
}

async fn serve(
    config: Config,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    tracing::info!(environment = %config.environment, "starting chatstream gateway");
    let tenants_path = config.tenants_file.clone().context(
        "the gateway needs a tenants file: pass --tenants or set CHATSTREAM_TENANTS_FILE",
    )?;
    let backends = GatewayBackends {
        log: backends::open_log(&config, &config.data_dir).await?,
        store: backends::open_store(&config, &config.data_dir).await?,
        fanout: backends::open_fanout(&config).await?,
        rate_limiter: backends::open_rate_limiter(&config)?,
        connections: backends::open_connection_counter(&config)?,
        send_reservations: backends::open_send_reservations(&config)?,
    };
    let log = backends.log.clone();
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let gateway = edge::start(&config, &tenants_path, backends, metrics, &shutdown, &tasks).await?;

    // The history clients read must include what was on the log at start.
    lifecycle::wait_until_caught_up(log.as_ref(), ConversationProjector::NAME).await;
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

    lifecycle::run_until_stopped(shutdown, tasks).await;
    Ok(())
}
