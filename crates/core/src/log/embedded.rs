//! The embedded event log: a durable, partitioned log in one redb file inside
//! the data directory, for `chatstream dev` and single-node installs.
//!
//! Appends go through a single writer thread that commits them in groups
//! (see `writer`); reads use MVCC read transactions and never wait for the
//! writer. Consumer groups are local to the process (see `consumer`).
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chatstream_schemas::{Event, codec};
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    ClaimedAppend, ClaimingLog, EventLog, LogConsumer, LogError, LogPosition, LogRecord, SendClaim,
    partition_for_key,
};
use crate::store::ClientMessageRecord;

mod consumer;
mod recent;
mod tables;
mod writer;

use consumer::EmbeddedConsumer;
use recent::RecentRecords;
use tables::{CLAIMS, COMMITTED, META, PARTITIONS_KEY, RECORDS};
use writer::{Claim, WriteRequest};

/// Page cache of the redb file.
const CACHE_BYTES: usize = 128 * 1024 * 1024;

/// A durable event log stored in `<data dir>/events.redb`.
///
/// Cloning is cheap and shares the same file and writer. Dropping the last
/// clone (and every consumer) waits for the writer thread to finish its
/// batch and closes the file, so the directory can be reopened right away.
#[derive(Clone)]
pub struct EmbeddedLog {
    shared: Arc<Shared>,
}

/// State shared by the log handle and its consumers.
struct Shared {
    db: Arc<Database>,
    partitions: u32,
    /// `None` only while dropping, so the writer sees the queue close.
    requests: Option<mpsc::Sender<WriteRequest>>,
    /// The offset the next record of each partition gets, as of the last commit.
    end_offsets: watch::Receiver<Vec<u64>>,
    /// The newest committed records, for reads at the tail.
    recent: Arc<Mutex<RecentRecords>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedLog {
    /// The log's file inside the data directory.
    pub const FILE_NAME: &'static str = "events.redb";

    /// Opens the log in `data_dir` (created if missing), creating it with
    /// `partitions` partitions on first open. The partition count is fixed
    /// from then on: reopening with another count fails, because it would
    /// silently move tenants to other partitions.
    pub fn open(data_dir: &Path, partitions: u32) -> Result<Self, LogError> {
        if partitions == 0 {
            return Err(LogError::Unavailable(
                "an event log needs at least one partition".into(),
            ));
        }
        std::fs::create_dir_all(data_dir).map_err(|error| {
            LogError::Unavailable(format!(
                "cannot create data directory {}: {error}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(Self::FILE_NAME);
        // redb's default cache may grow to 1 GiB per file; keep the whole
        // process small (idle connections, not the cache, should use memory).
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|error| open_error(&path, error.into()))?;
        let stored = init_partitions(&db, partitions).map_err(|error| open_error(&path, error))?;
        if stored != u64::from(partitions) {
            return Err(LogError::Unavailable(format!(
                "{} holds a log with {stored} partitions but {partitions} were configured; \
                 the partition count cannot change (it decides which partition holds each tenant)",
                path.display()
            )));
        }
        let ends =
            tables::end_offsets(&db, partitions).map_err(|error| open_error(&path, error))?;

        let db = Arc::new(db);
        let (requests, queue) = mpsc::channel(writer::QUEUE_CAPACITY);
        let (end_offsets_tx, end_offsets) = watch::channel(ends);
        let recent = Arc::new(Mutex::new(RecentRecords::new(
            partitions,
            recent::PER_PARTITION,
        )));
        let writer = writer::spawn(Arc::clone(&db), queue, end_offsets_tx, Arc::clone(&recent))
            .map_err(|error| {
                LogError::Unavailable(format!("cannot start the log writer thread: {error}"))
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                partitions,
                requests: Some(requests),
                end_offsets,
                recent,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn partition_count(&self) -> u32 {
        self.shared.partitions
    }

    async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, LogError> {
        self.append_bytes(key, codec::encode(event)).await
    }

    async fn append_bytes(&self, key: &str, value: Vec<u8>) -> Result<LogPosition, LogError> {
        let positions = self.shared.append(key, vec![value]).await?;
        positions.into_iter().next().ok_or_else(lost_position)
    }

    async fn append_all(&self, key: &str, events: &[Event]) -> Result<Vec<LogPosition>, LogError> {
        self.shared
            .append(key, events.iter().map(codec::encode).collect())
            .await
    }

    fn claiming(&self) -> Option<&dyn ClaimingLog> {
        Some(self)
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.shared.check_partition(partition)?;
        if max == 0 || from >= self.shared.end_offset(partition) {
            return Ok(Vec::new());
        }
        let end = self.shared.end_offset(partition);
        let count = usize::try_from(end - from).map_or(max, |available| available.min(max));
        self.shared
            .read_records(vec![(partition, from, count)])
            .await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.shared.check_partition(partition)?;
        Ok(self.shared.end_offset(partition))
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn LogConsumer>, LogError> {
        let partitions = self.shared.partitions;
        let owned_group = group.to_owned();
        let committed = self
            .shared
            .blocking(move |db| tables::committed_offsets(db, &owned_group, partitions))
            .await?;
        Ok(Box::new(EmbeddedConsumer::new(
            Arc::clone(&self.shared),
            group.to_owned(),
            &committed,
        )))
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.shared.check_partition(partition)?;
        let group = group.to_owned();
        self.shared
            .blocking(move |db| tables::committed_offset(db, &group, partition))
            .await
    }

    async fn ping(&self) -> Result<(), LogError> {
        self.shared
            .blocking(|db| {
                let txn = db.begin_read()?;
                txn.open_table(META)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl ClaimingLog for EmbeddedLog {
    async fn append_claiming(
        &self,
        key: &str,
        claim: &SendClaim,
        events: &[Event],
    ) -> Result<ClaimedAppend, LogError> {
        let last = events
            .last()
            .ok_or_else(|| LogError::Storage("a claimed append needs at least one event".into()))?;
        let claim = Claim {
            tenant_id: claim.tenant_id.clone(),
            client_message_id: claim.client_message_id.clone(),
            conversation_id: last.conversation_id.clone(),
            event_id: last.id.clone(),
        };
        let values = events.iter().map(codec::encode).collect();
        self.shared.write(key, values, Some(claim)).await
    }

    async fn claimed(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, LogError> {
        // One key, read on the calling thread: a read never waits for the
        // writer, and the hop to the blocking pool would cost more.
        tables::claimed(&self.shared.db, tenant_id, client_message_id).map_err(storage_error)
    }
}

impl Shared {
    /// Appends `values` under `key` in one commit.
    async fn append(&self, key: &str, values: Vec<Vec<u8>>) -> Result<Vec<LogPosition>, LogError> {
        match self.write(key, values, None).await? {
            ClaimedAppend::Appended(positions) => Ok(positions),
            ClaimedAppend::Earlier(_) => Err(LogError::Storage(
                "log writer found a claim on an append that made none".into(),
            )),
        }
    }

    async fn write(
        &self,
        key: &str,
        values: Vec<Vec<u8>>,
        claim: Option<Claim>,
    ) -> Result<ClaimedAppend, LogError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteRequest::Append {
            partition: partition_for_key(key, self.partitions),
            key: key.to_owned(),
            values,
            claim,
            reply,
        })
        .await?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    fn check_partition(&self, partition: u32) -> Result<(), LogError> {
        if partition < self.partitions {
            Ok(())
        } else {
            Err(LogError::UnknownPartition {
                partition,
                count: self.partitions,
            })
        }
    }

    fn end_offset(&self, partition: u32) -> u64 {
        self.end_offsets
            .borrow()
            .get(partition as usize)
            .copied()
            .unwrap_or(0)
    }

    async fn send(&self, request: WriteRequest) -> Result<(), LogError> {
        let requests = self.requests.as_ref().ok_or(LogError::Closed)?;
        requests.send(request).await.map_err(|_| LogError::Closed)
    }

    async fn commit_offsets(
        &self,
        group: &str,
        next_offsets: &[LogPosition],
    ) -> Result<(), LogError> {
        for position in next_offsets {
            self.check_partition(position.partition)?;
        }
        let (reply, answer) = oneshot::channel();
        self.send(WriteRequest::CommitOffsets {
            group: group.to_owned(),
            next_offsets: next_offsets.to_vec(),
            reply,
        })
        .await?;
        answer.await.map_err(|_| LogError::Closed)?
    }

    /// The records of each `(partition, from, count)` request, which must
    /// all be committed: from memory when they are recent, else from the
    /// file.
    async fn read_records(
        &self,
        requests: Vec<(u32, u64, usize)>,
    ) -> Result<Vec<LogRecord>, LogError> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(&requests);
        match recent {
            Some(records) => Ok(records),
            None => {
                self.blocking(move |db| tables::read_records(db, &requests))
                    .await
            }
        }
    }

    /// Runs a blocking read against the file on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, LogError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(|error| LogError::Unavailable(format!("event log read task failed: {error}")))?
            .map_err(storage_error)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has answered what it
        // holds; joining it releases its handle on the file.
        drop(self.requests.take());
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("event log writer thread panicked");
        }
    }
}

/// Reads the partition count stored in the file, storing `requested` when
/// the file is new. Also creates every table, so readers never find one missing.
fn init_partitions(db: &Database, requested: u32) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let stored = {
        let mut meta = txn.open_table(META)?;
        let existing = meta.get(PARTITIONS_KEY)?.map(|count| count.value());
        match existing {
            Some(count) => count,
            None => {
                meta.insert(PARTITIONS_KEY, u64::from(requested))?;
                u64::from(requested)
            }
        }
    };
    txn.open_table(RECORDS)?;
    txn.open_table(COMMITTED)?;
    txn.open_table(CLAIMS)?;
    txn.commit()?;
    Ok(stored)
}

fn open_error(path: &Path, error: redb::Error) -> LogError {
    match error {
        redb::Error::DatabaseAlreadyOpen => LogError::Unavailable(format!(
            "{} is already open (by this or another process)",
            path.display()
        )),
        other => LogError::Storage(format!("cannot open {}: {other}", path.display())),
    }
}

fn lost_position() -> LogError {
    LogError::Storage("log writer lost track of an append's position".into())
}

fn storage_error(error: redb::Error) -> LogError {
    LogError::Storage(error.to_string())
}
