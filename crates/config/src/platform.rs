//! Layered configuration: built-in defaults, then `chatstream.yaml`, then
//! environment variables (which win). Command-line flags are applied on top
//! by the binary.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `development`, `staging`, `production`, ... (`ENVIRONMENT`).
    pub environment: String,
    /// A tracing filter such as `info` or `chatstream=debug` (`LOG_LEVEL`).
    pub log_level: String,
    /// `text` or `json` (`CHATSTREAM_LOG_FORMAT`).
    pub log_format: String,
    /// Where the embedded backends keep their files.
    pub data_dir: PathBuf,
    /// Tenants and API keys; `chatstream dev` creates one in the data dir when unset.
    pub tenants_file: Option<PathBuf>,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub kafka: KafkaConfig,
    pub store: StoreConfig,
    pub scylla: ScyllaConfig,
    pub redis: RedisConfig,
    pub limits: LimitsConfig,
    pub mock_model: MockModelConfig,
    /// Limits of the mcp processor (tool calls on tenants' MCP servers).
    pub mcp: McpSettings,
    /// Model providers, catalog and default routing; empty means the `mock` model.
    pub models: crate::models::ModelsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    /// HTTP: WebSocket, health, readiness, metrics.
    pub http_port: u16,
    pub grpc_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Where the event log lives (`CHATSTREAM_LOG_BACKEND`).
    pub backend: LogBackend,
    /// Partitions of the event log; fixed once the log exists, because it
    /// decides which partition holds each tenant.
    pub partitions: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// Files in the data dir; one process only (`chatstream dev`).
    Embedded,
    /// A Kafka topic, shared by every gateway and processor replica.
    Kafka,
}

/// The Kafka event log (used when `log.backend` is `kafka`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list (`KAFKA_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// The topic holding the event log (`CHATSTREAM_KAFKA_TOPIC`).
    pub topic: String,
    /// Replicas per partition when `chatstream topics create` makes the topics.
    pub replication_factor: u16,
    pub client_id: String,
    /// How long the broker may hold a fetch waiting for data; low because
    /// the chat path is latency-sensitive.
    pub fetch_wait_max_ms: u32,
    /// Bound on each blocking call to the cluster.
    pub request_timeout_ms: u64,
    /// Raw librdkafka settings (TLS, SASL, tuning) for every client.
    pub settings: BTreeMap<String, String>,
    /// Where processors put records they give up on (default
    /// `<topic>.dead-letter`; `CHATSTREAM_KAFKA_DEAD_LETTER_TOPIC`).
    pub dead_letter_topic: Option<String>,
    /// Turns on Kafka transactions for a processor replica (real Kafka
    /// clusters only; unique per replica).
    pub transactional_id: Option<String>,
    /// Put before every consumer group id, so several platforms can share
    /// a cluster (`CHATSTREAM_KAFKA_GROUP_PREFIX`).
    pub group_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where projections live (`CHATSTREAM_STORE_BACKEND`).
    pub backend: StoreBackend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Files in the data dir; one process only.
    Embedded,
    /// A ScyllaDB (or Cassandra) keyspace shared by every replica.
    Scylla,
}

/// The ScyllaDB projection store (used when `store.backend` is `scylla`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (`SCYLLA_NODES`, comma-separated).
    pub nodes: Vec<String>,
    /// `CHATSTREAM_SCYLLA_KEYSPACE`.
    pub keyspace: String,
    /// Replicas per datacenter (NetworkTopologyStrategy) when `chatstream
    /// schema apply` creates the keyspace, e.g. `{dc1: 3}`: production.
    pub datacenters: BTreeMap<String, u32>,
    /// Replicas (SimpleStrategy) when `datacenters` is empty: development.
    pub replication_factor: u32,
    /// `LOCAL_QUORUM`, `QUORUM`, `ONE`, ... for every read and write
    /// (`CHATSTREAM_SCYLLA_CONSISTENCY`).
    pub consistency: String,
    /// Wait for schema agreement after schema changes. Keep it on for real
    /// clusters; single-node test servers without a peers table need it off.
    pub await_schema_agreement: bool,
    /// First-wins writes use `IF NOT EXISTS`. Keep it on for real clusters;
    /// only a server that ignores it (the CQL test server) needs it off.
    pub lightweight_transactions: bool,
    pub request_timeout_ms: u64,
}

/// Redis: shared hot state (fan-out between replicas, tenant rate limits,
/// connection counts). Without a URL everything stays in-process, which is
/// right for one process only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// e.g. `redis://127.0.0.1:6379/0` (`REDIS_URL`).
    pub url: Option<String>,
    /// Prefix of every key and channel, so platforms can share a Redis.
    pub key_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest user message text in bytes, unless the tenant sets its own.
    pub max_message_bytes: usize,
    /// Sustained sends and opens per second per tenant, unless the tenant
    /// sets its own; unlimited when unset.
    pub requests_per_second: Option<f64>,
    /// Requests a tenant may make at once on top of the sustained rate
    /// (default: the rate, rounded up).
    pub burst: Option<u32>,
    /// Open connections per tenant across every gateway, unless the tenant
    /// sets its own; unlimited when unset (`CHATSTREAM_MAX_CONNECTIONS`).
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockModelConfig {
    /// Pause between streamed tokens of the built-in `mock` model.
    pub token_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            environment: "development".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            data_dir: PathBuf::from("chatstream-data"),
            tenants_file: None,
            server: ServerConfig::default(),
            log: LogConfig::default(),
            kafka: KafkaConfig::default(),
            store: StoreConfig::default(),
            scylla: ScyllaConfig::default(),
            redis: RedisConfig::default(),
            limits: LimitsConfig::default(),
            mock_model: MockModelConfig::default(),
            mcp: McpSettings::default(),
            models: Default::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            http_port: 8000,
            grpc_port: 50051,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            backend: LogBackend::Embedded,
            partitions: 8,
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topic: "chatstream.events".into(),
            replication_factor: 1,
            client_id: "chatstream".into(),
            fetch_wait_max_ms: 10,
            request_timeout_ms: 10_000,
            settings: BTreeMap::new(),
            dead_letter_topic: None,
            transactional_id: None,
            group_prefix: String::new(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
        }
    }
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "chatstream".into(),
            datacenters: BTreeMap::new(),
            replication_factor: 1,
            consistency: "LOCAL_QUORUM".into(),
            await_schema_agreement: true,
            lightweight_transactions: true,
            request_timeout_ms: 5_000,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            key_prefix: "chatstream".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            requests_per_second: None,
            burst: None,
            max_connections: None,
        }
    }
}

impl Default for MockModelConfig {
    fn default() -> Self {
        Self { token_delay_ms: 20 }
    }
}

/// Limits of the mcp processor that hold for every tenant. A server's own
/// `call_timeout_ms` in the tenants file wins for its calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// Longest a tool call may run.
    pub call_timeout_ms: u64,
    /// Longest starting or reaching a server and its `initialize` may take.
    pub connect_timeout_ms: u64,
    /// Tool calls running at once per tenant; more wait their turn.
    pub max_concurrent_calls_per_tenant: usize,
    /// Largest result kept in an event; the rest is cut and marked.
    pub max_result_bytes: usize,
    /// A server unused this long is closed (a stdio server's process stopped).
    pub idle_timeout_ms: u64,
    /// First wait before restarting a server that failed; doubles with each
    /// failure in a row, up to `max_restart_backoff_ms`.
    pub restart_backoff_ms: u64,
    pub max_restart_backoff_ms: u64,
    /// How long a call needing approval waits for a person's decision.
    pub approval_timeout_ms: u64,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            call_timeout_ms: 30_000,
            connect_timeout_ms: 20_000,
            max_concurrent_calls_per_tenant: 8,
            max_result_bytes: 64 * 1024,
            idle_timeout_ms: 300_000,
            restart_backoff_ms: 200,
            max_restart_backoff_ms: 30_000,
            approval_timeout_ms: 300_000,
        }
    }
}

const SECOND_MS: u64 = 1_000;
const HOUR_MS: u64 = 3_600 * SECOND_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

impl McpSettings {
    /// Rejects zero and values no deployment means; the message names the
    /// field and its allowed range.
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            ("call_timeout_ms", self.call_timeout_ms, 1, HOUR_MS),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms,
                1,
                10 * 60 * SECOND_MS,
            ),
            (
                "max_concurrent_calls_per_tenant",
                self.max_concurrent_calls_per_tenant as u64,
                1,
                1_024,
            ),
            // A result travels in one log record; Kafka refuses large ones.
            (
                "max_result_bytes",
                self.max_result_bytes as u64,
                1,
                8 * 1024 * 1024,
            ),
            ("idle_timeout_ms", self.idle_timeout_ms, SECOND_MS, DAY_MS),
            (
                "restart_backoff_ms",
                self.restart_backoff_ms,
                1,
                60 * SECOND_MS,
            ),
            (
                "max_restart_backoff_ms",
                self.max_restart_backoff_ms,
                1,
                HOUR_MS,
            ),
            // A restart reads the log back this far to resume waiting calls.
            (
                "approval_timeout_ms",
                self.approval_timeout_ms,
                SECOND_MS,
                DAY_MS,
            ),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(format!(
                    "mcp.{field} must be between {min} and {max}, not {value}"
                ));
            }
        }
        if self.max_restart_backoff_ms < self.restart_backoff_ms {
            return Err(format!(
                "mcp.max_restart_backoff_ms ({}) must not be below mcp.restart_backoff_ms ({})",
                self.max_restart_backoff_ms, self.restart_backoff_ms
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("environment variable {name}={value:?} is not valid: {message}")]
    InvalidEnv {
        name: &'static str,
        value: String,
        message: String,
    },
}

/// The config file read when none is named: `./chatstream.yaml`, if present.
pub const DEFAULT_CONFIG_FILE: &str = "chatstream.yaml";

impl Config {
    /// Defaults, then the YAML file (`file`, or `./chatstream.yaml` when it
    /// exists), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let default_file = Path::new(DEFAULT_CONFIG_FILE);
        let file = file.or_else(|| default_file.exists().then_some(default_file));
        let mut config = match file {
            Some(path) => Self::from_yaml_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let config: Self = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        config.mcp.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Applies every variable in [`ENV_VARS`] that `lookup` finds.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for (name, apply) in ENV_VARS {
            if let Some(value) = lookup(name) {
                apply(self, &value).map_err(|message| ConfigError::InvalidEnv {
                    name,
                    value: value.clone(),
                    message,
                })?;
            }
        }
        Ok(())
    }
}

type EnvSetter = fn(&mut Config, &str) -> Result<(), String>;

/// Every environment variable the config reads, in the order applied
/// (later entries win, so `CHATSTREAM_LOG_LEVEL` beats `LOG_LEVEL`).
pub const ENV_VARS: &[(&str, EnvSetter)] = &[
    ("ENVIRONMENT", |c, v| set_string(&mut c.environment, v)),
    ("CHATSTREAM_ENVIRONMENT", |c, v| {
        set_string(&mut c.environment, v)
    }),
    ("LOG_LEVEL", |c, v| set_string(&mut c.log_level, v)),
    ("CHATSTREAM_LOG_LEVEL", |c, v| {
        set_string(&mut c.log_level, v)
    }),
    ("CHATSTREAM_LOG_FORMAT", |c, v| {
        if matches!(v, "text" | "json") {
            set_string(&mut c.log_format, v)
        } else {
            Err("expected `text` or `json`".into())
        }
    }),
    ("CHATSTREAM_DATA_DIR", |c, v| {
        c.data_dir = PathBuf::from(v);
        Ok(())
    }),
    ("CHATSTREAM_TENANTS_FILE", |c, v| {
        c.tenants_file = Some(PathBuf::from(v));
        Ok(())
    }),
    ("CHATSTREAM_HOST", |c, v| set_string(&mut c.server.host, v)),
    ("CHATSTREAM_HTTP_PORT", |c, v| {
        set_parsed(&mut c.server.http_port, v)
    }),
    ("CHATSTREAM_GRPC_PORT", |c, v| {
        set_parsed(&mut c.server.grpc_port, v)
    }),
    ("CHATSTREAM_LOG_PARTITIONS", |c, v| {
        set_parsed(&mut c.log.partitions, v)?;
        if c.log.partitions == 0 {
            Err("must be at least 1".into())
        } else {
            Ok(())
        }
    }),
    ("CHATSTREAM_LOG_BACKEND", |c, v| {
        c.log.backend = parse_choice(
            v,
            &[
                ("embedded", LogBackend::Embedded),
                ("kafka", LogBackend::Kafka),
            ],
        )?;
        Ok(())
    }),
    ("KAFKA_BOOTSTRAP_SERVERS", |c, v| {
        set_string(&mut c.kafka.bootstrap_servers, v)
    }),
    ("CHATSTREAM_KAFKA_BOOTSTRAP_SERVERS", |c, v| {
        set_string(&mut c.kafka.bootstrap_servers, v)
    }),
    ("CHATSTREAM_KAFKA_TOPIC", |c, v| {
        set_string(&mut c.kafka.topic, v)
    }),
    ("CHATSTREAM_KAFKA_GROUP_PREFIX", |c, v| {
        c.kafka.group_prefix = v.trim().to_owned();
        Ok(())
    }),
    ("CHATSTREAM_KAFKA_DEAD_LETTER_TOPIC", |c, v| {
        let mut topic = String::new();
        set_string(&mut topic, v)?;
        c.kafka.dead_letter_topic = Some(topic);
        Ok(())
    }),
    ("CHATSTREAM_STORE_BACKEND", |c, v| {
        c.store.backend = parse_choice(
            v,
            &[
                ("embedded", StoreBackend::Embedded),
                ("scylla", StoreBackend::Scylla),
            ],
        )?;
        Ok(())
    }),
    ("SCYLLA_NODES", |c, v| set_list(&mut c.scylla.nodes, v)),
    ("CHATSTREAM_SCYLLA_NODES", |c, v| {
        set_list(&mut c.scylla.nodes, v)
    }),
    ("CHATSTREAM_SCYLLA_KEYSPACE", |c, v| {
        set_string(&mut c.scylla.keyspace, v)
    }),
    ("CHATSTREAM_SCYLLA_CONSISTENCY", |c, v| {
        set_string(&mut c.scylla.consistency, v)
    }),
    ("CHATSTREAM_SCYLLA_AWAIT_SCHEMA_AGREEMENT", |c, v| {
        set_parsed(&mut c.scylla.await_schema_agreement, v)
    }),
    ("CHATSTREAM_SCYLLA_LIGHTWEIGHT_TRANSACTIONS", |c, v| {
        set_parsed(&mut c.scylla.lightweight_transactions, v)
    }),
    ("REDIS_URL", |c, v| set_redis_url(c, v)),
    ("CHATSTREAM_REDIS_URL", |c, v| set_redis_url(c, v)),
    ("CHATSTREAM_REDIS_KEY_PREFIX", |c, v| {
        set_string(&mut c.redis.key_prefix, v)
    }),
    ("CHATSTREAM_MAX_MESSAGE_BYTES", |c, v| {
        set_parsed(&mut c.limits.max_message_bytes, v)
    }),
    ("CHATSTREAM_REQUESTS_PER_SECOND", |c, v| {
        let rate: f64 = v
            .trim()
            .parse()
            .map_err(|e: std::num::ParseFloatError| e.to_string())?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err("must be a positive number".into());
        }
        c.limits.requests_per_second = Some(rate);
        Ok(())
    }),
    ("CHATSTREAM_BURST", |c, v| {
        let burst: u32 = v
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        if burst == 0 {
            return Err("must be at least 1".into());
        }
        c.limits.burst = Some(burst);
        Ok(())
    }),
    ("CHATSTREAM_MAX_CONNECTIONS", |c, v| {
        let max: u32 = v
            .trim()
            .parse()
            .map_err(|e: std::num::ParseIntError| e.to_string())?;
        if max == 0 {
            return Err("must be at least 1".into());
        }
        c.limits.max_connections = Some(max);
        Ok(())
    }),
    ("CHATSTREAM_MOCK_TOKEN_DELAY_MS", |c, v| {
        set_parsed(&mut c.mock_model.token_delay_ms, v)
    }),
];

fn set_string(field: &mut String, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    *field = value.to_owned();
    Ok(())
}

/// One of `choices` by name, or an error listing them.
fn parse_choice<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let value = value.trim();
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|&(_, choice)| choice)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            format!("expected one of: {}", names.join(", "))
        })
}

/// A comma-separated, non-empty list.
fn set_list(field: &mut Vec<String>, value: &str) -> Result<(), String> {
    let items: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        return Err("must list at least one host:port".into());
    }
    *field = items;
    Ok(())
}

fn set_redis_url(config: &mut Config, value: &str) -> Result<(), String> {
    let value = value.trim();
    if !(value.starts_with("redis://") || value.starts_with("rediss://")) {
        return Err("expected a redis:// or rediss:// URL".into());
    }
    config.redis.url = Some(value.to_owned());
    Ok(())
}

fn set_parsed<T: std::str::FromStr>(field: &mut T, value: &str) -> Result<(), String>
where
    T::Err: std::fmt::Display,
{
    *field = value.trim().parse().map_err(|e: T::Err| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatstream.yaml");
        std::fs::write(
            &path,
            "server:\n  http_port: 9000\n  grpc_port: 9001\nlog_level: debug\n",
        )
        .unwrap();
        let mut config = Config::from_yaml_file(&path).unwrap();
        assert_eq!(config.server.http_port, 9000);
        assert_eq!(
            config.server.host, "127.0.0.1",
            "unset keys keep their defaults"
        );
        config
            .apply_env(|name| match name {
                "CHATSTREAM_HTTP_PORT" => Some("9100".into()),
                "LOG_LEVEL" => Some("warn".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.server.http_port, 9100);
        assert_eq!(config.server.grpc_port, 9001);
        assert_eq!(config.log_level, "warn");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let err = Config::default()
            .apply_env(|name| (name == "CHATSTREAM_GRPC_PORT").then(|| "lots".into()))
            .unwrap_err();
        assert!(err.to_string().contains("CHATSTREAM_GRPC_PORT"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "server:\n  htp_port: 1\n").unwrap();
        let err = Config::from_yaml_file(&path).unwrap_err().to_string();
        assert!(err.contains("htp_port"), "{err}");
    }

    #[test]
    fn backends_come_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatstream.yaml");
        std::fs::write(
            &path,
            "log:\n  backend: kafka\nkafka:\n  topic: events\n  settings:\n    security.protocol: ssl\nstore:\n  backend: scylla\nscylla:\n  datacenters:\n    dc1: 3\n",
        )
        .unwrap();
        let mut config = Config::from_yaml_file(&path).unwrap();
        assert_eq!(config.log.backend, LogBackend::Kafka);
        assert_eq!(config.kafka.topic, "events");
        assert_eq!(config.kafka.settings["security.protocol"], "ssl");
        assert_eq!(config.store.backend, StoreBackend::Scylla);
        assert_eq!(
            config.scylla.datacenters,
            BTreeMap::from([("dc1".into(), 3)])
        );
        assert_eq!(config.redis.url, None, "Redis stays off unless configured");
        config
            .apply_env(|name| match name {
                "KAFKA_BOOTSTRAP_SERVERS" => Some("k1:9092,k2:9092".into()),
                "SCYLLA_NODES" => Some("s1:9042, s2:9042".into()),
                "REDIS_URL" => Some("redis://cache:6379/2".into()),
                "CHATSTREAM_LOG_BACKEND" => Some("embedded".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(config.scylla.nodes, ["s1:9042", "s2:9042"]);
        assert_eq!(config.redis.url.as_deref(), Some("redis://cache:6379/2"));
        assert_eq!(config.log.backend, LogBackend::Embedded);
    }

    #[test]
    fn bad_backend_names_list_the_choices() {
        let err = Config::default()
            .apply_env(|name| (name == "CHATSTREAM_LOG_BACKEND").then(|| "kafak".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("embedded, kafka"), "{err}");
        let err = Config::default()
            .apply_env(|name| (name == "REDIS_URL").then(|| "localhost:6379".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis://"), "{err}");
    }

    #[test]
    fn the_mcp_section_is_read_defaulted_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatstream.yaml");
        std::fs::write(
            &path,
            "mcp:\n  call_timeout_ms: 5000\n  max_result_bytes: 1024\n  approval_timeout_ms: 60000\n",
        )
        .unwrap();
        let mcp = Config::from_yaml_file(&path).unwrap().mcp;
        assert_eq!(mcp.call_timeout_ms, 5_000);
        assert_eq!(mcp.max_result_bytes, 1_024);
        assert_eq!(mcp.approval_timeout_ms, 60_000);
        let defaults = McpSettings::default();
        assert_eq!(mcp.connect_timeout_ms, defaults.connect_timeout_ms);
        assert_eq!(mcp.max_concurrent_calls_per_tenant, 8);
        assert_eq!(mcp.idle_timeout_ms, 300_000);
        assert_eq!(Config::default().mcp, defaults);
        assert!(defaults.validate().is_ok());

        for (yaml, field) in [
            ("mcp:\n  call_timeout_ms: 0\n", "mcp.call_timeout_ms"),
            (
                "mcp:\n  max_concurrent_calls_per_tenant: 0\n",
                "mcp.max_concurrent_calls_per_tenant",
            ),
            (
                "mcp:\n  max_result_bytes: 1000000000\n",
                "mcp.max_result_bytes",
            ),
            (
                "mcp:\n  approval_timeout_ms: 604800000\n",
                "mcp.approval_timeout_ms",
            ),
            (
                "mcp:\n  restart_backoff_ms: 5000\n  max_restart_backoff_ms: 1000\n",
                "mcp.max_restart_backoff_ms",
            ),
            ("mcp:\n  call_timeout: 5\n", "call_timeout"),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let err = Config::from_yaml_file(&path).unwrap_err().to_string();
            assert!(err.contains(field), "{yaml:?}: {err}");
        }
    }
}
