//! The analytics API of a real gateway, over real HTTP and gRPC: answers
//! come from the caller's own tenant only, percentiles are merged across
//! buckets, both edges give the same figures, and every bad parameter is a
//! 400 (or INVALID_ARGUMENT) that names it. The projection is filled
//! directly (the processor's own tests cover what events add).
mod support;

use chatstream_core::analytics::{AnalyticsStore, Observation, Series};
use chatstream_gateway::EdgeLimits;
use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::pb::gateway::analytics_service_client::AnalyticsServiceClient;
use serde_json::Value;
use support::{MAX_MESSAGE_BYTES, TestGateway, start_gateway};

/// 2026-12-01T23:59:30Z and the midnight after it.
const BEFORE_MIDNIGHT: i64 = 1_796_169_570_000;
const MIDNIGHT: i64 = BEFORE_MIDNIGHT + 30_000;
const RANGE: &str = "from=2026-12-01T00:00:00Z&to=2026-12-03T00:00:00Z";

fn answer(at_ms: i64, model: &str, tokens_in: u64, duration_ms: u64) -> Observation {
    let mut observation = Observation::at(at_ms);
    observation.count(Series::new("answers", [("model", model)]), 1);
    observation.count(
        Series::new("tokens_in", [("provider", "openai"), ("model", model)]),
        tokens_in,
    );
    observation.latency(
        Series::new("answer_duration_ms", [("model", model)]),
        duration_ms,
    );
    observation
}

async fn started() -> TestGateway {
    let gateway = start_gateway(EdgeLimits::for_max_message_bytes(MAX_MESSAGE_BYTES)).await;
    // gRPC calls are refused until the gateway is ready; HTTP ones need not wait.
    gateway.readiness.set_ready();
    let figures = [
        (
            "acme",
            "a1",
            answer(BEFORE_MIDNIGHT, "gpt-4o-mini", 100, 1_000),
        ),
        (
            "acme",
            "a2",
            answer(MIDNIGHT + 5_000, "gpt-4o-mini", 50, 3_000),
        ),
        (
            "acme",
            "a3",
            answer(MIDNIGHT + 6_000, "claude-haiku", 7, 2_000),
        ),
        (
            "globex",
            "g1",
            answer(MIDNIGHT + 1_000, "secret-model", 999, 9_000),
        ),
    ];
    for (tenant, id, observation) in &figures {
        gateway
            .analytics
            .apply(tenant, id, observation)
            .await
            .expect("apply");
    }
    gateway
}

async fn get(gateway: &TestGateway, key: Option<&str>, path_and_query: &str) -> (u16, Value) {
    let mut request =
        reqwest::Client::new().get(format!("http://{}{path_and_query}", gateway.addr));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

fn totals_of(answer: &Value, group: &str, metric: &str) -> Option<u64> {
    answer["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .find(|totals| totals["group"] == group)
        .and_then(|totals| totals["counters"][metric].as_u64())
}

#[tokio::test]
async fn usage_is_per_bucket_and_group_with_totals() {
    let gateway = started().await;
    let (status, body) = get(
        &gateway,
        Some(&gateway.api_key),
        &format!("/api/v2/analytics/usage?{RANGE}&bucket=day&group_by=model"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(body["bucket"], "day");
    assert_eq!(body["from"], "2026-12-01T00:00:00Z");
    assert_eq!(totals_of(&body, "gpt-4o-mini", "tokens_in"), Some(150));
    assert_eq!(totals_of(&body, "claude-haiku", "answers"), Some(1));
    let rows: Vec<(String, String, u64)> = body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row["bucket_start"].as_str().unwrap().to_owned(),
                row["group"].as_str().unwrap().to_owned(),
                row["counters"]["tokens_in"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("2026-12-01T00:00:00Z".into(), "gpt-4o-mini".into(), 100),
            ("2026-12-02T00:00:00Z".into(), "claude-haiku".into(), 7),
            ("2026-12-02T00:00:00Z".into(), "gpt-4o-mini".into(), 50),
        ],
        "split at midnight UTC"
    );
}

#[tokio::test]
async fn latency_percentiles_merge_every_bucket_of_the_range() {
    let gateway = started().await;
    let (status, body) = get(
        &gateway,
        Some(&gateway.api_key),
        &format!("/api/v2/analytics/latency?{RANGE}&bucket=minute&from=2026-12-01T12:00:00Z&to=2026-12-02T12:00:00Z"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let latencies = body["latencies"].as_array().expect("latencies");
    assert_eq!(latencies.len(), 1, "{body}");
    let row = &latencies[0];
    assert_eq!(row["metric"], "answer_duration_ms");
    assert_eq!(row["count"], 3, "three minute buckets merged");
    for (name, expected) in [
        ("p50", 2_000),
        ("p90", 3_000),
        ("p99", 3_000),
        ("p99_9", 3_000),
    ] {
        let got = row["percentiles_ms"][name].as_u64().expect(name);
        assert!(got.abs_diff(expected) <= expected / 500, "{name}: {got}");
    }
}

#[tokio::test]
async fn a_tenant_never_sees_another_tenants_figures() {
    let gateway = started().await;
    for path in ["usage", "latency"] {
        let (status, body) = get(
            &gateway,
            Some(&gateway.other_api_key),
            &format!("/api/v2/analytics/{path}?{RANGE}&bucket=day&group_by=model"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["tenant_id"], "globex");
        let text = body.to_string();
        assert!(
            !text.contains("gpt-4o-mini") && !text.contains("claude-haiku"),
            "{text}"
        );
        assert!(text.contains("secret-model"), "its own figures: {text}");
    }
    let (_, acme) = get(
        &gateway,
        Some(&gateway.api_key),
        &format!("/api/v2/analytics/usage?{RANGE}&bucket=day&group_by=model"),
    )
    .await;
    assert!(!acme.to_string().contains("secret-model"), "{acme}");
    // A tenant's key naming another tenant is refused (only operator keys
    // name tenants), and so is a misspelt parameter.
    for (parameter, status_expected, code) in [
        ("tenant", 403, "forbidden"),
        ("tenant_id", 400, "invalid_parameter"),
    ] {
        let (status, body) = get(
            &gateway,
            Some(&gateway.other_api_key),
            &format!("/api/v2/analytics/usage?{RANGE}&{parameter}=acme"),
        )
        .await;
        assert_eq!(
            (status, &body["error"]["code"], &body["error"]["parameter"]),
            (status_expected, &Value::from(code), &Value::from(parameter)),
            "{body}"
        );
        assert!(!body.to_string().contains("gpt-4o-mini"), "{body}");
    }
    let status = grpc_usage(
        &gateway,
        &gateway.other_api_key,
        pb::AnalyticsQuery {
            tenant_id: "acme".into(),
            ..day_by_model()
        },
    )
    .await
    .expect_err("another tenant's figures");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let gateway = started().await;
    for key in [None, Some("cs_not-a-key")] {
        let (status, body) = get(&gateway, key, "/api/v2/analytics/usage").await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
    }
}

#[tokio::test]
async fn bad_parameters_are_400_and_named() {
    let gateway = started().await;
    for (query, parameter) in [
        ("bucket=week", "bucket"),
        ("group_by=colour", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from"),
        (
            "from=2026-10-01T00:00:00Z&to=2026-12-01T00:00:00Z&bucket=minute",
            "bucket",
        ),
        ("form=2026-12-01T00:00:00Z", "form"),
    ] {
        for path in ["usage", "latency"] {
            let (status, body) = get(
                &gateway,
                Some(&gateway.api_key),
                &format!("/api/v2/analytics/{path}?{query}"),
            )
            .await;
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!(body["error"]["code"], "invalid_parameter", "{query}");
            assert_eq!(body["error"]["parameter"], parameter, "{query}: {body}");
            assert!(
                !body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{query}: says why"
            );
        }
    }
}

async fn grpc_usage(
    gateway: &TestGateway,
    key: &str,
    query: pb::AnalyticsQuery,
) -> Result<pb::UsageReport, tonic::Status> {
    let mut client = AnalyticsServiceClient::connect(format!("http://{}", gateway.grpc_addr))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(query);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("ascii"),
    );
    client
        .get_usage(request)
        .await
        .map(tonic::Response::into_inner)
}

fn day_by_model() -> pb::AnalyticsQuery {
    pb::AnalyticsQuery {
        from: "2026-12-01T00:00:00Z".into(),
        to: "2026-12-03T00:00:00Z".into(),
        bucket: "day".into(),
        group_by: "model".into(),
        ..pb::AnalyticsQuery::default()
    }
}

#[tokio::test]
async fn grpc_gives_the_http_answers_for_the_callers_tenant_only() {
    let gateway = started().await;
    let (_, http) = get(
        &gateway,
        Some(&gateway.api_key),
        &format!("/api/v2/analytics/usage?{RANGE}&bucket=day&group_by=model"),
    )
    .await;
    let report = grpc_usage(&gateway, &gateway.api_key, day_by_model())
        .await
        .expect("usage over gRPC");
    let range = report.range.as_ref().expect("range");
    assert_eq!(
        (range.tenant_id.as_str(), range.bucket.as_str()),
        ("acme", "day")
    );
    let grpc_totals: Vec<(String, u64)> = report
        .totals
        .iter()
        .map(|totals| (totals.group.clone(), totals.counters["tokens_in"]))
        .collect();
    let http_totals: Vec<(String, u64)> = http["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .map(|totals| {
            (
                totals["group"].as_str().unwrap().to_owned(),
                totals["counters"]["tokens_in"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(grpc_totals, http_totals);
    assert_eq!(report.rows.len(), 3);

    let other = grpc_usage(&gateway, &gateway.other_api_key, day_by_model())
        .await
        .expect("usage over gRPC");
    assert_eq!(other.range.expect("range").tenant_id, "globex");
    let groups: Vec<&str> = other.totals.iter().map(|t| t.group.as_str()).collect();
    assert_eq!(groups, ["secret-model"], "globex sees only its own model");

    let mut client = AnalyticsServiceClient::connect(format!("http://{}", gateway.grpc_addr))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(day_by_model());
    request
        .metadata_mut()
        .insert("x-api-key", gateway.api_key.parse().expect("ascii"));
    let latency = client
        .get_latency(request)
        .await
        .expect("latency")
        .into_inner();
    let row = &latency.latencies;
    assert_eq!(row.len(), 2, "one row per model: {row:?}");
    assert!(
        row.iter()
            .all(|row| row.metric == "answer_duration_ms" && row.p99_9_ms >= row.p50_ms)
    );
}

#[tokio::test]
async fn grpc_refuses_bad_arguments_and_unknown_keys() {
    let gateway = started().await;
    let bad = pb::AnalyticsQuery {
        bucket: "week".into(),
        ..pb::AnalyticsQuery::default()
    };
    let status = grpc_usage(&gateway, &gateway.api_key, bad)
        .await
        .expect_err("a week bucket");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("`bucket`"),
        "{}",
        status.message()
    );
    let status = grpc_usage(&gateway, "cs_not-a-key", day_by_model())
        .await
        .expect_err("an unknown key");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}
