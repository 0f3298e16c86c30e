//! The processor kinds the binary can run, by name.
use std::sync::Arc;
use std::time::Duration;

use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_runtime::config::Config;
use chatstream_runtime::deadletter::DeadLetterSink;
use chatstream_runtime::fanout::FanOut;
use chatstream_runtime::log::EventLog;
use chatstream_runtime::projector::ConversationProjector;
use chatstream_runtime::store::ProjectionStore;
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
}

impl ProcessorKind {
    pub const ALL: [ProcessorKind; 2] = [Self::ConversationProjector, Self::Router];

    /// The consumer group, as the processor names itself.
    pub fn group(self) -> &'static str {
        match self {
            Self::ConversationProjector => ConversationProjector::NAME,
            Self::Router => ModelRouter::NAME,
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
) {
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
            let model = Arc::new(MockModel::new(Duration::from_millis(
                config.mock_model.token_delay_ms,
            )));
            let router = Arc::new(ModelRouter::new(log.clone(), store, fanout, model));
            spawn_processor(tasks, log, router, dead_letters, shutdown.clone());
        }
    }
}
