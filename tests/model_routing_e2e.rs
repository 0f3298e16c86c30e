//! `chatstream dev` with configured model providers: two OpenAI-compatible
//! HTTP servers on loopback, the first failing. A client over WebSocket
//! sees the routing events, the fallback's answer and the usage event; a
//! tenant over its monthly budget is refused without a provider call. The
//! same turns show in each tenant's analytics and, as GenAI operations, on
//! `/metrics`.
mod support;

use chatstream_schemas::ws::EventBody;
use chatstream_test_support::fake_provider::{ProviderServer, Reply, openai_stream};
use chatstream_test_support::turns::send_and_read_turn;
use support::analytics::{analytics_json, projected_usage, total};
use support::{Platform, Ws, http_get};

/// An OpenAI-compatible provider that fails with `status`, or streams
/// "from backup" with usage when `status` is 200: its `/v1` URL and the
/// server, which records every request.
async fn provider(status: u16) -> (String, ProviderServer) {
    let server = ProviderServer::start().await;
    server.set_default(match status {
        200 => Reply::sse(&openai_stream(&["from", " backup"], 7)),
        _ => Reply::status(status, r#"{"error":{"message":"down"}}"#),
    });
    (format!("{}/v1", server.base_url()), server)
}

/// Sends `text` in a new conversation and returns the bodies of the
/// committed events it caused, up to the answer (an assistant message or
/// an error).
async fn turn(ws: &mut Ws, text: &str) -> Vec<EventBody> {
    let turn = send_and_read_turn(ws, text).await;
    turn.caused_by_the_message()
        .into_iter()
        .map(|event| event.body)
        .collect()
}

#[tokio::test]
async fn configured_providers_fall_back_account_and_enforce_budgets() {
    let (primary_url, primary) = provider(503).await;
    let (backup_url, backup) = provider(200).await;
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
    let sent = backup.requests()[0].clone();
    assert_eq!(
        sent.headers["authorization"], "Bearer sk-e2e-secret",
        "the key from the env var"
    );
    assert_eq!(sent.body["model"], "gpt-backup");
    assert_eq!(sent.body["messages"][0]["content"], "hello");
    assert_eq!(primary.requests().len(), 1);

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
    let calls = backup.requests();
    assert_eq!(
        calls.len(),
        2,
        "acme's and globex's first; none over budget"
    );
    assert_eq!(calls[1].body["max_tokens"], 5);

    // Analytics: the tokens and cost of the usage event, the fallback, and
    // globex's refusal, each under its own tenant.
    let acme = projected_usage(&platform, "acme", |usage| {
        total(usage, "backup-model", "answers") == 1
    })
    .await;
    for (model, metric, value) in [
        ("backup-model", "tokens_in", 7),
        ("backup-model", "tokens_out", 2),
        ("backup-model", "cost_micros", 34),
        ("backup-model", "model_fallbacks", 1),
        ("main-model", "model_attempts", 1),
        ("main-model", "model_attempt_failures", 1),
    ] {
        assert_eq!(
            total(&acme, model, metric),
            value,
            "{model} {metric}: {acme}"
        );
    }
    let globex = projected_usage(&platform, "globex", |usage| {
        total(usage, "", "budget_refusals") == 1
    })
    .await;
    assert_eq!(total(&globex, "backup-model", "answers"), 1, "{globex}");
    assert_eq!(total(&globex, "", "user_messages"), 2, "{globex}");
    let (status, latency) = analytics_json(&platform, "acme", "latency").await;
    assert_eq!(status, 200);
    assert!(
        latency["latencies"]
            .as_array()
            .expect("latencies")
            .iter()
            .any(|row| {
                row["metric"] == "time_to_first_token_ms" && row["group"] == "backup-model"
            }),
        "{latency}"
    );

    // GenAI metrics: the failed call and the streamed one.
    let (status, metrics) = http_get(&platform.http_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for expected in [
        "gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"primary\",gen_ai_request_model=\"gpt-main\",gen_ai_response_model=\"gpt-main\",error_type=\"server_error\",le=",
        "gen_ai_client_token_usage_bucket{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"backup\",gen_ai_request_model=\"gpt-backup\",gen_ai_response_model=\"gpt-backup\",gen_ai_token_type=\"input\",le=",
        "gen_ai_client_operation_time_to_first_chunk_seconds_bucket{gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"backup\",",
    ] {
        assert!(metrics.contains(expected), "no `{expected}` on /metrics");
    }
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
