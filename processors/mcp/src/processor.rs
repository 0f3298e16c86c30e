//! Answers each `ToolCallRequested` exactly once with a `ToolCallCompleted`
//! whose id is derived from the request's, after checking the processed
//! mark, so a redelivery after a restart neither runs the tool again nor
//! appends a second result. A call the tenant wants approved first asks
//! (`ToolCallApprovalRequested`) and runs on a client's approval; a
//! rejection or no decision in time is its (error) result.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chatstream_runtime::log::{EventLog, LogPosition};
use chatstream_runtime::runner::{ProcessError, Processor};
use chatstream_runtime::store::{ProjectionStore, StoreError};
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::derived_event_id;
use chatstream_schemas::pb::events::{
    ToolCallApprovalDecided, ToolCallApprovalRequested, ToolCallCompleted, ToolCallRequested,
    event::Payload,
};
use tokio_util::sync::CancellationToken;

use crate::approvals::{PendingApprovals, PendingCall};
use crate::call::{ToolErrorKind, ToolOutcome, run_tool_call};
use crate::pool::McpClientPool;

pub struct McpProcessor {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    pool: Arc<McpClientPool>,
    approvals: PendingApprovals,
}

/// Derived-id index of a request's `ToolCallApprovalRequested` (the result is 0).
const APPROVAL_EVENT_INDEX: u32 = 1;

impl McpProcessor {
    pub const NAME: &'static str = "mcp";

    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        pool: Arc<McpClientPool>,
    ) -> Self {
        Self {
            log,
            store,
            pool,
            approvals: PendingApprovals::default(),
        }
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

    async fn is_done(&self, request_event_id: &str) -> Result<bool, ProcessError> {
        self.store
            .is_processed(Self::NAME, request_event_id)
            .await
            .map_err(retryable)
    }

    async fn on_request(
        &self,
        event: &Event,
        request: &ToolCallRequested,
    ) -> Result<(), ProcessError> {
        if self.is_done(&event.id).await? {
            return Ok(());
        }
        let needs_approval = self
            .pool
            .server_config(&event.tenant_id, &request.server)
            .is_some_and(|s| s.allows(&request.tool) && s.needs_approval(&request.tool));
        if needs_approval {
            // Asked on the log; the wait starts when that event comes back
            // here, so whichever replica owns the partition keeps it.
            let expires_at = SystemTime::now() + self.pool.config().approval_timeout;
            let expires_at_ms = expires_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let asked = derived(
                event,
                APPROVAL_EVENT_INDEX,
                Payload::ToolCallApprovalRequested(Box::new(ToolCallApprovalRequested {
                    call_id: request.call_id.clone(),
                    request: Some(request.clone()),
                    expires_at_ms,
                })),
            );
            return self
                .log
                .append(&event.tenant_id, &asked)
                .await
                .map(|_| ())
                .map_err(|e| ProcessError::Retryable(e.to_string()));
        }
        let outcome = run_tool_call(&self.pool, &event.tenant_id, request).await;
        complete(&self.log, &self.store, event, request, outcome).await
    }

    async fn on_approval_requested(
        &self,
        event: &Event,
        asked: &ToolCallApprovalRequested,
    ) -> Result<(), ProcessError> {
        if self.is_done(&event.causation_id).await? {
            return Ok(());
        }
        let request = asked.request.clone().unwrap_or_default();
        let request_event = Event {
            id: event.causation_id.clone(),
            r#type: chatstream_schemas::event::TOOL_CALL_REQUESTED.into(),
            payload: Some(Payload::ToolCallRequested(Box::new(request.clone()))),
            ..event.clone()
        };
        let request_event_id = request_event.id.clone();
        self.approvals.wait_for(PendingCall {
            request_event,
            request,
        });
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let wait = Duration::from_millis(asked.expires_at_ms.saturating_sub(now_ms).max(0) as u64);
        let (approvals, log, store) =
            (self.approvals.clone(), self.log.clone(), self.store.clone());
        let tenant_id = event.tenant_id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(call) = approvals.settle(&tenant_id, &request_event_id) else {
                return; // decided in time
            };
            let outcome = ToolOutcome::failed(
                ToolErrorKind::Rejected,
                format!("nobody approved the call within {} ms", wait.as_millis()),
            );
            if let Err(error) =
                complete(&log, &store, &call.request_event, &call.request, outcome).await
            {
                tracing::warn!(%error, request_event_id, "could not record an expired approval");
            }
        });
        Ok(())
    }

    async fn on_decision(
        &self,
        event: &Event,
        decided: &ToolCallApprovalDecided,
    ) -> Result<(), ProcessError> {
        let Some(call) = self
            .approvals
            .settle(&event.tenant_id, &decided.request_event_id)
        else {
            tracing::info!(
                tenant_id = %event.tenant_id,
                request_event_id = %decided.request_event_id,
                "ignoring a decision on a call that is not waiting"
            );
            return Ok(());
        };
        let outcome = if decided.approved {
            run_tool_call(&self.pool, &event.tenant_id, &call.request).await
        } else {
            ToolOutcome::failed(
                ToolErrorKind::Rejected,
                format!("a person rejected the call: {}", decided.reason),
            )
        };
        complete(
            &self.log,
            &self.store,
            &call.request_event,
            &call.request,
            outcome,
        )
        .await
    }
}

/// An event caused by `cause`, with the `index`-th id derived from it.
fn derived(cause: &Event, index: u32, payload: Payload) -> Event {
    let correlation_id = if cause.correlation_id.is_empty() {
        &cause.id
    } else {
        &cause.correlation_id
    };
    new_event(
        derived_event_id(&cause.id, index),
        EventContext {
            tenant_id: &cause.tenant_id,
            conversation_id: &cause.conversation_id,
            causation_id: &cause.id,
            correlation_id,
        },
        payload,
    )
}

/// Appends the call's one result and marks the request done.
async fn complete(
    log: &Arc<dyn EventLog>,
    store: &Arc<dyn ProjectionStore>,
    request_event: &Event,
    request: &ToolCallRequested,
    outcome: ToolOutcome,
) -> Result<(), ProcessError> {
    let kind = outcome.error.map_or("ok", ToolErrorKind::as_str);
    metrics::counter!("chatstream_mcp_tool_calls_total", "outcome" => kind).increment(1);
    tracing::info!(
        tenant_id = %request_event.tenant_id,
        mcp_server = %request.server,
        tool = %request.tool,
        outcome = kind,
        "tool call finished"
    );
    let completed = derived(
        request_event,
        0,
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
    log.append(&request_event.tenant_id, &completed)
        .await
        .map_err(|e| ProcessError::Retryable(e.to_string()))?;
    store
        .mark_processed(McpProcessor::NAME, &request_event.id)
        .await
        .map_err(retryable)
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
        match &event.payload {
            Some(Payload::ToolCallRequested(request)) => self.on_request(event, request).await,
            Some(Payload::ToolCallApprovalRequested(asked)) => {
                self.on_approval_requested(event, asked).await
            }
            Some(Payload::ToolCallApprovalDecided(decided)) => {
                self.on_decision(event, decided).await
            }
            _ => Ok(()),
        }
    }
}
