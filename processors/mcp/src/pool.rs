//! Live MCP clients, one per tenant and server: started on first use,
//! reused by every call, restarted with backoff after a failure or crash,
//! and closed when idle. Lookups are by tenant first, so a tenant can only
//! ever reach the servers its own config lists.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_config::McpSettings;
use chatstream_config::mcp::McpServerConfig;
use chatstream_config::tenants::TenantRegistry;
use rmcp::model::Tool;
use rmcp::{Peer, RoleClient};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::catalog::{ToolCatalog, ToolDescriptor};
use crate::connection::Connection;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The tenant has no server by that name (another tenant's does not count).
    #[error("no MCP server named {0:?} is configured for this tenant")]
    UnknownServer(String),
    #[error("MCP server {server:?} is unavailable: {reason}")]
    Unavailable { server: String, reason: String },
}

pub struct McpClientPool {
    servers: HashMap<String, Vec<McpServerConfig>>,
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
    permits: Mutex<HashMap<String, Arc<Semaphore>>>,
    config: McpSettings,
}

struct Slot {
    server: McpServerConfig,
    state: tokio::sync::Mutex<SlotState>,
}

struct SlotState {
    connection: Option<Connection>,
    /// Failures in a row; sets the backoff before the next start.
    failures: u32,
    retry_at: Option<Instant>,
    last_used: Instant,
    /// Counts connections, so a report about an old one leaves a new one alone.
    generation: u64,
}

/// A client of one server connection; `generation` names the connection
/// for `report_broken`.
pub struct PeerLease {
    pub peer: Peer<RoleClient>,
    pub generation: u64,
}

impl McpClientPool {
    /// `servers` maps each tenant id to its own servers.
    pub fn new(servers: HashMap<String, Vec<McpServerConfig>>, config: McpSettings) -> Self {
        Self {
            servers,
            slots: Mutex::default(),
            permits: Mutex::default(),
            config,
        }
    }

    pub fn from_registry(registry: &TenantRegistry, config: McpSettings) -> Self {
        let servers = registry
            .tenants()
            .iter()
            .filter(|t| !t.mcp_servers.is_empty())
            .map(|t| (t.id.clone(), t.mcp_servers.clone()))
            .collect();
        Self::new(servers, config)
    }

    pub fn config(&self) -> &McpSettings {
        &self.config
    }

    /// The tenant's server called `server`, if the tenant has one.
    pub fn server_config(&self, tenant_id: &str, server: &str) -> Option<&McpServerConfig> {
        self.servers
            .get(tenant_id)?
            .iter()
            .find(|s| s.name == server)
    }

    /// Bounds the tenant's calls in flight; hold the permit for the call.
    pub fn tenant_calls(&self, tenant_id: &str) -> Arc<Semaphore> {
        self.permits
            .lock()
            .expect("permits lock")
            .entry(tenant_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(self.config.max_concurrent_calls_per_tenant))
            })
            .clone()
    }

    fn slot(&self, tenant_id: &str, server: &str) -> Result<Arc<Slot>, PoolError> {
        let config = self
            .server_config(tenant_id, server)
            .ok_or_else(|| PoolError::UnknownServer(server.to_owned()))?;
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots
            .entry((tenant_id.to_owned(), server.to_owned()))
            .or_insert_with(|| {
                Arc::new(Slot {
                    server: config.clone(),
                    state: tokio::sync::Mutex::new(SlotState {
                        connection: None,
                        failures: 0,
                        retry_at: None,
                        last_used: Instant::now(),
                        generation: 0,
                    }),
                })
            });
        Ok(slot.clone())
    }

    /// A client for the tenant's server, started (or restarted) if needed.
    /// Waits out a restart backoff only when it ends before `deadline`.
    pub async fn peer(
        &self,
        tenant_id: &str,
        server: &str,
        deadline: Instant,
    ) -> Result<PeerLease, PoolError> {
        let slot = self.slot(tenant_id, server)?;
        let mut state = slot.state.lock().await;
        self.ensure_connected(&slot, &mut state, deadline).await?;
        let connection = state.connection.as_ref().expect("connected");
        Ok(PeerLease {
            peer: connection.peer(),
            generation: state.generation,
        })
    }

    /// The tenant's tools on `server` (every tool it lists, allowed or not),
    /// from the cache unless the server announced a change.
    pub async fn list_tools(
        &self,
        tenant_id: &str,
        server: &str,
    ) -> Result<Arc<Vec<Tool>>, PoolError> {
        let slot = self.slot(tenant_id, server)?;
        let deadline = Instant::now() + self.config.connect_timeout();
        let mut state = slot.state.lock().await;
        self.ensure_connected(&slot, &mut state, deadline).await?;
        let connection = state.connection.as_mut().expect("connected");
        if let Some(tools) = connection.cached_tools() {
            return Ok(tools);
        }
        connection.begin_refresh();
        let peer = connection.peer();
        let listed = tokio::time::timeout_at(deadline, peer.list_all_tools()).await;
        let unavailable = |reason: String| PoolError::Unavailable {
            server: server.to_owned(),
            reason,
        };
        match listed {
            Ok(Ok(tools)) => {
                let tools = Arc::new(tools);
                connection.store_tools(tools.clone());
                Ok(tools)
            }
            Ok(Err(error)) => {
                self.mark_broken(&mut state).await;
                Err(unavailable(format!("tools/list failed: {error}")))
            }
            Err(_) => {
                self.mark_broken(&mut state).await;
                Err(unavailable("tools/list timed out".into()))
            }
        }
    }

    /// Tells the pool a call found connection `generation` gone (the
    /// server crashed or hung up), so the next use restarts it.
    pub async fn report_broken(&self, tenant_id: &str, server: &str, generation: u64) {
        if let Ok(slot) = self.slot(tenant_id, server) {
            let mut state = slot.state.lock().await;
            if state.generation == generation && state.connection.is_some() {
                self.mark_broken(&mut state).await;
            }
        }
    }

    /// Tells the pool a call succeeded, which ends any backoff streak.
    pub async fn report_healthy(&self, tenant_id: &str, server: &str) {
        if let Ok(slot) = self.slot(tenant_id, server) {
            slot.state.lock().await.failures = 0;
        }
    }

    /// Process id of a running stdio server (for operators and tests).
    pub async fn server_pid(&self, tenant_id: &str, server: &str) -> Option<u32> {
        let slot = self.slot(tenant_id, server).ok()?;
        let state = slot.state.lock().await;
        state.connection.as_ref().and_then(|c| c.pid)
    }

    /// Closes every server unused for `idle_timeout`; returns how many.
    pub async fn close_idle(&self) -> usize {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .expect("slots lock")
            .values()
            .cloned()
            .collect();
        let mut closed = 0;
        for slot in slots {
            let Ok(mut state) = slot.state.try_lock() else {
                continue; // in use right now
            };
            if state.last_used.elapsed() < self.config.idle_timeout() {
                continue;
            }
            if let Some(connection) = state.connection.take() {
                tracing::info!(mcp_server = %slot.server.name, "closing idle MCP server");
                connection.close().await;
                closed += 1;
            }
        }
        closed
    }

    async fn ensure_connected(
        &self,
        slot: &Slot,
        state: &mut SlotState,
        deadline: Instant,
    ) -> Result<(), PoolError> {
        state.last_used = Instant::now();
        if state.connection.as_ref().is_some_and(Connection::is_closed) {
            tracing::warn!(mcp_server = %slot.server.name, "MCP server connection closed; restarting it");
            self.mark_broken(state).await;
        }
        if state.connection.is_some() {
            return Ok(());
        }
        let unavailable = |reason: String| PoolError::Unavailable {
            server: slot.server.name.clone(),
            reason,
        };
        if let Some(retry_at) = state.retry_at.filter(|at| *at > Instant::now()) {
            if retry_at >= deadline {
                return Err(unavailable(format!(
                    "restarting after {} failure(s); next attempt in {} ms",
                    state.failures,
                    retry_at
                        .saturating_duration_since(Instant::now())
                        .as_millis()
                )));
            }
            tokio::time::sleep_until(retry_at).await;
        }
        let connect_by = deadline.min(Instant::now() + self.config.connect_timeout());
        let opened = tokio::time::timeout_at(
            connect_by,
            Connection::open(&slot.server.name, &slot.server.transport),
        )
        .await
        .unwrap_or_else(|_| Err("connect timed out".into()));
        match opened {
            Ok(connection) => {
                state.connection = Some(connection);
                state.generation += 1;
                state.retry_at = None;
                Ok(())
            }
            Err(reason) => {
                state.failures += 1;
                state.retry_at = Some(Instant::now() + self.backoff(state.failures));
                tracing::warn!(mcp_server = %slot.server.name, %reason, "cannot start MCP server");
                Err(unavailable(reason))
            }
        }
    }

    async fn mark_broken(&self, state: &mut SlotState) {
        if let Some(connection) = state.connection.take() {
            connection.close().await;
        }
        state.failures += 1;
        state.retry_at = Some(Instant::now() + self.backoff(state.failures));
    }

    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        self.config
            .restart_backoff()
            .saturating_mul(1 << doublings)
            .min(self.config.max_restart_backoff())
    }
}

impl McpClientPool {
    /// A task that closes idle servers every so often until `shutdown` (or
    /// until the last other holder of the pool lets go).
    pub fn idle_reaper(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let every = (self.config.idle_timeout() / 4).max(Duration::from_secs(1));
        let pool = Arc::downgrade(&self);
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(pool) = pool.upgrade() else { return };
                pool.close_idle().await;
            }
        }
    }
}

#[async_trait]
impl ToolCatalog for McpClientPool {
    async fn tools_for_tenant(&self, tenant_id: &str) -> Vec<ToolDescriptor> {
        let Some(servers) = self.servers.get(tenant_id) else {
            return Vec::new();
        };
        let mut descriptors = Vec::new();
        for server in servers {
            let tools = match self.list_tools(tenant_id, &server.name).await {
                Ok(tools) => tools,
                Err(error) => {
                    tracing::warn!(tenant_id, mcp_server = %server.name, %error, "leaving out an unreachable MCP server's tools");
                    continue;
                }
            };
            descriptors.extend(tools.iter().filter(|t| server.allows(&t.name)).map(|t| {
                ToolDescriptor {
                    server: server.name.clone(),
                    tool: t.name.to_string(),
                    description: t.description.as_deref().unwrap_or_default().to_owned(),
                    input_schema: serde_json::Value::Object((*t.input_schema).clone()),
                }
            }));
        }
        descriptors
    }
}
