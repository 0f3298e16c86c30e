//! What the cluster knows about the topic without reading it: its
//! partitions, their watermarks, and the offsets groups have committed.
//! Every call here blocks in librdkafka, so each runs on the blocking pool.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaLogConfig;
use super::error::{blocking, log_error};
use chatstream_core::log::LogError;

/// Groups whose committed-offsets client is kept between calls; beyond
/// that, a client lives for one call.
const MAX_CACHED_GROUPS: usize = 16;

/// A client that joins no group and only asks the cluster questions.
#[derive(Clone)]
pub(super) struct OffsetsClient {
    consumer: Arc<BaseConsumer>,
    /// Per group: a client with the group's id (librdkafka reads committed
    /// offsets only for its own `group.id`) that never joins the group.
    /// Kept because callers poll (lag metrics, catch-up waits) and a new
    /// client costs connections and threads.
    group_clients: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
    config: Arc<KafkaLogConfig>,
}

/// The first and the next offset of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watermarks {
    /// The oldest offset still held (records before it were deleted).
    pub low: u64,
    /// The offset the next appended record gets.
    pub high: u64,
}

impl OffsetsClient {
    pub(super) fn new(config: Arc<KafkaLogConfig>) -> Result<Self, LogError> {
        let consumer = config.offsets().create().map_err(|error| {
            log_error(
                &config.bootstrap_servers,
                "creating the metadata client",
                &error,
            )
        })?;
        Ok(Self {
            consumer: Arc::new(consumer),
            group_clients: Arc::default(),
            config,
        })
    }

    /// How many partitions the topic has, `None` when it does not exist.
    pub(super) async fn partition_count(&self) -> Result<Option<u32>, LogError> {
        self.partition_count_of(&self.config.topic).await
    }

    /// How many partitions `topic` has, `None` when it does not exist.
    pub(super) async fn partition_count_of(&self, topic: &str) -> Result<Option<u32>, LogError> {
        let this = self.clone();
        let topic = topic.to_owned();
        blocking(move || topic_partition_count(&this.consumer, &this.config, &topic)).await
    }

    pub(super) async fn watermarks(&self, partition: u32) -> Result<Watermarks, LogError> {
        let this = self.clone();
        blocking(move || {
            let config = &this.config;
            let (low, high) = this
                .consumer
                .fetch_watermarks(
                    &config.topic,
                    kafka_partition(partition)?,
                    config.request_timeout,
                )
                .map_err(|error| {
                    log_error(
                        &config.bootstrap_servers,
                        &format!("fetching the watermarks of {}/{partition}", config.topic),
                        &error,
                    )
                })?;
            let offset = |watermark: i64| {
                u64::try_from(watermark).map_err(|_| {
                    LogError::Storage(format!(
                        "broker reported watermarks ({low}, {high}) for {}/{partition}",
                        config.topic
                    ))
                })
            };
            Ok(Watermarks {
                low: offset(low)?,
                high: offset(high)?,
            })
        })
        .await
    }

    /// The offset `group` resumes from in `partition`, or `None` when it
    /// never committed there.
    pub(super) async fn committed(
        &self,
        group: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        let this = self.clone();
        let group = group.to_owned();
        blocking(move || {
            let client = this.group_client(&group)?;
            // `committed_offset` drops the partition list librdkafka filled
            // before it returns: with that list alive, dropping the client
            // would hang forever in `rd_kafka_destroy`.
            let offset = committed_offset(&client, &this.config, &group, partition);
            drop(client);
            offset
        })
        .await
    }

    /// The cached client of `group`, or a new one (cached while there is room).
    fn group_client(&self, group: &str) -> Result<Arc<BaseConsumer>, LogError> {
        let mut clients = self
            .group_clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = clients.get(group) {
            return Ok(Arc::clone(client));
        }
        let client: Arc<BaseConsumer> = Arc::new(
            self.config
                .committed_offsets_of(group)
                .create()
                .map_err(|error| {
                    log_error(
                        &self.config.bootstrap_servers,
                        &format!("creating a client for the offsets of group {group:?}"),
                        &error,
                    )
                })?,
        );
        if clients.len() < MAX_CACHED_GROUPS {
            clients.insert(group.to_owned(), Arc::clone(&client));
        }
        Ok(client)
    }
}

/// The partition count of `name` from a metadata request.
fn topic_partition_count(
    consumer: &BaseConsumer,
    config: &KafkaLogConfig,
    name: &str,
) -> Result<Option<u32>, LogError> {
    let metadata = consumer
        .fetch_metadata(Some(name), config.request_timeout)
        .map_err(|error| {
            log_error(
                &config.bootstrap_servers,
                &format!("fetching the metadata of topic {name:?}"),
                &error,
            )
        })?;
    let Some(topic) = metadata.topics().iter().find(|topic| topic.name() == name) else {
        return Ok(None);
    };
    if let Some(error) = topic.error() {
        let error = KafkaError::MetadataFetch(error.into());
        return match error.rdkafka_error_code() {
            Some(rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            _ => Err(log_error(
                &config.bootstrap_servers,
                &format!("looking up topic {name:?}"),
                &error,
            )),
        };
    }
    u32::try_from(topic.partitions().len())
        .map(Some)
        .map_err(|_| LogError::Storage(format!("topic {name:?} has too many partitions")))
}

/// Reads one committed offset. librdkafka's answer is dropped before this
/// returns, so the caller may then drop the consumer.
fn committed_offset(
    consumer: &BaseConsumer,
    config: &KafkaLogConfig,
    group: &str,
    partition: u32,
) -> Result<Option<u64>, LogError> {
    let kafka_partition = kafka_partition(partition)?;
    let mut wanted = TopicPartitionList::with_capacity(1);
    wanted.add_partition(&config.topic, kafka_partition);
    let answered = consumer
        .committed_offsets(wanted, config.request_timeout)
        .map_err(|error| {
            log_error(
                &config.bootstrap_servers,
                &format!(
                    "fetching the offset group {group:?} committed in {}/{partition}",
                    config.topic
                ),
                &error,
            )
        })?;
    let offset = answered
        .find_partition(&config.topic, kafka_partition)
        .map(|element| element.offset());
    drop(answered);
    match offset {
        Some(Offset::Offset(offset)) => u64::try_from(offset).map(Some).map_err(|_| {
            LogError::Storage(format!(
                "broker reported committed offset {offset} for {}/{partition}",
                config.topic
            ))
        }),
        // No commit yet (librdkafka reports `Invalid`), or the partition is
        // missing from the answer.
        _ => Ok(None),
    }
}

/// librdkafka numbers partitions with `i32`.
pub(super) fn kafka_partition(partition: u32) -> Result<i32, LogError> {
    i32::try_from(partition)
        .map_err(|_| LogError::Storage(format!("partition {partition} is out of Kafka's range")))
}
