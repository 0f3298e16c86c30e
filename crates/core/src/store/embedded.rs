//! The embedded projection store: every projection in one redb file inside
//! the data directory. Keys start with the tenant id, and every read is an
//! exact key or a range bounded by the full tenant (and conversation) id, so
//! one tenant's rows are never returned to another.
//!
//! Writes are "first wins": they check with a read transaction first, so a
//! replay that finds its rows already there costs no write transaction and
//! no fsync. The writes that remain go through one writer thread that
//! commits them in batches (`writer.rs`).
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chatstream_schemas::codec;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    ClientMessageRecord, ConversationRecord, HistoryEntry, ProjectionStore, Recorded, StoreError,
};
use crate::log::LogPosition;

mod records;
mod writer;

use records::{CLIENT_MESSAGES, CONVERSATIONS, EVENT_IDS, HISTORY, PROCESSED};

/// Page cache of the redb file.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// Projections stored in `<data dir>/projections.redb`. Cloning is cheap and
/// shares the file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
}

impl EmbeddedStore {
    /// The store's file inside the data directory.
    pub const FILE_NAME: &'static str = "projections.redb";

    /// Opens the store in `data_dir` (created if missing).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(Self::FILE_NAME);
        let context = |error: redb::Error| match store_error(error) {
            StoreError::Storage(message) => {
                StoreError::Storage(format!("cannot open {}: {message}", path.display()))
            }
            other => other,
        };
        // redb's default cache may grow to 1 GiB per file; keep the whole
        // process small (idle connections, not the cache, should use memory).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|error| context(error.into()))?;
        create_tables(&db).map_err(context)?;
        let db = Arc::new(db);
        let writer = writer::Writer::start(Arc::clone(&db)).map_err(|error| {
            StoreError::Unavailable(format!("cannot start the store writer thread: {error}"))
        })?;
        Ok(Self {
            db,
            writer: Arc::new(writer),
        })
    }

    /// Looks up one key on the calling thread. A read transaction never
    /// waits for the writer, and a lookup in cached pages takes a few
    /// microseconds: less than a hop to the blocking pool and back, which
    /// every send and turn would pay. Scans of many rows use `blocking`.
    fn point_read<T>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        read(&self.db).map_err(store_error)
    }

    /// Runs blocking work against the file on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!("projection store task failed: {error}"))
            })?
            .map_err(store_error)
    }

    /// Stores `value` under `key` unless a value is there already; returns
    /// the value that was there (`None` when this call inserted).
    async fn insert_if_absent(
        &self,
        table: RecordTable,
        key: (String, String),
        value: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let existing = self.point_read(|db| get_bytes(db, table, (&key.0, &key.1)))?;
        if existing.is_some() {
            return Ok(existing);
        }
        self.writer
            .write(move |txn| {
                let mut rows = txn.open_table(table)?;
                let key = (key.0.as_str(), key.1.as_str());
                // Checked again: a write batched before this one may have inserted it.
                let existing = rows.get(key)?.map(|existing| existing.value().to_vec());
                if existing.is_none() {
                    rows.insert(key, value.as_slice())?;
                }
                Ok(existing)
            })
            .await
    }

    /// `append_history`, durable before it returns or only at the next sync.
    async fn record_history(
        &self,
        entry: &HistoryEntry,
        durable: bool,
    ) -> Result<Recorded, StoreError> {
        codec::validate(&entry.event).map_err(|error| {
            StoreError::Storage(format!("refusing to record an invalid event: {error}"))
        })?;
        let event = &entry.event;
        let (tenant, conversation, event_id) = (
            event.tenant_id.clone(),
            event.conversation_id.clone(),
            event.id.clone(),
        );
        let position = entry.position;
        let encoded = codec::encode(event);
        let seen = self.point_read(|db| get_event_position(db, (&tenant, &event_id)))?;
        if let Some(existing) = seen {
            return Ok(Recorded::Duplicate { existing });
        }
        let work = move |txn: &redb::WriteTransaction| {
            let event_key = (tenant.as_str(), event_id.as_str());
            let mut event_ids = txn.open_table(EVENT_IDS)?;
            let existing = event_ids.get(event_key)?.map(|guard| guard.value());
            if existing.is_none() {
                event_ids.insert(event_key, (position.partition, position.offset))?;
                txn.open_table(HISTORY)?.insert(
                    (tenant.as_str(), conversation.as_str(), position.offset),
                    (position.partition, encoded.as_slice()),
                )?;
            }
            Ok(existing.map(|(partition, offset)| LogPosition { partition, offset }))
        };
        let existing = match durable {
            true => self.writer.write(work).await?,
            false => self.writer.write_unsynced(work).await?,
        };
        Ok(match existing {
            Some(existing) => Recorded::Duplicate { existing },
            None => Recorded::Inserted,
        })
    }
}

#[async_trait]
impl ProjectionStore for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            db.begin_read()?.open_table(CONVERSATIONS)?;
            Ok(())
        })
        .await
    }

    async fn put_conversation(
        &self,
        conversation: &ConversationRecord,
    ) -> Result<ConversationRecord, StoreError> {
        let value = records::encode_conversation(conversation)?;
        let key = (
            conversation.tenant_id.clone(),
            conversation.conversation_id.clone(),
        );
        let existing = self.insert_if_absent(CONVERSATIONS, key, value).await?;
        match existing {
            Some(bytes) => records::decode_conversation(
                &conversation.tenant_id,
                &conversation.conversation_id,
                &bytes,
            ),
            None => Ok(conversation.clone()),
        }
    }

    async fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let bytes =
            self.point_read(|db| get_bytes(db, CONVERSATIONS, (tenant_id, conversation_id)))?;
        bytes
            .map(|bytes| records::decode_conversation(tenant_id, conversation_id, &bytes))
            .transpose()
    }

    async fn list_conversations(
        &self,
        tenant_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let tenant = tenant_id.to_owned();
        let after = after_id.map(str::to_owned);
        let rows = self
            .blocking(move |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(CONVERSATIONS)?;
                let start = match &after {
                    Some(after) => Bound::Excluded((tenant.as_str(), after.as_str())),
                    None => Bound::Included((tenant.as_str(), "")),
                };
                let mut rows = Vec::new();
                for row in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
                    let (key, value) = row?;
                    let (row_tenant, conversation_id) = key.value();
                    // Keys compare field by field, so the tenant's rows are
                    // contiguous; the first row of another tenant ends them.
                    if row_tenant != tenant || rows.len() == limit {
                        break;
                    }
                    rows.push((conversation_id.to_owned(), value.value().to_vec()));
                }
                Ok(rows)
            })
            .await?;
        rows.iter()
            .map(|(conversation_id, bytes)| {
                records::decode_conversation(tenant_id, conversation_id, bytes)
            })
            .collect()
    }

    async fn append_history(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError> {
        self.record_history(entry, true).await
    }

    async fn append_history_unsynced(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError> {
        self.record_history(entry, false).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.writer.sync().await
    }

    async fn read_history(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        after_offset: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let first = match after_offset {
            None => 0,
            Some(after) => match after.checked_add(1) {
                Some(first) => first,
                None => return Ok(Vec::new()),
            },
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = (tenant_id.to_owned(), conversation_id.to_owned());
        let rows = self
            .blocking(move |db| {
                let (tenant, conversation) = (key.0.as_str(), key.1.as_str());
                let txn = db.begin_read()?;
                let table = txn.open_table(HISTORY)?;
                // Both ends carry the full tenant and conversation ids, so the
                // range holds this conversation's rows and nothing else.
                let range = (tenant, conversation, first)..=(tenant, conversation, u64::MAX);
                let mut rows = Vec::new();
                for row in table.range(range)?.take(limit) {
                    let (key, value) = row?;
                    let (partition, bytes) = value.value();
                    rows.push((
                        LogPosition {
                            partition,
                            offset: key.value().2,
                        },
                        bytes.to_vec(),
                    ));
                }
                Ok(rows)
            })
            .await?;
        rows.into_iter()
            .map(|(position, bytes)| records::decode_history_entry(position, &bytes))
            .collect()
    }

    async fn claim_client_message(
        &self,
        record: &ClientMessageRecord,
    ) -> Result<ClientMessageRecord, StoreError> {
        let value = records::encode_client_message(record)?;
        let key = (record.tenant_id.clone(), record.client_message_id.clone());
        let existing = self.insert_if_absent(CLIENT_MESSAGES, key, value).await?;
        match existing {
            Some(bytes) => {
                records::decode_client_message(&record.tenant_id, &record.client_message_id, &bytes)
            }
            None => Ok(record.clone()),
        }
    }

    async fn get_client_message(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, StoreError> {
        let bytes =
            self.point_read(|db| get_bytes(db, CLIENT_MESSAGES, (tenant_id, client_message_id)))?;
        bytes
            .map(|bytes| records::decode_client_message(tenant_id, client_message_id, &bytes))
            .transpose()
    }

    async fn is_processed(&self, scope: &str, event_id: &str) -> Result<bool, StoreError> {
        self.point_read(|db| {
            let txn = db.begin_read()?;
            Ok(txn.open_table(PROCESSED)?.get((scope, event_id))?.is_some())
        })
    }

    async fn mark_processed(&self, scope: &str, event_id: &str) -> Result<(), StoreError> {
        if self.is_processed(scope, event_id).await? {
            return Ok(());
        }
        let key = (scope.to_owned(), event_id.to_owned());
        self.writer
            .write(move |txn| {
                let key = (key.0.as_str(), key.1.as_str());
                let mut processed = txn.open_table(PROCESSED)?;
                if processed.get(key)?.is_none() {
                    processed.insert(key, unix_millis())?;
                }
                Ok(())
            })
            .await
    }
}

/// Creates every table up front, so read transactions never find one missing.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(CONVERSATIONS)?;
    txn.open_table(HISTORY)?;
    txn.open_table(EVENT_IDS)?;
    txn.open_table(CLIENT_MESSAGES)?;
    txn.open_table(PROCESSED)?;
    txn.commit()?;
    Ok(())
}

type RecordTable = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

fn get_bytes(
    db: &Database,
    table: RecordTable,
    key: (&str, &str),
) -> Result<Option<Vec<u8>>, redb::Error> {
    let txn = db.begin_read()?;
    Ok(txn
        .open_table(table)?
        .get(key)?
        .map(|value| value.value().to_vec()))
}

fn get_event_position(
    db: &Database,
    key: (&str, &str),
) -> Result<Option<LogPosition>, redb::Error> {
    let txn = db.begin_read()?;
    let position = txn
        .open_table(EVENT_IDS)?
        .get(key)?
        .map(|guard| guard.value());
    Ok(position.map(|(partition, offset)| LogPosition { partition, offset }))
}

fn store_error(error: redb::Error) -> StoreError {
    match error {
        redb::Error::DatabaseAlreadyOpen => StoreError::Unavailable(
            "the projection store file is already open (by this or another process)".into(),
        ),
        redb::Error::Corrupted(message) => StoreError::Corrupt(message),
        other => StoreError::Storage(other.to_string()),
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
