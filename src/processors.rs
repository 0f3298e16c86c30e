//! The processor kinds the binary can run, by name.
use std::sync::Arc;
use std::time::Duration;

use chatstream_config::Config;
use chatstream_config::tenants::{Tenant, TenantRegistry};
use chatstream_core::deadletter::DeadLetterSink;
use chatstream_core::fanout::FanOut;
use chatstream_core::log::EventLog;
use chatstream_core::store::ProjectionStore;
use chatstream_projector::ConversationProjector;
use chatstream_router::mock::MockModel;
use chatstream_router::{ModelRouter, router_from_config};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::lifecycle::spawn_processor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProcessorKind {
    /// Projects conversations and their history into the store.
    #[value(name = "conversation-projector", alias = "projector")]
    ConversationProjector,
    /// Answers user messages with a model, streaming tokens to clients.
    Router,
    /// Runs tenants' tool calls on their MCP servers.
    Mcp,
}

impl ProcessorKind {
    pub const ALL: [ProcessorKind; 3] = [Self::ConversationProjector, Self::Router, Self::Mcp];

    /// The consumer group, as the processor names itself.
    pub fn group(self) -> &'static str {
        match self {
            Self::ConversationProjector => ConversationProjector::NAME,
            Self::Router => ModelRouter::NAME,
            Self::Mcp => chatstream_mcp::McpProcessor::NAME,
        }
    }
}

/// What a processor reads and writes.
#[derive(Clone)]
pub struct ProcessorBackends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn ProjectionStore>,
    pub fanout: Arc<dyn FanOut>,
    /// Where records a processor gives up on go.
    pub dead_letters: Arc<dyn DeadLetterSink>,
}

/// Runs `kind` over the log as a task of `tasks` until `shutdown`.
pub fn spawn(
    kind: ProcessorKind,
    config: &Config,
    backends: &ProcessorBackends,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let ProcessorBackends {
        log,
        store,
        fanout,
        dead_letters,
    } = backends.clone();
    match kind {
        ProcessorKind::ConversationProjector => {
            let projector = Arc::new(ConversationProjector::new(store, fanout));
            spawn_processor(tasks, log, projector, dead_letters, shutdown.clone());
        }
        ProcessorKind::Router => {
            // A router that cannot follow its config must not answer: the
            // error (unknown model, missing API key, ...) stops the start.
            let mock = MockModel::new(Duration::from_millis(config.mock_model.token_delay_ms));
            let tenants = routing_tenants(config).map_err(anyhow::Error::msg)?;
            let router =
                router_from_config(log.clone(), store, fanout, &config.models, mock, &tenants)
                    .map_err(|error| anyhow::anyhow!("cannot start the router: {error}"))?;
            // The router lists the tenants' tools on its own connections to
            // their MCP servers; the mcp processor runs the calls.
            let tools = Arc::new(mcp_pool(config).map_err(anyhow::Error::msg)?);
            tasks.spawn(tools.clone().idle_reaper(shutdown.clone()));
            let router = router.with_tools(tools);
            spawn_processor(tasks, log, Arc::new(router), dead_letters, shutdown.clone());
        }
        ProcessorKind::Mcp => {
            let pool = mcp_pool(config)
                .map_err(|error| anyhow::anyhow!("cannot start the mcp processor: {error}"))?;
            let pool = Arc::new(pool);
            tasks.spawn(pool.clone().idle_reaper(shutdown.clone()));
            let mcp = chatstream_mcp::McpProcessor::new(log.clone(), store, pool);
            spawn_processor(tasks, log, Arc::new(mcp), dead_letters, shutdown.clone());
        }
    }
    Ok(())
}

/// The MCP servers of the tenants file's tenants (none without one).
fn mcp_pool(config: &Config) -> Result<chatstream_mcp::McpClientPool, String> {
    config.mcp.validate()?;
    let settings = chatstream_mcp::McpConfig::from(&config.mcp);
    match &config.tenants_file {
        Some(path) => TenantRegistry::load(path)
            .map(|registry| chatstream_mcp::McpClientPool::from_registry(&registry, settings))
            .map_err(|e| e.to_string()),
        None => Ok(chatstream_mcp::McpClientPool::new(
            Default::default(),
            settings,
        )),
    }
}

/// Tenants whose routing policies and budgets the router applies: those of
/// the configured tenants file (none for `chatstream dev`'s own tenant).
fn routing_tenants(config: &Config) -> Result<Vec<Arc<Tenant>>, String> {
    match &config.tenants_file {
        Some(path) => TenantRegistry::load(path)
            .map(|registry| registry.tenants().to_vec())
            .map_err(|e| e.to_string()),
        None => Ok(Vec::new()),
    }
}
