//! Answers each `ToolCallRequested` exactly once with a `ToolCallCompleted`
//! whose id is derived from the request's, after checking the processed
//! mark, so a redelivery after a restart neither runs the tool again nor
//! appends a second result. A call the tenant wants approved first asks
//! (`ToolCallApprovalRequested`) and runs on a client's approval; a
//! rejection or no decision in time is its (error) result. Waiting calls
//! live in memory but are facts on the log: a processor that takes over a
//! partition (after a restart or a rebalance) finds them there again.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{ProcessError, Processor};
use chatstream_core::store::{ProjectionStore, StoreError};
use chatstream_schemas::Event;
use chatstream_schemas::event::derived_event;
use chatstream_schemas::pb::events::{
    ToolCallApprovalDecided, ToolCallApprovalRequested, ToolCallCompleted, ToolCallRequested,
    event::Payload,
};
use tokio_util::sync::CancellationToken;

use crate::approvals::{PendingApprovals, PendingCall};
use crate::call::{ToolErrorKind, ToolOutcome, run_tool_call};
use crate::pool::McpClientPool;
use crate::recovery;

pub struct McpProcessor {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    pool: Arc<McpClientPool>,
    deadlines: Deadlines,
    /// The partitions this member owns, as the runner last said.
    owned: Mutex<Vec<u32>>,
}

/// Derived-id index of a request's `ToolCallApprovalRequested` (the result is 0).
const APPROVAL_EVENT_INDEX: u32 = 1;

/// How much longer than the approval timeout the recovery looks back: covers
/// clock skew between producers and a timeout lowered since the call asked.
const RECOVERY_MARGIN: Duration = Duration::from_secs(60);

impl McpProcessor {
    pub const NAME: &'static str = "mcp";

    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        pool: Arc<McpClientPool>,
    ) -> Self {
        let deadlines = Deadlines {
            log: log.clone(),
            store: store.clone(),
            approvals: PendingApprovals::default(),
            progress: Arc::default(),
            stop: CancellationToken::new(),
        };
        Self {
            log,
            store,
            pool,
            deadlines,
            owned: Mutex::default(),
        }
    }

    /// Calls waiting for a decision in this process.
    pub fn waiting_approvals(&self) -> usize {
        self.deadlines.approvals.len()
    }

    /// Whether the runner gave this processor partitions and it resumed
    /// the waits there.
    pub fn owns_partitions(&self) -> bool {
        !self.owned.lock().expect("owned lock").is_empty()
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
            let expires_at = SystemTime::now() + self.pool.config().approval_timeout();
            let asked = derived_event(
                event,
                APPROVAL_EVENT_INDEX,
                Payload::ToolCallApprovalRequested(Box::new(ToolCallApprovalRequested {
                    call_id: request.call_id.clone(),
                    request: Some(request.clone()),
                    expires_at_ms: unix_ms(expires_at),
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
        position: LogPosition,
    ) -> Result<(), ProcessError> {
        if self.is_done(&event.causation_id).await? {
            return Ok(());
        }
        let call = PendingCall::from_approval_request(event, asked, position.partition);
        self.deadlines.arm(call);
        Ok(())
    }

    async fn on_decision(
        &self,
        event: &Event,
        decided: &ToolCallApprovalDecided,
    ) -> Result<(), ProcessError> {
        let waiting = if self.is_done(&decided.request_event_id).await? {
            None
        } else {
            self.deadlines
                .approvals
                .settle(&event.tenant_id, &decided.request_event_id)
        };
        let Some(call) = waiting else {
            tracing::info!(
                tenant_id = %event.tenant_id,
                request_event_id = %decided.request_event_id,
                "ignoring a decision on a call that is not waiting"
            );
            return Ok(());
        };
        // Judged by when the person decided, not when this processor got
        // to it: an approval given in time counts after a restart too.
        let decided_at_ms = occurred_at_ms(event).unwrap_or_else(|| unix_ms(SystemTime::now()));
        let outcome = if call.is_expired(decided_at_ms) {
            expired(&call)
        } else if decided.approved {
            run_tool_call(&self.pool, &event.tenant_id, &call.request).await
        } else {
            ToolOutcome::failed(
                ToolErrorKind::Rejected,
                format!("a person rejected the call: {}", decided.reason),
            )
        };
        let completed = complete(
            &self.log,
            &self.store,
            &call.request_event,
            &call.request,
            outcome,
        )
        .await;
        if completed.is_err() {
            // The runner retries this decision; it must find the call again.
            self.deadlines.arm(call);
        }
        completed
    }

    /// Resumes the waits a previous owner of each newly owned partition left
    /// (found on the log), and forgets those of partitions no longer owned.
    async fn take_partitions(&self, partitions: &[u32]) {
        // The runner calls this from one task, so `owned` cannot change
        // underneath; it is updated once the waits are resumed.
        let gained: Vec<u32> = {
            let owned = self.owned.lock().expect("owned lock");
            partitions
                .iter()
                .filter(|p| !owned.contains(p))
                .copied()
                .collect()
        };
        self.deadlines.approvals.keep_partitions(partitions);
        self.deadlines.keep_partitions(partitions);
        let window = self.pool.config().approval_timeout() + RECOVERY_MARGIN;
        for partition in gained {
            let Some(recovered) = recovery::waiting_calls(
                self.log.as_ref(),
                self.store.as_ref(),
                partition,
                window,
                &self.deadlines.stop,
            )
            .await
            else {
                return; // going away
            };
            self.deadlines.restart(
                partition,
                recovered.resume_offset,
                recovered.last_handled_ms,
            );
            if !recovered.calls.is_empty() {
                tracing::info!(
                    partition,
                    waiting = recovered.calls.len(),
                    "resuming tool calls waiting for approval"
                );
            }
            for call in recovered.calls {
                self.deadlines.arm(call);
            }
        }
        *self.owned.lock().expect("owned lock") = partitions.to_vec();
    }
}

impl Drop for McpProcessor {
    fn drop(&mut self) {
        // Deadline timers outlive no processor: a new one resumes them.
        self.deadlines.stop.cancel();
    }
}

/// The deadlines of waiting calls: a timer per call settles it as expired,
/// but only once this processor has handled the partition up to the
/// deadline (every record up to an event that occurred after it, or
/// everything there is), so a decision made in time but not handled yet
/// (the processor lagged or restarted, or is still busy with the records
/// before it) still wins.
#[derive(Clone)]
struct Deadlines {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    approvals: PendingApprovals,
    progress: Arc<Mutex<HashMap<u32, Progress>>>,
    stop: CancellationToken,
}

/// How far this processor got in a partition. The runner handles the
/// conversations of a partition side by side, so a record may be handled
/// before an earlier one of another conversation: only the unbroken run of
/// finished records from the start counts.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every record before this offset was handled (or given up on).
    next_offset: u64,
    /// The latest time (unix ms) an event before `next_offset` occurred at.
    latest_ms: i64,
    /// Records handled past `next_offset`, with when they occurred; they
    /// count once the records before them are finished.
    ahead: BTreeMap<u64, i64>,
}

impl Progress {
    /// Folds in the records handled past the position that now follow on.
    fn advance(&mut self) {
        while let Some(at_ms) = self.ahead.remove(&self.next_offset) {
            self.latest_ms = self.latest_ms.max(at_ms);
            self.next_offset += 1;
        }
    }

    /// Every record before `next_offset` is finished (the runner says so;
    /// it knows of records this processor never handled, like dead letters).
    fn finished_before(&mut self, next_offset: u64) {
        if next_offset <= self.next_offset {
            return;
        }
        let still_ahead = self.ahead.split_off(&next_offset);
        for at_ms in std::mem::replace(&mut self.ahead, still_ahead).into_values() {
            self.latest_ms = self.latest_ms.max(at_ms);
        }
        self.next_offset = next_offset;
        self.advance();
    }
}

/// How often an expired call's timer checks whether the processor caught up.
const CATCH_UP_POLL: Duration = Duration::from_millis(200);
const SETTLE_RETRY_MAX: Duration = Duration::from_secs(10);

impl Deadlines {
    /// Starts over in a partition just taken: every record before
    /// `next_offset` was handled, the latest of them having occurred at
    /// `latest_ms`.
    fn restart(&self, partition: u32, next_offset: u64, latest_ms: i64) {
        let mut progress = self.progress.lock().expect("progress lock");
        progress.insert(
            partition,
            Progress {
                next_offset,
                latest_ms,
                ahead: BTreeMap::new(),
            },
        );
    }

    /// Records that the record at `offset`, which occurred at `at_ms`, was
    /// handled.
    fn handled(&self, partition: u32, offset: u64, at_ms: i64) {
        let mut progress = self.progress.lock().expect("progress lock");
        let known = progress.entry(partition).or_default();
        if offset < known.next_offset {
            return; // a redelivery
        }
        known.ahead.insert(offset, at_ms);
        known.advance();
    }

    /// Every record of `partition` before `next_offset` is finished.
    fn finished_before(&self, partition: u32, next_offset: u64) {
        let mut progress = self.progress.lock().expect("progress lock");
        progress
            .entry(partition)
            .or_default()
            .finished_before(next_offset);
    }

    fn keep_partitions(&self, partitions: &[u32]) {
        let mut progress = self.progress.lock().expect("progress lock");
        progress.retain(|partition, _| partitions.contains(partition));
    }

    /// How far the partition is handled: (next offset, latest occurred at).
    fn progress(&self, partition: u32) -> (u64, i64) {
        let progress = self.progress.lock().expect("progress lock");
        progress
            .get(&partition)
            .map_or((0, 0), |known| (known.next_offset, known.latest_ms))
    }

    /// Starts the call's wait unless it waits already.
    fn arm(&self, call: PendingCall) {
        let Some(timer) = self.approvals.wait_for(call.clone(), &self.stop) else {
            return;
        };
        let deadlines = self.clone();
        tokio::spawn(async move { deadlines.expire_when_due(call, timer).await });
    }

    async fn expire_when_due(self, call: PendingCall, timer: CancellationToken) {
        let now_ms = unix_ms(SystemTime::now());
        let wait = Duration::from_millis(call.expires_at_ms.saturating_sub(now_ms).max(0) as u64);
        tokio::select! {
            _ = timer.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if !self.caught_up_to_deadline(&call, &timer).await {
            return;
        }
        let Some(call) = self
            .approvals
            .settle(&call.request_event.tenant_id, &call.request_event.id)
        else {
            return; // a decision came first
        };
        let mut backoff = CATCH_UP_POLL;
        loop {
            let settled = match self
                .store
                .is_processed(McpProcessor::NAME, &call.request_event.id)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => {
                    let outcome = expired(&call);
                    complete(
                        &self.log,
                        &self.store,
                        &call.request_event,
                        &call.request,
                        outcome,
                    )
                    .await
                }
                Err(error) => Err(retryable(error)),
            };
            let Err(error) = settled else { return };
            tracing::warn!(%error, request_event_id = %call.request_event.id,
                "could not record an expired approval; retrying");
            tokio::select! {
                // Not recorded: the next owner of the partition resumes it.
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(SETTLE_RETRY_MAX);
        }
    }

    /// Waits until no decision made before the call's deadline can still be
    /// ahead in its partition: an event handled occurred after the deadline,
    /// or every record there is was handled (here or by the group). `false`
    /// when the wait was called off.
    async fn caught_up_to_deadline(&self, call: &PendingCall, timer: &CancellationToken) -> bool {
        let partition = call.partition;
        loop {
            let (next_offset, latest_ms) = self.progress(partition);
            if latest_ms > call.expires_at_ms {
                return true;
            }
            if let Ok(end) = self.log.end_offset(partition).await {
                let mut next = next_offset;
                if next < end {
                    let committed = self.log.committed(McpProcessor::NAME, partition).await;
                    next = next.max(committed.ok().flatten().unwrap_or_default());
                }
                if next >= end {
                    return true;
                }
            }
            tokio::select! {
                _ = timer.cancelled() => return false,
                _ = tokio::time::sleep(CATCH_UP_POLL) => {}
            }
        }
    }
}

fn expired(call: &PendingCall) -> ToolOutcome {
    ToolOutcome::failed(
        ToolErrorKind::Rejected,
        format!(
            "nobody approved the call before its deadline (unix ms {})",
            call.expires_at_ms
        ),
    )
}

fn occurred_at_ms(event: &Event) -> Option<i64> {
    let at = event.occurred_at?;
    Some(at.seconds * 1000 + i64::from(at.nanos) / 1_000_000)
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
    let completed = derived_event(
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

    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        let handled = match &event.payload {
            Some(Payload::ToolCallRequested(request)) => self.on_request(event, request).await,
            Some(Payload::ToolCallApprovalRequested(asked)) => {
                self.on_approval_requested(event, asked, position).await
            }
            Some(Payload::ToolCallApprovalDecided(decided)) => {
                self.on_decision(event, decided).await
            }
            _ => Ok(()),
        };
        if handled.is_ok() {
            let at_ms = occurred_at_ms(event).unwrap_or_default();
            self.deadlines
                .handled(position.partition, position.offset, at_ms);
        }
        handled
    }

    async fn partitions_assigned(&self, partitions: &[u32]) {
        self.take_partitions(partitions).await;
    }

    fn partition_progressed(&self, partition: u32, next_offset: u64) {
        self.deadlines.finished_before(partition, next_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn progress_counts_only_the_unbroken_run_of_finished_records() {
        let mut progress = Progress::default();
        // Other conversations finish first.
        for (offset, at_ms) in [(2, 20), (1, 10), (4, 40)] {
            progress.ahead.insert(offset, at_ms);
            progress.advance();
        }
        assert_eq!((progress.next_offset, progress.latest_ms), (0, 0));
        progress.ahead.insert(0, 5);
        progress.advance();
        assert_eq!((progress.next_offset, progress.latest_ms), (3, 20));
        // Offset 3 was dead-lettered: only the runner knows it finished.
        progress.finished_before(4);
        assert_eq!((progress.next_offset, progress.latest_ms), (5, 40));
        progress.finished_before(2);
        assert_eq!(progress.next_offset, 5, "an older report changes nothing");
    }
}
