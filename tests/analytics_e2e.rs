//! Analytics end to end, against the real binary: turns through the
//! built-in mock model show up in the analytics API (HTTP and gRPC) of
//! their own tenant only, and `chatstream analytics` reads the same figures
//! from the data dir once `chatstream dev` has stopped (the embedded store
//! is one process's).
mod support;

use std::time::{Duration, Instant};

use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::pb::gateway::analytics_service_client::AnalyticsServiceClient;
use chatstream_test_support::platform::run_subcommand;
use serde_json::Value;
use support::Platform;

const WAIT: Duration = Duration::from_secs(30);
const QUERY: &str = "bucket=day&group_by=model";

async fn usage(platform: &Platform, tenant: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v2/analytics/usage?{QUERY}",
            platform.http_addr
        ))
        .bearer_auth(platform.key(tenant))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.expect("JSON")
}

/// Answers per model over gRPC, as `(model, answers)`.
async fn grpc_answers(platform: &Platform, tenant: &str) -> Vec<(String, u64)> {
    let mut client = AnalyticsServiceClient::connect(platform.grpc_channel_addr())
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::AnalyticsQuery {
        bucket: "day".into(),
        group_by: "model".into(),
        ..pb::AnalyticsQuery::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", platform.key(tenant))
            .parse()
            .expect("ascii"),
    );
    let report = client.get_usage(request).await.expect("usage").into_inner();
    report
        .totals
        .into_iter()
        .filter_map(|totals| {
            let answers = *totals.counters.get("answers")?;
            Some((totals.group, answers))
        })
        .collect()
}

fn total(answer: &Value, group: &str, metric: &str) -> u64 {
    answer["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .filter(|totals| totals["group"] == group)
        .filter_map(|totals| totals["counters"][metric].as_u64())
        .sum()
}

#[tokio::test]
async fn turns_are_counted_for_their_tenant_only_by_the_api_and_the_command_line() {
    let mut platform = Platform::start(&[]).await;
    let mut ws = platform.ws(platform.key("acme")).await;
    for text in ["hello", "how are you"] {
        ws.send_message(None, text).await;
    }

    // The answers are projected shortly after they are appended.
    let deadline = Instant::now() + WAIT;
    let acme = loop {
        let answer = usage(&platform, "acme").await;
        if total(&answer, "mock", "answers") == 2 {
            break answer;
        }
        assert!(Instant::now() < deadline, "not projected in time: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(total(&acme, "", "conversations_opened"), 2, "{acme}");
    assert_eq!(total(&acme, "", "user_messages"), 2, "{acme}");
    // The mock reports its tokens on the answer (no usage event).
    assert!(total(&acme, "mock", "tokens_out") > 0, "{acme}");

    let latency: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v2/analytics/latency?{QUERY}",
            platform.http_addr
        ))
        .bearer_auth(platform.key("acme"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
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

    let globex = usage(&platform, "globex").await;
    assert_eq!(globex["tenant_id"], "globex");
    assert_eq!(globex["totals"], Value::Array(Vec::new()), "{globex}");
    assert_eq!(
        grpc_answers(&platform, "acme").await,
        [("mock".to_owned(), 2)]
    );
    assert_eq!(grpc_answers(&platform, "globex").await, []);

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
