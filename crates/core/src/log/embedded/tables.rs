//! The log's on-disk layout in redb and the read-only queries over it.
//! Everything here is blocking; callers run it off the async executor.
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::log::{LogPosition, LogRecord};

/// Settings fixed when the log was created (`partitions`).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("log_meta");
pub(super) const PARTITIONS_KEY: &str = "partitions";

/// (partition, offset) → (key, append time in unix ms, value).
pub(super) const RECORDS: TableDefinition<(u32, u64), (&str, i64, &[u8])> =
    TableDefinition::new("log_records");

/// (group, partition) → the offset the group resumes from.
pub(super) const COMMITTED: TableDefinition<(&str, u32), u64> =
    TableDefinition::new("log_committed_offsets");

/// The offset the next record of each partition gets: one past the last one
/// stored (offsets are dense and nothing is ever deleted).
pub(super) fn end_offsets(db: &Database, partitions: u32) -> Result<Vec<u64>, redb::Error> {
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORDS)?;
    let mut ends = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let last = records
            .range((partition, 0)..=(partition, u64::MAX))?
            .next_back()
            .transpose()?;
        ends.push(last.map_or(0, |(key, _)| key.value().1 + 1));
    }
    Ok(ends)
}

/// Up to `max` records of each `(partition, from, max)` request, all read
/// from one snapshot.
pub(super) fn read_records(
    db: &Database,
    requests: &[(u32, u64, usize)],
) -> Result<Vec<LogRecord>, redb::Error> {
    let txn = db.begin_read()?;
    let records = txn.open_table(RECORDS)?;
    let mut out = Vec::new();
    for &(partition, from, max) in requests {
        for entry in records
            .range((partition, from)..=(partition, u64::MAX))?
            .take(max)
        {
            let (key, value) = entry?;
            let (partition, offset) = key.value();
            let (record_key, timestamp_ms, bytes) = value.value();
            out.push(LogRecord {
                position: LogPosition { partition, offset },
                key: record_key.to_owned(),
                value: bytes.to_vec(),
                timestamp_ms,
            });
        }
    }
    Ok(out)
}

/// The group's committed offset in each partition (`None` where it never committed).
pub(super) fn committed_offsets(
    db: &Database,
    group: &str,
    partitions: u32,
) -> Result<Vec<Option<u64>>, redb::Error> {
    let txn = db.begin_read()?;
    let committed = txn.open_table(COMMITTED)?;
    (0..partitions)
        .map(|partition| {
            Ok(committed
                .get((group, partition))?
                .map(|offset| offset.value()))
        })
        .collect()
}

/// The offset `group` resumes from in `partition`, if it ever committed there.
pub(super) fn committed_offset(
    db: &Database,
    group: &str,
    partition: u32,
) -> Result<Option<u64>, redb::Error> {
    let txn = db.begin_read()?;
    let committed = txn.open_table(COMMITTED)?;
    Ok(committed
        .get((group, partition))?
        .map(|offset| offset.value()))
}
