//! The results of a run: the table printed at the end and the JSON file.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::gate::{Breach, Thresholds};
use crate::run_config::{LoadMode, RunConfig, Transport};
use crate::server_memory::MemoryReport;
use crate::stats::Metric;
use crate::stats::{LatencySummary, Summary};

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub label: String,
    pub transport: Transport,
    pub target: String,
    pub mode: LoadMode,
    pub connections: u32,
    /// Distinct API keys (tenants or keys of one tenant) the connections used.
    pub api_keys: usize,
    pub message_bytes: usize,
    pub ack_only: bool,
    pub client_message_ids: bool,
    pub duration_s: Option<f64>,
    pub messages: Option<u64>,
    pub ramp_up_s: f64,
    pub timeout_s: f64,
    /// Connections that could not be set up before the start.
    pub setup_failures: u32,
    #[serde(flatten)]
    pub summary: Summary,
    pub idle_connections: Option<IdleReport>,
    pub server_memory: Option<MemoryReport>,
    pub gates: GateReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    pub requested: u32,
    pub held: usize,
    pub failed: u32,
    pub first_error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GateReport {
    pub thresholds: Thresholds,
    pub passed: bool,
    pub breaches: Vec<Breach>,
    /// The breaches as sentences, as printed.
    pub messages: Vec<String>,
}

impl RunReport {
    pub fn new(
        config: &RunConfig,
        setup_failures: u32,
        summary: Summary,
        idle_connections: Option<IdleReport>,
        server_memory: Option<MemoryReport>,
    ) -> Self {
        let breaches = config.thresholds.evaluate(&summary);
        Self {
            label: config.label.clone(),
            transport: config.transport,
            target: config.target.clone(),
            mode: config.mode,
            connections: config.connections,
            api_keys: config.api_keys.len(),
            message_bytes: config.message_bytes,
            ack_only: config.ack_only,
            client_message_ids: config.client_message_ids,
            duration_s: config.duration.map(|d| d.as_secs_f64()),
            messages: config.messages,
            ramp_up_s: config.ramp_up.as_secs_f64(),
            timeout_s: config.timeout.as_secs_f64(),
            setup_failures,
            summary,
            idle_connections,
            server_memory,
            gates: GateReport {
                thresholds: config.thresholds,
                passed: breaches.is_empty(),
                messages: breaches.iter().map(ToString::to_string).collect(),
                breaches,
            },
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("cannot encode the report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The human-readable summary printed at the end of a run.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(out, "\n{}  ({})", self.label, self.target);
        let rate = s
            .error_rate
            .map_or("n/a".to_owned(), |r| format!("{:.3}%", r * 100.0));
        let _ = writeln!(
            out,
            "  messages    attempted {}  sent {}  acked {}  replied {}  failed {} ({rate})",
            s.attempted, s.sent, s.acked, s.replied, s.failed
        );
        let _ = writeln!(
            out,
            "  throughput  {:.1} acks/s, {:.1} replies/s (over {:.2} s)",
            s.throughput.acked_per_s, s.throughput.replied_per_s, s.throughput.measured_over_s
        );
        let _ = writeln!(
            out,
            "\n  {:<20}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "count", "mean", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (metric, name) in [
            (Metric::Ack, "ack"),
            (Metric::Ttft, "first token"),
            (Metric::Completion, "completion"),
        ] {
            match s.latency_ms.get(metric) {
                Some(l) => {
                    let _ = writeln!(out, "  {name:<20}{}", latency_row(l));
                }
                None => {
                    let _ = writeln!(out, "  {name:<20}{:>9}", "-");
                }
            }
        }
        if s.errors_by_kind.is_empty() {
            let _ = writeln!(out, "\n  errors      none");
        } else {
            let _ = writeln!(out, "\n  errors by kind");
            for (kind, count) in &s.errors_by_kind {
                let _ = writeln!(out, "    {kind:<36}{count:>9}");
            }
        }
        if self.setup_failures > 0 {
            let _ = writeln!(
                out,
                "  setup       {} of {} connections could not be set up",
                self.setup_failures, self.connections
            );
        }
        if let Some(idle) = &self.idle_connections {
            let _ = writeln!(
                out,
                "  idle        {} of {} idle WebSocket connections held ({} failed{})",
                idle.held,
                idle.requested,
                idle.failed,
                idle.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(", first: {e}"))
            );
        }
        if let Some(memory) = &self.server_memory {
            let _ = writeln!(
                out,
                "  server      pid {}: RSS at start {}, peak RSS {}, VmHWM {}{}",
                memory.pid,
                mib(memory.rss_at_start_bytes),
                mib(memory.peak_rss_bytes),
                mib(memory.vm_hwm_bytes),
                memory
                    .error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" ({e})"))
            );
        }
        let metric = self.gates.thresholds.metric.label();
        if !self.gates.thresholds.any() {
            let _ = writeln!(out, "  SLO gates   none given");
        } else if self.gates.passed {
            let _ = writeln!(out, "  SLO gates   passed (latency gates on {metric})");
        } else {
            let _ = writeln!(out, "  SLO gates   FAILED (latency gates on {metric})");
            for message in &self.gates.messages {
                let _ = writeln!(out, "    {message}");
            }
        }
        out
    }
}

fn latency_row(l: &LatencySummary) -> String {
    format!(
        "{:>9}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
        l.count, l.mean, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
    )
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}
