//! `chatstream dev`: the gateway and every processor in one process on the
//! embedded backends, with a ready-to-use tenant, so a laptop runs the
//! whole platform with no setup.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatstream_gateway::chat::ChatLimits;
use chatstream_gateway::{ChatCore, EdgeLimits, Gateway, Readiness};
use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_runtime::config::Config;
use chatstream_runtime::fanout::FanOut;
use chatstream_runtime::fanout::in_process::InProcessFanOut;
use chatstream_runtime::log::EventLog;
use chatstream_runtime::log::embedded::EmbeddedLog;
use chatstream_runtime::projector::ConversationProjector;
use chatstream_runtime::ratelimit::in_process::InProcessRateLimiter;
use chatstream_runtime::runner::{Processor, ProcessorRunner, RunnerConfig};
use chatstream_runtime::store::ProjectionStore;
use chatstream_runtime::store::embedded::EmbeddedStore;
use chatstream_runtime::tenants::{TenantRegistry, generate_api_key, hash_api_key};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{DevArgs, telemetry};

/// How long startup waits for the processors to catch up with the log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight work before giving up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
const DEV_TENANT: &str = "dev";

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(port) = args.http_port {
        config.server.http_port = port;
    }
    if let Some(port) = args.grpc_port {
        config.server.grpc_port = port;
    }
    if let Some(path) = args.tenants {
        config.tenants_file = Some(path);
    }
    telemetry::init_logging(&config.log_level, &config.log_format)?;
    let metrics = telemetry::init_metrics()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_platform(config, metrics))
}

async fn run_platform(
    config: Config,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    tracing::info!(environment = %config.environment, data_dir = %config.data_dir.display(), "starting chatstream dev");
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let (tenants_path, dev_key) = match &config.tenants_file {
        Some(path) => (path.clone(), None),
        None => {
            let (path, key) = ensure_dev_tenant(data_dir)?;
            (path, Some(key))
        }
    };
    let tenants = Arc::new(TenantRegistry::load(&tenants_path)?);

    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(data_dir, config.log.partitions).context("cannot open the event log")?,
    );
    let store: Arc<dyn ProjectionStore> =
        Arc::new(EmbeddedStore::open(data_dir).context("cannot open the projection store")?);
    let fanout: Arc<dyn FanOut> = Arc::new(InProcessFanOut::default());

    // Bind first so a taken port fails startup with a clear message.
    let host = config.server.host.as_str();
    let http_listener = bind(host, config.server.http_port, "HTTP", "--http-port").await?;
    let grpc_listener = bind(host, config.server.grpc_port, "gRPC", "--grpc-port").await?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let projector = Arc::new(ConversationProjector::new(store.clone(), fanout.clone()));
    let model = Arc::new(MockModel::new(Duration::from_millis(
        config.mock_model.token_delay_ms,
    )));
    let router = Arc::new(ModelRouter::new(
        log.clone(),
        store.clone(),
        fanout.clone(),
        model,
    ));
    spawn_processor(&tasks, log.clone(), projector, shutdown.clone());
    spawn_processor(&tasks, log.clone(), router, shutdown.clone());

    let readiness = Readiness::default();
    let gateway = Gateway {
        core: Arc::new(ChatCore::new(
            log.clone(),
            store.clone(),
            fanout.clone(),
            Arc::new(InProcessRateLimiter::new()),
            ChatLimits {
                max_message_bytes: config.limits.max_message_bytes,
                requests_per_second: config.limits.requests_per_second,
                burst: config.limits.burst,
            },
        )),
        tenants: tenants.clone(),
        metrics: Some(metrics),
        readiness: readiness.clone(),
        limits: EdgeLimits::for_max_message_bytes(largest_message_limit(&config, &tenants)),
        shutdown: shutdown.clone(),
    };
    let http_address = http_listener.local_addr()?;
    let grpc_address = grpc_listener.local_addr()?;
    tasks.spawn(log_failure(
        "HTTP server",
        chatstream_gateway::http::serve(gateway.clone(), http_listener),
    ));
    tasks.spawn(log_failure(
        "gRPC server",
        chatstream_gateway::grpc::serve(gateway, grpc_listener),
    ));

    // Clients must not see a history that the projection has not caught up with yet.
    wait_until_caught_up(log.as_ref(), ConversationProjector::NAME).await;
    readiness.set_ready();
    tasks.close();

    println!(
        "chatstream dev is running ({} environment)",
        config.environment
    );
    println!("  WebSocket  ws://{http_address}/api/v2/chat/ws");
    println!("  gRPC       {grpc_address}  (reflection on)");
    println!("  probes     http://{http_address}/health  /ready  /metrics");
    println!("  data       {}", data_dir.display());
    match dev_key {
        Some(key) => println!(
            "  API key    {key}  (tenant `{DEV_TENANT}`, also in {})",
            data_dir.join("dev-api-key").display()
        ),
        None => println!("  tenants    {}", tenants_path.display()),
    }

    wait_for_stop_signal().await;
    tracing::info!("shutting down: draining in-flight work");
    shutdown.cancel();
    if tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within {DRAIN_TIMEOUT:?}");
    }
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

/// The WebSocket and gRPC frame limit must fit the largest message any tenant may send.
fn largest_message_limit(config: &Config, tenants: &TenantRegistry) -> usize {
    tenants
        .tenants()
        .iter()
        .filter_map(|t| t.limits.max_message_bytes)
        .fold(config.limits.max_message_bytes, usize::max)
}

async fn bind(host: &str, port: u16, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port)).await.with_context(|| {
        format!(
            "cannot listen for {what} on {host}:{port} (is it in use? choose another with {flag})"
        )
    })
}

fn spawn_processor<P: Processor>(
    tasks: &TaskTracker,
    log: Arc<dyn EventLog>,
    processor: Arc<P>,
    shutdown: CancellationToken,
) {
    let name = processor.name();
    let runner = ProcessorRunner::new(log, processor, RunnerConfig::default());
    tasks.spawn(log_failure(name, runner.run(shutdown)));
}

async fn log_failure<E: std::fmt::Display>(
    what: &'static str,
    task: impl Future<Output = Result<(), E>>,
) {
    if let Err(error) = task.await {
        tracing::error!(%error, "{what} stopped with an error");
    }
}

/// Waits until `group` has committed everything that was on the log when
/// called, or the timeout passes (then it starts anyway, and says so).
async fn wait_until_caught_up(log: &dyn EventLog, group: &str) {
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    let mut targets = Vec::new();
    for partition in 0..log.partition_count() {
        match log.end_offset(partition).await {
            Ok(end) if end > 0 => targets.push((partition, end)),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, partition, "cannot read the log end"),
        }
    }
    for (partition, end) in targets {
        loop {
            match log.committed(group, partition).await {
                Ok(Some(committed)) if committed >= end => break,
                _ if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(
                        group,
                        partition,
                        "starting before {group} caught up with the log"
                    );
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

async fn wait_for_stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
