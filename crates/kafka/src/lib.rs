//! The Kafka event log: the `EventLog` seam on one topic of any
//! Kafka-protocol cluster, through librdkafka (`rdkafka`).
//!
//! A record's key is the tenant id and its partition is Kafka's murmur2 of
//! it, so every Kafka client agrees where a tenant lives; its value is the
//! protobuf event and its headers are CloudEvents binary mode (`headers`).
//! Appends go through one idempotent producer and return after the delivery
//! report (`producer`); consumer groups are Kafka consumer groups
//! (`consumer`); ranged reads use self-assigned consumers (`reader`); the
//! topics are created separately (`admin`), never on connect, and described
//! for operators (`describe`). Records the runner gives up on go to the
//! dead-letter topic (`dead_letters`). `transactions` is the optional
//! Kafka-transactions mode for real Kafka clusters.
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_schemas::{Event, codec};

use chatstream_core::log::{EventLog, LogConsumer, LogError, LogPosition, LogRecord};

mod admin;
mod config;
mod consumer;
pub mod dead_letters;
mod describe;
mod error;
pub mod headers;
mod offsets;
mod producer;
mod reader;
mod record;
mod transactions;

pub use admin::{TopicCreation, TopicsCreation, create_topic, create_topics};
pub use config::{GUARANTEED_SETTINGS, KafkaLogConfig};
pub use dead_letters::KafkaDeadLetters;
pub use describe::{Broker, GroupProgress, PartitionDescription, TopicDescription, describe_topic};
pub use transactions::{Transaction, TransactionError, TransactionalMember};

use consumer::KafkaConsumer;
use offsets::OffsetsClient;
use producer::{EventProducer, Outgoing};
use reader::{Range, RangeReader};

/// The event log on a Kafka topic. Cloning is cheap and shares the clients.
#[derive(Clone)]
pub struct KafkaLog {
    shared: Arc<Shared>,
}

struct Shared {
    config: Arc<KafkaLogConfig>,
    producer: EventProducer,
    offsets: OffsetsClient,
    reader: RangeReader,
}

impl KafkaLog {
    /// Connects to the topic of `config`, which must exist with the
    /// configured partition count (see `create_topic`). Fails with
    /// `Unavailable` naming the bootstrap servers when no broker answers.
    pub async fn connect(config: KafkaLogConfig) -> Result<Self, LogError> {
        config.validate()?;
        let config = Arc::new(config);
        let offsets = OffsetsClient::new(Arc::clone(&config))?;
        match offsets.partition_count().await? {
            Some(existing) if existing == config.partitions => {}
            Some(existing) => {
                return Err(admin::partition_mismatch(&config, &config.topic, existing));
            }
            None => {
                return Err(LogError::Unavailable(format!(
                    "topic {:?} does not exist at {}; create it first (`chatstream topics create`)",
                    config.topic, config.bootstrap_servers
                )));
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                producer: EventProducer::new(&config)?,
                reader: RangeReader::new(Arc::clone(&config)),
                offsets,
                config,
            }),
        })
    }

    pub fn config(&self) -> &KafkaLogConfig {
        &self.shared.config
    }

    fn check_partition(&self, partition: u32) -> Result<(), LogError> {
        let count = self.shared.config.partitions;
        if partition < count {
            Ok(())
        } else {
            Err(LogError::UnknownPartition { partition, count })
        }
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn partition_count(&self) -> u32 {
        self.shared.config.partitions
    }

    async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, LogError> {
        self.shared
            .producer
            .send(key, &codec::encode(event), &headers::event_headers(event))
            .await
    }

    async fn append_all(&self, key: &str, events: &[Event]) -> Result<Vec<LogPosition>, LogError> {
        let encoded: Vec<(Vec<u8>, Vec<(&str, String)>)> = events
            .iter()
            .map(|event| (codec::encode(event), headers::event_headers(event)))
            .collect();
        let records: Vec<Outgoing<'_>> = encoded
            .iter()
            .map(|(value, headers)| Outgoing { value, headers })
            .collect();
        self.shared.producer.send_all(key, &records).await
    }

    async fn append_bytes(&self, key: &str, value: Vec<u8>) -> Result<LogPosition, LogError> {
        self.shared.producer.send(key, &value, &[]).await
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.check_partition(partition)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let watermarks = self.shared.offsets.watermarks(partition).await?;
        // Records before the low watermark were deleted by retention; the
        // read starts at the first one still held.
        let range = Range {
            partition,
            from: from.max(watermarks.low),
            end: watermarks.high,
            max,
        };
        self.shared.reader.read(range).await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.check_partition(partition)?;
        Ok(self.shared.offsets.watermarks(partition).await?.high)
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn LogConsumer>, LogError> {
        let consumer = KafkaConsumer::subscribe(Arc::clone(&self.shared.config), group)?;
        Ok(Box::new(consumer))
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.check_partition(partition)?;
        self.shared.offsets.committed(group, partition).await
    }

    async fn ping(&self) -> Result<(), LogError> {
        match self.shared.offsets.partition_count().await? {
            Some(_) => Ok(()),
            None => Err(LogError::Unavailable(format!(
                "topic {:?} no longer exists at {}",
                self.shared.config.topic, self.shared.config.bootstrap_servers
            ))),
        }
    }
}
