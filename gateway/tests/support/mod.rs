//! A real gateway for the crate's tests: the embedded backends in a temp
//! dir, two tenants (`acme`, `globex`) with fresh API keys, and the HTTP
//! edge (WebSocket, OpenAI-compatible and analytics APIs, probes) and the
//! gRPC edge on free loopback ports, with no processor behind it.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;

use chatstream_config::tenants::{TenantRegistry, generate_api_key, hash_api_key};
use chatstream_core::analytics::embedded::EmbeddedAnalytics;
use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::ratelimit::connections::in_process::InProcessConnectionCounter;
use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_gateway::chat::ChatLimits;
use chatstream_gateway::connections::ConnectionLimits;
use chatstream_gateway::{ChatCore, EdgeLimits, Gateway, Readiness};
use tokio_util::sync::CancellationToken;

/// Largest user message of the test tenant.
pub const MAX_MESSAGE_BYTES: usize = 1024;

pub struct TestGateway {
    /// `host:port` of the HTTP edge.
    pub addr: String,
    /// `host:port` of the gRPC edge.
    pub grpc_addr: String,
    /// The key of tenant `acme`.
    pub api_key: String,
    /// The key of tenant `globex`, a second tenant.
    pub other_api_key: String,
    pub readiness: Readiness,
    /// The analytics projection the analytics API reads.
    pub analytics: Arc<EmbeddedAnalytics>,
    shutdown: CancellationToken,
    _data_dir: tempfile::TempDir,
}

impl TestGateway {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/v2/chat/ws", self.addr)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a gateway with `limits` at the edge; it is not ready until the
/// test says so (`readiness.set_ready()`).
pub async fn start_gateway(limits: EdgeLimits) -> TestGateway {
    let data_dir = tempfile::tempdir().unwrap();
    let (api_key, other_api_key) = (generate_api_key(), generate_api_key());
    let tenants = TenantRegistry::parse(&format!(
        "tenants:\n  - id: acme\n    api_keys:\n      - id: test\n        sha256: {}\n\
         \x20 - id: globex\n    api_keys:\n      - id: test\n        sha256: {}\n",
        hash_api_key(&api_key),
        hash_api_key(&other_api_key)
    ))
    .unwrap();
    let analytics = Arc::new(EmbeddedAnalytics::open(data_dir.path()).unwrap());
    let core = ChatCore::new(
        Arc::new(EmbeddedLog::open(data_dir.path(), 1).unwrap()),
        Arc::new(EmbeddedStore::open(data_dir.path()).unwrap()),
        Arc::new(InProcessFanOut::new()),
        Arc::new(InProcessRateLimiter::new()),
        ChatLimits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            requests_per_second: None,
            burst: None,
        },
    );
    let readiness = Readiness::default();
    let shutdown = CancellationToken::new();
    let gateway = Gateway {
        core: Arc::new(core),
        tenants: Arc::new(tenants),
        metrics: None,
        readiness: readiness.clone(),
        limits,
        connections: ConnectionLimits::new(
            Arc::new(InProcessConnectionCounter::new()),
            None,
            Arc::default(),
        ),
        models: Default::default(),
        analytics: analytics.clone(),
        shutdown: shutdown.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = grpc_listener.local_addr().unwrap().to_string();
    tokio::spawn(chatstream_gateway::grpc::serve(
        gateway.clone(),
        grpc_listener,
    ));
    tokio::spawn(chatstream_gateway::http::serve(gateway, listener));
    TestGateway {
        addr,
        grpc_addr,
        api_key,
        other_api_key,
        readiness,
        analytics,
        shutdown,
        _data_dir: data_dir,
    }
}
