//! Layered configuration: built-in defaults, then `chatstream.yaml`, then
//! environment variables (which win). Command-line flags are applied on top
//! by the binary.
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
    pub limits: LimitsConfig,
    pub mock_model: MockModelConfig,
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
    /// Partitions of the event log; fixed once the log exists.
    pub partitions: u32,
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
            limits: LimitsConfig::default(),
            mock_model: MockModelConfig::default(),
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
        Self { partitions: 8 }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            requests_per_second: None,
            burst: None,
        }
    }
}

impl Default for MockModelConfig {
    fn default() -> Self {
        Self { token_delay_ms: 20 }
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
        serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })
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
}
