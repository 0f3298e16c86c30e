//! Appending to the topic: one idempotent producer per log, each record
//! sent to the murmur2 partition of its key, each append answered only by
//! the broker's delivery report (every in-sync replica has the record).
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaLogConfig;
use super::error::log_error;
use super::headers::to_kafka_headers;
use chatstream_core::log::{LogError, LogPosition, partition_for_key};

/// How long an append may wait for room in librdkafka's local queue before
/// it fails; delivery itself is bounded by `delivery.timeout.ms`.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct EventProducer {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
    bootstrap_servers: String,
}

impl EventProducer {
    pub(super) fn new(config: &KafkaLogConfig) -> Result<Self, LogError> {
        let producer = config.producer().create().map_err(|error| {
            log_error(&config.bootstrap_servers, "creating the producer", &error)
        })?;
        Ok(Self {
            producer,
            topic: config.topic.clone(),
            partitions: config.partitions,
            bootstrap_servers: config.bootstrap_servers.clone(),
        })
    }

    /// Sends `value` under `key` with `headers` and waits for its delivery
    /// report.
    pub(super) async fn send(
        &self,
        key: &str,
        value: &[u8],
        headers: &[(&str, String)],
    ) -> Result<LogPosition, LogError> {
        // Chosen here rather than by librdkafka, so the position an append
        // reports and `EventLog::partition_for` can never disagree.
        let partition = partition_for_key(key, self.partitions);
        let mut record = FutureRecord::to(&self.topic)
            .key(key)
            .payload(value)
            .partition(i32::try_from(partition).map_err(|_| {
                LogError::Storage(format!("partition {partition} is out of Kafka's range"))
            })?);
        if !headers.is_empty() {
            record = record.headers(to_kafka_headers(headers));
        }
        let delivery =
            self.producer
                .send(record, QUEUE_TIMEOUT)
                .await
                .map_err(|(error, _unsent)| {
                    log_error(
                        &self.bootstrap_servers,
                        &format!("appending to {}/{partition}", self.topic),
                        &error,
                    )
                })?;
        let offset = u64::try_from(delivery.offset).map_err(|_| {
            LogError::Storage(format!(
                "broker acknowledged an append to {}/{partition} at offset {}",
                self.topic, delivery.offset
            ))
        })?;
        if i64::from(partition) != i64::from(delivery.partition) {
            return Err(LogError::Storage(format!(
                "append meant for {}/{partition} was delivered to partition {}",
                self.topic, delivery.partition
            )));
        }
        Ok(LogPosition { partition, offset })
    }
}
