//! Between the store's records and CQL rows: log positions as CQL `int` /
//! `bigint`, typed row tuples, and the answers of conditional writes.
use std::collections::HashMap;

use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

use chatstream_core::log::LogPosition;
use chatstream_core::store::{ClientMessageRecord, ConversationRecord, StoreError};

/// `(title, created_at_ms, opened_by_key_id)`.
pub(crate) type ConversationRow = (String, i64, String);
/// `(conversation_id, title, created_at_ms, opened_by_key_id)`.
pub(crate) type ListedConversationRow = (String, String, i64, String);
/// `(log_partition, log_offset)`.
pub(crate) type PositionRow = (i32, i64);
/// `(log_partition, log_offset, event)`.
pub(crate) type HistoryRow = (i32, i64, Vec<u8>);
/// `(conversation_id, event_id, log_partition, log_offset)`.
pub(crate) type ClientMessageRow = (String, String, i32, i64);

/// A log position as CQL `(int, bigint)`. Kafka's partitions and offsets
/// are signed 32 and 64 bit numbers, so anything larger is a bug upstream.
pub(crate) fn position_to_cql(position: LogPosition) -> Result<(i32, i64), StoreError> {
    match (
        i32::try_from(position.partition),
        i64::try_from(position.offset),
    ) {
        (Ok(partition), Ok(offset)) => Ok((partition, offset)),
        _ => Err(StoreError::Storage(format!(
            "log position {}:{} does not fit CQL int/bigint",
            position.partition, position.offset
        ))),
    }
}

pub(crate) fn position_from_cql(partition: i32, offset: i64) -> Result<LogPosition, StoreError> {
    match (u32::try_from(partition), u64::try_from(offset)) {
        (Ok(partition), Ok(offset)) => Ok(LogPosition { partition, offset }),
        _ => Err(StoreError::Corrupt(format!(
            "negative log position {partition}:{offset} stored"
        ))),
    }
}

/// A row count as CQL's `int` (page sizes).
pub(crate) fn cql_limit(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

pub(crate) fn conversation(
    tenant_id: &str,
    conversation_id: &str,
    (title, created_at_ms, opened_by_key_id): ConversationRow,
) -> ConversationRecord {
    ConversationRecord {
        tenant_id: tenant_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        title,
        created_at_ms,
        opened_by_key_id,
    }
}

pub(crate) fn listed_conversation(
    tenant_id: &str,
    (conversation_id, title, created_at_ms, opened_by_key_id): ListedConversationRow,
) -> ConversationRecord {
    ConversationRecord {
        tenant_id: tenant_id.to_owned(),
        conversation_id,
        title,
        created_at_ms,
        opened_by_key_id,
    }
}

pub(crate) fn client_message(
    tenant_id: &str,
    client_message_id: &str,
    (conversation_id, event_id, partition, offset): ClientMessageRow,
) -> Result<ClientMessageRecord, StoreError> {
    Ok(ClientMessageRecord {
        tenant_id: tenant_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
        conversation_id,
        event_id,
        position: position_from_cql(partition, offset)?,
    })
}

/// What a conditional (`IF NOT EXISTS`) write did.
pub(crate) enum Conditional {
    Applied,
    /// Not applied: the row that was there, by column name.
    Existing(ExistingRow),
}

/// The columns a not-applied conditional write returns.
pub(crate) struct ExistingRow {
    what: &'static str,
    columns: HashMap<String, CqlValue>,
}

impl ExistingRow {
    pub(crate) fn text(&mut self, column: &str) -> Result<String, StoreError> {
        match self.columns.remove(column) {
            Some(CqlValue::Text(text) | CqlValue::Ascii(text)) => Ok(text),
            other => Err(self.unexpected(column, other)),
        }
    }

    pub(crate) fn bigint(&mut self, column: &str) -> Result<i64, StoreError> {
        match self.columns.remove(column) {
            Some(CqlValue::BigInt(value)) => Ok(value),
            other => Err(self.unexpected(column, other)),
        }
    }

    pub(crate) fn int(&mut self, column: &str) -> Result<i32, StoreError> {
        match self.columns.remove(column) {
            Some(CqlValue::Int(value)) => Ok(value),
            other => Err(self.unexpected(column, other)),
        }
    }

    fn unexpected(&self, column: &str, value: Option<CqlValue>) -> StoreError {
        StoreError::Corrupt(format!(
            "{}: the existing row's {column} is {value:?}",
            self.what
        ))
    }
}

/// Reads the answer of a write that may be conditional. Without
/// lightweight transactions the write is a plain upsert and always applies.
pub(crate) fn conditional_outcome(
    what: &'static str,
    result: QueryResult,
    lightweight_transactions: bool,
) -> Result<Conditional, StoreError> {
    if !lightweight_transactions {
        return Ok(Conditional::Applied);
    }
    let not_conditional = || {
        StoreError::Storage(format!(
            "{what}: the server answered `IF NOT EXISTS` without `[applied]`: it does not \
             support lightweight transactions (turn them off only for a test server)"
        ))
    };
    let rows = result.into_rows_result().map_err(|_| not_conditional())?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_owned())
        .collect();
    let row: Row = rows.first_row().map_err(|error| {
        StoreError::Storage(format!(
            "{what}: unreadable conditional write answer: {error}"
        ))
    })?;
    let mut columns: HashMap<String, CqlValue> = names
        .into_iter()
        .zip(row.columns)
        .filter_map(|(name, value)| value.map(|value| (name, value)))
        .collect();
    match columns.remove("[applied]") {
        Some(CqlValue::Boolean(true)) => Ok(Conditional::Applied),
        Some(CqlValue::Boolean(false)) => Ok(Conditional::Existing(ExistingRow { what, columns })),
        _ => Err(not_conditional()),
    }
}
