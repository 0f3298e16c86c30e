//! Recent history in Redis, in front of the projection store: every
//! committed event of a conversation is also kept in a bounded Redis stream,
//! so a client resuming from a position (a reconnect, usually to another
//! gateway) is served from memory, and the store (ScyllaDB) answers only
//! what the stream cannot: full histories, old positions, and anything
//! while Redis is away. The log stays the system of record.
//!
//! A stream entry's id is its log offset, so re-adding a replayed event is
//! a no-op, and each entry names the offset of the conversation's previous
//! event (`prev`, or `none` for its first event). A read after position P
//! is served from the stream only when that chain proves nothing between
//! P and the first entry after P is missing (trimmed by the length bound,
//! lost with a Redis restart, or added before this cache existed);
//! otherwise it goes to the store. Never a silent gap.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::keyspace::RedisKeyspace;
use crate::ratelimit::lazy_connection;
use chatstream_core::log::LogPosition;
use chatstream_core::store::{
    ClientMessageRecord, ConversationRecord, HistoryEntry, ProjectionStore, Recorded, StoreError,
};

#[derive(Debug, Clone)]
pub struct RecentHistoryConfig {
    pub url: String,
    pub keyspace: RedisKeyspace,
    /// Entries kept per conversation (approximately: Redis trims in blocks).
    pub max_entries: usize,
    /// A conversation's stream is dropped after this long without events.
    pub idle_ttl: Duration,
    pub response_timeout: Duration,
}

impl RecentHistoryConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            keyspace: RedisKeyspace::default(),
            max_entries: 1000,
            idle_ttl: Duration::from_secs(24 * 3600),
            response_timeout: Duration::from_secs(1),
        }
    }

    pub fn with_keyspace(mut self, keyspace: RedisKeyspace) -> Self {
        self.keyspace = keyspace;
        self
    }
}

/// A `ProjectionStore` whose history reads after a position come from Redis
/// when Redis provably has everything. Writes go to the inner store first.
pub struct RecentHistoryStore {
    inner: Arc<dyn ProjectionStore>,
    connection: ConnectionManager,
    config: RecentHistoryConfig,
    append: Script,
}

impl RecentHistoryStore {
    /// Connects lazily; must be called on a Tokio runtime.
    pub fn new(
        inner: Arc<dyn ProjectionStore>,
        config: RecentHistoryConfig,
    ) -> Result<Self, StoreError> {
        let connection = lazy_connection(&config.url, config.response_timeout)
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        Ok(Self {
            inner,
            connection,
            config,
            append: Script::new(include_str!("recent_append.lua")),
        })
    }

    fn key(&self, tenant_id: &str, conversation_id: &str) -> String {
        self.config
            .keyspace
            .recent_history_key(tenant_id, conversation_id)
    }

    /// Adds `entry` to its conversation's stream (a no-op when it is there).
    async fn remember(&self, entry: &HistoryEntry) -> Result<(), StoreError> {
        let event = &entry.event;
        let starts_conversation = matches!(event.payload, Some(Payload::ConversationOpened(_)));
        let mut invocation = self
            .append
            .key(self.key(&event.tenant_id, &event.conversation_id));
        invocation
            .arg(entry.position.offset)
            .arg(if starts_conversation { "none" } else { "?" })
            .arg(self.config.max_entries)
            .arg(entry.position.partition)
            .arg(codec::encode(event))
            .arg(self.config.idle_ttl.as_millis() as u64);
        let mut connection = self.connection.clone();
        let added: Result<i64, _> = self
            .bounded(invocation.invoke_async(&mut connection))
            .await?;
        added.map(drop).map_err(unavailable)
    }

    /// Entries after `after` from the stream, when the stream provably holds
    /// all of them; `None` sends the read to the store.
    async fn recall(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let key = self.key(tenant_id, conversation_id);
        let Some(start) = after.checked_add(1) else {
            return Ok(Some(Vec::new()));
        };
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("XRANGE");
        command
            .arg(&key)
            .arg(format!("{start}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let reply: Result<Value, _> = self.bounded(command.query_async(&mut connection)).await?;
        let entries = parse_entries(reply.map_err(unavailable)?)?;
        let Some(first) = entries.first() else {
            // Nothing after `after` here: the conversation has nothing newer,
            // unless the stream itself is gone (expired, lost with a restart).
            let exists: Result<bool, _> = self
                .bounded(redis::cmd("EXISTS").arg(&key).query_async(&mut connection))
                .await?;
            return Ok(exists.map_err(unavailable)?.then(Vec::new));
        };
        let complete = match first.prev {
            Previous::None => true,
            Previous::At(offset) => offset <= after,
            Previous::Unknown => false,
        };
        if !complete {
            return Ok(None);
        }
        entries
            .into_iter()
            .map(|entry| {
                let event = codec::decode(&entry.event).map_err(|error| {
                    StoreError::Corrupt(format!("recent history entry {}: {error}", entry.offset))
                })?;
                Ok(Some(HistoryEntry {
                    position: LogPosition {
                        partition: entry.partition,
                        offset: entry.offset,
                    },
                    event,
                }))
            })
            .collect::<Result<Option<Vec<_>>, StoreError>>()
    }

    async fn bounded<T>(&self, call: impl Future<Output = T>) -> Result<T, StoreError> {
        tokio::time::timeout(self.config.response_timeout, call)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "Redis did not answer within {:?}",
                    self.config.response_timeout
                ))
            })
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("recent history in Redis: {error}"))
}

enum Previous {
    /// The entry is its conversation's first event.
    None,
    /// The conversation's previous event is at this offset.
    At(u64),
    /// Not known: the stream began (again) at this entry.
    Unknown,
}

struct StreamEntry {
    offset: u64,
    partition: u32,
    prev: Previous,
    event: Vec<u8>,
}

/// Parses an `XRANGE` reply: `[[id, [field, value, ...]], ...]`.
fn parse_entries(reply: Value) -> Result<Vec<StreamEntry>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("recent history reply: {what}"));
    let Value::Array(items) = reply else {
        return Err(corrupt("not an array"));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(mut parts) = item else {
                return Err(corrupt("entry is not an array"));
            };
            if parts.len() != 2 {
                return Err(corrupt("entry is not [id, fields]"));
            }
            let fields = parts.pop().expect("two parts");
            let id = text(parts.pop().expect("two parts")).ok_or_else(|| corrupt("id"))?;
            let offset = id
                .split('-')
                .next()
                .and_then(|ms| ms.parse().ok())
                .ok_or_else(|| corrupt("id is not an offset"))?;
            let Value::Array(fields) = fields else {
                return Err(corrupt("fields are not an array"));
            };
            let mut entry = StreamEntry {
                offset,
                partition: 0,
                prev: Previous::Unknown,
                event: Vec::new(),
            };
            for pair in fields.chunks(2) {
                let [name, value] = pair else {
                    return Err(corrupt("odd field list"));
                };
                match text(name.clone()).as_deref() {
                    Some("partition") => {
                        entry.partition = text(value.clone())
                            .and_then(|p| p.parse().ok())
                            .ok_or_else(|| corrupt("partition"))?;
                    }
                    Some("prev") => {
                        entry.prev = match text(value.clone()).as_deref() {
                            Some("none") => Previous::None,
                            Some(offset) => offset.parse().map_or(Previous::Unknown, Previous::At),
                            None => Previous::Unknown,
                        };
                    }
                    Some("event") => {
                        let Value::BulkString(bytes) = value else {
                            return Err(corrupt("event is not a bulk string"));
                        };
                        entry.event = bytes.clone();
                    }
                    _ => {}
                }
            }
            Ok(entry)
        })
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

#[async_trait]
impl ProjectionStore for RecentHistoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn put_conversation(
        &self,
        conversation: &ConversationRecord,
    ) -> Result<ConversationRecord, StoreError> {
        self.inner.put_conversation(conversation).await
    }

    async fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        self.inner
            .get_conversation(tenant_id, conversation_id)
            .await
    }

    async fn list_conversations(
        &self,
        tenant_id: &str,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner
            .list_conversations(tenant_id, after_id, limit)
            .await
    }

    /// Records in the store, then in the stream. A stream failure fails the
    /// call (the projector retries), so the stream never skips an event.
    async fn append_history(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError> {
        let recorded = self.inner.append_history(entry).await?;
        let in_log_order = match recorded {
            Recorded::Inserted => true,
            // A replay of this very record (not a re-produced copy elsewhere).
            Recorded::Duplicate { existing } => existing == entry.position,
        };
        if in_log_order {
            self.remember(entry).await?;
        }
        Ok(recorded)
    }

    async fn read_history(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        after_offset: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        if let Some(after) = after_offset.filter(|_| limit > 0) {
            match self.recall(tenant_id, conversation_id, after, limit).await {
                Ok(Some(entries)) => return Ok(entries),
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, "recent history unavailable; reading the store");
                }
            }
        }
        self.inner
            .read_history(tenant_id, conversation_id, after_offset, limit)
            .await
    }

    async fn claim_client_message(
        &self,
        record: &ClientMessageRecord,
    ) -> Result<ClientMessageRecord, StoreError> {
        self.inner.claim_client_message(record).await
    }

    async fn get_client_message(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, StoreError> {
        self.inner
            .get_client_message(tenant_id, client_message_id)
            .await
    }

    async fn is_processed(&self, scope: &str, event_id: &str) -> Result<bool, StoreError> {
        self.inner.is_processed(scope, event_id).await
    }

    async fn mark_processed(&self, scope: &str, event_id: &str) -> Result<(), StoreError> {
        self.inner.mark_processed(scope, event_id).await
    }
}
