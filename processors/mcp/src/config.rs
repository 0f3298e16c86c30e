//! Limits of the mcp processor that hold for every tenant.
use std::time::Duration;

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
        Self {
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(20),
            max_concurrent_calls_per_tenant: 8,
            max_result_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(300),
            restart_backoff: Duration::from_millis(200),
            max_restart_backoff: Duration::from_secs(30),
            approval_timeout: Duration::from_secs(300),
        }
    }
}
