//! Feeds each event's contribution (`observe.rs`) to the analytics store,
//! once per event id. A retried copy of a send is skipped, as every
//! processor skips it (`is_first_send`). The notes a later event of the
//! turn needs are written before the event is applied, so a crash between
//! the two only repeats an idempotent write.
//!
//! Ordering: the runner's default, per conversation. A turn's events are
//! all of one conversation, so an answer is handled after its user message
//! (and its usage event) has left its notes; events of different
//! conversations may update one bucket at the same time, which the store
//! makes safe and order-independent (see `AnalyticsStore::apply`).
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_core::analytics::{AnalyticsStore, Applied};
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{ProcessError, Processor};
use chatstream_core::store::{ProjectionStore, StoreError, is_first_send};
use chatstream_schemas::Event;

use crate::observe::{Recalled, needs_of, note_of, observe};

pub struct AnalyticsProjector {
    /// Asked which copy of a retried send counts (`is_first_send`).
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    analytics: Arc<dyn AnalyticsStore>,
}

impl AnalyticsProjector {
    pub const NAME: &'static str = "analytics";

    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        analytics: Arc<dyn AnalyticsStore>,
    ) -> Self {
        Self {
            log,
            store,
            analytics,
        }
    }

    /// What the notes named by the event's needs hold.
    async fn recall(&self, event: &Event) -> Result<Recalled, StoreError> {
        let needs = needs_of(event);
        let tenant = event.tenant_id.as_str();
        let mut recalled = Recalled::default();
        if let Some(key) = &needs.sent_at {
            recalled.sent_at_ms = self.analytics.noted(tenant, key).await?;
        }
        if let Some(key) = &needs.usage_recorded {
            recalled.usage_recorded = self.analytics.noted(tenant, key).await?.is_some();
        }
        if let Some(key) = &needs.requested_at {
            recalled.requested_at_ms = self.analytics.noted(tenant, key).await?;
        }
        Ok(recalled)
    }
}

#[async_trait]
impl Processor for AnalyticsProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        if !is_first_send(self.log.as_ref(), self.store.as_ref(), event, position)
            .await
            .map_err(|e| ProcessError::Retryable(e.to_string()))?
        {
            tracing::debug!(event_id = %event.id, "not counting a retried send of an earlier message");
            return Ok(());
        }
        if let Some(note) = note_of(event) {
            self.analytics
                .note(&event.tenant_id, &note.key, note.value)
                .await
                .map_err(retryable)?;
        }
        let recalled = self.recall(event).await.map_err(retryable)?;
        let observation = observe(event, &recalled);
        if observation.is_empty() {
            return Ok(());
        }
        let applied = self
            .analytics
            .apply(&event.tenant_id, &event.id, &observation)
            .await
            .map_err(retryable)?;
        if applied == Applied::AlreadyApplied {
            tracing::debug!(event_id = %event.id, "already counted");
        }
        Ok(())
    }

    /// The embedded store commits notes and buckets without an fsync; they
    /// become durable here, before the runner commits past their events.
    async fn sync(&self) -> Result<(), ProcessError> {
        self.analytics.sync().await.map_err(retryable)
    }
}

fn retryable(error: StoreError) -> ProcessError {
    match error {
        // Damaged stored state does not heal by retrying.
        StoreError::Corrupt(message) => ProcessError::Permanent(message),
        other => ProcessError::Retryable(other.to_string()),
    }
}
