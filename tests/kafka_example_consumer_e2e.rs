//! The example outside consumer (`examples/kafka-analytics-consumer`, Python
//! with confluent-kafka, at `CHATSTREAM_TEST_KAFKA_EXAMPLE_PYTHON`) reads
//! the topic `chatstream dev --log kafka` wrote, on the broker at
//! `CHATSTREAM_TEST_KAFKA`, and its tokens per model for a tenant equal the
//! analytics API's, with no other tenant's counted. Without the broker or
//! that Python the test prints "not run: ..." and returns, unless
//! `CHATSTREAM_TEST_STRICT=1`: then it fails.
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chatstream_core::log::EventLog;
use chatstream_kafka::{KafkaLog, KafkaLogConfig, create_topics};
use chatstream_schemas::codec;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::ws::EventBody;
use chatstream_test_support::conformance::unique;
use chatstream_test_support::fake_provider::{ProviderServer, Reply, openai_stream};
use chatstream_test_support::services;
use chatstream_test_support::turns::send_and_read_turn;
use serde_json::{Value, json};
use support::Platform;

const PARTITIONS: u32 = 2;
/// Longest the example may take to read the topic.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(120);

/// An OpenAI-compatible provider whose every answer streams `tokens` and
/// reports `prompt_tokens` in and `tokens.len()` out: its `/v1` URL.
async fn provider(tokens: &[&str], prompt_tokens: u32) -> (String, ProviderServer) {
    let server = ProviderServer::start().await;
    server.set_default(Reply::sse(&openai_stream(tokens, prompt_tokens)));
    (format!("{}/v1", server.base_url()), server)
}

/// The tenant's tokens per model from the analytics API, as the example
/// prints them: `{model: {"tokens_in": n, "tokens_out": n}}`.
async fn api_tokens_per_model(platform: &Platform, tenant: &str) -> Value {
    let answer: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/api/v2/analytics/usage?bucket=day&group_by=model",
            platform.http_addr
        ))
        .bearer_auth(platform.key(tenant))
        .send()
        .await
        .expect("send")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("JSON");
    let mut models = BTreeMap::new();
    for totals in answer["totals"].as_array().expect("totals") {
        let counters = &totals["counters"];
        if counters.get("tokens_in").is_none() && counters.get("tokens_out").is_none() {
            continue;
        }
        let group = totals["group"].as_str().expect("group").to_owned();
        let count = |metric: &str| counters[metric].as_u64().unwrap_or(0);
        models.insert(
            group,
            json!({"tokens_in": count("tokens_in"), "tokens_out": count("tokens_out")}),
        );
    }
    json!(models)
}

/// Waits until the API shows `expected` for the tenant (the analytics
/// processor catches up shortly after the turns) and returns it.
async fn projected(platform: &Platform, tenant: &str, expected: &Value) -> Value {
    let deadline = Instant::now() + support::WAIT;
    loop {
        let answer = api_tokens_per_model(platform, tenant).await;
        if &answer == expected || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the example for `tenant` with `--json` and returns its `models`.
async fn example_tokens_per_model(python: &str, servers: &str, topic: &str, tenant: &str) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kafka-analytics-consumer/tokens_per_model.py"
    );
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args(["--bootstrap-servers", servers, "--topic", topic])
        .args(["--tenant", tenant, "--json"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(EXAMPLE_LIMIT, run)
        .await
        .expect("the example finishes in time")
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(printed["tenant_id"], tenant, "{printed}");
    printed["models"].clone()
}

/// The bytes of the tenant's first `model.usage_recorded` record.
async fn first_usage_record(log: &KafkaLog, tenant: &str) -> Vec<u8> {
    for partition in 0..PARTITIONS {
        for record in log.read(partition, 0, 1000).await.expect("read") {
            let Ok(event) = codec::decode(&record.value) else {
                continue;
            };
            if record.key == tenant && matches!(event.payload, Some(Payload::ModelUsageRecorded(_)))
            {
                return record.value;
            }
        }
    }
    panic!("no usage event of {tenant} on the topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_consumer_counts_a_tenants_tokens_per_model_as_the_api_does() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let Some(python) = services::python_for_kafka_example() else {
        return;
    };
    let config = KafkaLogConfig {
        partitions: PARTITIONS,
        ..KafkaLogConfig::new(&servers, unique("chatstream-test-example-consumer"))
    };
    create_topics(&config).await.expect("create the topics");

    // Two models on two providers with known usage: 11 in and 3 out per
    // answer on `large` (acme's), 7 in and 2 out on `small` (globex's).
    let (large_url, _large) = provider(&["one", " two", " three"], 11).await;
    let (small_url, _small) = provider(&["one", " two"], 7).await;
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config_path = config_dir.path().join("chatstream.yaml");
    std::fs::write(
        &config_path,
        format!(
            r#"models:
  providers:
    big: {{kind: openai, base_url: "{large_url}"}}
    little: {{kind: openai, base_url: "{small_url}"}}
  catalog:
    large: {{provider: big, model: gpt-large}}
    small: {{provider: little, model: gpt-small}}
  default_routing: {{candidates: [{{model: small}}], retries: 0}}
"#
        ),
    )
    .expect("write the config");
    let partitions = PARTITIONS.to_string();
    // Groups of their own: a group an earlier run's process left behind
    // keeps its partitions until the broker times its members out.
    let group_prefix = format!("{}-", config.topic);
    let platform = Platform::start_with_tenant_config(
        &[
            (
                "CHATSTREAM_CONFIG",
                config_path.to_str().expect("utf-8 path"),
            ),
            ("CHATSTREAM_LOG_BACKEND", "kafka"),
            ("KAFKA_BOOTSTRAP_SERVERS", &servers),
            ("CHATSTREAM_KAFKA_TOPIC", &config.topic),
            ("CHATSTREAM_LOG_PARTITIONS", &partitions),
            ("CHATSTREAM_KAFKA_GROUP_PREFIX", &group_prefix),
        ],
        &[(
            "acme",
            "    routing: {candidates: [{model: large}], retries: 0}\n",
        )],
    )
    .await;

    for (tenant, texts) in [("acme", &["hello", "and again"][..]), ("globex", &["hi"])] {
        let mut ws = platform.ws(platform.key(tenant)).await;
        for text in texts {
            let turn = send_and_read_turn(&mut ws, text).await;
            let bodies: Vec<EventBody> = turn
                .caused_by_the_message()
                .into_iter()
                .map(|event| event.body)
                .collect();
            assert!(
                matches!(bodies.last(), Some(EventBody::AssistantMessage { .. })),
                "{tenant}: {bodies:?}"
            );
        }
    }

    // At least once: the same usage event again, as a processor that
    // crashed before committing appends it (same id, later offset). Both
    // the analytics processor and the example must count it once; acme's
    // next turn, after it on the same partition, shows it was read.
    let log = KafkaLog::connect(config.clone()).await.expect("connect");
    let usage_record = first_usage_record(&log, "acme").await;
    log.append_bytes("acme", usage_record)
        .await
        .expect("append the copy");
    let mut ws = platform.ws(platform.key("acme")).await;
    send_and_read_turn(&mut ws, "once more").await;

    let expected = [
        ("acme", json!({"large": {"tokens_in": 33, "tokens_out": 9}})),
        (
            "globex",
            json!({"small": {"tokens_in": 7, "tokens_out": 2}}),
        ),
    ];
    for (tenant, turns_did) in &expected {
        let from_api = projected(&platform, tenant, turns_did).await;
        assert_eq!(
            &from_api, turns_did,
            "{tenant}: the API counts what the turns did"
        );
        let from_example = example_tokens_per_model(&python, &servers, &config.topic, tenant).await;
        assert_eq!(
            from_example, from_api,
            "{tenant}: the example's figure is the API's, and no other tenant's tokens are in it"
        );
    }
    drop(log);
    drop(platform);
}
