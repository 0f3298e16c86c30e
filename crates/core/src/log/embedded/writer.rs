//! Group commit: one thread owns every write to the log file. It takes all
//! requests that queued up while the previous commit was being fsync'd,
//! writes them in one transaction and commits once, so N concurrent appends
//! cost one fsync instead of N.
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::Database;
use tokio::sync::{mpsc, oneshot, watch};

use super::tables::{COMMITTED, RECORDS};
use crate::log::{LogError, LogPosition};

/// Most requests written in one transaction; bounds the latency of the
/// first request of a batch.
const MAX_BATCH: usize = 4096;

/// Requests queued for the writer; a full queue makes appenders wait.
pub(super) const QUEUE_CAPACITY: usize = 16 * 1024;

pub(super) enum WriteRequest {
    Append {
        partition: u32,
        key: String,
        value: Vec<u8>,
        reply: oneshot::Sender<Result<LogPosition, LogError>>,
    },
    CommitOffsets {
        group: String,
        next_offsets: Vec<LogPosition>,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// Starts the writer thread. `end_offsets` holds the offset the next record
/// of each partition gets; it is updated after every commit, which is what
/// wakes waiting consumers.
pub(super) fn spawn(
    db: Arc<Database>,
    requests: mpsc::Receiver<WriteRequest>,
    end_offsets: watch::Sender<Vec<u64>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("chatstream-log-writer".into())
        .spawn(move || run(&db, requests, &end_offsets))
}

fn run(
    db: &Database,
    mut requests: mpsc::Receiver<WriteRequest>,
    end_offsets: &watch::Sender<Vec<u64>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Ends when every sender is gone, i.e. the log was dropped.
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let next_offsets = end_offsets.borrow().clone();
        match write_batch(db, &batch, next_offsets) {
            Ok(written) => {
                // Publish only after the commit: a consumer woken by this
                // can read everything up to the new ends.
                end_offsets.send_replace(written.end_offsets);
                let mut positions = written.positions.into_iter();
                for request in batch.drain(..) {
                    match request {
                        WriteRequest::Append { reply, .. } => {
                            let position = positions.next().ok_or_else(|| {
                                LogError::Storage(
                                    "log writer lost track of an append's position".into(),
                                )
                            });
                            let _ = reply.send(position);
                        }
                        WriteRequest::CommitOffsets { reply, .. } => {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, requests = batch.len(), "event log write failed");
                let failed = |what: &str| LogError::Storage(format!("{what} failed: {error}"));
                for request in batch.drain(..) {
                    match request {
                        WriteRequest::Append { reply, .. } => {
                            let _ = reply.send(Err(failed("append")));
                        }
                        WriteRequest::CommitOffsets { reply, .. } => {
                            let _ = reply.send(Err(failed("offset commit")));
                        }
                    }
                }
            }
        }
    }
}

struct Written {
    /// Where each append of the batch landed, in request order.
    positions: Vec<LogPosition>,
    end_offsets: Vec<u64>,
}

/// Writes `batch` in one durable transaction. Offsets are assigned in
/// request order, so sequential appends of one key keep their order.
fn write_batch(
    db: &Database,
    batch: &[WriteRequest],
    mut end_offsets: Vec<u64>,
) -> Result<Written, redb::Error> {
    let mut positions = Vec::with_capacity(batch.len());
    let now_ms = unix_millis();
    // The default durability is `Immediate`: `commit` returns once fsync'd.
    let txn = db.begin_write()?;
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut committed = txn.open_table(COMMITTED)?;
        for request in batch {
            match request {
                WriteRequest::Append {
                    partition,
                    key,
                    value,
                    ..
                } => {
                    let offset = &mut end_offsets[*partition as usize];
                    records.insert(
                        (*partition, *offset),
                        (key.as_str(), now_ms, value.as_slice()),
                    )?;
                    positions.push(LogPosition {
                        partition: *partition,
                        offset: *offset,
                    });
                    *offset += 1;
                }
                WriteRequest::CommitOffsets {
                    group,
                    next_offsets,
                    ..
                } => {
                    for position in next_offsets {
                        committed.insert((group.as_str(), position.partition), position.offset)?;
                    }
                }
            }
        }
    }
    txn.commit()?;
    Ok(Written {
        positions,
        end_offsets,
    })
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
