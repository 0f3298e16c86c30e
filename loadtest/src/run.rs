//! A whole run: hold the idle connections, set up the active ones, start
//! them together, wait for them, then report and check the gates.
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::driver::{CONCURRENT_HANDSHAKES, RunContext, drive_connection};
use crate::idle::IdleConnections;
use crate::progress::ProgressLine;
use crate::protocol::message_text;
use crate::report::{IdleReport, RunReport};
use crate::run_config::RunConfig;
use crate::server_memory::MemorySampler;
use crate::stats::Recorder;

/// No connection could be set up: exit code 2, with the address and the cause.
#[derive(Debug)]
pub struct CannotConnect(pub String);

impl std::fmt::Display for CannotConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot connect to {}", self.0)
    }
}

impl std::error::Error for CannotConnect {}

pub async fn run(config: RunConfig) -> anyhow::Result<RunReport> {
    let memory = config.server_pid.map(MemorySampler::start);
    let idle = if config.idle_connections > 0 {
        eprintln!(
            "opening {} idle WebSocket connections to {}",
            config.idle_connections, config.ws_url
        );
        let idle =
            IdleConnections::open(&config.ws_url, &config.api_keys, config.idle_connections).await;
        eprintln!("holding {} idle connections", idle.held());
        if idle.held() == 0 {
            let cause = idle.first_error.clone().unwrap_or_default();
            return Err(CannotConnect(cause).into());
        }
        Some(idle)
    } else {
        None
    };

    let ctx = Arc::new(RunContext {
        text: message_text(config.message_bytes),
        stats: Mutex::new(Recorder::new(std::time::Instant::now())),
        run_id: run_id(),
        claimed: AtomicU64::new(0),
        handshakes: Semaphore::new(CONCURRENT_HANDSHAKES),
        config,
    });
    let connections = ctx.config.connections;
    let (ready_tx, mut ready) = mpsc::channel(connections as usize);
    let (start, start_rx) = watch::channel(None);
    let drivers: Vec<_> = (0..connections)
        .map(|i| {
            tokio::spawn(drive_connection(
                ctx.clone(),
                i,
                ready_tx.clone(),
                start_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);

    let (mut failures, mut first_error) = (0u32, None);
    while let Some(result) = ready.recv().await {
        if let Err(error) = result {
            failures += 1;
            first_error.get_or_insert(error);
        }
    }
    if failures == connections {
        // Dropping `start` calls the drivers off.
        let cause = first_error.map(|e| e.to_string()).unwrap_or_default();
        return Err(CannotConnect(cause).into());
    }
    if let Some(error) = &first_error {
        eprintln!(
            "warning: {failures} of {connections} connections could not be set up; first: {error}"
        );
    }

    let started = Instant::now();
    {
        let mut stats = ctx.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.restart_clock(started.into_std());
        for _ in 0..failures {
            stats.connection_error("setup_failed");
        }
    }
    let progress = ctx
        .config
        .progress
        .then(|| ProgressLine::start(ctx.clone()));
    let _ = start.send(Some(started));
    for driver in drivers {
        driver.await?;
    }
    if let Some(progress) = progress {
        progress.finish().await;
    }

    let summary = ctx
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .summary();
    let idle_report = idle.map(|idle| IdleReport {
        requested: ctx.config.idle_connections,
        held: idle.held(),
        failed: idle.failed,
        first_error: idle.first_error.clone(),
    });
    let memory = match memory {
        Some(sampler) => Some(sampler.finish().await),
        None => None,
    };
    Ok(RunReport::new(
        &ctx.config,
        failures,
        summary,
        idle_report,
        memory,
    ))
}

/// Unique enough per run: client message ids are idempotency keys that
/// never expire, so a rerun must not reuse them.
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("lt{:x}{:x}", nanos, std::process::id())
}
