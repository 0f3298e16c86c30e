//! The ScyllaDB (or Cassandra) projection store, through the `scylla`
//! driver: the distributed implementation of `ProjectionStore` (and, in
//! `analytics.rs`, of `AnalyticsStore`), for any number of gateway and
//! processor replicas.
//!
//! Writes are idempotent upserts keyed by tenant and log position or id, so
//! a replay leaves the same rows. "First wins" records read first (a replay
//! then costs one read) and are claimed with `INSERT ... IF NOT EXISTS`
//! when absent, so concurrent writers agree on one winner. The schema (see
//! `schema.rs`) is applied separately, by `apply_schema`.
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_schemas::codec;
use futures::TryStreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use chatstream_core::store::{
    ClientMessageRecord, ConversationRecord, HistoryEntry, ProjectionStore, Recorded, StoreError,
};

mod analytics;
mod config;
mod error;
mod rows;
mod schema;
mod statements;

pub use analytics::ScyllaAnalytics;
pub use config::{
    Consistency, Replication, ScyllaStoreConfig, SerialConsistency, parse_consistency,
};
pub use schema::{SchemaReport, schema_statements};

use rows::{Conditional, conditional_outcome, cql_limit, position_from_cql, position_to_cql};
use statements::Statements;

/// Projections in a ScyllaDB keyspace. Cloning is cheap and shares the
/// session (its connection pools) and prepared statements.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    statements: Arc<Statements>,
    config: Arc<ScyllaStoreConfig>,
}

impl ScyllaStore {
    /// Connects and prepares every statement. The keyspace and tables must
    /// exist (`apply_schema`); a missing one is named in the error.
    pub async fn connect(config: ScyllaStoreConfig) -> Result<Self, StoreError> {
        let session = open_session(&config).await?;
        let statements = Statements::prepare(&session, &config).await?;
        Ok(Self {
            session: Arc::new(session),
            statements: Arc::new(statements),
            config: Arc::new(config),
        })
    }

    /// Creates or migrates the keyspace and tables; safe to run again.
    pub async fn apply_schema(config: &ScyllaStoreConfig) -> Result<SchemaReport, StoreError> {
        let session = open_session(config).await?;
        schema::apply(&session, config).await
    }

    pub fn config(&self) -> &ScyllaStoreConfig {
        &self.config
    }

    async fn execute(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult, StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|failure| error::execution(what, failure))
    }

    /// The row of a single-row read, if any.
    async fn select_one<R>(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        let result = self.execute(what, statement, values).await?;
        let rows = result
            .into_rows_result()
            .map_err(|failure| StoreError::Storage(format!("{what}: {failure}")))?;
        rows.maybe_first_row::<R>()
            .map_err(|failure| StoreError::Corrupt(format!("{what}: {failure}")))
    }

    /// Up to `limit` rows of a multi-row read, fetched page by page.
    async fn select_paged<R>(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
        limit: usize,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata> + 'static,
    {
        // No bigger pages than needed: the last one is not read past `limit`.
        let mut statement = statement.clone();
        let page_size = cql_limit(limit).min(self.config.page_size);
        statement.set_page_size(page_size);
        let pager = self
            .session
            .execute_iter(statement, values)
            .await
            .map_err(|failure| error::pager(what, failure))?;
        let mut rows = pager.rows_stream::<R>().map_err(|failure| {
            StoreError::Corrupt(format!("{what}: rows do not match the schema: {failure}"))
        })?;
        let mut collected = Vec::new();
        while collected.len() < limit {
            match rows
                .try_next()
                .await
                .map_err(|failure| error::next_row(what, failure))?
            {
                Some(row) => collected.push(row),
                None => break,
            }
        }
        Ok(collected)
    }

    /// Writes the history row of `entry` (an idempotent upsert).
    async fn upsert_history(
        &self,
        entry: &HistoryEntry,
        (partition, offset): (i32, i64),
    ) -> Result<(), StoreError> {
        let event = &entry.event;
        self.execute(
            "record history",
            &self.statements.upsert_history,
            (
                &event.tenant_id,
                &event.conversation_id,
                offset,
                partition,
                &event.id,
                codec::encode(event),
            ),
        )
        .await
        .map(drop)
    }

    async fn upsert_listing(&self, record: &ConversationRecord) -> Result<(), StoreError> {
        self.execute(
            "list conversation",
            &self.statements.upsert_conversation_listing,
            conversation_values(record),
        )
        .await
        .map(drop)
    }
}

async fn open_session(config: &ScyllaStoreConfig) -> Result<Session, StoreError> {
    config.validate()?;
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency)
        .serial_consistency(Some(config.serial_consistency))
        .request_timeout(Some(config.request_timeout))
        .build();
    SessionBuilder::new()
        .known_nodes(&config.known_nodes)
        .connection_timeout(config.connection_timeout)
        .auto_await_schema_agreement(config.await_schema_agreement)
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(|failure| error::new_session(&config.known_nodes, failure))
}

fn conversation_values(record: &ConversationRecord) -> (&str, &str, &str, i64, &str) {
    (
        &record.tenant_id,
        &record.conversation_id,
        &record.title,
        record.created_at_ms,
        &record.opened_by_key_id,
    )
}

#[async_trait]
impl ProjectionStore for ScyllaStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.execute("ping", &self.statements.ping, ())
            .await
            .map(drop)
    }

    async fn put_conversation(
        &self,
        conversation: &ConversationRecord,
    ) -> Result<ConversationRecord, StoreError> {
        let (tenant, id) = (&conversation.tenant_id, &conversation.conversation_id);
        let stored = match self.get_conversation(tenant, id).await? {
            Some(existing) => existing,
            None => {
                let result = self
                    .execute(
                        "record conversation",
                        &self.statements.insert_conversation,
                        conversation_values(conversation),
                    )
                    .await?;
                match conditional_outcome(
                    "record conversation",
                    result,
                    self.config.lightweight_transactions,
                )? {
                    Conditional::Applied => conversation.clone(),
                    Conditional::Existing(mut row) => ConversationRecord {
                        tenant_id: tenant.clone(),
                        conversation_id: id.clone(),
                        title: row.text("title")?,
                        created_at_ms: row.bigint("created_at_ms")?,
                        opened_by_key_id: row.text("opened_by_key_id")?,
                    },
                }
            }
        };
        // Written (again) with the winning values: heals a listing lost to a
        // crash between the two writes.
        self.upsert_listing(&stored).await?;
        Ok(stored)
    }

    async fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let row = self
            .select_one(
                "read conversation",
                &self.statements.select_conversation,
                (tenant_id, conversation_id),
            )
            .await?;
        Ok(row.map(|row| rows::conversation(tenant_id, conversation_id, row)))
    }

    async fn list_conversations(
        &self,
        tenant_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let what = "list conversations";
        let listed: Vec<rows::ListedConversationRow> = match after_id {
            None => {
                let statement = &self.statements.list_conversations;
                let values = (tenant_id,);
                self.select_paged(what, statement, values, limit).await?
            }
            Some(after) => {
                let statement = &self.statements.list_conversations_after;
                let values = (tenant_id, after);
                self.select_paged(what, statement, values, limit).await?
            }
        };
        Ok(listed
            .into_iter()
            .map(|row| rows::listed_conversation(tenant_id, row))
            .collect())
    }

    async fn append_history(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError> {
        codec::validate(&entry.event).map_err(|error| {
            StoreError::Storage(format!("refusing to record an invalid event: {error}"))
        })?;
        let event = &entry.event;
        let position = position_to_cql(entry.position)?;
        let seen: Option<rows::PositionRow> = self
            .select_one(
                "read event position",
                &self.statements.select_event_position,
                (&event.tenant_id, &event.id),
            )
            .await?;
        let existing = match seen {
            Some((partition, offset)) => Some(position_from_cql(partition, offset)?),
            None => {
                let result = self
                    .execute(
                        "record event position",
                        &self.statements.insert_event_position,
                        (&event.tenant_id, &event.id, position.0, position.1),
                    )
                    .await?;
                match conditional_outcome(
                    "record event position",
                    result,
                    self.config.lightweight_transactions,
                )? {
                    Conditional::Applied => None,
                    Conditional::Existing(mut row) => Some(position_from_cql(
                        row.int("log_partition")?,
                        row.bigint("log_offset")?,
                    )?),
                }
            }
        };
        match existing {
            None => {
                self.upsert_history(entry, position).await?;
                Ok(Recorded::Inserted)
            }
            Some(existing) => {
                // A replay of the same position rewrites its row, which heals
                // a crash between claiming the event id and writing history.
                if existing == entry.position {
                    self.upsert_history(entry, position).await?;
                }
                Ok(Recorded::Duplicate { existing })
            }
        }
    }

    async fn read_history(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        after_offset: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let what = "read history";
        let found: Vec<rows::HistoryRow> = match after_offset {
            None => {
                let statement = &self.statements.read_history;
                let values = (tenant_id, conversation_id);
                self.select_paged(what, statement, values, limit).await?
            }
            Some(after) => {
                // Offsets are at most i64::MAX: nothing lies after a larger one.
                let Ok(after) = i64::try_from(after) else {
                    return Ok(Vec::new());
                };
                let statement = &self.statements.read_history_after;
                let values = (tenant_id, conversation_id, after);
                self.select_paged(what, statement, values, limit).await?
            }
        };
        found
            .into_iter()
            .map(|(partition, offset, bytes)| {
                let position = position_from_cql(partition, offset)?;
                let event = codec::decode(&bytes).map_err(|error| {
                    StoreError::Corrupt(format!("history entry at {position:?}: {error}"))
                })?;
                Ok(HistoryEntry { position, event })
            })
            .collect()
    }

    async fn claim_client_message(
        &self,
        record: &ClientMessageRecord,
    ) -> Result<ClientMessageRecord, StoreError> {
        let (tenant, id) = (&record.tenant_id, &record.client_message_id);
        if let Some(existing) = self.get_client_message(tenant, id).await? {
            return Ok(existing);
        }
        let (partition, offset) = position_to_cql(record.position)?;
        let result = self
            .execute(
                "claim client message",
                &self.statements.insert_client_message,
                (
                    tenant,
                    id,
                    &record.conversation_id,
                    &record.event_id,
                    partition,
                    offset,
                ),
            )
            .await?;
        match conditional_outcome(
            "claim client message",
            result,
            self.config.lightweight_transactions,
        )? {
            Conditional::Applied => Ok(record.clone()),
            Conditional::Existing(mut row) => Ok(ClientMessageRecord {
                tenant_id: tenant.clone(),
                client_message_id: id.clone(),
                conversation_id: row.text("conversation_id")?,
                event_id: row.text("event_id")?,
                position: position_from_cql(row.int("log_partition")?, row.bigint("log_offset")?)?,
            }),
        }
    }

    async fn get_client_message(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, StoreError> {
        let row = self
            .select_one(
                "read client message",
                &self.statements.select_client_message,
                (tenant_id, client_message_id),
            )
            .await?;
        row.map(|row| rows::client_message(tenant_id, client_message_id, row))
            .transpose()
    }

    async fn is_processed(&self, scope: &str, event_id: &str) -> Result<bool, StoreError> {
        let row: Option<(Option<bool>,)> = self
            .select_one(
                "read processed mark",
                &self.statements.select_processed,
                (scope, event_id),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn mark_processed(&self, scope: &str, event_id: &str) -> Result<(), StoreError> {
        self.execute(
            "mark processed",
            &self.statements.upsert_processed,
            (scope, event_id, true),
        )
        .await
        .map(drop)
    }
}
