//! Dead letters in `<data dir>/dead-letters.redb`, for `chatstream dev` and
//! single-node installs. Keyed by processor and log position, so a letter
//! sent again after a crash (before the runner committed past its record)
//! replaces itself instead of piling up. `list` reads them back for
//! operators and tests.
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, TableDefinition};

use super::{DeadLetter, DeadLetterError, DeadLetterReason, DeadLetterSink};
use crate::log::LogPosition;

/// (processor, partition, offset): one letter per record and processor.
type LetterKey<'a> = (&'a str, u32, u64);
/// (key, value, event id or "", reason, error, attempts, failed at in unix ms).
type LetterValue<'a> = (&'a str, &'a [u8], &'a str, &'a str, &'a str, u32, i64);

const LETTERS: TableDefinition<LetterKey<'static>, LetterValue<'static>> =
    TableDefinition::new("dead_letters");

/// Dead letters in one redb file. Cloning is cheap and shares the file.
#[derive(Clone)]
pub struct EmbeddedDeadLetters {
    db: Arc<Database>,
}

impl EmbeddedDeadLetters {
    /// The file inside the data directory.
    pub const FILE_NAME: &'static str = "dead-letters.redb";

    /// Opens (or creates) the file in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, DeadLetterError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            DeadLetterError::Unavailable(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(Self::FILE_NAME);
        let opened = Database::create(&path)
            .map_err(redb::Error::from)
            .and_then(|db| {
                // Create the table now, so readers never find it missing.
                let txn = db.begin_write()?;
                txn.open_table(LETTERS)?;
                txn.commit()?;
                Ok(db)
            });
        let db = opened.map_err(|error| {
            DeadLetterError::Unavailable(format!("cannot open {}: {error}", path.display()))
        })?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Every dead letter of `processor`, in log order.
    pub async fn list(&self, processor: &str) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let db = Arc::clone(&self.db);
        let processor = processor.to_owned();
        blocking(move || read_letters(&db, &processor)).await
    }
}

#[async_trait]
impl DeadLetterSink for EmbeddedDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let db = Arc::clone(&self.db);
        let letter = letter.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut letters = txn.open_table(LETTERS)?;
                letters.insert(
                    (
                        letter.processor.as_str(),
                        letter.position.partition,
                        letter.position.offset,
                    ),
                    (
                        letter.key.as_str(),
                        letter.value.as_slice(),
                        letter.event_id.as_deref().unwrap_or(""),
                        letter.reason.as_str(),
                        letter.error.as_str(),
                        letter.attempts,
                        letter.failed_at_ms,
                    ),
                )?;
            }
            // Durable (fsync'd) once this returns: the runner commits next.
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

fn read_letters(db: &Database, processor: &str) -> Result<Vec<DeadLetter>, redb::Error> {
    let txn = db.begin_read()?;
    let letters = txn.open_table(LETTERS)?;
    let mut out = Vec::new();
    for entry in letters.range((processor, 0, 0)..=(processor, u32::MAX, u64::MAX))? {
        let (key, value) = entry?;
        let (_, partition, offset) = key.value();
        let (record_key, bytes, event_id, reason, error, attempts, failed_at_ms) = value.value();
        out.push(DeadLetter {
            processor: processor.to_owned(),
            position: LogPosition { partition, offset },
            key: record_key.to_owned(),
            value: bytes.to_vec(),
            event_id: (!event_id.is_empty()).then(|| event_id.to_owned()),
            // Only this module writes the file; an unknown name means a newer
            // version wrote it, and "handler failed" is the safe reading.
            reason: DeadLetterReason::parse(reason).unwrap_or(DeadLetterReason::HandlerFailed),
            error: error.to_owned(),
            attempts,
            failed_at_ms,
        });
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, redb::Error> + Send + 'static,
) -> Result<T, DeadLetterError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| DeadLetterError::Unavailable(format!("dead-letter task failed: {error}")))?
        .map_err(|error| DeadLetterError::Storage(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogRecord;

    fn letter(processor: &str, partition: u32, offset: u64, error: &str) -> DeadLetter {
        let record = LogRecord {
            position: LogPosition { partition, offset },
            key: "acme".into(),
            value: vec![0xde, 0xad],
            timestamp_ms: 0,
        };
        DeadLetter::new(
            processor,
            &record,
            DeadLetterReason::Undecodable,
            error.into(),
            0,
        )
    }

    #[tokio::test]
    async fn letters_survive_a_reopen_in_log_order_per_processor() {
        let dir = tempfile::tempdir().unwrap();
        let sink = EmbeddedDeadLetters::open(dir.path()).unwrap();
        let later = letter("router", 1, 9, "later");
        let earlier = letter("router", 0, 5, "earlier").with_event_id("e-1");
        let other = letter("projector", 0, 1, "other processor");
        for letter in [&later, &earlier, &other] {
            sink.send(letter).await.unwrap();
        }
        drop(sink);

        let reopened = EmbeddedDeadLetters::open(dir.path()).unwrap();
        assert_eq!(reopened.list("router").await.unwrap(), [earlier, later]);
        assert_eq!(reopened.list("projector").await.unwrap(), [other]);
        assert!(reopened.list("nobody").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sending_the_same_record_again_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = EmbeddedDeadLetters::open(dir.path()).unwrap();
        sink.send(&letter("router", 0, 3, "first try"))
            .await
            .unwrap();
        let again = letter("router", 0, 3, "after a restart");
        sink.send(&again).await.unwrap();
        assert_eq!(sink.list("router").await.unwrap(), [again]);
    }
}
