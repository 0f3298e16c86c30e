//! Answers each `ToolCallRequested` exactly once with a `ToolCallCompleted`
//! whose id is derived from the request's, after checking the processed
//! mark, so a redelivery after a restart neither runs the tool again nor
//! appends a second result.
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_runtime::log::{EventLog, LogPosition};
use chatstream_runtime::runner::{ProcessError, Processor};
use chatstream_runtime::store::{ProjectionStore, StoreError};
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::derived_event_id;
use chatstream_schemas::pb::events::{ToolCallCompleted, ToolCallRequested, event::Payload};
use tokio_util::sync::CancellationToken;

use crate::call::{ToolErrorKind, ToolOutcome, run_tool_call};
use crate::pool::McpClientPool;

pub struct McpProcessor {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    pool: Arc<McpClientPool>,
}

impl McpProcessor {
    pub const NAME: &'static str = "mcp";

    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        pool: Arc<McpClientPool>,
    ) -> Self {
        Self { log, store, pool }
    }

    /// Closes idle servers every so often until `shutdown`.
    pub fn spawn_idle_reaper(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let pool = Arc::downgrade(&self.pool);
        let every = (self.pool.config().idle_timeout / 4).max(std::time::Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(pool) = pool.upgrade() else { return };
                pool.close_idle().await;
            }
        })
    }

    async fn complete(
        &self,
        request_event: &Event,
        request: &ToolCallRequested,
        outcome: ToolOutcome,
    ) -> Result<(), ProcessError> {
        metrics::counter!(
            "chatstream_mcp_tool_calls_total",
            "outcome" => outcome.error.map_or("ok", ToolErrorKind::as_str)
        )
        .increment(1);
        let correlation_id = if request_event.correlation_id.is_empty() {
            &request_event.id
        } else {
            &request_event.correlation_id
        };
        let completed = new_event(
            derived_event_id(&request_event.id, 0),
            EventContext {
                tenant_id: &request_event.tenant_id,
                conversation_id: &request_event.conversation_id,
                causation_id: &request_event.id,
                correlation_id,
            },
            Payload::ToolCallCompleted(Box::new(ToolCallCompleted {
                call_id: request.call_id.clone(),
                request: Some(request.clone()),
                content_text: outcome.content_text,
                structured_json: outcome.structured_json,
                is_error: outcome.error.is_some(),
                error_kind: outcome
                    .error
                    .map(|k| k.as_str().to_owned())
                    .unwrap_or_default(),
                truncated: outcome.truncated,
            })),
        );
        self.log
            .append(&request_event.tenant_id, &completed)
            .await
            .map_err(|e| ProcessError::Retryable(e.to_string()))?;
        self.store
            .mark_processed(Self::NAME, &request_event.id)
            .await
            .map_err(retryable)
    }
}

fn retryable(error: StoreError) -> ProcessError {
    ProcessError::Retryable(error.to_string())
}

#[async_trait]
impl Processor for McpProcessor {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &Event, _position: LogPosition) -> Result<(), ProcessError> {
        let Some(Payload::ToolCallRequested(request)) = &event.payload else {
            return Ok(());
        };
        if self
            .store
            .is_processed(Self::NAME, &event.id)
            .await
            .map_err(retryable)?
        {
            return Ok(());
        }
        let needs_approval = self
            .pool
            .server_config(&event.tenant_id, &request.server)
            .is_some_and(|s| s.needs_approval(&request.tool));
        let outcome = if needs_approval {
            // Waiting for a person is not built yet: refuse plainly rather
            // than run a call the tenant wants approved.
            ToolOutcome::failed(
                ToolErrorKind::Rejected,
                format!(
                    "tool {:?} needs a person's approval, which this deployment cannot ask for yet",
                    request.tool
                ),
            )
        } else {
            run_tool_call(&self.pool, &event.tenant_id, request).await
        };
        tracing::info!(
            tenant_id = %event.tenant_id,
            mcp_server = %request.server,
            tool = %request.tool,
            outcome = outcome.error.map_or("ok", ToolErrorKind::as_str),
            "tool call finished"
        );
        self.complete(event, request, outcome).await
    }
}
