//! One live MCP client session to one server, over either transport, with
//! its `tools/list` cache marked stale by `notifications/tools/list_changed`.
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chatstream_config::mcp::McpTransportConfig;
use rmcp::model::Tool;
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use tokio::io::AsyncBufReadExt;

/// Our side of the session: it only listens for tool-list changes.
struct ToolListWatcher {
    stale: Arc<AtomicBool>,
}

impl ClientHandler for ToolListWatcher {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.stale.store(true, Ordering::Release);
    }
}

pub(crate) struct Connection {
    service: RunningService<RoleClient, ToolListWatcher>,
    tools_stale: Arc<AtomicBool>,
    tools: Option<Arc<Vec<Tool>>>,
    /// Process id of a stdio server's child.
    pub(crate) pid: Option<u32>,
}

impl Connection {
    /// Starts (stdio) or reaches (HTTP) the server and runs `initialize`.
    pub(crate) async fn open(
        server_name: &str,
        transport: &McpTransportConfig,
    ) -> Result<Self, String> {
        let tools_stale = Arc::new(AtomicBool::new(true));
        let watcher = ToolListWatcher {
            stale: tools_stale.clone(),
        };
        let (service, pid) = match transport {
            McpTransportConfig::Stdio { command, args, env } => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(args).envs(env).kill_on_drop(true);
                let (child, stderr) = TokioChildProcess::builder(cmd)
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot start {command:?}: {e}"))?;
                let pid = child.id();
                if let Some(stderr) = stderr {
                    forward_stderr(server_name.to_owned(), stderr);
                }
                let service = watcher
                    .serve(child)
                    .await
                    .map_err(|e| format!("initialize failed: {e}"))?;
                (service, pid)
            }
            McpTransportConfig::StreamableHttp { url, headers } => {
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                for (name, value) in headers {
                    let name = http::HeaderName::try_from(name.as_str())
                        .map_err(|e| format!("header name {name:?}: {e}"))?;
                    let value = http::HeaderValue::try_from(value.as_str())
                        .map_err(|e| format!("header {name}: {e}"))?;
                    config.custom_headers.insert(name, value);
                }
                let transport = StreamableHttpClientTransport::from_config(config);
                let service = watcher
                    .serve(transport)
                    .await
                    .map_err(|e| format!("initialize failed: {e}"))?;
                (service, None)
            }
        };
        Ok(Self {
            service,
            tools_stale,
            tools: None,
            pid,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.service.is_closed()
    }

    pub(crate) fn peer(&self) -> Peer<RoleClient> {
        self.service.peer().clone()
    }

    /// The cached tool list, unless the server said it changed.
    pub(crate) fn cached_tools(&self) -> Option<Arc<Vec<Tool>>> {
        if self.tools_stale.load(Ordering::Acquire) {
            None
        } else {
            self.tools.clone()
        }
    }

    /// Caches a list fetched after marking the cache fresh, so a change
    /// announced while it was fetched marks it stale again.
    pub(crate) fn begin_refresh(&self) {
        self.tools_stale.store(false, Ordering::Release);
    }

    pub(crate) fn store_tools(&mut self, tools: Arc<Vec<Tool>>) {
        self.tools = Some(tools);
    }

    pub(crate) async fn close(mut self) {
        let _ = self.service.close().await;
    }
}

/// A stdio server's stderr is its log: keep it, at debug level.
fn forward_stderr(server: String, stderr: tokio::process::ChildStderr) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(mcp_server = %server, "{line}");
        }
    });
}
