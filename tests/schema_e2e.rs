//! `chatstream schema apply`, run as the real binary against the CQL test
//! server at `CHATSTREAM_TEST_CQL` (default `127.0.0.1:9042`; started by
//! `scripts/test.sh`), each test in a keyspace of its own. When no server
//! answers, those tests print "not run: ..." and return, unless
//! `CHATSTREAM_TEST_STRICT=1`: then they fail.
use std::process::Output;
use std::time::Duration;

use chatstream_core::store::{ProjectionStore, Recorded};
use chatstream_scylla::{ScyllaStore, ScyllaStoreConfig};
use chatstream_test_support::conformance::store::history_of;
use chatstream_test_support::conformance::{history_entry, unique, user_message};
use chatstream_test_support::platform::run_subcommand;
use chatstream_test_support::services;

/// Longest a `schema` command may take, even against a dead cluster.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Runs `chatstream schema <args>` with none of the platform's settings
/// from the environment, so only `args` count.
async fn schema(args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_chatstream");
    run_subcommand(bin, "schema", args, COMMAND_LIMIT).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_the_schema_and_is_safe_to_run_twice() {
    let Some(address) = services::cql() else {
        return;
    };
    let keyspace = format!("cstest_{:016x}", rand::random::<u64>());
    let args = [
        "apply",
        "--nodes",
        &address,
        "--keyspace",
        &keyspace,
        "--replication-factor",
        "1",
        "--no-await-schema-agreement",
    ];
    let first = schema(&args).await;
    assert!(first.status.success(), "first run: {}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains(&format!("keyspace {keyspace} is up to date")),
        "says what it did: {}",
        text(&first.stdout)
    );

    // The store runs on what it created.
    let config = ScyllaStoreConfig {
        await_schema_agreement: false,
        lightweight_transactions: false,
        ..ScyllaStoreConfig::new([address.as_str()], keyspace.as_str())
    };
    let store = ScyllaStore::connect(config.clone())
        .await
        .expect("connect to the applied schema");
    let tenant = unique("tenant");
    let entry = history_entry(1, 3, user_message(&tenant, "c", "before the second run"));
    assert_eq!(
        store.append_history(&entry).await.expect("append"),
        Recorded::Inserted
    );

    let second = schema(&args).await;
    assert!(
        second.status.success(),
        "second run: {}",
        text(&second.stderr)
    );
    assert_eq!(
        history_of(&store, &tenant, "c").await,
        vec![entry],
        "the second run kept the data"
    );
}

/// Needs no server: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_fails_with_a_clear_message() {
    let output = schema(&[
        "apply",
        "--nodes",
        "127.0.0.1:1",
        "--keyspace",
        "chatstream",
    ])
    .await;
    assert!(!output.status.success(), "must fail");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("cannot apply the schema of keyspace chatstream on 127.0.0.1:1")
            && stderr.contains("unavailable"),
        "names what failed and where: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_replication_is_refused() {
    let output = schema(&["apply", "--replication", "dc1"]).await;
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("expected DC=N"),
        "{}",
        text(&output.stderr)
    );
}
