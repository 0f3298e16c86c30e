//! The processor kinds the binary can run, by name: the one list of them.
//! Topics (`chatstream topics describe`), `dev`, the metrics compliance
//! test and the README all take the kinds from `ProcessorKind::ALL`.
use std::sync::Arc;
use std::time::Duration;

use chatstream_analytics::AnalyticsProjector;
use chatstream_config::Config;
use chatstream_config::tenants::TenantRegistry;
use chatstream_core::analytics::AnalyticsStore;
use chatstream_core::deadletter::DeadLetterSink;
use chatstream_core::fanout::FanOut;
use chatstream_core::log::EventLog;
use chatstream_core::store::ProjectionStore;
use chatstream_projector::ConversationProjector;
use chatstream_router::mock::MockModel;
use chatstream_router::{ModelRouter, router_from_config};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::{self, CoreBackends};
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
    /// Projects usage and latency per tenant and time bucket.
    Analytics,
}

impl ProcessorKind {
    pub const ALL: [ProcessorKind; 4] = [
        Self::ConversationProjector,
        Self::Router,
        Self::Mcp,
        Self::Analytics,
    ];

    /// The consumer group, as the processor names itself; also its name on
    /// the command line and its `processor` label on metrics.
    pub fn group(self) -> &'static str {
        match self {
            Self::ConversationProjector => ConversationProjector::NAME,
            Self::Router => ModelRouter::NAME,
            Self::Mcp => chatstream_mcp::McpProcessor::NAME,
            Self::Analytics => AnalyticsProjector::NAME,
        }
    }

    /// Whether it reads the tenants file: the router for routing policies
    /// and budgets, both for the tenants' MCP servers.
    pub fn reads_tenants(self) -> bool {
        match self {
            Self::ConversationProjector | Self::Analytics => false,
            Self::Router | Self::Mcp => true,
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
    /// The analytics projection (written by the analytics processor).
    pub analytics: Arc<dyn AnalyticsStore>,
}

impl ProcessorBackends {
    /// The log, store and fan-out, and the dead letters beside the log.
    pub async fn open(config: &Config, core: &CoreBackends) -> anyhow::Result<Self> {
        let CoreBackends {
            log,
            store,
            fanout,
            analytics,
        } = core.clone();
        Ok(Self {
            log,
            store,
            fanout,
            dead_letters: backends::open_dead_letters(config, &config.data_dir).await?,
            analytics,
        })
    }
}

/// Runs `kind` over the log as a task of `tasks` until `shutdown`.
/// `tenants` are those of the tenants file (checked at load).
pub fn spawn(
    kind: ProcessorKind,
    config: &Config,
    tenants: &TenantRegistry,
    backends: &ProcessorBackends,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let ProcessorBackends {
        log,
        store,
        fanout,
        dead_letters,
        analytics,
    } = backends.clone();
    match kind {
        ProcessorKind::ConversationProjector => {
            let projector = Arc::new(ConversationProjector::new(log.clone(), store, fanout));
            spawn_processor(
                tasks,
                config,
                log,
                projector,
                dead_letters,
                shutdown.clone(),
            );
        }
        ProcessorKind::Router => {
            // A router that cannot follow its config must not answer: the
            // error (unknown model, missing API key, ...) stops the start.
            let mock = MockModel::new(Duration::from_millis(config.mock_model.token_delay_ms))
                .with_first_token_delay(Duration::from_millis(
                    config.mock_model.first_token_delay_ms,
                ));
            let router = router_from_config(
                log.clone(),
                store,
                fanout,
                &config.models,
                mock,
                tenants.tenants(),
            )
            .map_err(|error| anyhow::anyhow!("cannot start the router: {error}"))?;
            // The router lists the tenants' tools on its own connections to
            // their MCP servers; the mcp processor runs the calls.
            let tools = Arc::new(mcp_pool(config, tenants));
            tasks.spawn(tools.clone().idle_reaper(shutdown.clone()));
            let router = router.with_tools(tools);
            spawn_processor(
                tasks,
                config,
                log,
                Arc::new(router),
                dead_letters,
                shutdown.clone(),
            );
        }
        ProcessorKind::Mcp => {
            let pool = Arc::new(mcp_pool(config, tenants));
            tasks.spawn(pool.clone().idle_reaper(shutdown.clone()));
            let mcp = chatstream_mcp::McpProcessor::new(log.clone(), store, pool);
            spawn_processor(
                tasks,
                config,
                log,
                Arc::new(mcp),
                dead_letters,
                shutdown.clone(),
            );
        }
        ProcessorKind::Analytics => {
            let projector = AnalyticsProjector::new(log.clone(), store, analytics);
            spawn_processor(
                tasks,
                config,
                log,
                Arc::new(projector),
                dead_letters,
                shutdown.clone(),
            );
        }
    }
    Ok(())
}

/// The tenants' MCP servers, under the platform's limits.
fn mcp_pool(config: &Config, tenants: &TenantRegistry) -> chatstream_mcp::McpClientPool {
    chatstream_mcp::McpClientPool::from_registry(tenants, config.mcp.clone())
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// The command line, the consumer groups and the metrics' `processor`
    /// label all name a kind the same way, and `ALL` is every kind.
    #[test]
    fn every_kind_is_listed_once_under_one_name() {
        assert_eq!(ProcessorKind::value_variants(), ProcessorKind::ALL);
        for kind in ProcessorKind::ALL {
            let name = kind.to_possible_value().expect("not hidden");
            assert_eq!(name.get_name(), kind.group());
        }
    }

    /// The README shows how to run each kind alone.
    #[test]
    fn the_readme_shows_every_kind() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("read README.md");
        for kind in ProcessorKind::ALL {
            let command = format!("chatstream processor {}", kind.group());
            assert!(
                readme.contains(&command),
                "README.md never shows `{command}`"
            );
        }
    }
}
