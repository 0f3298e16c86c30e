//! A member of a Kafka consumer group (`EventLog::subscribe`). The broker's
//! group coordinator decides which partitions each member reads; librdkafka
//! fetches them in the background and `poll` hands out what has arrived.
//! Nothing is committed until `commit` is called, and only for partitions
//! assigned when it is.
//!
//! Rebalances run inside `poll` (librdkafka's callbacks are served there),
//! so a member learns that it lost a partition after the fact, from
//! `assignment`: the partition may already belong to another member. That
//! is why `commit` leaves out partitions no longer assigned; no commit can
//! race a rebalance, as both happen only on the task that polls.
//!
//! `pause` uses librdkafka's pause, which keeps what was handed out: it
//! moves the partition's fetch position back to after the last record
//! `poll` returned and drops what was prefetched beyond it (a version
//! barrier), so `resume` fetches again from there, losing and repeating
//! nothing.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaLogConfig;
use super::error::{blocking, log_error};
use super::offsets::kafka_partition;
use super::record::log_record;
use chatstream_core::log::{LogConsumer, LogError, LogPosition, LogRecord, PendingCommit};

type GroupConsumer = StreamConsumer<GroupMemberContext>;

pub(super) struct KafkaConsumer {
    /// `None` once closed (or being dropped).
    consumer: Option<Arc<GroupConsumer>>,
    config: Arc<KafkaLogConfig>,
    group: String,
}

impl KafkaConsumer {
    /// Joins `group` by subscribing to the topic. The join itself completes
    /// during the first polls, as in every Kafka client.
    pub(super) fn subscribe(config: Arc<KafkaLogConfig>, group: &str) -> Result<Self, LogError> {
        let context = GroupMemberContext {
            group: group.to_owned(),
        };
        let consumer: GroupConsumer = config
            .group_member(group)
            .create_with_context(context)
            .map_err(|error| {
                log_error(
                    &config.bootstrap_servers,
                    &format!("creating a member of group {group:?}"),
                    &error,
                )
            })?;
        consumer.subscribe(&[&config.topic]).map_err(|error| {
            log_error(
                &config.bootstrap_servers,
                &format!("subscribing group {group:?} to {}", config.topic),
                &error,
            )
        })?;
        Ok(Self {
            consumer: Some(Arc::new(consumer)),
            config,
            group: group.to_owned(),
        })
    }

    /// What a transactional producer sends with the offsets it commits, so
    /// the group coordinator can fence stale members.
    pub(super) fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.consumer.as_ref()?.group_metadata()
    }

    /// Moves this member back to the group's committed offsets in every
    /// assigned partition (the oldest record where it never committed), so
    /// records handed out since the last commit come again: what an aborted
    /// transaction needs.
    pub(super) async fn rewind_to_committed(&self) -> Result<(), LogError> {
        let consumer = Arc::clone(self.consumer()?);
        let config = Arc::clone(&self.config);
        let group = self.group.clone();
        blocking(move || {
            let failed = |action: &str, error: &rdkafka::error::KafkaError| {
                log_error(
                    &config.bootstrap_servers,
                    &format!("{action} (group {group:?}, topic {})", config.topic),
                    error,
                )
            };
            let assignment = consumer
                .assignment()
                .map_err(|error| failed("reading the assignment", &error))?;
            let committed = consumer
                .committed_offsets(assignment, config.request_timeout)
                .map_err(|error| failed("fetching committed offsets", &error))?;
            let mut rewind = TopicPartitionList::with_capacity(committed.count());
            for element in committed.elements() {
                let offset = match element.offset() {
                    Offset::Offset(offset) => Offset::Offset(offset),
                    _ => Offset::Beginning,
                };
                rewind
                    .add_partition_offset(element.topic(), element.partition(), offset)
                    .map_err(|error| failed("preparing a rewind", &error))?;
            }
            // With librdkafka's answer alive, dropping the consumer would hang.
            drop(committed);
            if rewind.count() > 0 {
                let answered = consumer
                    .seek_partitions(rewind, config.request_timeout)
                    .map_err(|error| failed("rewinding to committed offsets", &error))?;
                drop(answered);
            }
            Ok(())
        })
        .await
    }

    fn consumer(&self) -> Result<&Arc<GroupConsumer>, LogError> {
        self.consumer.as_ref().ok_or(LogError::Closed)
    }

    fn failed(&self, action: &str, error: &rdkafka::error::KafkaError) -> LogError {
        log_error(
            &self.config.bootstrap_servers,
            &format!(
                "{action} (group {:?}, topic {})",
                self.group, self.config.topic
            ),
            error,
        )
    }

    /// `partitions` of the topic, as librdkafka names them.
    fn partition_list(&self, partitions: &[u32]) -> Result<TopicPartitionList, LogError> {
        let mut list = TopicPartitionList::with_capacity(partitions.len());
        for &partition in partitions {
            if partition >= self.config.partitions {
                return Err(LogError::UnknownPartition {
                    partition,
                    count: self.config.partitions,
                });
            }
            list.add_partition(&self.config.topic, kafka_partition(partition)?);
        }
        Ok(list)
    }

    /// The commit request for `next_offsets`, checked against the topic,
    /// without the partitions this member is not assigned (any more).
    fn commit_list(&self, next_offsets: &[LogPosition]) -> Result<TopicPartitionList, LogError> {
        let assigned = self.assignment();
        let mut list = TopicPartitionList::with_capacity(next_offsets.len());
        for position in next_offsets {
            if position.partition >= self.config.partitions {
                return Err(LogError::UnknownPartition {
                    partition: position.partition,
                    count: self.config.partitions,
                });
            }
            let offset = i64::try_from(position.offset).map_err(|_| {
                LogError::Storage(format!(
                    "offset {} is out of Kafka's range",
                    position.offset
                ))
            })?;
            if !assigned.contains(&position.partition) {
                tracing::debug!(group = %self.group, partition = position.partition,
                    "not committing a partition this member no longer owns");
                continue;
            }
            list.add_partition_offset(
                &self.config.topic,
                kafka_partition(position.partition)?,
                Offset::Offset(offset),
            )
            .map_err(|error| self.failed("preparing a commit", &error))?;
        }
        Ok(list)
    }
}

#[async_trait]
impl LogConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<LogRecord>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let consumer = self.consumer()?;
        // Waiting is cancellation safe: `recv` loses nothing when dropped.
        let first = match tokio::time::timeout(timeout, consumer.recv()).await {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(received) => received.map_err(|error| self.failed("polling", &error))?,
        };
        let mut records = vec![log_record(&first)?];
        drop(first);
        // Then whatever has already arrived, without waiting again.
        while records.len() < max {
            match consumer.recv().now_or_never() {
                None => break,
                Some(Ok(message)) => records.push(log_record(&message)?),
                Some(Err(error)) => {
                    // The records taken so far are past this member's
                    // position: hand them out; the error recurs on the next
                    // poll if it persists.
                    tracing::warn!(group = %self.group, %error, "Kafka consumer error");
                    break;
                }
            }
        }
        Ok(records)
    }

    fn commit(&mut self, next_offsets: &[LogPosition]) -> PendingCommit {
        let prepared = self
            .commit_list(next_offsets)
            .and_then(|list| Ok((list, Arc::clone(self.consumer()?))));
        let config = Arc::clone(&self.config);
        let group = self.group.clone();
        Box::pin(async move {
            let (list, consumer) = prepared?;
            if list.count() == 0 {
                return Ok(());
            }
            blocking(move || {
                consumer.commit(&list, CommitMode::Sync).map_err(|error| {
                    log_error(
                        &config.bootstrap_servers,
                        &format!("committing offsets of group {group:?} in {}", config.topic),
                        &error,
                    )
                })
            })
            .await
        })
    }

    fn assignment(&self) -> Vec<u32> {
        let Some(consumer) = &self.consumer else {
            return Vec::new();
        };
        match consumer.assignment() {
            Ok(assigned) => {
                let mut partitions: Vec<u32> = assigned
                    .elements_for_topic(&self.config.topic)
                    .iter()
                    .filter_map(|element| u32::try_from(element.partition()).ok())
                    .collect();
                partitions.sort_unstable();
                partitions
            }
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "cannot read the assignment");
                Vec::new()
            }
        }
    }

    fn pause(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        let list = self.partition_list(partitions)?;
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer()?
            .pause(&list)
            .map_err(|error| self.failed("pausing partitions", &error))
    }

    fn resume(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        let list = self.partition_list(partitions)?;
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer()?
            .resume(&list)
            .map_err(|error| self.failed("resuming partitions", &error))
    }

    async fn close(mut self: Box<Self>) -> Result<(), LogError> {
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        // Unsubscribing revokes the partitions; dropping the last handle
        // then closes the consumer, which leaves the group (and waits for
        // the coordinator), so other members take over at once.
        blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
            Ok(())
        })
        .await
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // Leaving the group blocks; keep it off the async workers when we can.
        if let Some(consumer) = self.consumer.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

/// Logs the group's rebalances, which otherwise happen silently inside
/// `poll`. The runner learns of a revocation from `assignment` once `poll`
/// returns, after the partition was given up (see the module docs).
pub(super) struct GroupMemberContext {
    group: String,
}

impl ClientContext for GroupMemberContext {}

impl ConsumerContext for GroupMemberContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &TopicPartitionList| -> Vec<i32> {
            list.elements()
                .iter()
                .map(|element| element.partition())
                .collect()
        };
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(group = %self.group, partitions = ?partitions(list), "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                tracing::info!(group = %self.group, partitions = ?partitions(list), "partitions revoked");
            }
            Rebalance::Error(error) => {
                tracing::warn!(group = %self.group, %error, "rebalance failed");
            }
        }
    }
}
