//! `chatstream dev` with configured model providers: two OpenAI-compatible
//! HTTP servers on loopback, the first failing. A client over WebSocket
//! sees the routing events, the fallback's answer and the usage event; a
//! tenant over its monthly budget is refused without a provider call.
mod support;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::HeaderMap;
use chatstream_schemas::ws::{ClientFrame, EventBody, ServerFrame};
use support::{Platform, Ws};

/// What a provider server saw: (authorization header, JSON body) per request.
type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An OpenAI-compatible `/v1/chat/completions` that fails with `status`,
/// or streams "from backup" with usage when `status` is 200.
async fn provider(status: u16) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let record = record.clone();
        async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let json = serde_json::from_slice(&body).unwrap_or_default();
            record.lock().unwrap().push((auth, json));
            if status != 200 {
                return axum::response::Response::builder()
                    .status(status)
                    .body(axum::body::Body::from(r#"{"error":{"message":"down"}}"#))
                    .unwrap();
            }
            let chunk = |text: &str| {
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
                )
            };
            let body = format!(
                "{}{}data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                chunk("from"),
                chunk(" backup"),
                serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                serde_json::json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}})
            );
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from(body))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

/// Sends `text` in a new conversation and returns the committed events of
/// that conversation up to the answer (an assistant message or an error).
async fn turn(ws: &mut Ws, text: &str) -> Vec<EventBody> {
    let (event_id, _, conversation_id) = ws.send_message(None, text).await;
    ws.send(&ClientFrame::Subscribe {
        request_id: None,
        conversation_id,
        after_position: None,
    })
    .await;
    let frames = ws
        .frames_until(|f| {
            matches!(f, ServerFrame::Event { event, .. } if event.causation_id == event_id
                && matches!(event.body, EventBody::AssistantMessage { .. } | EventBody::ErrorOccurred { .. }))
        })
        .await;
    frames
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Event { event, .. } if event.causation_id == event_id => Some(event.body),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn configured_providers_fall_back_account_and_enforce_budgets() {
    let (primary_url, primary_seen) = provider(503).await;
    let (backup_url, backup_seen) = provider(200).await;
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("chatstream.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"models:
  providers:
    primary: {{kind: openai, base_url: "{primary_url}"}}
    backup: {{kind: openai, base_url: "{backup_url}", api_key_env: CHATSTREAM_E2E_BACKUP_KEY}}
  catalog:
    main-model: {{provider: primary, model: gpt-main}}
    backup-model: {{provider: backup, model: gpt-backup, prompt_usd_per_million: 2.0, completion_usd_per_million: 10.0}}
  default_routing:
    candidates: [{{model: main-model}}, {{model: backup-model, weight: 0}}]
    retries: 0
"#
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();
    let platform = Platform::start_with_tenant_config(
        &[
            ("CHATSTREAM_CONFIG", config),
            ("CHATSTREAM_E2E_BACKUP_KEY", "sk-e2e-secret"),
        ],
        &[("globex", "    limits: {monthly_token_budget: 5}\n")],
    )
    .await;

    let mut acme = platform.ws(platform.key("acme")).await;
    let events = turn(&mut acme, "hello").await;
    let summary: Vec<String> = events
        .iter()
        .filter_map(|body| match body {
            EventBody::ModelRoutingDecided { model, reason, .. } => {
                Some(format!("decided {model} {reason}"))
            }
            EventBody::ModelAttemptFailed { error_code, .. } => {
                Some(format!("failed {error_code}"))
            }
            EventBody::ModelUsageRecorded {
                model,
                usage,
                cost_micros,
                ..
            } => Some(format!(
                "usage {model} {}+{} {cost_micros}",
                usage.prompt_tokens, usage.completion_tokens
            )),
            EventBody::AssistantMessage { model, text, .. } => {
                Some(format!("answer {model}: {text}"))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        summary,
        [
            "decided main-model primary",
            "failed server_error",
            "decided backup-model fallback",
            "usage backup-model 7+2 34",
            "answer backup-model: from backup",
        ]
    );
    let (auth, body) = backup_seen.lock().unwrap()[0].clone();
    assert_eq!(auth, "Bearer sk-e2e-secret", "the key from the env var");
    assert_eq!(body["model"], "gpt-backup");
    assert_eq!(body["messages"][0]["content"], "hello");
    assert_eq!(primary_seen.lock().unwrap().len(), 1);

    // globex may spend 5 tokens a month: one call (capped at 5), then no more.
    let mut globex = platform.ws(platform.key("globex")).await;
    let first = turn(&mut globex, "one").await;
    assert!(matches!(
        first.last(),
        Some(EventBody::AssistantMessage { .. })
    ));
    let second = turn(&mut globex, "two").await;
    assert!(
        matches!(second.last(), Some(EventBody::ErrorOccurred { code, .. }) if code == "budget_exceeded"),
        "{second:?}"
    );
    let calls = backup_seen.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        2,
        "acme's and globex's first; none over budget"
    );
    assert_eq!(calls[1].1["max_tokens"], 5);
}

#[test]
fn a_router_config_it_cannot_follow_stops_dev_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chatstream.yaml");
    std::fs::write(
        &config,
        "models:\n  providers: {p: {kind: openai, base_url: \"http://127.0.0.1:1/v1\", api_key_env: CHATSTREAM_E2E_SURELY_UNSET_KEY}}\n  catalog: {gpt: {provider: p}}\n  default_routing: {candidates: [{model: gpt}]}\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatstream"))
        .args(["dev", "--http-port", "0", "--grpc-port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("CHATSTREAM_CONFIG", &config)
        .env_remove("CHATSTREAM_E2E_SURELY_UNSET_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot start the router")
            && stderr.contains("CHATSTREAM_E2E_SURELY_UNSET_KEY"),
        "{stderr}"
    );
}
