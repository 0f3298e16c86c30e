//! Kafka transactions, the optional exactly-once mode for real Kafka
//! clusters: a consume-transform-produce member whose output records and
//! input offsets commit together or not at all.
//!
//! A `TransactionalMember` is a group member (reading `read_committed`, so
//! aborted outputs are never seen) paired with a producer registered under
//! a `transactional.id`. Registering fences every older producer with the
//! same id: a zombie replica that still thinks it owns a partition can no
//! longer commit. The default mode (idempotent producer, deterministic ids,
//! dedupe by event id) needs none of this and works on any Kafka-protocol
//! broker; brokers without transactions (tansu) answer `init_transactions`
//! with an error `TransactionError::Unsupported` names.
use std::sync::Arc;
use std::time::Duration;

use chatstream_schemas::{Event, codec};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaLogConfig;
use super::consumer::KafkaConsumer;
use super::error::{blocking, log_error};
use super::headers::{event_headers, to_kafka_headers};
use super::offsets::kafka_partition;
use chatstream_core::log::{LogConsumer, LogError, LogPosition, LogRecord, partition_for_key};

/// How long an append may wait for room in librdkafka's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The broker does not implement Kafka transactions (KIP-98).
    #[error("Kafka at {servers} does not support transactions: {detail}")]
    Unsupported { servers: String, detail: String },
    /// A newer member registered the same `transactional.id`: this one must
    /// stop; its open transaction is aborted by the broker.
    #[error("fenced by a newer producer with the same transactional.id: {0}")]
    Fenced(String),
    /// The transaction failed and must be aborted (`Transaction::abort`,
    /// which rewinds the member to its last committed offsets).
    #[error("transaction must be aborted: {0}")]
    MustAbort(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// One member of a consumer group that processes in transactions.
pub struct TransactionalMember {
    consumer: KafkaConsumer,
    producer: FutureProducer,
    config: Arc<KafkaLogConfig>,
    transactional_id: String,
}

impl TransactionalMember {
    /// Joins `group` and registers the producer under
    /// `config.transactional_id`, fencing older producers with that id.
    /// Fails with `Unsupported` on brokers without transactions.
    pub async fn join(config: &KafkaLogConfig, group: &str) -> Result<Self, TransactionError> {
        config.validate()?;
        let Some(transactional_id) = config.transactional_id.clone() else {
            return Err(LogError::Unavailable(
                "transactional mode needs a transactional_id in the Kafka config".into(),
            )
            .into());
        };
        let config = Arc::new(config.clone());
        let producer: FutureProducer = config
            .transactional_producer(&transactional_id)
            .create()
            .map_err(|error| {
                log_error(
                    &config.bootstrap_servers,
                    "creating the transactional producer",
                    &error,
                )
            })?;
        let registering = producer.clone();
        let timeout = config.request_timeout;
        let registered = blocking(move || Ok(registering.init_transactions(timeout))).await?;
        registered
            .map_err(|error| classify(&config, "registering the transactional.id", &error))?;
        let consumer = KafkaConsumer::subscribe(Arc::clone(&config), group)?;
        Ok(Self {
            consumer,
            producer,
            config,
            transactional_id,
        })
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// Records after this member's position (see `LogConsumer::poll`); only
    /// those of committed transactions.
    pub async fn poll(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.consumer.poll(max, timeout).await
    }

    pub fn assignment(&self) -> Vec<u32> {
        self.consumer.assignment()
    }

    /// Opens a transaction; nothing appended in it is visible to
    /// `read_committed` readers until `commit`.
    pub fn begin(&self) -> Result<Transaction<'_>, TransactionError> {
        self.producer
            .begin_transaction()
            .map_err(|error| classify(&self.config, "beginning a transaction", &error))?;
        Ok(Transaction {
            member: self,
            open: true,
        })
    }

    /// Leaves the group. An open transaction must be committed or aborted first.
    pub async fn close(self) -> Result<(), LogError> {
        Box::new(self.consumer).close().await
    }
}

/// An open transaction of a `TransactionalMember`. Dropping it without
/// `commit` or `abort` leaves it to the broker's transaction timeout.
pub struct Transaction<'a> {
    member: &'a TransactionalMember,
    open: bool,
}

impl Transaction<'_> {
    /// Appends `event` under `key` to the event topic inside the transaction
    /// and returns its position once the broker has it (still invisible to
    /// `read_committed` readers).
    pub async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, TransactionError> {
        let config = &self.member.config;
        let partition = partition_for_key(key, config.partitions);
        let value = codec::encode(event);
        let headers = event_headers(event);
        let record = FutureRecord::to(&config.topic)
            .key(key)
            .payload(&value)
            .partition(kafka_partition(partition)?)
            .headers(to_kafka_headers(&headers));
        let delivery = self
            .member
            .producer
            .send(record, QUEUE_TIMEOUT)
            .await
            .map_err(|(error, _unsent)| {
                classify(
                    config,
                    &format!("appending to {}/{partition}", config.topic),
                    &error,
                )
            })?;
        let offset = u64::try_from(delivery.offset).map_err(|_| {
            LogError::Storage(format!(
                "broker acknowledged an append to {}/{partition} at offset {}",
                config.topic, delivery.offset
            ))
        })?;
        Ok(LogPosition { partition, offset })
    }

    /// Commits the appended records together with the group's input
    /// positions (`next_offsets`: the offset after each handled record).
    pub async fn commit(mut self, next_offsets: &[LogPosition]) -> Result<(), TransactionError> {
        let member = self.member;
        let config = Arc::clone(&member.config);
        // Nothing consumed (e.g. outputs only): no offsets to send.
        let offsets = if next_offsets.is_empty() {
            None
        } else {
            let group = member.consumer.group_metadata().ok_or_else(|| {
                LogError::Unavailable("the consumer has no group metadata".into())
            })?;
            Some((offsets_list(&config, next_offsets)?, group))
        };
        let producer = member.producer.clone();
        let timeout = config.request_timeout;
        let committed =
            blocking(move || Ok(send_offsets_and_commit(&producer, offsets, timeout))).await?;
        self.open = false;
        committed.map_err(|error| classify(&config, "committing a transaction", &error))
    }

    /// Discards everything appended in the transaction and rewinds the
    /// member to its committed offsets, so the next polls hand out again
    /// the records this transaction consumed.
    pub async fn abort(mut self) -> Result<(), TransactionError> {
        self.open = false;
        let producer = self.member.producer.clone();
        let timeout = self.member.config.request_timeout;
        let aborted = blocking(move || Ok(producer.abort_transaction(timeout))).await?;
        aborted.map_err(|error| classify(&self.member.config, "aborting a transaction", &error))?;
        self.member.consumer.rewind_to_committed().await?;
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if self.open {
            tracing::warn!(
                transactional_id = %self.member.transactional_id,
                "transaction dropped while open; the broker aborts it when it times out"
            );
        }
    }
}

fn send_offsets_and_commit(
    producer: &FutureProducer,
    offsets: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    if let Some((offsets, group)) = offsets {
        producer.send_offsets_to_transaction(&offsets, &group, timeout)?;
    }
    producer.commit_transaction(timeout)
}

fn offsets_list(
    config: &KafkaLogConfig,
    next_offsets: &[LogPosition],
) -> Result<TopicPartitionList, LogError> {
    let mut list = TopicPartitionList::with_capacity(next_offsets.len());
    for position in next_offsets {
        if position.partition >= config.partitions {
            return Err(LogError::UnknownPartition {
                partition: position.partition,
                count: config.partitions,
            });
        }
        let offset = i64::try_from(position.offset).map_err(|_| {
            LogError::Storage(format!(
                "offset {} is out of Kafka's range",
                position.offset
            ))
        })?;
        list.add_partition_offset(
            &config.topic,
            kafka_partition(position.partition)?,
            Offset::Offset(offset),
        )
        .map_err(|error| log_error(&config.bootstrap_servers, "preparing offsets", &error))?;
    }
    Ok(list)
}

/// Sorts a librdkafka error from `action` into what the caller must do.
fn classify(config: &KafkaLogConfig, action: &str, error: &KafkaError) -> TransactionError {
    let servers = &config.bootstrap_servers;
    if let KafkaError::Transaction(transaction_error) = error {
        let code = transaction_error.code();
        if is_unsupported(code, &transaction_error.string()) {
            return TransactionError::Unsupported {
                servers: servers.clone(),
                detail: format!("{action}: {error}"),
            };
        }
        if matches!(
            code,
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::Fenced
        ) || transaction_error.is_fatal()
        {
            return TransactionError::Fenced(format!("{action}: {error}"));
        }
        if transaction_error.txn_requires_abort() {
            return TransactionError::MustAbort(format!("{action}: {error}"));
        }
    }
    TransactionError::Log(log_error(servers, action, error))
}

/// librdkafka reports a broker without transactions as an unsupported
/// feature or API version ("EndTxnRequest (KIP-98) not supported by broker").
fn is_unsupported(code: RDKafkaErrorCode, message: &str) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedFeature | RDKafkaErrorCode::UnsupportedVersion
    ) || message.contains("not supported by broker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_without_transactions_is_recognised() {
        assert!(is_unsupported(RDKafkaErrorCode::UnsupportedFeature, ""));
        assert!(is_unsupported(
            RDKafkaErrorCode::Fail,
            "EndTxnRequest (KIP-98) not supported by broker"
        ));
        assert!(!is_unsupported(RDKafkaErrorCode::ProducerFenced, "fenced"));
    }
}
