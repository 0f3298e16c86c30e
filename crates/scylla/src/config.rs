//! How to reach the ScyllaDB (or Cassandra) cluster and how to use it:
//! keyspace, replication for `CREATE KEYSPACE`, consistency, timeouts.
use std::collections::BTreeMap;
use std::time::Duration;

use chatstream_config::Config;
pub use scylla::statement::{Consistency, SerialConsistency};

use chatstream_core::store::StoreError;

/// Settings of the ScyllaDB projection store. `new` gives defaults that are
/// right for a real cluster; a test server needs `await_schema_agreement`
/// and `lightweight_transactions` off (see their docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ScyllaStoreConfig {
    /// Contact points, `host:port` (e.g. `scylla-1:9042`).
    pub known_nodes: Vec<String>,
    /// Keyspace holding the store's tables (letters, digits, `_`).
    pub keyspace: String,
    /// Replication of the keyspace when the schema creates it.
    pub replication: Replication,
    /// Wait after each schema change until every node has it. Right for
    /// every real cluster; a server without `system.peers` (the in-memory
    /// CQL test server) needs `false`.
    pub await_schema_agreement: bool,
    /// "First wins" writes (conversation records, client message claims,
    /// event-id dedupe) use `INSERT ... IF NOT EXISTS` (Paxos), so
    /// concurrent writers agree on one winner. `false` only for a server
    /// that ignores `IF NOT EXISTS` (the CQL test server): every write then
    /// still reads first, so sequential first-wins holds, but concurrent
    /// writers may overwrite each other.
    pub lightweight_transactions: bool,
    /// Client-side limit on one request, retries included.
    pub request_timeout: Duration,
    /// Limit on opening a connection to a node.
    pub connection_timeout: Duration,
    /// Consistency of every read and write.
    pub consistency: Consistency,
    /// Consistency of the Paxos phase of lightweight transactions.
    pub serial_consistency: SerialConsistency,
    /// Rows per page of multi-row reads (every such read is paged).
    pub page_size: i32,
}

/// Replication strategy of the keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// One replication factor for the whole cluster; for one datacenter
    /// (and development clusters).
    Simple { replication_factor: u32 },
    /// A replication factor per datacenter (`dc1: 3, dc2: 3`): production.
    NetworkTopology { datacenters: BTreeMap<String, u32> },
}

impl ScyllaStoreConfig {
    /// The store's settings, from the `scylla` section of the platform config.
    pub fn from_config(config: &Config) -> Result<Self, StoreError> {
        let scylla = &config.scylla;
        let mut store = ScyllaStoreConfig::new(scylla.nodes.clone(), scylla.keyspace.clone());
        store.replication = if scylla.datacenters.is_empty() {
            Replication::Simple {
                replication_factor: scylla.replication_factor,
            }
        } else {
            Replication::NetworkTopology {
                datacenters: scylla.datacenters.clone(),
            }
        };
        store.consistency = parse_consistency(&scylla.consistency)?;
        store.await_schema_agreement = scylla.await_schema_agreement;
        store.lightweight_transactions = scylla.lightweight_transactions;
        store.request_timeout = Duration::from_millis(scylla.request_timeout_ms);
        store.validate()?;
        Ok(store)
    }
    pub const DEFAULT_KEYSPACE: &'static str = "chatstream";

    pub fn new(
        known_nodes: impl IntoIterator<Item = impl Into<String>>,
        keyspace: impl Into<String>,
    ) -> Self {
        Self {
            known_nodes: known_nodes.into_iter().map(Into::into).collect(),
            keyspace: keyspace.into(),
            replication: Replication::Simple {
                replication_factor: 1,
            },
            await_schema_agreement: true,
            lightweight_transactions: true,
            request_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
            consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            page_size: 1000,
        }
    }

    /// Checks what would otherwise fail late or end up inside CQL text.
    pub fn validate(&self) -> Result<(), StoreError> {
        let invalid = |message: String| Err(StoreError::Storage(message));
        if self.known_nodes.iter().all(|node| node.trim().is_empty()) {
            return invalid("ScyllaDB store: no known nodes given".to_owned());
        }
        if !is_cql_identifier(&self.keyspace) {
            return invalid(format!(
                "ScyllaDB store: keyspace {:?} must be 1-48 letters, digits or `_`, starting with a letter",
                self.keyspace
            ));
        }
        if self.page_size <= 0 {
            return invalid(format!(
                "ScyllaDB store: page size must be positive, got {}",
                self.page_size
            ));
        }
        self.replication.validate()
    }
}

impl Replication {
    fn validate(&self) -> Result<(), StoreError> {
        let invalid = |message: String| Err(StoreError::Storage(message));
        match self {
            Self::Simple { replication_factor } if *replication_factor == 0 => {
                invalid("ScyllaDB store: replication factor must be at least 1".to_owned())
            }
            Self::Simple { .. } => Ok(()),
            Self::NetworkTopology { datacenters } => {
                if datacenters.is_empty() || datacenters.values().all(|factor| *factor == 0) {
                    return invalid(
                        "ScyllaDB store: NetworkTopologyStrategy needs a replication factor for at least one datacenter"
                            .to_owned(),
                    );
                }
                match datacenters.keys().find(|name| !is_datacenter_name(name)) {
                    Some(name) => invalid(format!(
                        "ScyllaDB store: datacenter name {name:?} may hold only letters, digits, `_`, `-` and `.`"
                    )),
                    None => Ok(()),
                }
            }
        }
    }

    /// The `replication = {...}` map of `CREATE KEYSPACE` (after `validate`).
    pub(crate) fn to_cql(&self) -> String {
        match self {
            Self::Simple { replication_factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}")
            }
            Self::NetworkTopology { datacenters } => {
                let factors: Vec<String> = datacenters
                    .iter()
                    .map(|(name, factor)| format!("'{name}': {factor}"))
                    .collect();
                format!(
                    "{{'class': 'NetworkTopologyStrategy', {}}}",
                    factors.join(", ")
                )
            }
        }
    }
}

/// A consistency level by its CQL name (`LOCAL_QUORUM`, `quorum`, ...).
pub fn parse_consistency(name: &str) -> Result<Consistency, StoreError> {
    let consistency = match name.trim().to_ascii_uppercase().replace('-', "_").as_str() {
        "ANY" => Consistency::Any,
        "ONE" => Consistency::One,
        "TWO" => Consistency::Two,
        "THREE" => Consistency::Three,
        "QUORUM" => Consistency::Quorum,
        "ALL" => Consistency::All,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "LOCAL_ONE" => Consistency::LocalOne,
        _ => {
            return Err(StoreError::Storage(format!(
                "unknown consistency level {name:?} (ONE, QUORUM, LOCAL_QUORUM, EACH_QUORUM, LOCAL_ONE, ALL, ...)"
            )));
        }
    };
    Ok(consistency)
}

/// Unquoted CQL names are case-insensitive and limited to 48 characters.
fn is_cql_identifier(name: &str) -> bool {
    name.len() <= 48
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Datacenter names go inside a CQL string literal: no quotes.
fn is_datacenter_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_suit_a_real_cluster() {
        let config = ScyllaStoreConfig::new(["127.0.0.1:9042"], "chatstream");
        assert!(config.await_schema_agreement && config.lightweight_transactions);
        assert_eq!(config.consistency, Consistency::LocalQuorum);
        config.validate().expect("valid");
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = ScyllaStoreConfig::new(["n1:9042"], "chat-stream");
        let error = config.validate().expect_err("a dash is not allowed");
        assert!(error.to_string().contains("\"chat-stream\""), "{error}");
        config.keyspace = "chatstream".into();
        config.known_nodes.clear();
        assert!(config.validate().is_err(), "no nodes");
        config.known_nodes = vec!["n1:9042".into()];
        config.replication = Replication::NetworkTopology {
            datacenters: [("dc1'; DROP".to_owned(), 3)].into(),
        };
        assert!(config.validate().is_err(), "a quote in a datacenter name");
    }

    #[test]
    fn replication_renders_as_cql() {
        let replication = Replication::NetworkTopology {
            datacenters: [("dc1".to_owned(), 3), ("dc2".to_owned(), 2)].into(),
        };
        assert_eq!(
            replication.to_cql(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
    }

    #[test]
    fn consistency_names_parse() {
        assert_eq!(
            parse_consistency("local_quorum").expect("parses"),
            Consistency::LocalQuorum
        );
        assert!(parse_consistency("most").is_err());
    }
}
