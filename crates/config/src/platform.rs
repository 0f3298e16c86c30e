//! Layered configuration: built-in defaults, then `chatstream.yaml`, then
//! environment variables (which win), then the binary's command-line flags;
//! then one `validate` over every section, so a bad value fails at load
//! whichever layer it came from.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{BadValue, ConfigError, Invalid, TenantsError, check_range};
use crate::mcp::McpSettings;
use crate::table::SETTINGS;
use crate::tenants::TenantRegistry;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `development`, `staging`, `production`, ... (`ENVIRONMENT`).
    pub environment: String,
    /// A tracing filter such as `info` or `chatstream=debug` (`LOG_LEVEL`).
    pub log_level: String,
    /// `text` or `json` (`CHATSTREAM_LOG_FORMAT`).
    pub log_format: LogFormat,
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
    /// How processors work through the log (in-flight bounds).
    pub processing: crate::processing::ProcessingConfig,
    /// Limits of the mcp processor (tool calls on tenants' MCP servers).
    pub mcp: McpSettings,
    /// Model providers, catalog and default routing; empty means the `mock` model.
    pub models: crate::models::ModelsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
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
    /// How long a send's reservation of its client message id outlives a
    /// gateway that died mid-send (a retry elsewhere waits for it, unless
    /// the store learns the send's outcome first).
    pub send_reservation_pending_ms: u64,
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
    /// Pause before its first token, like a provider's time to first token.
    pub first_token_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            environment: "development".into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
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
            processing: Default::default(),
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
            send_reservation_pending_ms: 30_000,
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
        Self {
            token_delay_ms: 20,
            first_token_delay_ms: 0,
        }
    }
}

/// The config file read when none is named: `./chatstream.yaml`, if present.
pub const DEFAULT_CONFIG_FILE: &str = "chatstream.yaml";

impl Config {
    /// Defaults, then the YAML file (`file`, or `./chatstream.yaml` when it
    /// exists), then the process environment, then `flags`; checked.
    pub fn load(file: Option<&Path>, flags: impl FnOnce(&mut Self)) -> Result<Self, ConfigError> {
        let default_file = Path::new(DEFAULT_CONFIG_FILE);
        let file = file.or_else(|| default_file.exists().then_some(default_file));
        Self::from_layers(file, |name| std::env::var(name).ok(), flags)
    }

    /// Defaults, then `file`, then the variables `env` finds, then `flags`;
    /// then [`Config::validate`].
    pub fn from_layers(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: impl FnOnce(&mut Self),
    ) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_yaml_file(path)?,
            None => Self::default(),
        };
        config.apply_env(env)?;
        flags(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// The file's settings over the defaults; parsed, not yet validated
    /// (the layers above it may still change them).
    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        serde_yaml_ng::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error,
        })
    }

    /// Applies every variable of the settings table that `lookup` finds.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            let Some(apply) = setting.apply else {
                continue;
            };
            for &name in setting.env {
                if let Some(value) = lookup(name) {
                    apply(self, &value).map_err(|reason: BadValue| ConfigError::Env {
                        name,
                        value: value.clone(),
                        reason,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Every rule over every section: the platform's own settings, the
    /// models and the mcp limits. The backend crates add only what is
    /// particular to their client (librdkafka settings, CQL names).
    pub fn validate(&self) -> Result<(), Invalid> {
        // Kafka numbers partitions with an i32.
        check_range(
            "log.partitions",
            self.log.partitions.into(),
            1,
            i32::MAX as u64,
        )?;
        if let Some(url) = &self.redis.url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return Err(Invalid::Malformed {
                at: "redis.url".into(),
                rule: format!("expected a redis:// or rediss:// URL, not {url:?}"),
            });
        }
        // Shorter than a send takes, and a slow send loses its id to a retry.
        check_range(
            "redis.send_reservation_pending_ms",
            self.redis.send_reservation_pending_ms,
            1_000,
            3_600_000,
        )?;
        let limits = &self.limits;
        if limits
            .requests_per_second
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(Invalid::NotPositive {
                setting: "limits.requests_per_second".into(),
            });
        }
        for (setting, value) in [
            ("limits.burst", limits.burst),
            ("limits.max_connections", limits.max_connections),
        ] {
            if value == Some(0) {
                return Err(Invalid::TooSmall {
                    setting: setting.into(),
                    min: 1,
                });
            }
        }
        self.mcp.validate()?;
        self.processing.validate()?;
        self.models.validate()
    }

    /// The tenants file this config names, read once and checked against
    /// the rest of the config; `None` when no file is named.
    pub fn load_tenants(&self) -> Result<Option<TenantRegistry>, ConfigError> {
        let Some(path) = &self.tenants_file else {
            return Ok(None);
        };
        let registry = TenantRegistry::load(path)?;
        self.validate_tenants(&registry)
            .map_err(|invalid| TenantsError::Invalid {
                path: path.clone(),
                reason: invalid.into(),
            })?;
        Ok(Some(registry))
    }

    /// The rules between tenants and the platform: each tenant's routing
    /// policy must name models of the catalog. Without a catalog the
    /// built-in mock answers every tenant and policies do not apply.
    pub fn validate_tenants(&self, registry: &TenantRegistry) -> Result<(), Invalid> {
        if self.models.catalog.is_empty() {
            return Ok(());
        }
        for tenant in registry.tenants() {
            if let Some(policy) = &tenant.routing {
                self.models
                    .validate_policy(&format!("tenant {:?} routing", tenant.id), policy)?;
            }
        }
        Ok(())
    }
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
        let err = Config::from_layers(
            None,
            |name| (name == "REDIS_URL").then(|| "localhost:6379".into()),
            |_| {},
        )
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
            let err = Config::from_layers(Some(&path), |_| None, |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{yaml:?}: {err}");
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// One rule, whichever layer the value came from: file, variable or flag.
    #[test]
    fn every_layer_is_validated_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatstream.yaml");
        std::fs::write(&path, "log:\n  partitions: 0\n").unwrap();
        let err = Config::from_layers(Some(&path), no_env, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.partitions must be between 1"), "{err}");

        let err = Config::from_layers(
            None,
            |name| (name == "CHATSTREAM_LOG_PARTITIONS").then(|| "0".into()),
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("log.partitions must be between 1"), "{err}");

        let err = Config::from_layers(None, no_env, |c| c.log.partitions = 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.partitions"), "{err}");

        // A file value that would be fine alone can be fixed by a later layer.
        Config::from_layers(Some(&path), no_env, |c| c.log.partitions = 4).unwrap();

        for (yaml, setting) in [
            ("limits:\n  burst: 0\n", "limits.burst"),
            ("limits:\n  max_connections: 0\n", "limits.max_connections"),
            (
                "limits:\n  requests_per_second: -1\n",
                "limits.requests_per_second",
            ),
            ("redis:\n  url: localhost:6379\n", "redis.url"),
            ("log_format: xml\n", "log_format"),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let err = Config::from_layers(Some(&path), no_env, |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains(setting), "{yaml:?}: {err}");
        }
    }

    /// The gateway reads the models too, so they are checked at load, not
    /// only when a router starts.
    #[test]
    fn the_models_section_is_checked_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chatstream.yaml");
        for (yaml, expected) in [
            (
                "models:\n  providers: {p: {kind: openai, base_url: 'http://x'}}\n  catalog: {m: {provider: q}}\n",
                "provider \"q\" is not in models.providers",
            ),
            (
                "models:\n  providers: {p: {kind: mock}}\n",
                "catalog is empty",
            ),
            (
                "models:\n  providers: {p: {kind: mock}}\n  catalog: {m: {provider: p}}\n  default_routing: {candidates: [{model: n}]}\n",
                "models.default_routing: candidate \"n\"",
            ),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let err = Config::from_layers(Some(&path), no_env, |_| {})
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{yaml:?}: {err}");
        }
    }

    #[test]
    fn tenants_are_read_once_and_checked_against_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = dir.path().join("tenants.yaml");
        std::fs::write(
            &tenants,
            format!(
                "tenants:\n  - id: acme\n    api_keys: [{{id: k, sha256: {}}}]\n    routing: {{candidates: [{{model: slow}}]}}\n",
                crate::tenants::hash_api_key("k")
            ),
        )
        .unwrap();
        let mut config = Config {
            tenants_file: Some(tenants.clone()),
            ..Config::default()
        };
        // Only the built-in mock: tenants' policies do not apply.
        let registry = config.load_tenants().unwrap().expect("a tenants file");
        assert_eq!(registry.tenants()[0].id, "acme");

        config.models = serde_yaml_ng::from_str(
            "providers: {p: {kind: mock}}\ncatalog: {fast: {provider: p}}\n",
        )
        .unwrap();
        let err = config.load_tenants().unwrap_err().to_string();
        assert!(
            err.contains(&tenants.display().to_string())
                && err.contains("tenant \"acme\" routing: candidate \"slow\""),
            "{err}"
        );
        assert!(Config::default().load_tenants().unwrap().is_none());
    }

    /// The README's defaults are the defaults: every plain value the table
    /// shows for a key is what `Config::default()` holds there, and every
    /// key of the config has a row.
    #[test]
    fn the_settings_table_matches_the_config() {
        let defaults = serde_yaml_ng::to_value(Config::default()).unwrap();
        let lookup = |key: &str| {
            key.split('.')
                .try_fold(&defaults, |value, part| value.get(part))
                .unwrap_or_else(|| panic!("the settings table names `{key}`, which Config lacks"))
        };
        let mut covered = Vec::new();
        for setting in crate::table::SETTINGS {
            for &key in setting.yaml {
                covered.push(key);
                let shown = match lookup(key) {
                    serde_yaml_ng::Value::String(text) if !text.is_empty() => text.clone(),
                    serde_yaml_ng::Value::Number(number) => number.to_string(),
                    serde_yaml_ng::Value::Bool(flag) => flag.to_string(),
                    serde_yaml_ng::Value::Sequence(items) => items
                        .iter()
                        .filter_map(|item| item.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => continue,
                };
                assert!(
                    setting.default.contains(&format!("`{shown}`")),
                    "`{key}` defaults to `{shown}`, but the table says {}",
                    setting.default
                );
            }
            assert!(
                setting.applied_by_config() || setting.env.is_empty() || setting.yaml.is_empty(),
                "{:?} set a YAML key but the config does not apply them",
                setting.env
            );
        }
        fn leaves(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
            match value.as_mapping() {
                Some(map) if !map.is_empty() => {
                    for (key, value) in map {
                        let key = key.as_str().unwrap();
                        let path = if prefix.is_empty() {
                            key.to_owned()
                        } else {
                            format!("{prefix}.{key}")
                        };
                        leaves(&path, value, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let mut keys = Vec::new();
        leaves("", &defaults, &mut keys);
        for key in keys {
            assert!(
                covered
                    .iter()
                    .any(|row| key == *row || key.starts_with(&format!("{row}."))),
                "`{key}` has no row in the settings table"
            );
        }
    }
}
