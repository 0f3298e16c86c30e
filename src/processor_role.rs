//! `chatstream processor <kind>`: one processor kind alone, as one replica
//! of its consumer group, on the shared backends. Partitions are spread
//! over the group's replicas, so adding replicas (up to the partition
//! count) adds throughput. Serves probes and metrics on its HTTP port.
use chatstream_config::Config;
use chatstream_config::tenants::TenantRegistry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::CoreBackends;
use crate::processors::{ProcessorBackends, ProcessorKind};
use crate::{ProcessorArgs, backends, lifecycle, probes, processors, telemetry};

pub fn run(args: ProcessorArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    backends::require_shared(&config, "processor")?;
    // Without a tenants file there are no tenant policies or MCP servers.
    let tenants = if args.kind.reads_tenants() {
        config.load_tenants()?.unwrap_or_default()
    } else {
        TenantRegistry::default()
    };
    let runtime = lifecycle::runtime()?;
    let telemetry = {
        let _runtime = runtime.enter();
        // The service name in traces (unless `OTEL_SERVICE_NAME` sets one).
        let service = format!("chatstream-{}", args.kind.group());
        telemetry::init(&config.log_level, config.log_format, &service)?
    };
    let metrics = telemetry::init_metrics()?;
    let result = runtime.block_on(serve(args.kind, config, tenants, metrics));
    telemetry.shutdown();
    result
}

async fn serve(
    kind: ProcessorKind,
    config: Config,
    tenants: TenantRegistry,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let group = kind.group();
    tracing::info!(processor = group, environment = %config.environment, "starting chatstream processor");
    let core = CoreBackends::open(&config).await?;
    let backends = ProcessorBackends::open(&config, &core).await?;
    let host = config.server.host.as_str();
    let listener = lifecycle::bind(host, config.server.http_port, "probes", "--http-port").await?;
    let probes_address = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    tasks.spawn(lifecycle::log_failure(
        "probe server",
        probes::serve(listener, backends.clone(), metrics, shutdown.clone()),
    ));
    if let Err(error) = processors::spawn(kind, &config, &tenants, &backends, &tasks, &shutdown) {
        shutdown.cancel();
        return Err(error);
    }

    println!(
        "chatstream processor {group} is running ({} environment)",
        config.environment
    );
    println!("  probes     http://{probes_address}/health  /ready  /metrics");
    println!(
        "  event log  Kafka topic {} at {}, consumer group {group}",
        config.kafka.topic, config.kafka.bootstrap_servers
    );

    lifecycle::run_until_stopped(&config, shutdown, tasks).await;
    Ok(())
}
