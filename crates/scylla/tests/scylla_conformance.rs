//! The ScyllaDB projection store against the shared store conformance
//! suite, plus what only it can be asked: schema application, and the
//! errors of an unreachable cluster or a missing schema.
//!
//! Two kinds of server:
//! - the CQL test server at `CHATSTREAM_TEST_CQL` (default
//!   `127.0.0.1:9042`; `scripts/test.sh` starts `cql-test-server`): the
//!   in-memory `kassandra` engine. It ignores `IF NOT EXISTS` and rejects
//!   range reads on clustering columns, so the store runs there without
//!   lightweight transactions, and the cases that need range reads are
//!   reported as not run. When it cannot be reached the tests print
//!   "not run: ..." and return, unless `CHATSTREAM_TEST_STRICT=1`: then
//!   they fail.
//! - a real ScyllaDB (or Cassandra) at `CHATSTREAM_TEST_SCYLLA`, e.g.
//!   `127.0.0.1:9042` from `deploy/compose.yaml`: every case runs, with
//!   the production settings (lightweight transactions, schema agreement).
//!   Unset, those tests say "not run" (never failing: no such server can
//!   run on the test machines).
//!
//! Every case gets a fresh keyspace, named `cstest_*`: the CQL test server
//! keeps them in memory only; on a real cluster each is dropped when its
//! test ends.

use std::time::Duration;

use chatstream_core::log::LogPosition;
use chatstream_core::store::{
    ClientMessageRecord, ConversationRecord, ProjectionStore, Recorded, StoreError,
};
use chatstream_scylla::{Replication, ScyllaAnalytics, ScyllaStore, ScyllaStoreConfig};
use chatstream_test_support::conformance::store::history_of;
use chatstream_test_support::conformance::{history_entry, unique, user_message};
use chatstream_test_support::services;
use scylla::client::session_builder::SessionBuilder;

// --- Which servers, and whether they must be there ---------------------------

/// The test server's stand-in for the cases that need what it lacks.
fn lacking_on_the_test_server(case: &str, needs: &str) {
    if services::env("CHATSTREAM_TEST_SCYLLA").is_some() {
        services::say(&format!(
            "not run on the CQL test server: {case} (runs in real_scylla::projection_store_conformance)"
        ));
    } else {
        services::not_run_here(format!(
            "{case}: needs {needs}, which the CQL test server lacks; set CHATSTREAM_TEST_SCYLLA"
        ));
    }
}

// --- Subjects --------------------------------------------------------------------

/// A keyspace name no other case (or run) uses.
fn fresh_keyspace() -> String {
    format!("cstest_{:016x}", rand::random::<u64>())
}

fn split_nodes(nodes: &str) -> Vec<String> {
    nodes
        .split(',')
        .map(|node| node.trim().to_owned())
        .collect()
}

/// Settings for the CQL test server: no `system.peers` to agree on schema
/// with, and `IF NOT EXISTS` is ignored there.
fn test_server_config(address: &str, keyspace: &str) -> ScyllaStoreConfig {
    ScyllaStoreConfig {
        await_schema_agreement: false,
        lightweight_transactions: false,
        // Below the server's own page size of 100, so paging is exercised.
        page_size: 7,
        ..ScyllaStoreConfig::new(split_nodes(address), keyspace)
    }
}

/// Production settings, on a one-node test cluster.
fn real_scylla_config(nodes: &str, keyspace: &str) -> ScyllaStoreConfig {
    ScyllaStoreConfig {
        replication: Replication::Simple {
            replication_factor: 1,
        },
        request_timeout: Duration::from_secs(30),
        page_size: 7,
        ..ScyllaStoreConfig::new(split_nodes(nodes), keyspace)
    }
}

async fn store_with(config: ScyllaStoreConfig) -> ScyllaStore {
    ScyllaStore::apply_schema(&config)
        .await
        .expect("apply the schema");
    ScyllaStore::connect(config).await.expect("connect")
}

async fn test_server_store() -> Option<(ScyllaStore, ())> {
    let address = services::cql()?;
    let config = test_server_config(&address, &fresh_keyspace());
    Some((store_with(config).await, ()))
}

/// Drops its test keyspace from the real cluster when dropped (best effort).
struct TestKeyspace {
    nodes: Vec<String>,
    keyspace: String,
}

impl Drop for TestKeyspace {
    fn drop(&mut self) {
        let (nodes, keyspace) = (self.nodes.clone(), self.keyspace.clone());
        // Dropped inside the test's runtime, which must not block: the
        // statement runs on a thread and runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let session = SessionBuilder::new()
                    .known_nodes(&nodes)
                    .build()
                    .await
                    .map_err(|error| error.to_string())?;
                session
                    .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
                    .await
                    .map(drop)
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            services::say(&format!(
                "could not drop test keyspace {}: {error}",
                self.keyspace
            ));
        }
    }
}

async fn real_scylla_store() -> Option<(ScyllaStore, TestKeyspace)> {
    let nodes = services::real_scylla("the store conformance suite on ScyllaDB")?;
    let config = real_scylla_config(&nodes, &fresh_keyspace());
    let guard = TestKeyspace {
        nodes: config.known_nodes.clone(),
        keyspace: config.keyspace.clone(),
    };
    Some((store_with(config).await, guard))
}

mod cql_test_server {
    use super::*;

    chatstream_test_support::store_conformance_tests!(
        if_available: test_server_store(),
        lacking_range_reads: lacking_on_the_test_server
    );
}

mod real_scylla {
    use super::*;

    chatstream_test_support::store_conformance_tests!(if_available: real_scylla_store());
}

async fn test_server_analytics() -> Option<(ScyllaAnalytics, ())> {
    let (store, ()) = test_server_store().await?;
    Some((
        ScyllaAnalytics::new(&store)
            .await
            .expect("prepare analytics"),
        (),
    ))
}

async fn real_scylla_analytics() -> Option<(ScyllaAnalytics, TestKeyspace)> {
    let (store, keyspace) = real_scylla_store().await?;
    Some((
        ScyllaAnalytics::new(&store)
            .await
            .expect("prepare analytics"),
        keyspace,
    ))
}

/// The analytics store needs nothing the CQL test server lacks: point reads
/// and logged batches only.
mod cql_test_server_analytics {
    use super::*;

    chatstream_test_support::analytics_conformance_tests!(if_available: test_server_analytics());
}

mod real_scylla_analytics {
    use super::*;

    chatstream_test_support::analytics_conformance_tests!(if_available: real_scylla_analytics());
}

// --- Schema and connecting ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_schema_twice_keeps_the_data() {
    let Some(address) = services::cql() else {
        return;
    };
    let config = test_server_config(&address, &fresh_keyspace());
    let store = store_with(config.clone()).await;
    let tenant = unique("tenant");
    let entry = history_entry(2, 40, user_message(&tenant, "c", "kept"));
    assert_eq!(
        store.append_history(&entry).await.expect("append"),
        Recorded::Inserted
    );

    let report = ScyllaStore::apply_schema(&config)
        .await
        .expect("apply the schema again");
    assert_eq!(report.keyspace, config.keyspace);
    assert!(
        report
            .statements
            .iter()
            .all(|statement| statement.contains("IF NOT EXISTS")),
        "every schema statement is safe to repeat: {:?}",
        report.statements
    );
    assert_eq!(
        history_of(&store, &tenant, "c").await,
        vec![entry],
        "the second run changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_before_the_schema_is_applied_says_so() {
    let Some(address) = services::cql() else {
        return;
    };
    let config = test_server_config(&address, &fresh_keyspace());
    let error = match ScyllaStore::connect(config.clone()).await {
        Ok(_) => panic!("keyspace {} does not exist yet", config.keyspace),
        Err(error) => error,
    };
    assert!(
        matches!(error, StoreError::Storage(_)),
        "a missing schema is not retryable: {error:?}"
    );
    assert!(
        error.to_string().contains("schema apply"),
        "the error says what to do: {error}"
    );
}

/// Needs no server: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_unavailable_and_named() {
    let config = ScyllaStoreConfig {
        connection_timeout: Duration::from_secs(2),
        ..ScyllaStoreConfig::new(["127.0.0.1:1"], "chatstream")
    };
    for error in [
        ScyllaStore::connect(config.clone()).await.err(),
        ScyllaStore::apply_schema(&config).await.err(),
    ] {
        match error {
            Some(StoreError::Unavailable(message)) => assert!(
                message.contains("127.0.0.1:1"),
                "the error names the nodes: {message}"
            ),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_keyspace_name_is_refused_before_connecting() {
    let config = ScyllaStoreConfig::new(["127.0.0.1:1"], "drop table x; --");
    match ScyllaStore::apply_schema(&config).await {
        Err(StoreError::Storage(message)) => assert!(message.contains("keyspace"), "{message}"),
        other => panic!("expected a Storage error naming the keyspace, got {other:?}"),
    }
}

// --- Stored rows as other CQL clients see them -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_paged_past_the_servers_page_size() {
    let Some((store, ())) = test_server_store().await else {
        return;
    };
    let tenant = unique("tenant");
    // More than the test server's 100-row pages and many of ours (7).
    for offset in 0..150 {
        let entry = history_entry(0, offset, user_message(&tenant, "c", &offset.to_string()));
        store.append_history(&entry).await.expect("append");
    }
    let history = store
        .read_history(&tenant, "c", None, 1000)
        .await
        .expect("read");
    let offsets: Vec<u64> = history.iter().map(|entry| entry.position.offset).collect();
    assert_eq!(
        offsets,
        (0..150).collect::<Vec<_>>(),
        "all, in offset order"
    );
    let first = store
        .read_history(&tenant, "c", None, 120)
        .await
        .expect("read");
    assert_eq!(first.len(), 120, "the limit holds across pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_claim_round_trips_every_field() {
    let Some((store, ())) = test_server_store().await else {
        return;
    };
    let tenant = unique("tenant");
    let claim = ClientMessageRecord {
        tenant_id: tenant.clone(),
        client_message_id: "m".into(),
        conversation_id: "c".into(),
        event_id: "e".into(),
        // Kafka's largest partition and offset.
        position: LogPosition {
            partition: i32::MAX as u32,
            offset: i64::MAX as u64,
        },
    };
    assert_eq!(
        store.claim_client_message(&claim).await.expect("claim"),
        claim
    );
    assert_eq!(
        store.get_client_message(&tenant, "m").await.expect("get"),
        Some(claim.clone())
    );
    let too_far = ClientMessageRecord {
        client_message_id: "m2".into(),
        position: LogPosition {
            partition: 0,
            offset: u64::MAX,
        },
        ..claim
    };
    assert!(
        matches!(
            store.claim_client_message(&too_far).await,
            Err(StoreError::Storage(_))
        ),
        "an offset past what Kafka can hold is refused"
    );
    let conversation = ConversationRecord {
        tenant_id: tenant.clone(),
        conversation_id: "c".into(),
        title: "naïve ünïcode ✓".into(),
        created_at_ms: -1,
        opened_by_key_id: String::new(),
    };
    store.put_conversation(&conversation).await.expect("put");
    assert_eq!(
        store.get_conversation(&tenant, "c").await.expect("get"),
        Some(conversation)
    );
}

// --- First wins under concurrency (lightweight transactions) ---------------------------

/// Refused loudly rather than trusted: the test server answers
/// `IF NOT EXISTS` as a plain write, without `[applied]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_lightweight_transactions_is_detected() {
    let Some(address) = services::cql() else {
        return;
    };
    let config = ScyllaStoreConfig {
        lightweight_transactions: true,
        ..test_server_config(&address, &fresh_keyspace())
    };
    let store = store_with(config).await;
    let conversation = ConversationRecord {
        tenant_id: unique("tenant"),
        conversation_id: "c".into(),
        title: "t".into(),
        created_at_ms: 1,
        opened_by_key_id: "k".into(),
    };
    match store.put_conversation(&conversation).await {
        Err(StoreError::Storage(message)) => assert!(
            message.contains("[applied]") && message.contains("lightweight transactions"),
            "the error says what is missing: {message}"
        ),
        other => panic!("expected a Storage error, got {other:?}"),
    }
}

/// Many writers race for the same records at once; all must be told the
/// same winner, and the stored record must be that winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_writes_agree_on_one_winner() {
    let case = "concurrent_first_writes_agree_on_one_winner";
    if services::env("CHATSTREAM_TEST_SCYLLA").is_none() {
        services::not_run_here(format!(
            "{case}: needs lightweight transactions (IF NOT EXISTS), which the CQL test server lacks; set CHATSTREAM_TEST_SCYLLA"
        ));
        return;
    }
    let Some((store, _keyspace)) = real_scylla_store().await else {
        return;
    };
    let tenant = unique("tenant");
    const WRITERS: u64 = 8;

    let claims = futures::future::join_all((0..WRITERS).map(|n| {
        let store = store.clone();
        let claim = ClientMessageRecord {
            tenant_id: tenant.clone(),
            client_message_id: "m".into(),
            conversation_id: "c".into(),
            event_id: format!("event-{n}"),
            position: LogPosition {
                partition: 0,
                offset: n,
            },
        };
        async move { store.claim_client_message(&claim).await.expect("claim") }
    }))
    .await;
    assert!(
        claims.iter().all(|claim| claim == &claims[0]),
        "every claimant is told the same winner: {claims:?}"
    );
    assert_eq!(
        store.get_client_message(&tenant, "m").await.expect("get"),
        Some(claims[0].clone())
    );

    let event = user_message(&tenant, "c", "raced");
    let recorded = futures::future::join_all((0..WRITERS).map(|n| {
        let store = store.clone();
        let entry = history_entry(0, 100 + n, event.clone());
        async move { store.append_history(&entry).await.expect("append") }
    }))
    .await;
    let inserted = recorded
        .iter()
        .filter(|recorded| **recorded == Recorded::Inserted)
        .count();
    assert_eq!(inserted, 1, "one copy is recorded: {recorded:?}");
    let history = store
        .read_history(&tenant, "c", None, 100)
        .await
        .expect("read");
    assert_eq!(history.len(), 1, "one history row: {history:?}");
    for outcome in &recorded {
        if let Recorded::Duplicate { existing } = outcome {
            assert_eq!(
                *existing, history[0].position,
                "duplicates point at the recorded copy"
            );
        }
    }
}

// --- An outage between the store and the server ------------------------------------------

/// A TCP proxy in front of the CQL server that the test can cut (every
/// connection closed, nothing listening) and restore on the same port: a
/// network outage without touching the shared server.
struct CuttableProxy {
    upstream: String,
    port: u16,
    accepting: Option<tokio::task::JoinHandle<()>>,
}

impl CuttableProxy {
    async fn start(upstream: &str) -> Self {
        let mut proxy = Self {
            upstream: upstream.to_owned(),
            port: 0,
            accepting: None,
        };
        proxy.restore().await;
        proxy
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy");
        self.port = listener.local_addr().expect("proxy address").port();
        let upstream = self.upstream.clone();
        self.accepting = Some(tokio::spawn(async move {
            // Dropped with this task, which aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    async fn cut(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
            let _ = accepting.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_store_recovers_by_itself() {
    let Some(address) = services::cql() else {
        return;
    };
    let mut proxy = CuttableProxy::start(&address).await;
    let config = ScyllaStoreConfig {
        request_timeout: Duration::from_secs(2),
        connection_timeout: Duration::from_secs(1),
        ..test_server_config(&proxy.address(), &fresh_keyspace())
    };
    let store = store_with(config).await;
    let tenant = unique("tenant");
    let entry = |offset| history_entry(0, offset, user_message(&tenant, "c", "survives"));
    let before = entry(1);
    store.append_history(&before).await.expect("append");

    proxy.cut().await;
    for outcome in [
        store.ping().await.err(),
        store.read_history(&tenant, "c", None, 10).await.err(),
        store.append_history(&entry(2)).await.err(),
    ] {
        assert!(
            matches!(outcome, Some(StoreError::Unavailable(_))),
            "during the outage: retryable Unavailable, got {outcome:?}"
        );
    }

    proxy.restore().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(error) = store.ping().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not reconnect within 30 s: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = entry(3);
    store
        .append_history(&after)
        .await
        .expect("append after the outage");
    assert_eq!(
        store
            .read_history(&tenant, "c", None, 10)
            .await
            .expect("read after the outage"),
        vec![before, after],
        "nothing written before the outage is lost"
    );
}
