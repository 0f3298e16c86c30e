//! The OpenAI-compatible API of a gateway whose answers cannot come: a real
//! gateway on the embedded backends, over real HTTP, with no router
//! processor behind it. Proves 503 before readiness and 504 (whole and
//! streamed) when no reply comes in time; the full flow with a router runs
//! in the workspace's tests/openai_e2e.rs.
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstream_config::tenants::{TenantRegistry, generate_api_key, hash_api_key};
use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::ratelimit::connections::in_process::InProcessConnectionCounter;
use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_gateway::chat::ChatLimits;
use chatstream_gateway::connections::ConnectionLimits;
use chatstream_gateway::{ChatCore, EdgeLimits, Gateway, Readiness};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const REPLY_TIMEOUT: Duration = Duration::from_millis(300);

struct TestGateway {
    base_url: String,
    api_key: String,
    readiness: Readiness,
    shutdown: CancellationToken,
    _data_dir: tempfile::TempDir,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_gateway_without_router() -> TestGateway {
    let data_dir = tempfile::tempdir().unwrap();
    let api_key = generate_api_key();
    let tenants = TenantRegistry::parse(&format!(
        "tenants:\n  - id: acme\n    api_keys:\n      - id: test\n        sha256: {}\n",
        hash_api_key(&api_key)
    ))
    .unwrap();
    let core = ChatCore::new(
        Arc::new(EmbeddedLog::open(data_dir.path(), 1).unwrap()),
        Arc::new(EmbeddedStore::open(data_dir.path()).unwrap()),
        Arc::new(InProcessFanOut::new()),
        Arc::new(InProcessRateLimiter::new()),
        ChatLimits {
            max_message_bytes: 1024,
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
        limits: EdgeLimits {
            reply_timeout: REPLY_TIMEOUT,
            ..EdgeLimits::for_max_message_bytes(1024)
        },
        connections: ConnectionLimits::new(Arc::new(InProcessConnectionCounter::new()), None),
        models: Default::default(),
        shutdown: shutdown.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(chatstream_gateway::http::serve(gateway, listener));
    TestGateway {
        base_url,
        api_key,
        readiness,
        shutdown,
        _data_dir: data_dir,
    }
}

async fn post_completion(gateway: &TestGateway, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", gateway.base_url))
        .bearer_auth(&gateway.api_key)
        .json(&json!({
            "model": "mock",
            "stream": stream,
            "messages": [{"role": "user", "content": "anyone there?"}],
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn before_readiness_completions_are_refused_with_503() {
    let gateway = start_gateway_without_router().await;
    let response = post_completion(&gateway, false).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], "unavailable");
}

#[tokio::test]
async fn a_reply_that_does_not_come_in_time_is_504() {
    let gateway = start_gateway_without_router().await;
    gateway.readiness.set_ready();

    let started = Instant::now();
    let response = post_completion(&gateway, false).await;
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() >= REPLY_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recorded in conversation"),
        "{body}"
    );

    // Streamed: the response has started, so the timeout is an error event
    // that ends the stream, without [DONE].
    let response = post_completion(&gateway, true).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    let role: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    let error: Value = serde_json::from_str(events[1].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["error"]["code"], "timeout", "{text}");
}
