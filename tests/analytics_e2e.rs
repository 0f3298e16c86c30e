//! Analytics end to end, against the real binary: turns through the
//! built-in mock model show up in the analytics API (HTTP and gRPC) of
//! their own tenant only, and `chatstream analytics` reads the same figures
//! from the data dir once `chatstream dev` has stopped (the embedded store
//! is one process's).
mod support;

use std::time::Duration;

use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::pb::gateway::analytics_service_client::AnalyticsServiceClient;
use chatstream_test_support::platform::run_subcommand;
use serde_json::Value;
use support::Platform;
use support::analytics::{analytics_json, projected_usage, total};

const WAIT: Duration = Duration::from_secs(30);

/// Answers per model over gRPC with `key`, naming `tenant_id` (empty:
/// the key's own tenant), as `(model, answers)`.
async fn grpc_answers_as(
    platform: &Platform,
    key: &str,
    tenant_id: &str,
) -> Result<Vec<(String, u64)>, tonic::Status> {
    let mut client = AnalyticsServiceClient::connect(platform.grpc_channel_addr())
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::AnalyticsQuery {
        bucket: "day".into(),
        group_by: "model".into(),
        tenant_id: tenant_id.into(),
        ..pb::AnalyticsQuery::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    let report = client.get_usage(request).await?.into_inner();
    Ok(report
        .totals
        .into_iter()
        .filter_map(|totals| {
            let answers = *totals.counters.get("answers")?;
            Some((totals.group, answers))
        })
        .collect())
}

/// The tenant's answers per model over gRPC, with its own key.
async fn grpc_answers(platform: &Platform, tenant: &str) -> Vec<(String, u64)> {
    grpc_answers_as(platform, platform.key(tenant), "")
        .await
        .expect("usage")
}

/// `GET /api/v2/analytics/usage?tenant=...` with `key`: status and answer.
/// `GET {path}` on the gateway with `key`: status and JSON answer.
async fn get_with_key(platform: &Platform, key: &str, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", platform.http_addr))
        .bearer_auth(key)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The usage of `tenant`, asked for by name with `key`.
async fn usage_of_named_tenant(platform: &Platform, key: &str, tenant: &str) -> (u16, Value) {
    let path = format!("/api/v2/analytics/usage?bucket=day&group_by=model&tenant={tenant}");
    get_with_key(platform, key, &path).await
}

#[tokio::test]
async fn turns_are_counted_for_their_tenant_only_by_the_api_and_the_command_line() {
    let mut platform = Platform::start(&[]).await;
    let mut ws = platform.ws(platform.key("acme")).await;
    for text in ["hello", "how are you"] {
        ws.send_message(None, text).await;
    }

    // The answers are projected shortly after they are appended.
    let acme = projected_usage(&platform, "acme", |usage| {
        total(usage, "mock", "answers") == 2
    })
    .await;
    assert_eq!(total(&acme, "", "conversations_opened"), 2, "{acme}");
    assert_eq!(total(&acme, "", "user_messages"), 2, "{acme}");
    // The mock reports its tokens on the answer (no usage event).
    assert!(total(&acme, "mock", "tokens_out") > 0, "{acme}");

    let (status, latency) = analytics_json(&platform, "acme", "latency").await;
    assert_eq!(status, 200, "{latency}");
    let durations = &latency["latencies"][0];
    assert_eq!(
        (
            &durations["metric"],
            &durations["group"],
            &durations["count"]
        ),
        (
            &Value::from("answer_duration_ms"),
            &Value::from("mock"),
            &Value::from(2)
        ),
        "{latency}"
    );

    let (_, globex) = analytics_json(&platform, "globex", "usage").await;
    assert_eq!(globex["tenant_id"], "globex");
    assert_eq!(globex["totals"], Value::Array(Vec::new()), "{globex}");
    assert_eq!(
        grpc_answers(&platform, "acme").await,
        [("mock".to_owned(), 2)]
    );
    assert_eq!(grpc_answers(&platform, "globex").await, []);

    // An operator key reads any tenant it names; a tenant key naming
    // another tenant is refused, by both edges.
    let operator = platform.operator_key.clone();
    let (status, as_operator) = usage_of_named_tenant(&platform, &operator, "acme").await;
    assert_eq!(status, 200, "{as_operator}");
    assert_eq!(as_operator["totals"], acme["totals"]);
    let (status, _) = usage_of_named_tenant(&platform, &operator, "globex").await;
    assert_eq!(status, 200);
    let (status, refused) = usage_of_named_tenant(&platform, platform.key("globex"), "acme").await;
    assert_eq!(
        (status, &refused["error"]["code"]),
        (403, &Value::from("forbidden")),
        "{refused}"
    );
    let (status, unnamed) = get_with_key(&platform, &operator, "/api/v2/analytics/usage").await;
    assert_eq!(status, 400, "an operator must name the tenant: {unnamed}");
    assert_eq!(
        grpc_answers_as(&platform, &operator, "acme")
            .await
            .expect("usage"),
        [("mock".to_owned(), 2)]
    );
    let denied = grpc_answers_as(&platform, platform.key("globex"), "acme")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    // An operator key is not a tenant's: it cannot chat.
    let (status, _) = get_with_key(&platform, &operator, "/v1/models").await;
    assert_eq!(status, 401);

    platform.stop().await;
    let data_dir = platform.data_dir.path().to_str().expect("utf-8 path");
    let cli = |tenant: &'static str, json: bool| {
        let mut args = vec![
            "usage",
            "--tenant",
            tenant,
            "--data-dir",
            data_dir,
            "--bucket",
            "day",
            "--group-by",
            "model",
        ];
        if json {
            args.push("--json");
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output =
                run_subcommand(env!("CARGO_BIN_EXE_chatstream"), "analytics", &args, WAIT).await;
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("utf-8")
        }
    };
    let from_cli: Value = serde_json::from_str(&cli("acme", true).await).expect("JSON");
    assert_eq!(
        from_cli["totals"], acme["totals"],
        "the CLI and the API agree"
    );
    let table = cli("acme", false).await;
    assert!(
        table.lines().any(|line| line.starts_with("total")
            && line.contains("mock")
            && line.contains("answers")
            && line.trim_end().ends_with('2')),
        "{table}"
    );
    assert!(
        cli("globex", false).await.contains("(nothing recorded)"),
        "globex has no figures"
    );
}
