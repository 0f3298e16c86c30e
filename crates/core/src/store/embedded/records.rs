//! How projection records are laid out on disk. Keys carry the tenant and
//! ids (see the table definitions); values hold the rest, as JSON for the
//! small records (fields can be added with `#[serde(default)]`) and as the
//! log's protobuf encoding for events.
use chatstream_schemas::{Event, codec};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};

use crate::log::LogPosition;
use crate::store::{ClientMessageRecord, ConversationRecord, HistoryEntry, StoreError};

/// (tenant, conversation) → `StoredConversation` JSON.
pub(super) const CONVERSATIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("conversations");

/// (tenant, conversation, log offset) → (log partition, encoded event).
pub(super) const HISTORY: TableDefinition<(&str, &str, u64), (u32, &[u8])> =
    TableDefinition::new("history");

/// (tenant, event id) → (partition, offset) where the event was first recorded.
pub(super) const EVENT_IDS: TableDefinition<(&str, &str), (u32, u64)> =
    TableDefinition::new("history_event_ids");

/// (tenant, client message id) → `StoredClientMessage` JSON.
pub(super) const CLIENT_MESSAGES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("client_messages");

/// (scope, event id) → when it was marked, unix ms.
pub(super) const PROCESSED: TableDefinition<(&str, &str), i64> =
    TableDefinition::new("processed_side_effects");

#[derive(Serialize, Deserialize)]
struct StoredConversation {
    title: String,
    created_at_ms: i64,
    opened_by_key_id: String,
}

#[derive(Serialize, Deserialize)]
struct StoredClientMessage {
    conversation_id: String,
    event_id: String,
    partition: u32,
    offset: u64,
}

pub(super) fn encode_conversation(record: &ConversationRecord) -> Result<Vec<u8>, StoreError> {
    to_json(&StoredConversation {
        title: record.title.clone(),
        created_at_ms: record.created_at_ms,
        opened_by_key_id: record.opened_by_key_id.clone(),
    })
}

pub(super) fn decode_conversation(
    tenant_id: &str,
    conversation_id: &str,
    bytes: &[u8],
) -> Result<ConversationRecord, StoreError> {
    let stored: StoredConversation = serde_json::from_slice(bytes).map_err(|error| {
        StoreError::Corrupt(format!(
            "conversation {tenant_id}/{conversation_id}: {error}"
        ))
    })?;
    Ok(ConversationRecord {
        tenant_id: tenant_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        title: stored.title,
        created_at_ms: stored.created_at_ms,
        opened_by_key_id: stored.opened_by_key_id,
    })
}

pub(super) fn encode_client_message(record: &ClientMessageRecord) -> Result<Vec<u8>, StoreError> {
    to_json(&StoredClientMessage {
        conversation_id: record.conversation_id.clone(),
        event_id: record.event_id.clone(),
        partition: record.position.partition,
        offset: record.position.offset,
    })
}

pub(super) fn decode_client_message(
    tenant_id: &str,
    client_message_id: &str,
    bytes: &[u8],
) -> Result<ClientMessageRecord, StoreError> {
    let stored: StoredClientMessage = serde_json::from_slice(bytes).map_err(|error| {
        StoreError::Corrupt(format!(
            "client message {tenant_id}/{client_message_id}: {error}"
        ))
    })?;
    Ok(ClientMessageRecord {
        tenant_id: tenant_id.to_owned(),
        client_message_id: client_message_id.to_owned(),
        conversation_id: stored.conversation_id,
        event_id: stored.event_id,
        position: LogPosition {
            partition: stored.partition,
            offset: stored.offset,
        },
    })
}

/// An event of a history row, read back and checked like one read from the log.
pub(super) fn decode_history_entry(
    position: LogPosition,
    bytes: &[u8],
) -> Result<HistoryEntry, StoreError> {
    let event: Event = codec::decode(bytes).map_err(|error| {
        StoreError::Corrupt(format!(
            "history entry at {}:{}: {error}",
            position.partition, position.offset
        ))
    })?;
    Ok(HistoryEntry { position, event })
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|error| StoreError::Storage(format!("cannot encode a record: {error}")))
}
