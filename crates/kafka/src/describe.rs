//! What an operator asks about a topic (`chatstream topics describe`): its
//! partitions, who leads each, how far each has been written, and how far
//! consumer groups have committed (their lag). Read-only: joins no group.
use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaLogConfig;
use super::error::{blocking, log_error};
use chatstream_core::log::LogError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub topic: String,
    /// In partition order.
    pub partitions: Vec<PartitionDescription>,
    /// One per group asked about, in the order asked.
    pub groups: Vec<GroupProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionDescription {
    pub partition: u32,
    /// The leader's broker id and address; `None` while the partition has
    /// no leader (its replicas are down or an election is running).
    pub leader: Option<Broker>,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
    /// The oldest offset still held.
    pub low_watermark: u64,
    /// The offset the next record gets.
    pub high_watermark: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub id: i32,
    /// `host:port`, or empty when the metadata does not list the broker.
    pub address: String,
}

/// A consumer group's committed offsets in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProgress {
    pub group: String,
    /// Per partition (same order as `TopicDescription::partitions`): the
    /// offset the group resumes from, `None` where it never committed.
    pub committed: Vec<Option<u64>>,
}

impl TopicDescription {
    /// Records of `partition` (an index into `partitions`) that `group`
    /// has not committed. A group that never committed starts at the
    /// oldest record still held, so all of them count.
    pub fn lag(&self, group: &GroupProgress, index: usize) -> u64 {
        let partition = &self.partitions[index];
        let from = group.committed[index].unwrap_or(partition.low_watermark);
        partition.high_watermark.saturating_sub(from)
    }
}

/// Describes `topic` on the cluster of `config`, with the committed offsets
/// of `groups`; `None` when the topic does not exist.
pub async fn describe_topic(
    config: &KafkaLogConfig,
    topic: &str,
    groups: &[String],
) -> Result<Option<TopicDescription>, LogError> {
    config.validate()?;
    let config = Arc::new(config.clone());
    let topic = topic.to_owned();
    let groups = groups.to_vec();
    blocking(move || describe_blocking(&config, &topic, &groups)).await
}

fn describe_blocking(
    config: &KafkaLogConfig,
    topic: &str,
    groups: &[String],
) -> Result<Option<TopicDescription>, LogError> {
    let failed =
        |action: String, error: &KafkaError| log_error(&config.bootstrap_servers, &action, error);
    let client: BaseConsumer = config
        .offsets()
        .create()
        .map_err(|error| failed("creating the metadata client".into(), &error))?;
    let metadata = client
        .fetch_metadata(Some(topic), config.request_timeout)
        .map_err(|error| failed(format!("fetching the metadata of topic {topic:?}"), &error))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(error) = found.error() {
        let error = KafkaError::MetadataFetch(error.into());
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
            return Ok(None);
        }
        return Err(failed(format!("looking up topic {topic:?}"), &error));
    }
    let broker_address = |id: i32| {
        metadata
            .brokers()
            .iter()
            .find(|broker| broker.id() == id)
            .map(|broker| format!("{}:{}", broker.host(), broker.port()))
            .unwrap_or_default()
    };

    let mut partitions = Vec::with_capacity(found.partitions().len());
    for partition in found.partitions() {
        let id = partition.id();
        let (low, high) = client
            .fetch_watermarks(topic, id, config.request_timeout)
            .map_err(|error| failed(format!("fetching the watermarks of {topic}/{id}"), &error))?;
        let leader = partition.leader();
        partitions.push(PartitionDescription {
            partition: to_u32(i64::from(id), topic, "partition")?,
            leader: (leader >= 0).then(|| Broker {
                id: leader,
                address: broker_address(leader),
            }),
            replicas: partition.replicas().to_vec(),
            in_sync_replicas: partition.isr().to_vec(),
            low_watermark: to_u64(low, topic, "low watermark")?,
            high_watermark: to_u64(high, topic, "high watermark")?,
        });
    }
    partitions.sort_by_key(|partition| partition.partition);
    drop(client);

    let groups = groups
        .iter()
        .map(|group| group_progress(config, topic, group, &partitions))
        .collect::<Result<_, _>>()?;
    Ok(Some(TopicDescription {
        topic: topic.to_owned(),
        partitions,
        groups,
    }))
}

/// The committed offsets of `group` in every partition of `topic`.
fn group_progress(
    config: &KafkaLogConfig,
    topic: &str,
    group: &str,
    partitions: &[PartitionDescription],
) -> Result<GroupProgress, LogError> {
    let failed =
        |action: String, error: &KafkaError| log_error(&config.bootstrap_servers, &action, error);
    // librdkafka reads committed offsets only for its own `group.id`; this
    // client has it but never joins the group.
    let client: BaseConsumer = config
        .committed_offsets_of(group)
        .create()
        .map_err(|error| failed(format!("creating a client for group {group:?}"), &error))?;
    let mut wanted = TopicPartitionList::with_capacity(partitions.len());
    for partition in partitions {
        wanted.add_partition(topic, partition.partition as i32);
    }
    let answered = client
        .committed_offsets(wanted, config.request_timeout)
        .map_err(|error| {
            failed(
                format!("fetching the offsets group {group:?} committed in {topic}"),
                &error,
            )
        })?;
    let committed = partitions
        .iter()
        .map(|partition| {
            match answered
                .find_partition(topic, partition.partition as i32)
                .map(|element| element.offset())
            {
                Some(Offset::Offset(offset)) => to_u64(offset, topic, "committed offset").map(Some),
                _ => Ok(None),
            }
        })
        .collect::<Result<_, _>>();
    // With librdkafka's answer alive, dropping the client hangs forever.
    drop(answered);
    drop(client);
    Ok(GroupProgress {
        group: group.to_owned(),
        committed: committed?,
    })
}

fn to_u64(value: i64, topic: &str, what: &str) -> Result<u64, LogError> {
    u64::try_from(value)
        .map_err(|_| LogError::Storage(format!("broker reported {what} {value} for {topic}")))
}

fn to_u32(value: i64, topic: &str, what: &str) -> Result<u32, LogError> {
    u32::try_from(value)
        .map_err(|_| LogError::Storage(format!("broker reported {what} {value} for {topic}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn description(low: u64, high: u64, committed: Option<u64>) -> (TopicDescription, usize) {
        let topic = TopicDescription {
            topic: "events".into(),
            partitions: vec![PartitionDescription {
                partition: 0,
                leader: None,
                replicas: vec![],
                in_sync_replicas: vec![],
                low_watermark: low,
                high_watermark: high,
            }],
            groups: vec![GroupProgress {
                group: "router".into(),
                committed: vec![committed],
            }],
        };
        (topic, 0)
    }

    #[test]
    fn lag_counts_what_the_group_has_not_committed() {
        let (topic, index) = description(0, 10, Some(4));
        assert_eq!(topic.lag(&topic.groups[0], index), 6);
    }

    #[test]
    fn a_group_that_never_committed_lags_by_everything_still_held() {
        let (topic, index) = description(3, 10, None);
        assert_eq!(topic.lag(&topic.groups[0], index), 7);
    }

    #[test]
    fn a_commit_past_the_end_is_no_lag() {
        let (topic, index) = description(0, 10, Some(12));
        assert_eq!(topic.lag(&topic.groups[0], index), 0);
    }
}
