//! The Kafka event log and its dead-letter topic.
use std::sync::Arc;

use anyhow::Context;
use chatstream_config::Config;
use chatstream_core::deadletter::DeadLetterSink;
use chatstream_core::log::EventLog;
use chatstream_kafka::{KafkaDeadLetters, KafkaLog, KafkaLogConfig};

pub async fn open_log(config: &Config) -> anyhow::Result<Arc<dyn EventLog>> {
    Ok(Arc::new(
        KafkaLog::connect(KafkaLogConfig::from_config(config))
            .await
            .context("cannot connect to the Kafka event log")?,
    ))
}

pub async fn open_dead_letters(config: &Config) -> anyhow::Result<Arc<dyn DeadLetterSink>> {
    Ok(Arc::new(
        KafkaDeadLetters::connect(&KafkaLogConfig::from_config(config))
            .await
            .context("cannot connect to the Kafka dead-letter topic")?,
    ))
}
