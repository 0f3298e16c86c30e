//! The log's on-disk layout in redb and the read-only queries over it.
//! Everything here is blocking; callers run it off the async executor.
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::log::{LogPosition, LogRecord};
use crate::store::ClientMessageRecord;

/// Settings fixed when the log was created (`partitions`).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("log_meta");
pub(super) const PARTITIONS_KEY: &str = "partitions";

/// (partition, offset) → (key, append time in unix ms, value).
pub(super) const RECORDS: TableDefinition<(u32, u64), (&str, i64, &[u8])> =
    TableDefinition::new("log_records");

/// (group, partition) → the offset the group resumes from.
pub(super) const COMMITTED: TableDefinition<(&str, u32), u64> =
    TableDefinition::new("log_committed_offsets");

/// (tenant, client message id) → (conversation, event id, partition,
/// offset) of the send that claimed it (see `log::claims`).
pub(super) const CLAIMS: TableDefinition<(&str, &str), (&str, &str, u32, u64)> =
    TableDefinition::new("log_send_claims");

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

/// The send that claimed `client_message_id` of `tenant_id`, if one did.
pub(super) fn claimed(
    db: &Database,
    tenant_id: &str,
    client_message_id: &str,
) -> Result<Option<ClientMessageRecord>, redb::Error> {
    let txn = db.begin_read()?;
    let claims = txn.open_table(CLAIMS)?;
    Ok(claims
        .get((tenant_id, client_message_id))?
        .map(|stored| claim_record(tenant_id, client_message_id, stored.value())))
}

/// A row of `CLAIMS` as the record the gateway answers retries with.
pub(super) fn claim_record(
    tenant_id: &str,
    client_message_id: &str,
    (conversation_id, event_id, partition, offset): (&str, &str, u32, u64),
) -> ClientMessageRecord {
    ClientMessageRecord {
        tenant_id: tenant_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        event_id: event_id.to_owned(),
        position: LogPosition { partition, offset },
    }
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
