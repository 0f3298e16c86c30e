//! Ranged reads (`EventLog::read`): a consumer outside any group assigns
//! itself one partition at an offset and takes what the broker returns.
//! Setting up a librdkafka client costs a connection and a thread per
//! broker, so idle readers are kept for the next read.
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaLogConfig;
use super::error::{blocking, log_error};
use super::offsets::kafka_partition;
use super::record::log_record;
use chatstream_core::log::{LogError, LogRecord};

/// Idle readers kept between reads; more run at once when reads overlap.
const MAX_IDLE_READERS: usize = 4;

#[derive(Clone)]
pub(super) struct RangeReader {
    config: Arc<KafkaLogConfig>,
    idle: Arc<Mutex<Vec<BaseConsumer>>>,
}

/// The records a read asks for: offsets `from..end` of `partition`, at most
/// `max` of them. `end` is the high watermark, so every offset below it is
/// on the broker and a read never waits for new appends.
#[derive(Debug, Clone, Copy)]
pub(super) struct Range {
    pub partition: u32,
    pub from: u64,
    pub end: u64,
    pub max: usize,
}

impl RangeReader {
    pub(super) fn new(config: Arc<KafkaLogConfig>) -> Self {
        Self {
            config,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(super) async fn read(&self, range: Range) -> Result<Vec<LogRecord>, LogError> {
        if range.max == 0 || range.from >= range.end {
            return Ok(Vec::new());
        }
        let this = self.clone();
        blocking(move || {
            let reader = match this.take_idle() {
                Some(reader) => reader,
                None => this.config.reader().create().map_err(|error| {
                    log_error(&this.config.bootstrap_servers, "creating a reader", &error)
                })?,
            };
            let records = read_range(&reader, &this.config, range);
            // Stop its fetches before it idles; a reader in an unknown state
            // is dropped rather than reused.
            if records.is_ok() && reader.unassign().is_ok() {
                this.put_idle(reader);
            }
            records
        })
        .await
    }

    fn take_idle(&self) -> Option<BaseConsumer> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_idle(&self, reader: BaseConsumer) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(reader);
        }
    }
}

fn read_range(
    reader: &BaseConsumer,
    config: &KafkaLogConfig,
    range: Range,
) -> Result<Vec<LogRecord>, LogError> {
    let topic = &config.topic;
    let partition = kafka_partition(range.partition)?;
    let from = i64::try_from(range.from)
        .map_err(|_| LogError::Storage(format!("offset {} is out of Kafka's range", range.from)))?;
    let failed = |action: &str, error: KafkaError| {
        log_error(
            &config.bootstrap_servers,
            &format!("{action} {topic}/{} from offset {from}", range.partition),
            &error,
        )
    };

    let mut assignment = TopicPartitionList::with_capacity(1);
    assignment
        .add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|error| failed("assigning", error))?;
    reader
        .assign(&assignment)
        .map_err(|error| failed("assigning", error))?;

    let wanted = usize::try_from(range.end - range.from).map_or(range.max, |n| n.min(range.max));
    let deadline = Instant::now() + config.request_timeout;
    let mut records = Vec::with_capacity(wanted.min(1024));
    while records.len() < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(polled) = reader.poll(left) else {
            continue;
        };
        let message = polled.map_err(|error| failed("reading", error))?;
        let record = log_record(&message)?;
        // Defensive: only our partition, from our offset, in order.
        let next_expected = records
            .last()
            .map_or(range.from, |last: &LogRecord| last.position.offset + 1);
        if record.position.partition != range.partition || record.position.offset < next_expected {
            continue;
        }
        let last = record.position.offset + 1 >= range.end;
        records.push(record);
        if last {
            break;
        }
    }
    if records.is_empty() {
        // Offsets below the high watermark are on the broker: getting none
        // of them means the broker did not serve the fetch.
        return Err(LogError::Unavailable(format!(
            "Kafka at {} returned no record of {topic}/{} from offset {from} (high watermark {}) within {:?}",
            config.bootstrap_servers, range.partition, range.end, config.request_timeout
        )));
    }
    Ok(records)
}
