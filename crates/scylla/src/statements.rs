//! Every query the store runs, prepared once at connect. Multi-row reads
//! are always paged, with pages no larger than the caller's limit, so the
//! server reads little more than what is returned (no `LIMIT ?`: the CQL
//! test server cannot bind it). Every statement is idempotent, so the
//! driver may retry or speculate any of them.
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::ScyllaStoreConfig;
use super::error;
use super::schema::{
    CLIENT_MESSAGES, CONVERSATIONS, CONVERSATIONS_BY_TENANT, EVENT_POSITIONS, HISTORY,
    PROCESSED_EVENTS,
};
use chatstream_core::store::StoreError;

pub(crate) struct Statements {
    pub ping: PreparedStatement,
    pub select_conversation: PreparedStatement,
    /// `IF NOT EXISTS` unless lightweight transactions are off.
    pub insert_conversation: PreparedStatement,
    pub upsert_conversation_listing: PreparedStatement,
    pub list_conversations: PreparedStatement,
    pub list_conversations_after: PreparedStatement,
    pub select_event_position: PreparedStatement,
    /// `IF NOT EXISTS` unless lightweight transactions are off.
    pub insert_event_position: PreparedStatement,
    pub upsert_history: PreparedStatement,
    pub read_history: PreparedStatement,
    pub read_history_after: PreparedStatement,
    pub select_client_message: PreparedStatement,
    /// `IF NOT EXISTS` unless lightweight transactions are off.
    pub insert_client_message: PreparedStatement,
    pub select_processed: PreparedStatement,
    pub upsert_processed: PreparedStatement,
}

impl Statements {
    pub(crate) async fn prepare(
        session: &Session,
        config: &ScyllaStoreConfig,
    ) -> Result<Self, StoreError> {
        let ks = &config.keyspace;
        let if_not_exists = if config.lightweight_transactions {
            " IF NOT EXISTS"
        } else {
            ""
        };
        let prepare = |name: &'static str, text: String| async move {
            let mut statement = session
                .prepare(text)
                .await
                .map_err(|failure| error::prepare(name, failure))?;
            statement.set_page_size(config.page_size);
            statement.set_is_idempotent(true);
            Ok::<_, StoreError>(statement)
        };
        Ok(Self {
            ping: prepare(
                "ping",
                "SELECT key FROM system.local".to_owned(),
            )
            .await?,
            select_conversation: prepare(
                "select conversation",
                format!(
                    "SELECT title, created_at_ms, opened_by_key_id FROM {ks}.{CONVERSATIONS} \
                     WHERE tenant_id = ? AND conversation_id = ?"
                ),
            )
            .await?,
            insert_conversation: prepare(
                "insert conversation",
                format!(
                    "INSERT INTO {ks}.{CONVERSATIONS} \
                     (tenant_id, conversation_id, title, created_at_ms, opened_by_key_id) \
                     VALUES (?, ?, ?, ?, ?){if_not_exists}"
                ),
            )
            .await?,
            upsert_conversation_listing: prepare(
                "upsert conversation listing",
                format!(
                    "INSERT INTO {ks}.{CONVERSATIONS_BY_TENANT} \
                     (tenant_id, conversation_id, title, created_at_ms, opened_by_key_id) \
                     VALUES (?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            list_conversations: prepare(
                "list conversations",
                format!(
                    "SELECT conversation_id, title, created_at_ms, opened_by_key_id \
                     FROM {ks}.{CONVERSATIONS_BY_TENANT} WHERE tenant_id = ?"
                ),
            )
            .await?,
            list_conversations_after: prepare(
                "list conversations after an id",
                format!(
                    "SELECT conversation_id, title, created_at_ms, opened_by_key_id \
                     FROM {ks}.{CONVERSATIONS_BY_TENANT} \
                     WHERE tenant_id = ? AND conversation_id > ?"
                ),
            )
            .await?,
            select_event_position: prepare(
                "select event position",
                format!(
                    "SELECT log_partition, log_offset FROM {ks}.{EVENT_POSITIONS} \
                     WHERE tenant_id = ? AND event_id = ?"
                ),
            )
            .await?,
            insert_event_position: prepare(
                "insert event position",
                format!(
                    "INSERT INTO {ks}.{EVENT_POSITIONS} \
                     (tenant_id, event_id, log_partition, log_offset) \
                     VALUES (?, ?, ?, ?){if_not_exists}"
                ),
            )
            .await?,
            upsert_history: prepare(
                "upsert history",
                format!(
                    "INSERT INTO {ks}.{HISTORY} \
                     (tenant_id, conversation_id, log_offset, log_partition, event_id, event) \
                     VALUES (?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            read_history: prepare(
                "read history",
                format!(
                    "SELECT log_partition, log_offset, event FROM {ks}.{HISTORY} \
                     WHERE tenant_id = ? AND conversation_id = ?"
                ),
            )
            .await?,
            read_history_after: prepare(
                "read history after an offset",
                format!(
                    "SELECT log_partition, log_offset, event FROM {ks}.{HISTORY} \
                     WHERE tenant_id = ? AND conversation_id = ? AND log_offset > ?"
                ),
            )
            .await?,
            select_client_message: prepare(
                "select client message",
                format!(
                    "SELECT conversation_id, event_id, log_partition, log_offset \
                     FROM {ks}.{CLIENT_MESSAGES} WHERE tenant_id = ? AND client_message_id = ?"
                ),
            )
            .await?,
            insert_client_message: prepare(
                "insert client message",
                format!(
                    "INSERT INTO {ks}.{CLIENT_MESSAGES} \
                     (tenant_id, client_message_id, conversation_id, event_id, log_partition, log_offset) \
                     VALUES (?, ?, ?, ?, ?, ?){if_not_exists}"
                ),
            )
            .await?,
            select_processed: prepare(
                "select processed",
                format!(
                    "SELECT processed FROM {ks}.{PROCESSED_EVENTS} WHERE scope = ? AND event_id = ?"
                ),
            )
            .await?,
            upsert_processed: prepare(
                "upsert processed",
                format!(
                    "INSERT INTO {ks}.{PROCESSED_EVENTS} (scope, event_id, processed) \
                     VALUES (?, ?, ?)"
                ),
            )
            .await?,
        })
    }
}
