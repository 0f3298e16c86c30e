//! An event log seen through traces: every append is a messaging `send`
//! span (OpenTelemetry semantic conventions, kind producer) and stamps the
//! events it appends with that span's `traceparent`, so their consumers
//! continue the trace. Wrapped around the configured log only while
//! tracing is on; otherwise the log is used bare and nothing here runs.
use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_schemas::Event;
use tracing::Instrument;
use tracing::field::Empty;

use super::{
    ClaimedAppend, ClaimingLog, EventLog, LogConsumer, LogError, LogPosition, LogRecord, SendClaim,
};
use crate::store::ClientMessageRecord;
use crate::trace::{self, Messaging};

pub struct TracedLog {
    inner: Arc<dyn EventLog>,
    messaging: Messaging,
    /// `send <destination>`, the producer spans' name.
    send_name: String,
}

impl TracedLog {
    pub fn new(inner: Arc<dyn EventLog>, messaging: Messaging) -> Self {
        let send_name = format!("send {}", messaging.destination);
        Self {
            inner,
            messaging,
            send_name,
        }
    }

    /// The producer span of one append of `count` events under `key`.
    fn send_span(&self, key: &str, count: usize, message_id: Option<&str>) -> tracing::Span {
        let span = tracing::info_span!(
            "send",
            otel.name = self.send_name.as_str(),
            otel.kind = "producer",
            otel.status_code = Empty,
            error.type = Empty,
        );
        let partition = self.inner.partition_for(key);
        trace::set_attribute(&span, "messaging.system", self.messaging.system);
        trace::set_attribute(&span, "messaging.operation.type", "send");
        trace::set_attribute(&span, "messaging.operation.name", "send");
        trace::set_attribute(
            &span,
            "messaging.destination.name",
            self.messaging.destination.clone(),
        );
        trace::set_attribute(
            &span,
            "messaging.destination.partition.id",
            partition.to_string(),
        );
        trace::set_attribute(&span, "messaging.kafka.message.key", key.to_owned());
        match message_id {
            Some(id) => trace::set_attribute(&span, "messaging.message.id", id.to_owned()),
            None => trace::set_attribute(&span, "messaging.batch.message_count", count as i64),
        }
        span
    }
}

/// `event` carrying the current span's trace context (a copy only when it
/// has none of its own and a trace is active).
fn stamped(event: &Event) -> Cow<'_, Event> {
    if !event.traceparent.is_empty() {
        return Cow::Borrowed(event);
    }
    match trace::current_traceparent() {
        Some(traceparent) => Cow::Owned(Event {
            traceparent,
            ..event.clone()
        }),
        None => Cow::Borrowed(event),
    }
}

fn stamped_all(events: &[Event]) -> Cow<'_, [Event]> {
    if events.iter().all(|event| !event.traceparent.is_empty()) {
        return Cow::Borrowed(events);
    }
    match trace::current_traceparent() {
        Some(traceparent) => Cow::Owned(
            events
                .iter()
                .map(|event| {
                    let mut event = event.clone();
                    if event.traceparent.is_empty() {
                        event.traceparent = traceparent.clone();
                    }
                    event
                })
                .collect(),
        ),
        None => Cow::Borrowed(events),
    }
}

/// Marks the current span failed when `result` is an error.
fn record_outcome<T>(result: Result<T, LogError>) -> Result<T, LogError> {
    if let Err(error) = &result {
        let span = tracing::Span::current();
        span.record("otel.status_code", "ERROR");
        span.record("error.type", error_type(error));
    }
    result
}

fn error_type(error: &LogError) -> &'static str {
    match error {
        LogError::UnknownPartition { .. } => "unknown_partition",
        LogError::Unavailable(_) => "unavailable",
        LogError::Storage(_) => "storage",
        LogError::Closed => "closed",
    }
}

#[async_trait]
impl EventLog for TracedLog {
    fn partition_count(&self) -> u32 {
        self.inner.partition_count()
    }

    fn partition_for(&self, key: &str) -> u32 {
        self.inner.partition_for(key)
    }

    async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, LogError> {
        let span = self.send_span(key, 1, Some(&event.id));
        async {
            let event = stamped(event);
            record_outcome(self.inner.append(key, &event).await)
        }
        .instrument(span)
        .await
    }

    async fn append_all(&self, key: &str, events: &[Event]) -> Result<Vec<LogPosition>, LogError> {
        let message_id = match events {
            [event] => Some(event.id.as_str()),
            _ => None,
        };
        let span = self.send_span(key, events.len(), message_id);
        async {
            let events = stamped_all(events);
            record_outcome(self.inner.append_all(key, &events).await)
        }
        .instrument(span)
        .await
    }

    fn claiming(&self) -> Option<&dyn ClaimingLog> {
        self.inner.claiming().map(|_| self as &dyn ClaimingLog)
    }

    async fn append_bytes(&self, key: &str, value: Vec<u8>) -> Result<LogPosition, LogError> {
        self.inner.append_bytes(key, value).await
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.inner.read(partition, from, max).await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.inner.end_offset(partition).await
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn LogConsumer>, LogError> {
        self.inner.subscribe(group).await
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.inner.committed(group, partition).await
    }

    async fn ping(&self) -> Result<(), LogError> {
        self.inner.ping().await
    }

    fn messaging(&self) -> Option<&Messaging> {
        Some(&self.messaging)
    }
}

#[async_trait]
impl ClaimingLog for TracedLog {
    async fn append_claiming(
        &self,
        key: &str,
        claim: &SendClaim,
        events: &[Event],
    ) -> Result<ClaimedAppend, LogError> {
        let Some(inner) = self.inner.claiming() else {
            // `claiming` hands this out only when the inner log claims.
            return Err(LogError::Unavailable(
                "the log does not deduplicate sends".into(),
            ));
        };
        let message_id = match events {
            [event] => Some(event.id.as_str()),
            _ => None,
        };
        let span = self.send_span(key, events.len(), message_id);
        async {
            let events = stamped_all(events);
            record_outcome(inner.append_claiming(key, claim, &events).await)
        }
        .instrument(span)
        .await
    }

    async fn claimed(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, LogError> {
        match self.inner.claiming() {
            Some(inner) => inner.claimed(tenant_id, client_message_id).await,
            None => Ok(None),
        }
    }
}
