//! Runs chatstream as separate role processes (`chatstream gateway`,
//! `chatstream processor <kind>`) on shared backends: the Kafka-protocol
//! broker at `CHATSTREAM_TEST_KAFKA`, the CQL server at
//! `CHATSTREAM_TEST_CQL` and the Redis at `CHATSTREAM_TEST_REDIS`, with a
//! fresh topic, keyspace and key prefix per test.
//!
//! When a service does not answer, `SharedBackends::create` prints "not
//! run" and returns `None`, unless `CHATSTREAM_TEST_STRICT=1` (set by
//! `scripts/test.sh`): then it fails (`chatstream_test_support::services`).
use std::path::PathBuf;

use chatstream_kafka::{KafkaLogConfig, create_topics};
use chatstream_scylla::{ScyllaStore, ScyllaStoreConfig};
use chatstream_test_support::platform::Tenants;
use chatstream_test_support::services;
use tokio::process::Command;

pub use chatstream_test_support::platform::RoleProcess;
pub use chatstream_test_support::redis_server::OwnRedis;

/// A test's own topic, keyspace and Redis prefix on the shared services,
/// plus the tenants file every process reads.
pub struct SharedBackends {
    pub tenants: Tenants,
    pub topic: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl SharedBackends {
    /// Creates the topics (with `partitions`) and the keyspace, and a
    /// tenant with a fresh API key per id in `tenant_ids`.
    pub async fn create(partitions: u32, tenant_ids: &[String]) -> Option<Self> {
        let kafka = services::kafka()?;
        let cql = services::cql()?;
        let redis = services::redis()?;
        let suffix = format!("{:012x}", rand::random::<u64>() >> 16);
        let topic = format!("chatstream-test-cluster-{suffix}");
        let keyspace = format!("cluster_{suffix}");

        let mut log = KafkaLogConfig::new(&kafka, &topic);
        log.partitions = partitions;
        create_topics(&log).await.expect("create the test topics");
        let mut store = ScyllaStoreConfig::new([cql.clone()], &keyspace);
        store.await_schema_agreement = false;
        store.lightweight_transactions = false;
        ScyllaStore::apply_schema(&store)
            .await
            .expect("apply the store schema");

        let dir = tempfile::tempdir().expect("temp dir");
        let tenants = Tenants::new(tenant_ids.iter().cloned());
        let tenants_file = dir.path().join("tenants.yaml");
        tenants.write_file(&tenants_file, &[]);
        // A crashed group member must lose its partitions in seconds, not
        // librdkafka's default 45 s.
        let config_file = dir.path().join("chatstream.yaml");
        std::fs::write(
            &config_file,
            "kafka:\n  settings:\n    session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"1000\"\n",
        )
        .expect("write config");
        let env = [
            ("CHATSTREAM_CONFIG", config_file.display().to_string()),
            (
                "CHATSTREAM_TENANTS_FILE",
                tenants_file.display().to_string(),
            ),
            ("CHATSTREAM_LOG_BACKEND", "kafka".into()),
            ("KAFKA_BOOTSTRAP_SERVERS", kafka),
            ("CHATSTREAM_KAFKA_TOPIC", topic.clone()),
            // Groups of their own: tests running at once must not share a
            // consumer group (a rebalance in one would stall the other).
            ("CHATSTREAM_KAFKA_GROUP_PREFIX", format!("test-{suffix}-")),
            ("CHATSTREAM_LOG_PARTITIONS", partitions.to_string()),
            ("CHATSTREAM_STORE_BACKEND", "scylla".into()),
            ("SCYLLA_NODES", cql),
            ("CHATSTREAM_SCYLLA_KEYSPACE", keyspace),
            // The CQL test server has no peers table and ignores IF NOT EXISTS.
            ("CHATSTREAM_SCYLLA_AWAIT_SCHEMA_AGREEMENT", "false".into()),
            ("CHATSTREAM_SCYLLA_LIGHTWEIGHT_TRANSACTIONS", "false".into()),
            ("REDIS_URL", redis),
            ("CHATSTREAM_REDIS_KEY_PREFIX", format!("test-{suffix}")),
            ("CHATSTREAM_MOCK_TOKEN_DELAY_MS", "2".into()),
            // The driver's complaints about the test server's missing peers table are noise.
            ("LOG_LEVEL", "warn,scylla::cluster=off".into()),
        ]
        .map(|(name, value)| (name.to_owned(), value))
        .to_vec();
        Some(Self {
            tenants,
            topic,
            dir,
            env,
        })
    }

    /// Sets (or replaces) an environment variable of the processes started
    /// from now on.
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    pub fn key(&self, tenant: &str) -> &str {
        self.tenants.key(tenant)
    }

    /// Starts `chatstream gateway` and waits until it is ready.
    pub async fn gateway(&self) -> RoleProcess {
        self.launch(&["gateway", "--http-port", "0", "--grpc-port", "0"])
            .await
    }

    /// Starts `chatstream processor <kind>` and waits until it is ready.
    pub async fn processor(&self, kind: &str) -> RoleProcess {
        self.launch(&["processor", kind, "--http-port", "0"]).await
    }

    async fn launch(&self, args: &[&str]) -> RoleProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatstream"));
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path());
        RoleProcess::start(command, &args[..args.len().min(2)].join(" ")).await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}
