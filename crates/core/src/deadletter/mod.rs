//! The dead-letter seam: where the runner puts a record it cannot process
//! (undecodable, or its handler failed for good) before it moves past it, so
//! a poison record never stops its partition and is never silently dropped.
//! Embedded (a redb file in the data dir) and Kafka (a dead-letter topic,
//! `chatstream_kafka::KafkaDeadLetters`) implementations; `LoggedDeadLetters` is
//! the runner's default when none is given.
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::log::{LogPosition, LogRecord};

pub mod embedded;

/// Why a record was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The record's value is not an event the codec can read.
    Undecodable,
    /// The processor's handler failed permanently (or ran out of retries).
    HandlerFailed,
}

impl DeadLetterReason {
    /// The stable name written into headers and files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::HandlerFailed => "handler_failed",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "undecodable" => Some(Self::Undecodable),
            "handler_failed" => Some(Self::HandlerFailed),
            _ => None,
        }
    }
}

/// A record one processor gave up on, with everything an operator needs to
/// find, understand and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The processor (consumer group) that gave up.
    pub processor: String,
    /// Where the record sits on the event log.
    pub position: LogPosition,
    /// The record's key (the tenant id) and value, byte for byte.
    pub key: String,
    pub value: Vec<u8>,
    /// The id of the event, when the value could be decoded.
    pub event_id: Option<String>,
    pub reason: DeadLetterReason,
    /// The decode or handler error, as text.
    pub error: String,
    /// Handler attempts made (0 when the record could not be decoded).
    pub attempts: u32,
    /// When the processor gave up, unix milliseconds.
    pub failed_at_ms: i64,
}

impl DeadLetter {
    /// A dead letter for `record`, failed now.
    pub fn new(
        processor: &str,
        record: &LogRecord,
        reason: DeadLetterReason,
        error: String,
        attempts: u32,
    ) -> Self {
        Self {
            processor: processor.to_owned(),
            position: record.position,
            key: record.key.clone(),
            value: record.value.clone(),
            event_id: None,
            reason,
            error,
            attempts,
            failed_at_ms: now_ms(),
        }
    }

    pub fn with_event_id(mut self, event_id: &str) -> Self {
        self.event_id = Some(event_id.to_owned());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The sink cannot take the record right now; the runner retries and
    /// does not move past the record until it is stored.
    #[error("dead-letter sink unavailable: {0}")]
    Unavailable(String),
    #[error("dead-letter storage error: {0}")]
    Storage(String),
}

/// Where dead letters go. `send` returns only once the letter is durable:
/// the runner commits past the record right after.
#[async_trait]
pub trait DeadLetterSink: Send + Sync + 'static {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError>;
}

/// Logs each dead letter at error level and keeps nothing: the runner's
/// default, for callers that configured no sink (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoggedDeadLetters;

#[async_trait]
impl DeadLetterSink for LoggedDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        tracing::error!(
            processor = %letter.processor,
            partition = letter.position.partition,
            offset = letter.position.offset,
            event_id = letter.event_id.as_deref().unwrap_or(""),
            reason = letter.reason.as_str(),
            attempts = letter.attempts,
            error = %letter.error,
            "dead letter (no dead-letter sink configured: only logged)"
        );
        Ok(())
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_names() {
        for reason in [
            DeadLetterReason::Undecodable,
            DeadLetterReason::HandlerFailed,
        ] {
            assert_eq!(DeadLetterReason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(DeadLetterReason::parse("other"), None);
    }
}
