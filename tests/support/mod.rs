//! Starts the real `chatstream` binary (`chatstream dev`) for end-to-end
//! tests; the clients that talk to it over real sockets (WebSocket, gRPC,
//! HTTP) and the service lookups come from `chatstream-test-support`.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

use chatstream_config::tenants::{generate_api_key, hash_api_key};
use chatstream_test_support::grpc::GrpcClient;
use chatstream_test_support::platform::{RoleProcess, Tenants};
use tokio::process::Command;

pub use chatstream_test_support::grpc::{authed, conversation_events, grpc_client};
pub use chatstream_test_support::http::{http_get, http_request};
pub use chatstream_test_support::platform::WAIT;
pub use chatstream_test_support::ws::{Ws, connect_ws, connect_ws_anonymous, send_frame};

pub mod analytics;
pub mod cluster;

/// The platform under test: a data dir and, while running, the process.
pub struct Platform {
    pub data_dir: tempfile::TempDir,
    pub tenants: Tenants,
    /// A key in the tenants file's `operator_keys`.
    pub operator_key: String,
    env: Vec<(String, String)>,
    process: Option<RoleProcess>,
    pub http_addr: String,
    pub grpc_addr: String,
}

impl Platform {
    /// Starts `chatstream dev` with tenants `acme` and `globex` and extra env vars.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with_tenant_config(env, &[]).await
    }

    /// Like `start`, with extra YAML lines in some tenants' entries
    /// (`(tenant id, lines indented by four spaces)`), e.g. `mcp_servers`.
    pub async fn start_with_tenant_config(env: &[(&str, &str)], extras: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let tenants = Tenants::new(["acme", "globex"]);
        let tenants_file = data_dir.path().join("test-tenants.yaml");
        tenants.write_file(&tenants_file, extras);
        let operator_key = generate_api_key();
        let operators = format!(
            "operator_keys:\n  - id: ops\n    sha256: {}\n",
            hash_api_key(&operator_key)
        );
        let mut file = std::fs::read_to_string(&tenants_file).expect("tenants file");
        file += &operators;
        std::fs::write(&tenants_file, file).expect("write tenants file");
        let mut platform = Self {
            data_dir,
            tenants,
            operator_key,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            process: None,
            http_addr: String::new(),
            grpc_addr: String::new(),
        };
        platform.launch().await;
        platform
    }

    pub fn key(&self, tenant: &str) -> &str {
        self.tenants.key(tenant)
    }

    async fn launch(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chatstream"));
        command
            .arg("dev")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--tenants")
            .arg(self.data_dir.path().join("test-tenants.yaml"))
            .arg("--http-port")
            .arg("0")
            .arg("--grpc-port")
            .arg("0")
            .env("LOG_LEVEL", "warn")
            .env("CHATSTREAM_MOCK_TOKEN_DELAY_MS", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(self.data_dir.path());
        let process = RoleProcess::start(command, "dev").await;
        self.http_addr = process.http_addr.clone();
        self.grpc_addr = process.grpc_addr.clone().expect("dev serves gRPC");
        self.process = Some(process);
    }

    /// Kills the process without warning (SIGKILL), like a crash.
    pub async fn kill(&mut self) {
        self.process.take().expect("running").kill().await;
    }

    /// Stops with SIGTERM and waits for a clean exit.
    pub async fn stop(&mut self) {
        self.process.take().expect("running").stop().await;
    }

    pub async fn restart(&mut self) {
        self.launch().await;
    }

    pub async fn ws(&self, api_key: &str) -> Ws {
        connect_ws(&self.http_addr, api_key).await
    }

    /// A WebSocket connection that has not authenticated yet.
    pub async fn ws_anonymous(&self) -> Ws {
        connect_ws_anonymous(&self.http_addr).await
    }

    pub async fn grpc(&self) -> GrpcClient {
        grpc_client(&self.grpc_addr).await
    }

    pub fn grpc_channel_addr(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }
}
