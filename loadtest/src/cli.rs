//! Command-line flags, checked and turned into the `RunConfig` the rest of
//! the tool works from. Anything wrong here is a usage error (exit 2),
//! reported before a single connection is opened.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::gate::Thresholds;
use crate::kafka_client::KafkaTarget;
use crate::run_config::{LoadMode, RunConfig, Transport, WaitFor};
use crate::stats::Metric;

/// Where `chatstream dev` writes the key of its ready-made tenant.
pub const DEFAULT_API_KEY_FILE: &str = "chatstream-data/dev-api-key";

#[derive(Parser, Debug)]
#[command(
    name = "chatstream-loadtest",
    version,
    about = "Drives a chatstream gateway with many tenants and connections, measures ack latency, \
             time to first token and completion latency, and gates on SLO thresholds.",
    after_help = "\
Transports: WebSocket (`--transport ws`), gRPC `Converse` streams (`--transport grpc`) and
the OpenAI-compatible HTTP API (`--transport openai`: streamed `POST /v1/chat/completions`;
ack = response headers, first token = first content chunk, completion = `[DONE]`).
Baseline: `--transport kafka` produces chatstream's user-message events straight to a topic
with the producer settings of chatstream's Kafka log (idempotent, acks=all, murmur2 key
partitioning); an ack is the broker's delivery report.

Modes:
  open loop    --rate N: N messages/s in total on a fixed schedule; latency counts from the
               *scheduled* send time, so a stalled server cannot hide its latency
               (no coordinated omission).
  closed loop  (default) each connection keeps --concurrency messages in flight and sends the
               next one after an ack (--wait-for ack) or the reply (--wait-for completion).

Exit codes: 0 all gates passed, 1 internal error, 2 bad arguments or cannot connect,
3 an SLO gate was breached.

Against `chatstream dev` from the repository root (it writes chatstream-data/dev-api-key):
  chatstream-loadtest --connections 50 --duration 10s --max-p99-ms 20"
)]
pub struct Cli {
    /// Protocol to drive the gateway with.
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,

    /// WebSocket endpoint (for --transport ws).
    #[arg(long, default_value = "ws://127.0.0.1:8000/api/v2/chat/ws")]
    pub ws_url: String,

    /// gRPC address, host:port or http://host:port (for --transport grpc).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: String,

    /// Root of the OpenAI-compatible API (for --transport openai).
    #[arg(long, default_value = "http://127.0.0.1:8000/v1")]
    pub openai_url: String,

    /// The `model` of every request (for --transport openai): `mock` is the
    /// built-in model of `chatstream dev`; other servers need a name they serve.
    #[arg(long, value_name = "NAME", default_value = "mock")]
    pub openai_model: String,

    /// Kafka brokers, host:port[,host:port] (for --transport kafka).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_bootstrap_servers: String,

    /// The topic to produce to (for --transport kafka; it must exist).
    #[arg(long)]
    pub kafka_topic: Option<String>,

    /// Tenant id to key records by, as chatstream does (for --transport
    /// kafka); repeat for several. Default `dev`, the tenant of `chatstream dev`.
    #[arg(long = "kafka-tenant", value_name = "ID")]
    pub kafka_tenants: Vec<String>,

    /// API key; repeat for several tenants. Connections take the keys in turn.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,

    /// File with API keys, one per line. Default when no --api-key is given:
    /// chatstream-data/dev-api-key (written by `chatstream dev`).
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Connections sending messages, each with its own conversation.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Open loop: total messages per second over all connections.
    #[arg(long, value_name = "MSGS_PER_S", conflicts_with_all = ["concurrency", "wait_for"])]
    pub rate: Option<f64>,

    /// Closed loop: messages in flight per connection.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,

    /// Closed loop: what frees a slot for the next message.
    #[arg(long, value_enum)]
    pub wait_for: Option<WaitFor>,

    /// How long to send, e.g. 30s, 500ms, 2m (default 10s unless --messages is given).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many messages in total.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: Option<u64>,

    /// Open loop: the rate climbs linearly from 0 over this period.
    /// Closed loop: connections start one after another over this period.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub ramp_up: Duration,

    /// Size of each message's text in bytes (words, so the mock model streams
    /// a token per word).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16_777_216))]
    pub message_bytes: u64,

    /// Measure acks only: do not subscribe, ignore replies (also what the
    /// ws-echo-baseline server supports).
    #[arg(long)]
    pub ack_only: bool,

    /// Send messages without a `client_message_id` (idempotency key). Real
    /// clients should send one; this shows what the gateway's idempotency
    /// bookkeeping costs.
    #[arg(long)]
    pub no_client_message_id: bool,

    /// A message with no ack (or no reply) after this long counts as a timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Also hold this many idle, authenticated WebSocket connections for the
    /// whole run (raise `ulimit -n` first).
    #[arg(long, default_value_t = 0)]
    pub idle_connections: u32,

    /// Sample this process's resident memory (/proc/PID/status) once a second
    /// and report the most it held.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,

    /// Render latency over time and the percentile distribution as SVG here.
    #[arg(long, value_name = "FILE")]
    pub plot_out: Option<PathBuf>,

    /// A name for this run, shown in the table, the JSON and the plot.
    #[arg(long)]
    pub label: Option<String>,

    /// Fail (exit 3) when more than this fraction of messages failed, e.g. 0.01.
    #[arg(long, value_name = "FRACTION")]
    pub max_error_rate: Option<f64>,

    /// Fail (exit 3) when the gated latency's p50 exceeds this, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p50_ms: Option<f64>,

    /// Fail (exit 3) when the gated latency's p99 exceeds this, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p99_ms: Option<f64>,

    /// Fail (exit 3) when the gated latency's p99.9 exceeds this, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub max_p999_ms: Option<f64>,

    /// Which latency the --max-p*-ms gates apply to.
    #[arg(long, value_enum, default_value_t = Metric::Ack)]
    pub gate_metric: Metric,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

impl Cli {
    pub fn into_config(self) -> anyhow::Result<RunConfig> {
        let api_keys = match self.transport {
            // The producer talks to the broker, not to a gateway.
            Transport::Kafka if self.api_keys.is_empty() => vec!["unused".to_owned()],
            _ => load_api_keys(&self.api_keys, self.api_key_file.as_deref())?,
        };
        let kafka = match (self.transport, self.kafka_topic) {
            (Transport::Kafka, None) => bail!("--transport kafka needs --kafka-topic"),
            (Transport::Kafka, Some(topic)) if topic.trim().is_empty() => {
                bail!("--kafka-topic is empty")
            }
            (Transport::Kafka, Some(topic)) => Some(KafkaTarget {
                bootstrap_servers: self.kafka_bootstrap_servers.clone(),
                topic,
                tenants: if self.kafka_tenants.is_empty() {
                    vec!["dev".to_owned()]
                } else {
                    self.kafka_tenants.clone()
                },
            }),
            _ => None,
        };
        if self.transport == Transport::Openai && self.openai_model.trim().is_empty() {
            bail!("--openai-model is empty");
        }
        if self.transport == Transport::Kafka && self.idle_connections > 0 {
            bail!(
                "--idle-connections holds WebSocket connections; it needs a gateway, not --transport kafka"
            );
        }
        // A producer gets delivery reports, never replies.
        let ack_only = self.ack_only || self.transport == Transport::Kafka;
        let mode = match self.rate {
            Some(rate) if !(rate.is_finite() && rate > 0.0) => {
                bail!("--rate must be a positive number of messages per second, got {rate}")
            }
            Some(rate) => LoadMode::Open { rate },
            None => LoadMode::Closed {
                concurrency: self.concurrency.unwrap_or(1),
                wait_for: self.wait_for.unwrap_or(WaitFor::Ack),
            },
        };
        if ack_only
            && matches!(
                mode,
                LoadMode::Closed {
                    wait_for: WaitFor::Completion,
                    ..
                }
            )
        {
            bail!(
                "--wait-for completion needs replies; it cannot be combined with --ack-only \
                 (nor with --transport kafka, which only gets delivery reports)"
            );
        }
        if ack_only && self.gate_metric != Metric::Ack {
            bail!(
                "--gate-metric {} needs replies; it cannot be combined with --ack-only",
                self.gate_metric.label()
            );
        }
        let duration = match (self.duration, self.messages) {
            (None, None) => Some(Duration::from_secs(10)),
            (duration, _) => duration,
        };
        if duration.is_some_and(|d| d.is_zero()) {
            bail!("--duration must be longer than 0");
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be longer than 0");
        }
        let thresholds = Thresholds {
            metric: self.gate_metric,
            max_error_rate: self.max_error_rate,
            max_p50_ms: self.max_p50_ms,
            max_p99_ms: self.max_p99_ms,
            max_p999_ms: self.max_p999_ms,
        };
        thresholds.validate()?;
        let target = match self.transport {
            Transport::Ws => self.ws_url.clone(),
            Transport::Grpc if self.grpc_addr.contains("://") => self.grpc_addr.clone(),
            Transport::Grpc => format!("http://{}", self.grpc_addr),
            Transport::Openai => self.openai_url.clone(),
            Transport::Kafka => self.kafka_bootstrap_servers.clone(),
        };
        let label = self.label.unwrap_or_else(|| {
            let mode = match mode {
                LoadMode::Open { rate } => format!("open loop {rate} msg/s"),
                LoadMode::Closed { concurrency, .. } => {
                    format!("closed loop, {concurrency} in flight per connection")
                }
            };
            format!(
                "{} x{} {mode}",
                match self.transport {
                    Transport::Ws => "WebSocket",
                    Transport::Grpc => "gRPC",
                    Transport::Openai => "OpenAI HTTP",
                    Transport::Kafka => "Kafka producer",
                },
                self.connections
            )
        });
        Ok(RunConfig {
            transport: self.transport,
            target,
            ws_url: self.ws_url,
            openai_model: self.openai_model,
            kafka,
            api_keys,
            connections: self.connections,
            mode,
            duration,
            messages: self.messages,
            ramp_up: self.ramp_up,
            message_bytes: self.message_bytes as usize,
            ack_only,
            client_message_ids: !self.no_client_message_id,
            timeout: self.timeout,
            idle_connections: self.idle_connections,
            server_pid: self.server_pid,
            json_out: self.json_out,
            plot_out: self.plot_out,
            label,
            thresholds,
            progress: !self.quiet,
        })
    }
}

/// Keys from `--api-key`, plus the key file when one is named; the default
/// file only when no key was given on the command line.
fn load_api_keys(keys: &[String], file: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let mut all: Vec<String> = keys
        .iter()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    let file = match file {
        Some(file) => Some(file.to_owned()),
        None if all.is_empty() => Some(PathBuf::from(DEFAULT_API_KEY_FILE)),
        None => None,
    };
    if let Some(file) = file {
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read API keys from {} (pass --api-key KEY, or --api-key-file FILE; \
                 `chatstream dev` writes chatstream-data/dev-api-key)",
                file.display()
            )
        })?;
        all.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        if all.is_empty() {
            bail!("{} holds no API key", file.display());
        }
    }
    Ok(all)
}

/// `250ms`, `10s`, `2m`, `1h`, or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    fn config(args: &[&str]) -> anyhow::Result<RunConfig> {
        let mut argv = vec!["chatstream-loadtest", "--api-key", "cs_test"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)?.into_config()
    }

    #[test]
    fn rate_selects_open_loop_and_defaults_to_closed() {
        let open = config(&["--rate", "500"]).unwrap();
        assert_eq!(open.mode, LoadMode::Open { rate: 500.0 });
        let closed = config(&[]).unwrap();
        assert_eq!(
            closed.mode,
            LoadMode::Closed {
                concurrency: 1,
                wait_for: WaitFor::Ack
            }
        );
        assert_eq!(closed.duration, Some(Duration::from_secs(10)));
        assert!(config(&["--rate", "5", "--concurrency", "2"]).is_err());
        assert!(config(&["--rate", "-1"]).is_err());
    }

    #[test]
    fn messages_alone_means_no_time_limit() {
        let run = config(&["--messages", "100"]).unwrap();
        assert_eq!(run.duration, None);
        assert_eq!(run.messages, Some(100));
    }

    #[test]
    fn grpc_address_becomes_an_endpoint_url() {
        let run = config(&["--transport", "grpc", "--grpc-addr", "10.0.0.1:9"]).unwrap();
        assert_eq!(run.target, "http://10.0.0.1:9");
    }

    #[test]
    fn replies_cannot_be_gated_without_subscribing() {
        assert!(config(&["--ack-only", "--gate-metric", "ttft"]).is_err());
        assert!(config(&["--ack-only", "--wait-for", "completion"]).is_err());
    }

    #[test]
    fn kafka_needs_a_topic_and_measures_delivery_reports_only() {
        let argv = ["x", "--transport", "kafka", "--kafka-topic", "bench"];
        let run = Cli::try_parse_from(argv).unwrap().into_config().unwrap();
        assert!(run.ack_only, "a producer gets no replies");
        assert_eq!(run.kafka.as_ref().map(|k| k.topic.as_str()), Some("bench"));
        assert!(config(&["--transport", "kafka"]).is_err());
        let waits = [
            "--transport",
            "kafka",
            "--kafka-topic",
            "t",
            "--wait-for",
            "completion",
        ];
        assert!(config(&waits).is_err());
    }

    #[test]
    fn openai_targets_the_api_root() {
        let run = config(&["--transport", "openai", "--openai-url", "http://h:1/v1"]).unwrap();
        assert_eq!(run.target, "http://h:1/v1");
        assert!(!run.ack_only);
    }

    #[test]
    fn openai_asks_for_the_mock_unless_a_model_is_named() {
        let run = config(&["--transport", "openai"]).unwrap();
        assert_eq!(run.openai_model, "mock");
        let run = config(&["--transport", "openai", "--openai-model", "gpt-x"]).unwrap();
        assert_eq!(run.openai_model, "gpt-x");
        assert!(config(&["--transport", "openai", "--openai-model", " "]).is_err());
    }

    #[test]
    fn missing_key_file_names_the_file() {
        let error = Cli::try_parse_from(["x", "--api-key-file", "/nonexistent/keys"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(format!("{error:#}").contains("/nonexistent/keys"));
    }
}
