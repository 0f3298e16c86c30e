//! Runs chatstream as separate role processes (`chatstream gateway`,
//! `chatstream processor <kind>`) on shared backends: the Kafka-protocol
//! broker at `CHATSTREAM_TEST_KAFKA`, the CQL server at
//! `CHATSTREAM_TEST_CQL` and the Redis at `CHATSTREAM_TEST_REDIS`, with a
//! fresh topic, keyspace and key prefix per test.
//!
//! When a service is not given, `SharedBackends::create` prints "not run"
//! and returns `None`, unless `CHATSTREAM_TEST_STRICT=1` (set by
//! `scripts/test.sh`): then it fails.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chatstream_config::tenants::generate_api_key;
use chatstream_kafka::{KafkaLogConfig, create_topics};
use chatstream_scylla::{ScyllaStore, ScyllaStoreConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{TestTenant, WAIT, http_get, write_tenants_file};

/// A test's own topic, keyspace and Redis prefix on the shared services,
/// plus the tenants file every process reads.
pub struct SharedBackends {
    pub tenants: Vec<TestTenant>,
    pub topic: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

fn strict() -> bool {
    std::env::var("CHATSTREAM_TEST_STRICT").is_ok_and(|value| value == "1")
}

fn service(variable: &str) -> Option<String> {
    let value = std::env::var(variable).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        let notice = format!("{variable} is not set (scripts/test.sh starts the test services)");
        assert!(!strict(), "{notice}");
        eprintln!("not run: {notice}");
    }
    value
}

impl SharedBackends {
    /// Creates the topics (with `partitions`) and the keyspace, and a
    /// tenant with a fresh API key per id in `tenant_ids`.
    pub async fn create(partitions: u32, tenant_ids: &[String]) -> Option<Self> {
        let kafka = service("CHATSTREAM_TEST_KAFKA")?;
        let cql = service("CHATSTREAM_TEST_CQL")?;
        let redis = service("CHATSTREAM_TEST_REDIS")?;
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
        let tenants: Vec<TestTenant> = tenant_ids
            .iter()
            .map(|id| TestTenant {
                id: id.clone(),
                api_key: generate_api_key(),
            })
            .collect();
        let tenants_file = dir.path().join("tenants.yaml");
        write_tenants_file(&tenants_file, &tenants);
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
        &self
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .expect("known tenant")
            .api_key
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_chatstream"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start chatstream");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (http_addr, grpc_addr) = tokio::time::timeout(WAIT, async {
            let mut grpc = None;
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("gRPC") {
                    grpc = rest.split_whitespace().next().map(str::to_owned);
                }
                if let Some(rest) = line.strip_prefix("probes") {
                    let http = rest
                        .trim()
                        .strip_prefix("http://")
                        .and_then(|a| a.split('/').next())
                        .expect("probe address")
                        .to_owned();
                    return (http, grpc);
                }
            }
            panic!("chatstream {args:?} exited before printing its addresses");
        })
        .await
        .unwrap_or_else(|_| panic!("chatstream {args:?} printed its addresses in time"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let process = RoleProcess {
            child,
            http_addr,
            grpc_addr,
            role: args[..args.len().min(2)].join(" "),
        };
        process.wait_ready().await;
        process
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// One running role process.
pub struct RoleProcess {
    child: Child,
    /// Probes (and, for a gateway, WebSocket) address.
    pub http_addr: String,
    /// The gateway's gRPC address.
    pub grpc_addr: Option<String>,
    role: String,
}

impl RoleProcess {
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = http_get(&self.http_addr, "/ready").await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not become ready",
                self.role
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: a crash, with no chance to commit or leave the group.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(&mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        assert!(exit.success(), "{} exited with {exit:?}", self.role);
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = http_get(&self.http_addr, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }
}

/// A `redis-server` of the test's own on a free port (never the shared
/// one), with nothing on disk, so a test can take it away and bring it back.
pub struct OwnRedis {
    port: u16,
    process: Option<Child>,
}

impl OwnRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Self {
            port,
            process: None,
        };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        let process = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (scripts/test.sh installs it)");
        self.process = Some(process);
        let address = format!("127.0.0.1:{}", self.port);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server answers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill().await.expect("kill redis-server");
        }
    }
}
