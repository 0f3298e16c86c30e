//! What every long-running role shares: binding ports, running processors
//! as tracked tasks, waiting for a stop signal and draining.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatstream_config::Config;
use chatstream_core::deadletter::DeadLetterSink;
use chatstream_core::log::EventLog;
use chatstream_core::runner::{Processor, ProcessorRunner, RunnerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long startup waits for a processor to catch up with the log.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight work before giving up.
/// Time to stop after the processors drained (commit, leave the group,
/// close connections), on top of `processing.drain_timeout_ms`.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// A multi-threaded Tokio runtime for a role's `run`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub async fn bind(host: &str, port: u16, what: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((host, port)).await.with_context(|| {
        format!(
            "cannot listen for {what} on {host}:{port} (is it in use? choose another with {flag})"
        )
    })
}

pub fn spawn_processor<P: Processor>(
    tasks: &TaskTracker,
    config: &Config,
    log: Arc<dyn EventLog>,
    processor: Arc<P>,
    dead_letters: Arc<dyn DeadLetterSink>,
    shutdown: CancellationToken,
) {
    let name = processor.name();
    let runner =
        ProcessorRunner::new(log, processor, runner_config(config)).with_dead_letters(dead_letters);
    tasks.spawn(log_failure(name, runner.run(shutdown)));
}

/// The runner's bounds from the `processing` section; the rest keeps the
/// runner's defaults.
fn runner_config(config: &Config) -> RunnerConfig {
    let processing = &config.processing;
    let buffered = processing.max_buffered_per_partition as usize;
    RunnerConfig {
        max_in_flight: processing.max_in_flight as usize,
        max_in_flight_per_partition: processing.max_in_flight_per_partition as usize,
        max_in_flight_per_tenant: processing.max_in_flight_per_tenant as usize,
        max_buffered_per_partition: buffered,
        resume_below: buffered.div_ceil(2),
        drain_timeout: processing.drain_timeout(),
        ..RunnerConfig::default()
    }
}

pub async fn log_failure<E: std::fmt::Display>(
    what: &'static str,
    task: impl Future<Output = Result<(), E>>,
) {
    if let Err(error) = task.await {
        tracing::error!(%error, "{what} stopped with an error");
    }
}

/// Waits until `group` has committed everything that was on the log when
/// called, or the timeout passes (then it goes on anyway, and says so).
pub async fn wait_until_caught_up(log: &dyn EventLog, group: &str) {
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
                        "going on before {group} caught up with the log"
                    );
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Blocks until SIGTERM or Ctrl-C, then cancels `shutdown` and waits for
/// the tracked tasks to finish their in-flight work (the processors get
/// `processing.drain_timeout_ms`, then a margin to commit and leave).
pub async fn run_until_stopped(config: &Config, shutdown: CancellationToken, tasks: TaskTracker) {
    tasks.close();
    wait_for_stop_signal().await;
    tracing::info!("shutting down: draining in-flight work");
    shutdown.cancel();
    let deadline = config.processing.drain_timeout() + STOP_MARGIN;
    if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop within {deadline:?}");
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
