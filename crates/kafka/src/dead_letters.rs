//! The dead-letter topic: records a processor gave up on, produced as they
//! were read (same key, same value bytes) with headers saying who gave up,
//! why, and where the record sits on the event topic, so an operator can
//! inspect it with any Kafka tool and replay it by producing the value back.
//! Same producer guarantees as the event log: idempotent, `acks=all`, and
//! `send` returns only after the delivery report.
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;

use super::KafkaLogConfig;
use super::error::log_error;
use super::headers::to_kafka_headers;
use super::offsets::OffsetsClient;
use chatstream_core::deadletter::{DeadLetter, DeadLetterError, DeadLetterSink};
use chatstream_core::log::LogError;

/// The processor (consumer group) that gave up.
pub const DLQ_PROCESSOR: &str = "dlq_processor";
/// `undecodable` or `handler_failed`.
pub const DLQ_REASON: &str = "dlq_reason";
/// The decode or handler error.
pub const DLQ_ERROR: &str = "dlq_error";
/// Handler attempts made (0 for an undecodable record).
pub const DLQ_ATTEMPTS: &str = "dlq_attempts";
/// When the processor gave up, unix milliseconds.
pub const DLQ_FAILED_AT_MS: &str = "dlq_failed_at_ms";
/// Where the record sits on the event log.
pub const DLQ_SOURCE_TOPIC: &str = "dlq_source_topic";
pub const DLQ_SOURCE_PARTITION: &str = "dlq_source_partition";
pub const DLQ_SOURCE_OFFSET: &str = "dlq_source_offset";
/// The event's id, when the value could be decoded.
pub const DLQ_EVENT_ID: &str = "dlq_event_id";

/// Errors longer than this are cut (at a character boundary) so one huge
/// message cannot push the record over the broker's size limit.
const MAX_ERROR_BYTES: usize = 4096;
/// How long a send may wait for room in librdkafka's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Dead letters on the dead-letter topic of a `KafkaLogConfig`.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
    bootstrap_servers: String,
}

impl KafkaDeadLetters {
    /// Connects to the dead-letter topic of `config`, which must exist
    /// (`create_topics`, or `chatstream topics create`).
    pub async fn connect(config: &KafkaLogConfig) -> Result<Self, LogError> {
        config.validate()?;
        let topic = config.dead_letter_topic();
        let offsets = OffsetsClient::new(Arc::new(config.clone()))?;
        if offsets.partition_count_of(&topic).await?.is_none() {
            return Err(LogError::Unavailable(format!(
                "dead-letter topic {topic:?} does not exist at {}; create it first (`chatstream topics create`)",
                config.bootstrap_servers
            )));
        }
        // Records carry no partition: the murmur2 partitioner of the
        // producer config places them by key, whatever the topic's count.
        let producer = config.producer().create().map_err(|error| {
            log_error(
                &config.bootstrap_servers,
                "creating the dead-letter producer",
                &error,
            )
        })?;
        Ok(Self {
            producer,
            topic,
            source_topic: config.topic.clone(),
            bootstrap_servers: config.bootstrap_servers.clone(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn headers(&self, letter: &DeadLetter) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (DLQ_PROCESSOR, letter.processor.clone()),
            (DLQ_REASON, letter.reason.as_str().to_owned()),
            (
                DLQ_ERROR,
                truncated(&letter.error, MAX_ERROR_BYTES).to_owned(),
            ),
            (DLQ_ATTEMPTS, letter.attempts.to_string()),
            (DLQ_FAILED_AT_MS, letter.failed_at_ms.to_string()),
            (DLQ_SOURCE_TOPIC, self.source_topic.clone()),
            (DLQ_SOURCE_PARTITION, letter.position.partition.to_string()),
            (DLQ_SOURCE_OFFSET, letter.position.offset.to_string()),
        ];
        if let Some(event_id) = &letter.event_id {
            headers.push((DLQ_EVENT_ID, event_id.clone()));
        }
        headers
    }
}

#[async_trait]
impl DeadLetterSink for KafkaDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let headers = self.headers(letter);
        let record = FutureRecord::to(&self.topic)
            .key(&letter.key)
            .payload(&letter.value)
            .headers(to_kafka_headers(&headers));
        self.producer
            .send(record, QUEUE_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(error, _unsent)| {
                let error = log_error(
                    &self.bootstrap_servers,
                    &format!("producing a dead letter to {}", self.topic),
                    &error,
                );
                DeadLetterError::Unavailable(error.to_string())
            })
    }
}

/// The longest prefix of `text` of at most `max` bytes.
fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncated("short", 10), "short");
        assert_eq!(truncated("ééé", 3), "é");
        assert_eq!(truncated("abcdef", 4), "abcd");
    }
}
