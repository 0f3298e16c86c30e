//! Creating the log's topic. Separate from connecting, so that running
//! chatstream never creates topics by accident: operators (or
//! `chatstream topics create`) decide partitions and replication once.
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::time::Instant;

use super::KafkaLogConfig;
use super::error::log_error;
use super::offsets::OffsetsClient;
use crate::log::LogError;

/// What `create_topic` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCreation {
    Created,
    /// The topic was there already, with the configured partition count.
    AlreadyExisted,
}

/// Creates the topic of `config` with its partitions and replication factor.
/// Idempotent: an existing topic with the same partition count is fine; one
/// with another count is an error, because the count decides which
/// partition holds each tenant. Returns once the topic's metadata shows
/// every partition, so a `KafkaLog::connect` right after succeeds.
pub async fn create_topic(config: &KafkaLogConfig) -> Result<TopicCreation, LogError> {
    config.validate()?;
    let config = Arc::new(config.clone());
    let offsets = OffsetsClient::new(Arc::clone(&config))?;
    if let Some(existing) = offsets.partition_count().await? {
        return check_existing(&config, existing);
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
    let topic = NewTopic::new(
        &config.topic,
        partitions,
        TopicReplication::Fixed(i32::from(config.replication_factor)),
    );
    let options = AdminOptions::new().operation_timeout(Some(config.request_timeout));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|error| failed(&config, &error))?;
    let mut creation = TopicCreation::Created;
    for result in results {
        match result {
            Ok(_) => {}
            // Created concurrently by someone else; checked below.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                creation = TopicCreation::AlreadyExisted;
            }
            Err((_, code)) => return Err(failed(&config, &KafkaError::AdminOp(code))),
        }
    }
    wait_until_visible(&config, &offsets, creation).await?;
    Ok(creation)
}

fn check_existing(config: &KafkaLogConfig, existing: u32) -> Result<TopicCreation, LogError> {
    if existing == config.partitions {
        Ok(TopicCreation::AlreadyExisted)
    } else {
        Err(partition_mismatch(config, existing))
    }
}

pub(super) fn partition_mismatch(config: &KafkaLogConfig, existing: u32) -> LogError {
    LogError::Unavailable(format!(
        "topic {:?} at {} has {existing} partitions but {} are configured; \
         the partition count cannot change (it decides which partition holds each tenant)",
        config.topic, config.bootstrap_servers, config.partitions
    ))
}

/// Topic creation propagates to the brokers' metadata asynchronously.
/// A topic someone else created is checked as soon as it shows.
async fn wait_until_visible(
    config: &KafkaLogConfig,
    offsets: &OffsetsClient,
    creation: TopicCreation,
) -> Result<(), LogError> {
    let deadline = Instant::now() + config.request_timeout;
    loop {
        match offsets.partition_count().await? {
            Some(existing) if existing == config.partitions => return Ok(()),
            Some(existing)
                if creation == TopicCreation::AlreadyExisted || existing > config.partitions =>
            {
                return Err(partition_mismatch(config, existing));
            }
            _ if Instant::now() >= deadline => {
                return Err(LogError::Unavailable(format!(
                    "topic {:?} was created at {} but its {} partitions did not appear within {:?}",
                    config.topic,
                    config.bootstrap_servers,
                    config.partitions,
                    config.request_timeout
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn failed(config: &KafkaLogConfig, error: &KafkaError) -> LogError {
    log_error(
        &config.bootstrap_servers,
        &format!("creating topic {:?}", config.topic),
        error,
    )
}
