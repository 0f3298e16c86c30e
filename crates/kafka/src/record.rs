//! A consumed Kafka message as a `LogRecord`. The message came from the
//! broker, so nothing about it is assumed: a negative position is an error,
//! a missing key or value reads as empty.
use rdkafka::Message;

use chatstream_core::log::{LogError, LogPosition, LogRecord};

pub(super) fn log_record(message: &impl Message) -> Result<LogRecord, LogError> {
    let partition = u32::try_from(message.partition()).map_err(|_| {
        LogError::Storage(format!(
            "broker returned a record of partition {}",
            message.partition()
        ))
    })?;
    let offset = u64::try_from(message.offset()).map_err(|_| {
        LogError::Storage(format!(
            "broker returned a record at offset {} of partition {partition}",
            message.offset()
        ))
    })?;
    Ok(LogRecord {
        position: LogPosition { partition, offset },
        // Keys are tenant ids; a record written by another producer may have
        // any bytes, and the runner must still see (and dead-letter) it.
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        value: message.payload().unwrap_or_default().to_vec(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use rdkafka::Timestamp;
    use rdkafka::message::OwnedMessage;

    use super::*;

    fn message(partition: i32, offset: i64, key: Option<&[u8]>) -> OwnedMessage {
        OwnedMessage::new(
            Some(vec![1, 2, 3]),
            key.map(<[u8]>::to_vec),
            "events".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            partition,
            offset,
            None,
        )
    }

    #[test]
    fn maps_position_key_value_and_time() {
        let record = log_record(&message(3, 42, Some(b"acme"))).expect("valid");
        assert_eq!(
            record,
            LogRecord {
                position: LogPosition {
                    partition: 3,
                    offset: 42
                },
                key: "acme".into(),
                value: vec![1, 2, 3],
                timestamp_ms: 1_700_000_000_000,
            }
        );
    }

    #[test]
    fn a_missing_key_reads_as_empty() {
        assert_eq!(log_record(&message(0, 0, None)).expect("valid").key, "");
    }

    #[test]
    fn negative_positions_are_errors() {
        assert!(log_record(&message(-1, 0, None)).is_err());
        assert!(log_record(&message(0, -1001, None)).is_err());
    }
}
