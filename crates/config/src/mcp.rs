//! MCP settings: the mcp processor's limits for every tenant (the `mcp`
//! section of `chatstream.yaml`), and a tenant's MCP servers as the tenants
//! file lists them: how to reach each one (a child process over stdio, or
//! Streamable HTTP), which of its tools the tenant's models may call, and
//! which calls wait for a person.
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Invalid, check_range};

/// Limits of the mcp processor that hold for every tenant. A server's own
/// `call_timeout_ms` in the tenants file wins for its calls. The processor
/// reads the durations through the methods of the same name.
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
    /// Longest a tool call may run unless the server's config says otherwise.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// Longest a connect and `initialize` handshake may take.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// A server unused this long is closed.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// First wait before reconnecting to a server that failed or crashed.
    pub fn restart_backoff(&self) -> Duration {
        Duration::from_millis(self.restart_backoff_ms)
    }

    /// The longest wait between restarts, however many failed in a row.
    pub fn max_restart_backoff(&self) -> Duration {
        Duration::from_millis(self.max_restart_backoff_ms)
    }

    /// How long a call needing approval waits for a client's decision.
    pub fn approval_timeout(&self) -> Duration {
        Duration::from_millis(self.approval_timeout_ms)
    }

    /// Rejects zero and values no deployment means; the error names the
    /// field and its allowed range.
    pub fn validate(&self) -> Result<(), Invalid> {
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
            check_range(&format!("mcp.{field}"), value, min, max)?;
        }
        if self.max_restart_backoff_ms < self.restart_backoff_ms {
            return Err(Invalid::Conflict {
                at: "mcp.max_restart_backoff_ms".into(),
                rule: format!(
                    "{} must not be below mcp.restart_backoff_ms ({})",
                    self.max_restart_backoff_ms, self.restart_backoff_ms
                ),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The name models use (`<server>.<tool>`); unique within the tenant.
    pub name: String,
    pub transport: McpTransportConfig,
    /// Tools the tenant's models may call; every tool the server lists when absent.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    /// Tools whose calls wait for a client's approval; `*` means every tool.
    #[serde(default)]
    pub require_approval: Vec<String>,
    /// Longest a call may run; the processor's default when absent.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpTransportConfig {
    /// The server runs as a child process speaking JSON-RPC on stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// The server listens at `url` (the MCP endpoint, e.g. `http://host/mcp`).
    StreamableHttp {
        url: String,
        /// Sent with every request, e.g. `Authorization`.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl McpServerConfig {
    /// Whether the tenant's models may call `tool` on this server.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed_tools
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|t| t == tool))
    }

    /// Whether a call of `tool` waits for a person's approval.
    pub fn needs_approval(&self, tool: &str) -> bool {
        self.require_approval.iter().any(|t| t == "*" || t == tool)
    }
}

/// Checks one tenant's list; the error names the offending server.
pub fn validate_mcp_servers(servers: &[McpServerConfig]) -> Result<(), Invalid> {
    let mut names = HashSet::new();
    for server in servers {
        let at = || format!("mcp server {:?}", server.name);
        let plain = !server.name.is_empty()
            && server.name.len() <= 64
            && server
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !plain {
            return Err(Invalid::Malformed {
                at: at(),
                rule: "the name must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'".into(),
            });
        }
        if !names.insert(server.name.as_str()) {
            return Err(Invalid::Duplicate {
                at: "mcp_servers".into(),
                what: "mcp server",
                name: server.name.clone(),
            });
        }
        match &server.transport {
            McpTransportConfig::Stdio { command, .. } if command.trim().is_empty() => {
                return Err(Invalid::Empty {
                    setting: format!("{}: command", at()),
                });
            }
            McpTransportConfig::StreamableHttp { url, .. }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                return Err(Invalid::Malformed {
                    at: at(),
                    rule: format!("url {url:?} must start with http:// or https://"),
                });
            }
            _ => {}
        }
        if server.call_timeout_ms == Some(0) {
            return Err(Invalid::TooSmall {
                setting: format!("{}: call_timeout_ms", at()),
                min: 1,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<McpServerConfig> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn parses_both_transports_and_policies() {
        let servers = parse(
            "- name: time\n  transport: {type: stdio, command: mcp-server-time, args: [--local-timezone, UTC]}\n  allowed_tools: [get_current_time]\n- name: web\n  transport: {type: streamable_http, url: 'http://127.0.0.1:3001/mcp', headers: {Authorization: Bearer x}}\n  require_approval: ['*']\n",
        );
        validate_mcp_servers(&servers).unwrap();
        assert!(servers[0].allows("get_current_time"));
        assert!(!servers[0].allows("convert_time"));
        assert!(!servers[0].needs_approval("get_current_time"));
        assert!(servers[1].allows("anything"));
        assert!(servers[1].needs_approval("anything"));
    }

    #[test]
    fn rejects_bad_servers_with_a_reason() {
        let twice = parse(
            "- {name: a, transport: {type: stdio, command: x}}\n- {name: a, transport: {type: stdio, command: y}}\n",
        );
        assert!(
            validate_mcp_servers(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let bad_url = parse("- {name: a, transport: {type: streamable_http, url: 'ftp://x'}}\n");
        assert!(
            validate_mcp_servers(&bad_url)
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
        let bad_name = parse("- {name: 'a.b', transport: {type: stdio, command: x}}\n");
        assert!(
            validate_mcp_servers(&bad_name)
                .unwrap_err()
                .to_string()
                .contains("name")
        );
        assert!(
            serde_yaml_ng::from_str::<Vec<McpServerConfig>>(
                "- {name: a, transport: {type: carrier_pigeon}}\n"
            )
            .is_err()
        );
    }

    /// Moved from the mcp processor's own config type, which this replaced.
    #[test]
    fn settings_become_durations_and_the_defaults_stand() {
        let config = McpSettings::default();
        assert_eq!(config.call_timeout(), Duration::from_secs(30));
        assert_eq!(config.connect_timeout(), Duration::from_secs(20));
        assert_eq!(config.max_concurrent_calls_per_tenant, 8);
        assert_eq!(config.max_result_bytes, 64 * 1024);
        assert_eq!(config.idle_timeout(), Duration::from_secs(300));
        assert_eq!(config.restart_backoff(), Duration::from_millis(200));
        assert_eq!(config.max_restart_backoff(), Duration::from_secs(30));
        assert_eq!(config.approval_timeout(), Duration::from_secs(300));

        let config = McpSettings {
            call_timeout_ms: 1_500,
            approval_timeout_ms: 60_000,
            max_result_bytes: 100,
            ..McpSettings::default()
        };
        assert_eq!(config.call_timeout(), Duration::from_millis(1_500));
        assert_eq!(config.approval_timeout(), Duration::from_secs(60));
        assert_eq!(config.max_result_bytes, 100);
    }
}
