//! Limits of the mcp processor that hold for every tenant, from the
//! config file's `mcp:` section.
use std::time::Duration;

use chatstream_config::McpSettings;

#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Longest a tool call may run unless the server's config says otherwise.
    pub call_timeout: Duration,
    /// Longest a connect and `initialize` handshake may take.
    pub connect_timeout: Duration,
    /// Tool calls running at once per tenant; more wait their turn.
    pub max_concurrent_calls_per_tenant: usize,
    /// Largest result text kept in the event; the rest is cut and marked.
    pub max_result_bytes: usize,
    /// A server unused this long is closed (its child process stopped).
    pub idle_timeout: Duration,
    /// First wait before reconnecting to a server that failed or crashed;
    /// doubles with each failure in a row, up to `max_restart_backoff`.
    pub restart_backoff: Duration,
    pub max_restart_backoff: Duration,
    /// How long a call needing approval waits for a client's decision.
    pub approval_timeout: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self::from(&McpSettings::default())
    }
}

/// The `mcp:` section of the config file (checked when the file is read).
impl From<&McpSettings> for McpConfig {
    fn from(settings: &McpSettings) -> Self {
        Self {
            call_timeout: Duration::from_millis(settings.call_timeout_ms),
            connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
            max_concurrent_calls_per_tenant: settings.max_concurrent_calls_per_tenant,
            max_result_bytes: settings.max_result_bytes,
            idle_timeout: Duration::from_millis(settings.idle_timeout_ms),
            restart_backoff: Duration::from_millis(settings.restart_backoff_ms),
            max_restart_backoff: Duration::from_millis(settings.max_restart_backoff_ms),
            approval_timeout: Duration::from_millis(settings.approval_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_durations_and_the_defaults_stand() {
        let config = McpConfig::default();
        assert_eq!(config.call_timeout, Duration::from_secs(30));
        assert_eq!(config.connect_timeout, Duration::from_secs(20));
        assert_eq!(config.max_concurrent_calls_per_tenant, 8);
        assert_eq!(config.max_result_bytes, 64 * 1024);
        assert_eq!(config.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.restart_backoff, Duration::from_millis(200));
        assert_eq!(config.max_restart_backoff, Duration::from_secs(30));
        assert_eq!(config.approval_timeout, Duration::from_secs(300));

        let config = McpConfig::from(&McpSettings {
            call_timeout_ms: 1_500,
            approval_timeout_ms: 60_000,
            max_result_bytes: 100,
            ..McpSettings::default()
        });
        assert_eq!(config.call_timeout, Duration::from_millis(1_500));
        assert_eq!(config.approval_timeout, Duration::from_secs(60));
        assert_eq!(config.max_result_bytes, 100);
    }
}
