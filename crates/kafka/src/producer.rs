//! Appending to the topic: one idempotent producer per log, each record
//! sent to the murmur2 partition of its key, each append answered only by
//! the broker's delivery report (every in-sync replica has the record).
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::Instant;

use super::KafkaLogConfig;
use super::error::log_error;
use super::headers::to_kafka_headers;
use chatstream_core::log::{LogError, LogPosition, partition_for_key};

/// How long an append may wait for room in librdkafka's local queue before
/// it fails; delivery itself is bounded by `delivery.timeout.ms`.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an append waits before it tries a full queue again.
const QUEUE_RETRY: Duration = Duration::from_millis(10);

/// A record to append: its value and headers.
pub(super) struct Outgoing<'a> {
    pub(super) value: &'a [u8],
    pub(super) headers: &'a [(&'a str, String)],
}

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
        let positions = self.send_all(key, &[Outgoing { value, headers }]).await?;
        positions.into_iter().next().ok_or_else(|| {
            LogError::Storage(format!(
                "an append to {} got no delivery report",
                self.topic
            ))
        })
    }

    /// Sends `records` (value, headers) under `key` and waits for every
    /// delivery report. All are queued before the first report is awaited,
    /// so they share round trips to the broker; queued in order to one
    /// partition of the idempotent producer, they land in that order.
    pub(super) async fn send_all(
        &self,
        key: &str,
        records: &[Outgoing<'_>],
    ) -> Result<Vec<LogPosition>, LogError> {
        // Chosen here rather than by librdkafka, so the position an append
        // reports and `EventLog::partition_for` can never disagree.
        let partition = partition_for_key(key, self.partitions);
        let kafka_partition = i32::try_from(partition).map_err(|_| {
            LogError::Storage(format!("partition {partition} is out of Kafka's range"))
        })?;
        let failed = |error: &KafkaError| {
            log_error(
                &self.bootstrap_servers,
                &format!("appending to {}/{partition}", self.topic),
                error,
            )
        };
        let queue_deadline = Instant::now() + QUEUE_TIMEOUT;
        let mut deliveries = Vec::with_capacity(records.len());
        for Outgoing { value, headers } in records {
            let mut record = FutureRecord::to(&self.topic)
                .key(key)
                .payload(*value)
                .partition(kafka_partition);
            if !headers.is_empty() {
                record = record.headers(to_kafka_headers(headers));
            }
            // Queued one after another, each only once the previous one is:
            // waiting for room never lets a later record overtake.
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break deliveries.push(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), unsent))
                        if Instant::now() < queue_deadline =>
                    {
                        record = unsent;
                        tokio::time::sleep(QUEUE_RETRY).await;
                    }
                    Err((error, _unsent)) => return Err(failed(&error)),
                }
            }
        }
        let mut positions = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let delivery = delivery
                .await
                .map_err(|_| LogError::Closed)?
                .map_err(|(error, _message)| failed(&error))?;
            let offset = u64::try_from(delivery.offset).map_err(|_| {
                LogError::Storage(format!(
                    "broker acknowledged an append to {}/{partition} at offset {}",
                    self.topic, delivery.offset
                ))
            })?;
            if kafka_partition != delivery.partition {
                return Err(LogError::Storage(format!(
                    "append meant for {}/{partition} was delivered to partition {}",
                    self.topic, delivery.partition
                )));
            }
            positions.push(LogPosition { partition, offset });
        }
        Ok(positions)
    }
}
