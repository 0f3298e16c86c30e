//! Creating the log's topics (events and dead letters). Separate from
//! connecting, so that running chatstream never creates topics by accident:
//! operators (or `chatstream topics create`) decide partitions and
//! replication once.
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::time::Instant;

use super::KafkaLogConfig;
use super::error::log_error;
use super::offsets::OffsetsClient;
use chatstream_core::log::LogError;

/// What `create_topic` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCreation {
    Created,
    /// The topic was there already, with the configured partition count.
    AlreadyExisted,
}

/// What `create_topics` found, per topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicsCreation {
    pub events: TopicCreation,
    pub dead_letters: TopicCreation,
}

/// Creates the event topic and the dead-letter topic of `config` (see
/// `create_topics`) and says what became of the event topic.
pub async fn create_topic(config: &KafkaLogConfig) -> Result<TopicCreation, LogError> {
    Ok(create_topics(config).await?.events)
}

/// Creates the event topic and the dead-letter topic of `config`, both with
/// its partitions and replication factor. Idempotent: an existing topic with
/// the same partition count is fine; one with another count is an error,
/// because the count decides which partition holds each tenant. Returns
/// once the topics' metadata shows every partition, so a
/// `KafkaLog::connect` right after succeeds.
pub async fn create_topics(config: &KafkaLogConfig) -> Result<TopicsCreation, LogError> {
    config.validate()?;
    let config = Arc::new(config.clone());
    let offsets = OffsetsClient::new(Arc::clone(&config))?;
    let events = ensure_topic(&config, &offsets, &config.topic).await?;
    let dead_letters = ensure_topic(&config, &offsets, &config.dead_letter_topic()).await?;
    Ok(TopicsCreation {
        events,
        dead_letters,
    })
}

/// Creates `topic` unless it exists with the configured partition count.
async fn ensure_topic(
    config: &KafkaLogConfig,
    offsets: &OffsetsClient,
    topic: &str,
) -> Result<TopicCreation, LogError> {
    if let Some(existing) = offsets.partition_count_of(topic).await? {
        return check_existing(config, topic, existing);
    }

    let admin: AdminClient<DefaultClientContext> = config.admin().create().map_err(|error| {
        log_error(
            &config.bootstrap_servers,
            "creating the admin client",
            &error,
        )
    })?;
    let partitions = i32::try_from(config.partitions).map_err(|_| {
        LogError::Unavailable(format!("{} partitions are too many", config.partitions))
    })?;
    let new_topic = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(i32::from(config.replication_factor)),
    );
    let options = AdminOptions::new().operation_timeout(Some(config.request_timeout));
    let results = admin
        .create_topics([&new_topic], &options)
        .await
        .map_err(|error| failed(config, topic, &error))?;
    let mut creation = TopicCreation::Created;
    for result in results {
        match result {
            Ok(_) => {}
            // Created concurrently by someone else; checked below.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                creation = TopicCreation::AlreadyExisted;
            }
            Err((_, code)) => return Err(failed(config, topic, &KafkaError::AdminOp(code))),
        }
    }
    wait_until_visible(config, offsets, topic, creation).await?;
    Ok(creation)
}

fn check_existing(
    config: &KafkaLogConfig,
    topic: &str,
    existing: u32,
) -> Result<TopicCreation, LogError> {
    if existing == config.partitions {
        Ok(TopicCreation::AlreadyExisted)
    } else {
        Err(partition_mismatch(config, topic, existing))
    }
}

pub(super) fn partition_mismatch(config: &KafkaLogConfig, topic: &str, existing: u32) -> LogError {
    LogError::Unavailable(format!(
        "topic {topic:?} at {} has {existing} partitions but {} are configured; \
         the partition count cannot change (it decides which partition holds each tenant)",
        config.bootstrap_servers, config.partitions
    ))
}

/// Topic creation propagates to the brokers' metadata asynchronously.
/// A topic someone else created is checked as soon as it shows.
async fn wait_until_visible(
    config: &KafkaLogConfig,
    offsets: &OffsetsClient,
    topic: &str,
    creation: TopicCreation,
) -> Result<(), LogError> {
    let deadline = Instant::now() + config.request_timeout;
    loop {
        match offsets.partition_count_of(topic).await? {
            Some(existing) if existing == config.partitions => return Ok(()),
            Some(existing)
                if creation == TopicCreation::AlreadyExisted || existing > config.partitions =>
            {
                return Err(partition_mismatch(config, topic, existing));
            }
            _ if Instant::now() >= deadline => {
                return Err(LogError::Unavailable(format!(
                    "topic {topic:?} was created at {} but its {} partitions did not appear within {:?}",
                    config.bootstrap_servers, config.partitions, config.request_timeout
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn failed(config: &KafkaLogConfig, topic: &str, error: &KafkaError) -> LogError {
    log_error(
        &config.bootstrap_servers,
        &format!("creating topic {topic:?}"),
        error,
    )
}
