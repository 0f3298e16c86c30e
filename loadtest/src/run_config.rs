//! What a run is: the transport, the load, the limits and the gates,
//! checked by `cli` before a connection is opened. The rest of the tool
//! works from this, never from the flags.
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::gate::Thresholds;
use crate::kafka_client::KafkaTarget;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// WebSocket JSON frames.
    Ws,
    /// gRPC ChatService/Converse bidirectional streams.
    Grpc,
    /// OpenAI-compatible HTTP: streamed chat completions (SSE).
    Openai,
    /// Baseline: a raw rdkafka producer straight to a topic (acks only).
    Kafka,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// The message is durable (ack frame).
    Ack,
    /// The committed assistant reply (or error) arrived.
    Completion,
}

/// How messages are offered to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadMode {
    Open { rate: f64 },
    Closed { concurrency: u32, wait_for: WaitFor },
}

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub transport: Transport,
    /// The WebSocket URL or the gRPC endpoint URL, whichever `transport` uses.
    pub target: String,
    /// Only for the idle connections, which are always WebSocket.
    pub ws_url: String,
    /// The `model` of every request of `--transport openai`.
    pub openai_model: String,
    /// Where `--transport kafka` produces.
    pub kafka: Option<KafkaTarget>,
    pub api_keys: Vec<String>,
    pub connections: u32,
    pub mode: LoadMode,
    pub duration: Option<Duration>,
    pub messages: Option<u64>,
    pub ramp_up: Duration,
    pub message_bytes: usize,
    pub ack_only: bool,
    pub client_message_ids: bool,
    pub timeout: Duration,
    pub idle_connections: u32,
    pub server_pid: Option<u32>,
    pub json_out: Option<PathBuf>,
    pub plot_out: Option<PathBuf>,
    pub label: String,
    pub thresholds: Thresholds,
    pub progress: bool,
}
