//! The OpenAI-compatible API of a gateway whose answers cannot come: a real
//! gateway on the embedded backends, over real HTTP, with no router
//! processor behind it. Proves 503 before readiness and 504 (whole and
//! streamed) when no reply comes in time; the full flow with a router runs
//! in the workspace's tests/openai_e2e.rs.
mod support;

use std::time::{Duration, Instant};

use chatstream_gateway::EdgeLimits;
use serde_json::{Value, json};
use support::{MAX_MESSAGE_BYTES, TestGateway, start_gateway};

const REPLY_TIMEOUT: Duration = Duration::from_millis(300);

async fn start_gateway_without_router() -> TestGateway {
    start_gateway(EdgeLimits {
        reply_timeout: REPLY_TIMEOUT,
        ..EdgeLimits::for_max_message_bytes(MAX_MESSAGE_BYTES)
    })
    .await
}

async fn post_completion(gateway: &TestGateway, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", gateway.addr))
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
