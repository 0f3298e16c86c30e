//! Finds the calls still waiting for approval when a processor takes over a
//! partition: the `ToolCallApprovalRequested` events its previous owner
//! handled whose request has no result yet (no processed mark).
//!
//! A call's deadline timer settles it once the processor handled an event
//! from after the deadline, so a call still waiting when the previous owner
//! stopped has its deadline after that owner's last handled record: it was
//! asked at most one approval timeout before it. The scan walks the log
//! back from the group's committed offset only that far (plus a margin),
//! by the records' append times.
use std::time::Duration;

use chatstream_core::log::{EventLog, LogError, LogRecord};
use chatstream_core::store::{ProjectionStore, StoreError};
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use tokio_util::sync::CancellationToken;

use crate::McpProcessor;
use crate::approvals::PendingCall;

/// Records read per step of the backward scan.
const SCAN_CHUNK: u64 = 500;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a partition's previous owner left waiting.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Where the group resumes: every record before it was handled.
    pub resume_offset: u64,
    /// When the last record handled was appended (unix ms).
    pub last_handled_ms: i64,
    pub calls: Vec<PendingCall>,
}

#[derive(Debug, thiserror::Error)]
enum RecoveryError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The calls of `partition` waiting for a decision, retrying an unavailable
/// log or store for as long as it takes (handling the partition before
/// would lose its decisions); `None` when `stop` fired first.
pub async fn waiting_calls(
    log: &dyn EventLog,
    store: &dyn ProjectionStore,
    partition: u32,
    window: Duration,
    stop: &CancellationToken,
) -> Option<Recovered> {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1u64.. {
        match scan(log, store, partition, window).await {
            Ok(recovered) => return Some(recovered),
            Err(error) => {
                tracing::warn!(partition, attempt, %error, "could not scan for waiting approvals");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    unreachable!("the attempt counter is unbounded")
}

async fn scan(
    log: &dyn EventLog,
    store: &dyn ProjectionStore,
    partition: u32,
    window: Duration,
) -> Result<Recovered, RecoveryError> {
    let resume_offset = log
        .committed(McpProcessor::NAME, partition)
        .await?
        .unwrap_or(0);
    if resume_offset == 0 {
        return Ok(Recovered::default()); // nothing handled before: nothing waits
    }
    let Some(last) = log.read(partition, resume_offset - 1, 1).await?.pop() else {
        return Ok(Recovered::default()); // retention removed it all
    };
    let horizon_ms = last.timestamp_ms - window.as_millis() as i64;
    let asked = approval_requests_since(log, partition, resume_offset, horizon_ms).await?;
    let mut calls = Vec::new();
    for call in asked {
        if !store
            .is_processed(McpProcessor::NAME, &call.request_event.id)
            .await?
        {
            calls.push(call);
        }
    }
    Ok(Recovered {
        resume_offset,
        last_handled_ms: last.timestamp_ms,
        calls,
    })
}

/// The approval requests among the records before `end` appended at or
/// after `horizon_ms`, newest first.
async fn approval_requests_since(
    log: &dyn EventLog,
    partition: u32,
    end: u64,
    horizon_ms: i64,
) -> Result<Vec<PendingCall>, LogError> {
    let mut found = Vec::new();
    let mut end = end;
    while end > 0 {
        let from = end.saturating_sub(SCAN_CHUNK);
        let records = log.read(partition, from, (end - from) as usize).await?;
        let Some(first) = records.first() else {
            break; // retention removed the rest
        };
        let gone_before = first.position.offset > from;
        for record in records.iter().rev().filter(|r| r.position.offset < end) {
            if record.timestamp_ms < horizon_ms {
                return Ok(found);
            }
            if let Some(call) = approval_request(record, partition) {
                found.push(call);
            }
        }
        if gone_before {
            break;
        }
        end = from;
    }
    Ok(found)
}

fn approval_request(record: &LogRecord, partition: u32) -> Option<PendingCall> {
    // An undecodable record was dead-lettered by the runner; skip it here.
    let event = codec::decode(&record.value).ok()?;
    match &event.payload {
        Some(Payload::ToolCallApprovalRequested(asked)) => {
            Some(PendingCall::from_approval_request(&event, asked, partition))
        }
        _ => None,
    }
}
