//! `chatstream dev`: the gateway and every processor in one process, on
//! the embedded backends by default, with a ready-to-use tenant, so a
//! laptop runs the whole platform with no setup. `--log kafka` keeps one
//! process but puts the log on a Kafka-protocol broker.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use chatstream_config::tenants::{TenantRegistry, generate_api_key, hash_api_key};
use chatstream_config::{Config, LogBackend};
use chatstream_projector::ConversationProjector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::CoreBackends;
use crate::edge::GatewayBackends;
use crate::processors::{ProcessorBackends, ProcessorKind};
use crate::{DevArgs, edge, lifecycle, processors, telemetry};

const DEV_TENANT: &str = "dev";

/// The service name in traces (unless `OTEL_SERVICE_NAME` sets one).
const SERVICE: &str = "chatstream";

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    let tenants = config.load_tenants()?;
    let runtime = lifecycle::runtime()?;
    let telemetry = {
        let _runtime = runtime.enter();
        telemetry::init(&config.log_level, config.log_format, SERVICE)?
    };
    let metrics = telemetry::init_metrics()?;
    let result = runtime.block_on(run_platform(config, tenants, metrics));
    telemetry.shutdown();
    result
}

/// `tenants` are the configured tenants file's, if one is configured.
async fn run_platform(
    config: Config,
    tenants: Option<TenantRegistry>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    tracing::info!(environment = %config.environment, data_dir = %config.data_dir.display(), "starting chatstream dev");
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let (tenants, dev_key) = match tenants {
        Some(tenants) => (tenants, None),
        None => {
            let (path, key) = ensure_dev_tenant(data_dir)?;
            (TenantRegistry::load(&path)?, Some(key))
        }
    };
    let tenants = Arc::new(tenants);

    let core = CoreBackends::open(&config).await?;
    let processor_backends = ProcessorBackends::open(&config, &core).await?;
    let gateway_backends = GatewayBackends::open(&config, &core)?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let gateway = edge::start(
        &config,
        tenants.clone(),
        gateway_backends,
        metrics,
        &shutdown,
        &tasks,
    )
    .await?;
    for kind in ProcessorKind::ALL {
        if let Err(error) = processors::spawn(
            kind,
            &config,
            &tenants,
            &processor_backends,
            &tasks,
            &shutdown,
        ) {
            shutdown.cancel();
            return Err(error);
        }
    }

    // Clients must not see a history that the projection has not caught up with yet.
    let log = processor_backends.log.as_ref();
    lifecycle::wait_until_caught_up(log, ConversationProjector::NAME).await;
    gateway.readiness.set_ready();

    println!(
        "chatstream dev is running ({} environment)",
        config.environment
    );
    gateway.print_addresses();
    match config.log.backend {
        LogBackend::Embedded => println!("  data       {}", data_dir.display()),
        LogBackend::Kafka => println!(
            "  event log  Kafka topic {} at {}",
            config.kafka.topic, config.kafka.bootstrap_servers
        ),
    }
    match (dev_key, &config.tenants_file) {
        (Some(key), _) => println!(
            "  API key    {key}  (tenant `{DEV_TENANT}`, also in {})",
            data_dir.join("dev-api-key").display()
        ),
        (None, Some(path)) => println!("  tenants    {}", path.display()),
        (None, None) => {}
    }

    lifecycle::run_until_stopped(&config, shutdown, tasks).await;
    Ok(())
}

/// The dev tenant's key lives in `<data-dir>/dev-api-key` so scripts can
/// read it and a restart keeps it; the tenants file holds only its hash.
fn ensure_dev_tenant(data_dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    let key_path = data_dir.join("dev-api-key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(key) if !key.trim().is_empty() => key.trim().to_owned(),
        _ => {
            let key = generate_api_key();
            write_private(&key_path, &format!("{key}\n"))?;
            key
        }
    };
    let tenants_path = data_dir.join("tenants.yaml");
    let tenants = format!(
        "# Written by `chatstream dev` for local use. API keys are stored as SHA-256 hashes.\n\
         tenants:\n  - id: {DEV_TENANT}\n    name: Local development\n    api_keys:\n      - id: dev\n        sha256: {}\n",
        hash_api_key(&key)
    );
    std::fs::write(&tenants_path, tenants)
        .with_context(|| format!("cannot write {}", tenants_path.display()))?;
    Ok((tenants_path, key))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
