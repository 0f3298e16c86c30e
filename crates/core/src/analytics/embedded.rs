//! The embedded analytics store: one redb file in the data directory.
//! Every key starts with the tenant id (tuple keys, so no tenant id can be
//! the prefix of another's rows), and every read is bounded by it.
//!
//! Idempotency: `apply` checks the event's mark, updates the three buckets
//! and writes the mark in one write transaction, so the buckets and the
//! mark commit together or not at all. Every write goes through one writer
//! thread (`writer.rs`, group commit), so concurrent applies of one tenant
//! cannot lose an update, and they share commits and bucket encodings.
//! Commits are durable at the next `sync` (the processor's, before it
//! commits its log position), not before.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{
    AnalyticsStore, Applied, Bucket, BucketState, Granularity, Observation, check_read_span,
};
use crate::store::StoreError;

mod writer;

/// Buckets by (tenant, granularity code, bucket start ms): the encoded state.
const BUCKETS: TableDefinition<(&str, u8, i64), &[u8]> = TableDefinition::new("buckets");
/// Events already added, by (tenant, event id).
const APPLIED: TableDefinition<(&str, &str), u8> = TableDefinition::new("applied");
/// The processor's notes, by (tenant, key).
const NOTES: TableDefinition<(&str, &str), i64> = TableDefinition::new("notes");

/// Page cache of the redb file: analytics rows are few and small.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Analytics stored in `<data dir>/analytics.redb`. Cloning is cheap and
/// shares the file.
#[derive(Clone)]
pub struct EmbeddedAnalytics {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
}

impl EmbeddedAnalytics {
    pub const FILE_NAME: &'static str = "analytics.redb";

    /// Opens the store in `data_dir` (created if missing).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|error| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(Self::FILE_NAME);
        let opened = || -> Result<Database, redb::Error> {
            let db = Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&path)?;
            let txn = db.begin_write()?;
            txn.open_table(BUCKETS)?;
            txn.open_table(APPLIED)?;
            txn.open_table(NOTES)?;
            txn.commit()?;
            Ok(db)
        };
        let db = opened().map_err(|error| {
            StoreError::Storage(format!("cannot open {}: {error}", path.display()))
        })?;
        let db = Arc::new(db);
        let writer = writer::Writer::start(Arc::clone(&db)).map_err(|error| {
            StoreError::Unavailable(format!("cannot start the analytics writer thread: {error}"))
        })?;
        Ok(Self {
            db,
            writer: Arc::new(writer),
        })
    }

    /// Runs blocking work against the file on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|error| {
                StoreError::Unavailable(format!("analytics store task failed: {error}"))
            })?
    }

    fn is_applied(db: &Database, tenant_id: &str, event_id: &str) -> Result<bool, StoreError> {
        let txn = db.begin_read().map_err(storage)?;
        let applied = txn.open_table(APPLIED).map_err(storage)?;
        Ok(applied
            .get((tenant_id, event_id))
            .map_err(storage)?
            .is_some())
    }
}

/// A bucket's key: (tenant, granularity code, bucket start).
type BucketKey = (String, u8, i64);

/// One write transaction of the writer thread, and the buckets its writes
/// changed: each decoded on first use and encoded once, by `store_buckets`,
/// before the commit.
pub(crate) struct Batch<'t> {
    txn: &'t WriteTransaction,
    buckets: HashMap<BucketKey, BucketState>,
}

impl<'t> Batch<'t> {
    fn new(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            buckets: HashMap::new(),
        }
    }

    /// The bucket as this batch has it so far.
    fn bucket(&mut self, key: BucketKey) -> Result<&mut BucketState, StoreError> {
        if !self.buckets.contains_key(&key) {
            let table = self.txn.open_table(BUCKETS).map_err(storage)?;
            let stored = table
                .get((key.0.as_str(), key.1, key.2))
                .map_err(storage)?
                .map(|bytes| BucketState::decode(bytes.value()))
                .transpose()
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
            self.buckets.insert(key.clone(), stored.unwrap_or_default());
        }
        Ok(self
            .buckets
            .get_mut(&key)
            .expect("inserted above when missing"))
    }

    /// Writes every bucket the batch changed.
    fn store_buckets(&mut self) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(BUCKETS).map_err(storage)?;
        for ((tenant_id, code, start), state) in self.buckets.drain() {
            table
                .insert((tenant_id.as_str(), code, start), state.encode().as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }
}

/// Adds `observation` to its three buckets and marks the event, inside the
/// batch: all of it commits, or none.
fn apply_in(
    batch: &mut Batch<'_>,
    tenant_id: &str,
    event_id: &str,
    observation: &Observation,
) -> Result<Applied, StoreError> {
    let mut applied = batch.txn.open_table(APPLIED).map_err(storage)?;
    // Checked again inside the transaction: the same event may have been
    // applied since the read (earlier in this batch, say).
    if applied
        .get((tenant_id, event_id))
        .map_err(storage)?
        .is_some()
    {
        return Ok(Applied::AlreadyApplied);
    }
    applied.insert((tenant_id, event_id), 1).map_err(storage)?;
    drop(applied);
    for granularity in Granularity::ALL {
        let key = (
            tenant_id.to_owned(),
            granularity.code(),
            granularity.bucket_start(observation.at_ms),
        );
        batch.bucket(key)?.observe(observation);
    }
    Ok(Applied::Added)
}

fn storage(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Storage(format!("analytics store: {}", error.into()))
}

#[async_trait]
impl AnalyticsStore for EmbeddedAnalytics {
    async fn ping(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        txn.open_table(BUCKETS).map_err(storage)?;
        Ok(())
    }

    async fn apply(
        &self,
        tenant_id: &str,
        event_id: &str,
        observation: &Observation,
    ) -> Result<Applied, StoreError> {
        // A redelivered event costs a read, not a write transaction.
        if Self::is_applied(&self.db, tenant_id, event_id)? {
            return Ok(Applied::AlreadyApplied);
        }
        let (tenant_id, event_id) = (tenant_id.to_owned(), event_id.to_owned());
        let observation = observation.clone();
        self.writer
            .write(move |batch| apply_in(batch, &tenant_id, &event_id, &observation))
            .await
    }

    async fn read_buckets(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        check_read_span(granularity, from_ms, to_ms)?;
        if to_ms <= from_ms {
            return Ok(Vec::new());
        }
        let tenant_id = tenant_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let buckets = txn.open_table(BUCKETS).map_err(storage)?;
            let code = granularity.code();
            let range = (tenant_id.as_str(), code, from_ms)..(tenant_id.as_str(), code, to_ms);
            let mut found = Vec::new();
            for row in buckets.range(range).map_err(storage)? {
                let (key, value) = row.map_err(storage)?;
                let state = BucketState::decode(value.value())
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                found.push(Bucket {
                    granularity,
                    start_ms: key.value().2,
                    state,
                });
            }
            Ok(found)
        })
        .await
    }

    async fn note(&self, tenant_id: &str, key: &str, value: i64) -> Result<(), StoreError> {
        if self.noted(tenant_id, key).await? == Some(value) {
            return Ok(());
        }
        let (tenant_id, key) = (tenant_id.to_owned(), key.to_owned());
        self.writer
            .write(move |batch| {
                batch
                    .txn
                    .open_table(NOTES)
                    .map_err(storage)?
                    .insert((tenant_id.as_str(), key.as_str()), value)
                    .map_err(storage)?;
                Ok(())
            })
            .await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.writer.sync().await
    }

    async fn noted(&self, tenant_id: &str, key: &str) -> Result<Option<i64>, StoreError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let notes = txn.open_table(NOTES).map_err(storage)?;
        Ok(notes
            .get((tenant_id, key))
            .map_err(storage)?
            .map(|value| value.value()))
    }
}
