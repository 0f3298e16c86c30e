//! The conversation projection: writes every event into its conversation's
//! history and only then publishes it to the fan-out as committed. That
//! order is what lets a client subscribe first, read history second, and
//! miss nothing (see `docs/protocol.md`, recovery).
//!
//! History entries are written unsynced: readers see them at once, and
//! they become durable at the runner's next commit (`Processor::sync`),
//! before the log position passes them, so a crash only redoes them. The
//! projector's own work waits for no fsync.
//!
//! Everything it writes and publishes belongs to one conversation, and
//! clients read per conversation, so it keeps the runner's default
//! ordering (per conversation) and projects conversations side by side.
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;
use tracing::Instrument;

use chatstream_core::fanout::{FanOut, FanOutMessage};
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{ProcessError, Processor};
use chatstream_core::store::{
    ConversationRecord, HistoryEntry, ProjectionStore, Recorded, StoreError, is_first_send,
};

pub struct ConversationProjector {
    /// Asked which copy of a retried send counts (`is_first_send`).
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
}

impl ConversationProjector {
    pub const NAME: &'static str = "conversation-projector";

    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        fanout: Arc<dyn FanOut>,
    ) -> Self {
        Self { log, store, fanout }
    }
}

#[async_trait]
impl Processor for ConversationProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        // A fact about the whole tenant (refused requests) is in no
        // conversation's history.
        if event.conversation_id.is_empty() {
            return Ok(());
        }
        if !is_first_send(self.log.as_ref(), self.store.as_ref(), event, position)
            .await
            .map_err(|e| ProcessError::Retryable(e.to_string()))?
        {
            tracing::debug!(event_id = %event.id, "skipping a retried send of an earlier message");
            return Ok(());
        }
        if let Some(Payload::ConversationOpened(opened)) = &event.payload {
            self.store
                .put_conversation(&ConversationRecord {
                    tenant_id: event.tenant_id.clone(),
                    conversation_id: event.conversation_id.clone(),
                    title: opened.title.clone(),
                    created_at_ms: occurred_at_ms(event),
                    opened_by_key_id: opened.opened_by_key_id.clone(),
                })
                .await
                .map_err(retryable)?;
        }

        let entry = HistoryEntry {
            position,
            event: event.clone(),
        };
        // Unsynced: durable at the runner's next commit (`sync`), which is
        // soon enough, since the log position stays behind it until then
        // and a crash redoes the write.
        let publish = match self
            .store
            .append_history_unsynced(&entry)
            .await
            .map_err(retryable)?
        {
            Recorded::Inserted => true,
            // Replayed after a crash: subscribers may not have seen it yet;
            // they drop positions they already have.
            Recorded::Duplicate { existing } => existing == position,
        };
        if publish {
            record_fanout_delay(event);
            let message = FanOutMessage::Committed(entry.into());
            if let Err(error) = self
                .fanout
                .publish(&event.tenant_id, &event.conversation_id, message)
                .instrument(chatstream_core::trace::fanout_publish_span("committed"))
                .await
            {
                // Live delivery is best effort; clients recover from history.
                tracing::warn!(event_id = %event.id, %error, "could not publish committed event");
            }
        }
        Ok(())
    }

    async fn sync(&self) -> Result<(), ProcessError> {
        self.store.sync().await.map_err(retryable)
    }
}

/// `chatstream_fanout_delay_seconds`: from the event's occurrence to its
/// publish as committed (clocks of different hosts may disagree a little).
fn record_fanout_delay(event: &Event) {
    let Some(occurred_at) = event.occurred_at else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let occurred = std::time::Duration::new(
        occurred_at.seconds.max(0) as u64,
        occurred_at.nanos.max(0) as u32,
    );
    let delay = now.saturating_sub(occurred);
    metrics::histogram!(chatstream_core::metric_catalog::FANOUT_DELAY_SECONDS)
        .record(delay.as_secs_f64());
}

fn occurred_at_ms(event: &Event) -> i64 {
    event
        .occurred_at
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or_default()
}

fn retryable(error: StoreError) -> ProcessError {
    ProcessError::Retryable(error.to_string())
}
