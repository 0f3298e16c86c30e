//! `chatstream schema apply`, run as the real binary against the CQL test
//! server at `CHATSTREAM_TEST_CQL` (default `127.0.0.1:9042`; started by
//! `scripts/test.sh`), each test in a keyspace of its own. When no server
//! answers, those tests print "not run: ..." and return, unless
//! `CHATSTREAM_TEST_STRICT=1`: then they fail.
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Output;
use std::time::Duration;

use chatstream_core::log::LogPosition;
use chatstream_core::store::{HistoryEntry, ProjectionStore, Recorded};
use chatstream_scylla::{ScyllaStore, ScyllaStoreConfig};
use chatstream_test_support::conformance::{unique, user_message};

/// Longest a `schema` command may take, even against a dead cluster.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

fn cql_server() -> Option<String> {
    let address = std::env::var("CHATSTREAM_TEST_CQL")
        .ok()
        .filter(|address| !address.is_empty())
        .unwrap_or_else(|| "127.0.0.1:9042".to_owned());
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|socket| TcpStream::connect_timeout(&socket, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(address);
    }
    let notice = format!("not run: no CQL test server at {address}");
    assert!(
        std::env::var("CHATSTREAM_TEST_STRICT").as_deref() != Ok("1"),
        "{notice} (CHATSTREAM_TEST_STRICT=1: the CQL tests must run)"
    );
    let _ = writeln!(std::io::stderr(), "{notice}");
    None
}

/// Runs `chatstream schema <args>` with none of the ScyllaDB settings of
/// the environment, so only `args` count.
async fn schema(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_chatstream"));
    command.arg("schema").args(args).kill_on_drop(true);
    for name in [
        "CHATSTREAM_CONFIG",
        "SCYLLA_NODES",
        "CHATSTREAM_SCYLLA_NODES",
        "CHATSTREAM_SCYLLA_KEYSPACE",
        "CHATSTREAM_SCYLLA_AWAIT_SCHEMA_AGREEMENT",
    ] {
        command.env_remove(name);
    }
    // No chatstream.yaml of the working directory may count either.
    command.current_dir(std::env::temp_dir());
    tokio::time::timeout(COMMAND_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`chatstream schema {args:?}` ran over {COMMAND_LIMIT:?}"))
        .expect("run chatstream")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_the_schema_and_is_safe_to_run_twice() {
    let Some(address) = cql_server() else {
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
    let entry = HistoryEntry {
        position: LogPosition {
            partition: 1,
            offset: 3,
        },
        event: user_message(&tenant, "c", "before the second run"),
    };
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
        store
            .read_history(&tenant, "c", None, 10)
            .await
            .expect("read"),
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
