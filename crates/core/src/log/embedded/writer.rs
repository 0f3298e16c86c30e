//! Group commit: one thread owns every write to the log file. It takes all
//! requests that queued up while the previous commit was being fsync'd,
//! writes them in one transaction and commits once, so N concurrent appends
//! cost one fsync instead of N. A send's client message id is claimed in
//! the same transaction as its events (see `log::claims`).
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot, watch};

use super::recent::RecentRecords;
use super::tables::{CLAIMS, COMMITTED, RECORDS, claim_record};
use crate::log::{ClaimedAppend, LogError, LogPosition, LogRecord};

/// Most requests written in one transaction; bounds the latency of the
/// first request of a batch.
const MAX_BATCH: usize = 4096;

/// Requests queued for the writer; a full queue makes appenders wait.
pub(super) const QUEUE_CAPACITY: usize = 16 * 1024;

pub(super) enum WriteRequest {
    /// Records appended together, in order, all under `key`.
    Append {
        partition: u32,
        key: String,
        values: Vec<Vec<u8>>,
        /// Appends only if no earlier append made this claim.
        claim: Option<Claim>,
        reply: oneshot::Sender<Result<ClaimedAppend, LogError>>,
    },
    CommitOffsets {
        group: String,
        next_offsets: Vec<LogPosition>,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// A client message id claimed by an append, and the event it will name
/// (the append's last).
pub(super) struct Claim {
    pub(super) tenant_id: String,
    pub(super) client_message_id: String,
    pub(super) conversation_id: String,
    pub(super) event_id: String,
}

/// Starts the writer thread. `end_offsets` holds the offset the next record
/// of each partition gets; it is updated after every commit, which is what
/// wakes waiting consumers. `recent` gets every committed record before
/// that.
pub(super) fn spawn(
    db: Arc<Database>,
    requests: mpsc::Receiver<WriteRequest>,
    end_offsets: watch::Sender<Vec<u64>>,
    recent: Arc<Mutex<RecentRecords>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("chatstream-log-writer".into())
        .spawn(move || run(&db, requests, &end_offsets, &recent))
}

fn run(
    db: &Database,
    mut requests: mpsc::Receiver<WriteRequest>,
    end_offsets: &watch::Sender<Vec<u64>>,
    recent: &Mutex<RecentRecords>,
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
                keep_recent(recent, &mut batch, &written);
                // Publish only after the commit (and once `recent` holds the
                // records): a consumer woken by this can read everything up
                // to the new ends.
                end_offsets.send_replace(written.end_offsets);
                let mut appends = written.appends.into_iter();
                for request in batch.drain(..) {
                    match request {
                        WriteRequest::Append { reply, .. } => {
                            let appended = appends.next().ok_or_else(super::lost_position);
                            let _ = reply.send(appended);
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
    /// What each append of the batch did, in request order.
    appends: Vec<ClaimedAppend>,
    end_offsets: Vec<u64>,
    /// The append time of every record of the batch.
    timestamp_ms: i64,
}

/// Moves the records `written` committed out of `batch` into `recent`.
fn keep_recent(recent: &Mutex<RecentRecords>, batch: &mut [WriteRequest], written: &Written) {
    let mut recent = recent.lock().unwrap_or_else(PoisonError::into_inner);
    let mut appends = written.appends.iter();
    for request in batch {
        let WriteRequest::Append { key, values, .. } = request else {
            continue;
        };
        // One outcome per append, in request order; a claimed duplicate wrote nothing.
        let Some(ClaimedAppend::Appended(positions)) = appends.next() else {
            continue;
        };
        for (&position, value) in positions.iter().zip(values.drain(..)) {
            recent.push(LogRecord {
                position,
                key: key.clone(),
                value,
                timestamp_ms: written.timestamp_ms,
            });
        }
    }
}

/// Writes `batch` in one durable transaction. Offsets are assigned in
/// request order, so sequential appends of one key keep their order. A
/// claim made earlier in the same batch counts: the transaction reads its
/// own writes.
fn write_batch(
    db: &Database,
    batch: &[WriteRequest],
    mut end_offsets: Vec<u64>,
) -> Result<Written, redb::Error> {
    let mut appends = Vec::with_capacity(batch.len());
    let now_ms = unix_millis();
    // The default durability is `Immediate`: `commit` returns once fsync'd.
    let txn = db.begin_write()?;
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut committed = txn.open_table(COMMITTED)?;
        let mut claims = txn.open_table(CLAIMS)?;
        for request in batch {
            match request {
                WriteRequest::Append {
                    partition,
                    key,
                    values,
                    claim,
                    ..
                } => {
                    if let Some(claim) = claim {
                        let earlier = claims
                            .get((claim.tenant_id.as_str(), claim.client_message_id.as_str()))?
                            .map(|stored| {
                                claim_record(
                                    &claim.tenant_id,
                                    &claim.client_message_id,
                                    stored.value(),
                                )
                            });
                        if let Some(earlier) = earlier {
                            appends.push(ClaimedAppend::Earlier(earlier));
                            continue;
                        }
                    }
                    let offset = &mut end_offsets[*partition as usize];
                    let mut positions = Vec::with_capacity(values.len());
                    for value in values {
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
                    if let (Some(claim), Some(last)) = (claim, positions.last()) {
                        claims.insert(
                            (claim.tenant_id.as_str(), claim.client_message_id.as_str()),
                            (
                                claim.conversation_id.as_str(),
                                claim.event_id.as_str(),
                                last.partition,
                                last.offset,
                            ),
                        )?;
                    }
                    appends.push(ClaimedAppend::Appended(positions));
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
        appends,
        end_offsets,
        timestamp_ms: now_ms,
    })
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
