//! The projection-store seam: state projected from the log that the gateway
//! and processors read (conversations, history, idempotency records).
//! Every write is idempotent, so replaying the log converges to the same state.
use async_trait::async_trait;
use chatstream_schemas::Event;

use crate::log::LogPosition;

pub mod embedded;
mod first_send;

pub use first_send::{FirstSendError, is_first_send};

/// A conversation as the tenant sees it in lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub tenant_id: String,
    pub conversation_id: String,
    pub title: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Id (not the secret) of the API key that opened it.
    pub opened_by_key_id: String,
}

/// A committed event of a conversation and where it sits on the log.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub position: LogPosition,
    pub event: Event,
}

/// What `append_history` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time this event id was seen.
    Inserted,
    /// The event id is already recorded, at `existing` (the same position
    /// when the log was replayed; another one for a re-produced copy).
    Duplicate { existing: LogPosition },
}

/// The outcome of a client's send, keyed by the client's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessageRecord {
    pub tenant_id: String,
    pub client_message_id: String,
    pub conversation_id: String,
    pub event_id: String,
    pub position: LogPosition,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("projection store unavailable: {0}")]
    Unavailable(String),
    #[error("projection store error: {0}")]
    Storage(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait ProjectionStore: Send + Sync + 'static {
    /// Cheap check that the store can serve requests (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Records a conversation unless one with the same tenant and id exists;
    /// the first record wins. Returns the stored record.
    async fn put_conversation(
        &self,
        conversation: &ConversationRecord,
    ) -> Result<ConversationRecord, StoreError>;

    /// The tenant's conversation, or `None` (also for another tenant's id).
    async fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError>;

    /// The tenant's conversations ordered by id, starting after `after_id`.
    async fn list_conversations(
        &self,
        tenant_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError>;

    /// Adds an event to its conversation's history (tenant and conversation
    /// come from the event), deduplicated by event id within the tenant.
    async fn append_history(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError>;

    /// `append_history`, except that the entry may become durable only at
    /// the next `sync` (readers see it at once). For a caller that redoes
    /// the write after a crash: a processor whose log position is not
    /// committed past the event before it synced. Backends whose every
    /// write is durable need not override it.
    async fn append_history_unsynced(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError> {
        self.append_history(entry).await
    }

    /// Makes every write acknowledged so far durable.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Up to `limit` entries of a conversation with offsets greater than
    /// `after_offset` (all when `None`), oldest first.
    async fn read_history(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        after_offset: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Records the outcome of a send under its client message id unless one
    /// is recorded already; the first wins. Returns the stored record, so
    /// every caller agrees on which event is the real one.
    async fn claim_client_message(
        &self,
        record: &ClientMessageRecord,
    ) -> Result<ClientMessageRecord, StoreError>;

    async fn get_client_message(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, StoreError>;

    /// Whether `scope` (a processor's side effect, e.g. `router`) already
    /// completed for `event_id`.
    async fn is_processed(&self, scope: &str, event_id: &str) -> Result<bool, StoreError>;

    /// Marks `scope`'s side effect for `event_id` as completed. Idempotent.
    async fn mark_processed(&self, scope: &str, event_id: &str) -> Result<(), StoreError>;
}
