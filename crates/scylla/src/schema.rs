//! The store's keyspace and tables, designed for a real ScyllaDB cluster.
//!
//! Every row's partition key starts with the tenant id (processed marks,
//! which the trait keys by scope, are the one exception), and every read
//! names a whole partition key, so one tenant's rows are never read for
//! another. Partitions stay bounded: a conversation's history and the
//! first-wins records each get partitions of their own, so Paxos rounds of
//! different conversations never contend.
//!
//! The schema is applied as an ordered list of statements, each safe to run
//! again (`IF NOT EXISTS`). A later version appends its migrations (e.g.
//! `ALTER TABLE ... ADD`) to the list; running all of them on any earlier
//! version brings it up to date.
use scylla::client::session::Session;

use super::ScyllaStoreConfig;
use super::error;
use chatstream_core::store::StoreError;

/// Conversation records by (tenant, conversation): the "first wins" row
/// that `put_conversation` claims with `IF NOT EXISTS`.
pub(crate) const CONVERSATIONS: &str = "conversations";
/// The winning conversation records again, clustered by id in one partition
/// per tenant, for paged lists in id order.
pub(crate) const CONVERSATIONS_BY_TENANT: &str = "conversations_by_tenant";
/// History by (tenant, conversation), clustered by log position: offset
/// first, because the trait reads "after an offset" and a conversation's
/// events come from its tenant's partition in offset order; the log
/// partition completes the key, so entries at the same offset of two
/// partitions (after a repartitioning) never overwrite each other.
pub(crate) const HISTORY: &str = "history";
/// Where each event id was first recorded, by (tenant, event id): the
/// dedupe record of `append_history`.
pub(crate) const EVENT_POSITIONS: &str = "event_positions";
/// Outcomes of client sends by (tenant, client message id).
pub(crate) const CLIENT_MESSAGES: &str = "client_messages";
/// Completed side effects by (scope, event id).
pub(crate) const PROCESSED_EVENTS: &str = "processed_events";

/// Analytics buckets by (tenant, granularity, bucket start): one row each,
/// read by point reads (see `analytics.rs`).
pub(crate) const ANALYTICS_BUCKETS: &str = "analytics_buckets";
/// Events the analytics projection has added, by (tenant, event id).
pub(crate) const ANALYTICS_APPLIED: &str = "analytics_applied";
/// The analytics processor's notes between events of a turn, by (tenant, key).
pub(crate) const ANALYTICS_NOTES: &str = "analytics_notes";

/// What `apply_schema` ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    pub keyspace: String,
    /// The statements, in order (each idempotent).
    pub statements: Vec<String>,
}

/// Every schema statement for `config`, in the order they must run;
/// `on_scylla` when the cluster is ScyllaDB rather than Cassandra.
pub fn schema_statements(config: &ScyllaStoreConfig, on_scylla: bool) -> Vec<String> {
    let ks = &config.keyspace;
    // ScyllaDB (up to at least 2025.3) does not run lightweight transactions
    // in keyspaces with tablets, which newer releases enable by default, so
    // the keyspace keeps vnodes. Cassandra does not know the option.
    let tablets = if on_scylla && config.lightweight_transactions {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    vec![
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {} AND durable_writes = true{tablets}",
            config.replication.to_cql()
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{CONVERSATIONS} (\
             tenant_id text, conversation_id text, title text, created_at_ms bigint, \
             opened_by_key_id text, \
             PRIMARY KEY ((tenant_id, conversation_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{CONVERSATIONS_BY_TENANT} (\
             tenant_id text, conversation_id text, title text, created_at_ms bigint, \
             opened_by_key_id text, \
             PRIMARY KEY ((tenant_id), conversation_id)) \
             WITH CLUSTERING ORDER BY (conversation_id ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{HISTORY} (\
             tenant_id text, conversation_id text, log_offset bigint, log_partition int, \
             event_id text, event blob, \
             PRIMARY KEY ((tenant_id, conversation_id), log_offset, log_partition)) \
             WITH CLUSTERING ORDER BY (log_offset ASC, log_partition ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{EVENT_POSITIONS} (\
             tenant_id text, event_id text, log_partition int, log_offset bigint, \
             PRIMARY KEY ((tenant_id, event_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{CLIENT_MESSAGES} (\
             tenant_id text, client_message_id text, conversation_id text, event_id text, \
             log_partition int, log_offset bigint, \
             PRIMARY KEY ((tenant_id, client_message_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{PROCESSED_EVENTS} (\
             scope text, event_id text, processed boolean, \
             PRIMARY KEY ((scope, event_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{ANALYTICS_BUCKETS} (\
             tenant_id text, granularity text, bucket_start_ms bigint, state blob, \
             PRIMARY KEY ((tenant_id, granularity, bucket_start_ms)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{ANALYTICS_APPLIED} (\
             tenant_id text, event_id text, applied boolean, \
             PRIMARY KEY ((tenant_id, event_id)))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.{ANALYTICS_NOTES} (\
             tenant_id text, note_key text, value bigint, \
             PRIMARY KEY ((tenant_id, note_key)))"
        ),
    ]
}

/// Runs every schema statement on `session`, waiting for schema agreement
/// after each when the config asks for it (the session does that itself).
pub(crate) async fn apply(
    session: &Session,
    config: &ScyllaStoreConfig,
) -> Result<SchemaReport, StoreError> {
    // Only ScyllaDB nodes announce a shard layout.
    let on_scylla = session
        .get_cluster_state()
        .get_nodes_info()
        .iter()
        .any(|node| node.sharder().is_some());
    let statements = schema_statements(config, on_scylla);
    for statement in &statements {
        session
            .query_unpaged(statement.as_str(), ())
            .await
            .map_err(|failure| error::execution(&format!("apply schema ({statement})"), failure))?;
    }
    Ok(SchemaReport {
        keyspace: config.keyspace.clone(),
        statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tablets_are_off_only_where_scylla_needs_it_for_lightweight_transactions() {
        let mut config = ScyllaStoreConfig::new(["n1:9042"], "chatstream");
        let keyspace =
            |config: &ScyllaStoreConfig, on_scylla| schema_statements(config, on_scylla).remove(0);
        assert!(keyspace(&config, true).ends_with("AND tablets = {'enabled': false}"));
        assert!(!keyspace(&config, false).contains("tablets"), "Cassandra");
        config.lightweight_transactions = false;
        assert!(!keyspace(&config, true).contains("tablets"));
        assert!(
            schema_statements(&config, true)
                .iter()
                .all(|statement| statement.contains(" IF NOT EXISTS ")),
            "every statement is safe to run again"
        );
    }
}
