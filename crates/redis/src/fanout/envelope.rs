//! The bytes a `FanOutMessage` travels as on a Redis channel.
//!
//! A small versioned binary envelope, so a gateway can reject what it does
//! not understand (another version, a truncated message) instead of
//! misreading it:
//!
//! ```text
//! version: u8 = 1
//! kind: u8    = 1 (token delta) | 2 (committed history entry)
//! delta:      conversation_id: str, reply_to: str, index: u32, text: str
//! committed:  partition: u32, offset: u64, event: the rest
//!             (protobuf, `chatstream_schemas::codec`)
//! str = u32 length + UTF-8 bytes; integers are big-endian
//! ```
use std::sync::Arc;

use chatstream_schemas::codec::{self, CodecError};

use chatstream_core::fanout::{FanOutMessage, TokenDelta};
use chatstream_core::log::LogPosition;
use chatstream_core::store::HistoryEntry;

const VERSION: u8 = 1;
const KIND_DELTA: u8 = 1;
const KIND_COMMITTED: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope version {0} is not supported (expected {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("envelope ends early: {0} is missing")]
    Truncated(&'static str),
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{0} bytes follow the message")]
    TrailingBytes(usize),
    #[error("committed event: {0}")]
    Event(#[from] CodecError),
}

pub fn encode(message: &FanOutMessage) -> Vec<u8> {
    match message {
        FanOutMessage::Delta(delta) => {
            let mut bytes = Vec::with_capacity(
                18 + delta.conversation_id.len() + delta.reply_to.len() + delta.text.len(),
            );
            bytes.extend([VERSION, KIND_DELTA]);
            put_str(&mut bytes, &delta.conversation_id);
            put_str(&mut bytes, &delta.reply_to);
            bytes.extend(delta.index.to_be_bytes());
            put_str(&mut bytes, &delta.text);
            bytes
        }
        FanOutMessage::Committed(entry) => {
            let event = codec::encode(&entry.event);
            let mut bytes = Vec::with_capacity(14 + event.len());
            bytes.extend([VERSION, KIND_COMMITTED]);
            bytes.extend(entry.position.partition.to_be_bytes());
            bytes.extend(entry.position.offset.to_be_bytes());
            bytes.extend(event);
            bytes
        }
    }
}

pub fn decode(bytes: &[u8]) -> Result<FanOutMessage, EnvelopeError> {
    let mut reader = Reader(bytes);
    let version = reader.u8("version")?;
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(version));
    }
    match reader.u8("kind")? {
        KIND_DELTA => {
            let delta = TokenDelta {
                conversation_id: reader.str("conversation_id")?,
                reply_to: reader.str("reply_to")?,
                index: u32::from_be_bytes(reader.array("index")?),
                text: reader.str("text")?,
            };
            reader.finish()?;
            Ok(FanOutMessage::Delta(delta))
        }
        KIND_COMMITTED => {
            let position = LogPosition {
                partition: u32::from_be_bytes(reader.array("partition")?),
                offset: u64::from_be_bytes(reader.array("offset")?),
            };
            let event = codec::decode(reader.0)?;
            Ok(FanOutMessage::Committed(Arc::new(HistoryEntry {
                position,
                event,
            })))
        }
        kind => Err(EnvelopeError::UnknownKind(kind)),
    }
}

fn put_str(bytes: &mut Vec<u8>, text: &str) {
    // Ids and token texts are far below 4 GiB; the gateway bounds message size.
    let len = u32::try_from(text.len()).unwrap_or(u32::MAX);
    bytes.extend(len.to_be_bytes());
    bytes.extend(&text.as_bytes()[..len as usize]);
}

/// Reads fields off the front of an envelope, checking every length.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let (taken, rest) = self
            .0
            .split_at_checked(len)
            .ok_or(EnvelopeError::Truncated(field))?;
        self.0 = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EnvelopeError> {
        let bytes = self.take(N, field)?;
        bytes
            .try_into()
            .map_err(|_| EnvelopeError::Truncated(field))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn str(&mut self, field: &'static str) -> Result<String, EnvelopeError> {
        let len = u32::from_be_bytes(self.array(field)?);
        let bytes = self.take(len as usize, field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| EnvelopeError::NotUtf8(field))
    }

    fn finish(self) -> Result<(), EnvelopeError> {
        match self.0.len() {
            0 => Ok(()),
            extra => Err(EnvelopeError::TrailingBytes(extra)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatstream_test_support::conformance::user_message;

    fn delta() -> FanOutMessage {
        FanOutMessage::Delta(TokenDelta {
            conversation_id: "c-1".into(),
            reply_to: "event-9".into(),
            index: 7,
            text: "héllo ✓".into(),
        })
    }

    fn committed() -> FanOutMessage {
        FanOutMessage::Committed(Arc::new(HistoryEntry {
            position: LogPosition {
                partition: 3,
                offset: u64::MAX - 1,
            },
            event: user_message("acme", "c-1", "hi"),
        }))
    }

    #[test]
    fn messages_round_trip() {
        for message in [delta(), committed()] {
            assert_eq!(decode(&encode(&message)).expect("decode"), message);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for message in [delta(), committed()] {
            let bytes = encode(&message);
            for len in 0..bytes.len() {
                assert!(
                    decode(&bytes[..len]).is_err(),
                    "{len} of {} bytes decoded as a message",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn unknown_versions_and_kinds_are_rejected() {
        let mut bytes = encode(&delta());
        bytes[0] = 2;
        assert!(matches!(
            decode(&bytes),
            Err(EnvelopeError::UnsupportedVersion(2))
        ));
        bytes[0] = VERSION;
        bytes[1] = 9;
        assert!(matches!(decode(&bytes), Err(EnvelopeError::UnknownKind(9))));
    }

    #[test]
    fn garbage_is_rejected() {
        let mut bytes = encode(&delta());
        bytes.push(0);
        assert!(matches!(
            decode(&bytes),
            Err(EnvelopeError::TrailingBytes(1))
        ));
        assert!(decode(b"{\"not\":\"an envelope\"}").is_err());
        let mut huge_length = vec![VERSION, KIND_DELTA];
        huge_length.extend(u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(&huge_length),
            Err(EnvelopeError::Truncated("conversation_id"))
        ));
        let mut not_utf8 = vec![VERSION, KIND_DELTA, 0, 0, 0, 1, 0xff];
        not_utf8.extend([0; 12]);
        assert!(matches!(
            decode(&not_utf8),
            Err(EnvelopeError::NotUtf8("conversation_id"))
        ));
    }
}
