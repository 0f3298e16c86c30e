//! The load tester against the real `chatstream dev` over real sockets:
//! the SLO gate fails an impossible threshold and passes a generous one,
//! every transport (WebSocket, gRPC, OpenAI HTTP, and the raw Kafka
//! producer baseline against `CHATSTREAM_TEST_KAFKA`) measures what it
//! can, and the errors a pipeline sees (cannot connect, bad arguments) come
//! with the right exit codes.
mod support;

use chatstream_test_support::services;
use support::{EchoServer, Platform, args, loadtest, loadtest_with_report};

const EXIT_GATE_BREACHED: i32 = 3;
const EXIT_USAGE_OR_CONNECT: i32 = 2;

#[test]
fn an_impossible_threshold_fails_the_gate_and_names_it() {
    let platform = Platform::start();
    let run = loadtest_with_report(platform.target_args_and(&[
        "--connections",
        "2",
        "--duration",
        "1s",
        "--quiet",
        "--max-p99-ms",
        "0.000001",
        "--max-error-rate",
        "0.5",
    ]));
    let output = &run.output;

    let stderr = assert_exit(output, EXIT_GATE_BREACHED);
    assert!(stderr.contains("SLO gate breached"), "{stderr}");
    assert!(
        stderr.contains("--max-p99-ms ack p99") && stderr.contains("exceeds --max-p99-ms 0.000001"),
        "{stderr}"
    );
    // Only the breached limit is named: the error rate was within its limit.
    assert!(!stderr.contains("--max-error-rate"), "{stderr}");
    let report = run.report();
    assert_eq!(report["gates"]["passed"], false);
    assert_eq!(report["gates"]["breaches"][0]["flag"], "--max-p99-ms");
    assert!(report["gates"]["breaches"][0]["measured"].as_f64().unwrap() > 0.000001);
}

#[test]
fn generous_thresholds_pass_an_open_loop_run_with_sane_numbers() {
    let platform = Platform::start();
    let plot_dir = tempfile::tempdir().unwrap();
    let plot = plot_dir.path().join("run.svg");
    let plot_flag = plot.display().to_string();
    let run = loadtest_with_report(platform.target_args_and(&[
        "--connections",
        "4",
        "--rate",
        "100",
        "--duration",
        "2s",
        "--max-error-rate",
        "0",
        "--max-p50-ms",
        "5000",
        "--max-p99-ms",
        "5000",
        "--max-p999-ms",
        "5000",
        "--gate-metric",
        "completion",
        "--plot-out",
        &plot_flag,
    ]));
    let output = &run.output;

    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("SLO gates   passed"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("acked"), "a progress line: {stderr}");

    let report = run.report();
    assert_eq!(report["mode"]["kind"], "open");
    // 100 msg/s for 2 s, on a fixed schedule.
    assert_eq!(report["attempted"], 200, "{report}");
    assert_eq!(report["acked"], 200);
    assert_eq!(report["replied"], 200);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["errors_by_kind"], serde_json::json!({}));
    for metric in ["ack", "ttft", "completion"] {
        let latency = &report["latency_ms"][metric];
        let (p50, p99) = (
            latency["p50"].as_f64().unwrap(),
            latency["p99"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{metric}: {latency}");
        assert!(p99 < 5000.0, "{metric}: {latency}");
    }
    // The reply comes after the ack is written, its first token before it completes.
    let p50 = |m: &str| report["latency_ms"][m]["p50"].as_f64().unwrap();
    assert!(p50("ttft") <= p50("completion"));
    let timeline = report["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2, "one entry per second of the schedule");
    let throughput = report["throughput"]["acked_per_s"].as_f64().unwrap();
    // Loose: a loaded CI machine may stall, which stretches the run.
    assert!((30.0..=150.0).contains(&throughput), "{throughput}");

    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"));
    for label in [
        "Latency over time",
        "Latency by percentile",
        "latency (ms",
        "ack p99",
        "first token",
    ] {
        assert!(svg.contains(label), "the plot shows {label}");
    }
}

#[test]
fn grpc_converse_runs_measure_acks_and_replies() {
    let platform = Platform::start();
    let run = loadtest_with_report(platform.target_args_and(&[
        "--transport",
        "grpc",
        "--connections",
        "2",
        "--messages",
        "30",
        "--wait-for",
        "completion",
        "--quiet",
        "--max-error-rate",
        "0",
    ]));
    let report = run.passed_report();
    assert_eq!(report["transport"], "grpc");
    assert_eq!(report["sent"], 30, "--messages caps the total: {report}");
    assert_eq!(report["acked"], 30);
    assert_eq!(report["replied"], 30);
    assert!(report["latency_ms"]["ttft"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn openai_streamed_completions_measure_ack_first_token_and_completion() {
    let platform = Platform::start();
    let run = loadtest_with_report(platform.target_args_and(&[
        "--transport",
        "openai",
        "--openai-url",
        &format!("http://{}/v1", platform.http_addr),
        "--connections",
        "2",
        "--concurrency",
        "2",
        "--messages",
        "20",
        "--wait-for",
        "completion",
        "--quiet",
        "--max-error-rate",
        "0",
    ]));
    let report = run.passed_report();
    assert_eq!(report["transport"], "openai");
    assert_eq!(report["acked"], 20, "{report}");
    assert_eq!(report["replied"], 20, "every stream ended with [DONE]");
    let ttft = report["latency_ms"]["ttft"]["p50"].as_f64().unwrap();
    let completion = report["latency_ms"]["completion"]["p50"].as_f64().unwrap();
    assert!(ttft > 0.0 && ttft <= completion, "{report}");
}

#[test]
fn openai_with_a_refused_key_exits_2_and_says_so() {
    let platform = Platform::start();
    let output = loadtest(&args(&[
        "--transport",
        "openai",
        "--openai-url",
        &format!("http://{}/v1", platform.http_addr),
        "--api-key",
        "cs_not_a_real_key",
        "--quiet",
    ]));
    let stderr = assert_exit(&output, EXIT_USAGE_OR_CONNECT);
    assert!(
        stderr.contains("401") && stderr.contains("invalid_api_key"),
        "{stderr}"
    );
}

#[test]
fn the_raw_kafka_producer_baseline_measures_delivery_reports() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let topic = format!(
        "chatstream-test-producer-baseline-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let create = std::process::Command::new(support::chatstream_bin())
        .args([
            "topics",
            "create",
            "--bootstrap-servers",
            &servers,
            "--topic",
            &topic,
        ])
        .args(["--partitions", "2"])
        .output()
        .expect("run chatstream topics create");
    assert!(
        create.status.success(),
        "{}",
        String::from_utf8_lossy(&create.stderr)
    );
    let run = loadtest_with_report(args(&[
        "--transport",
        "kafka",
        "--kafka-bootstrap-servers",
        &servers,
        "--kafka-topic",
        &topic,
        "--connections",
        "4",
        "--concurrency",
        "4",
        "--messages",
        "200",
        "--quiet",
        "--max-error-rate",
        "0",
    ]));
    let report = run.passed_report();
    assert_eq!(report["transport"], "kafka");
    assert_eq!(report["acked"], 200, "{report}");
    assert!(report["latency_ms"]["ack"]["p99"].as_f64().unwrap() > 0.0);

    // A topic that does not exist is a setup error with the way out.
    let missing = loadtest(&args(&[
        "--transport",
        "kafka",
        "--kafka-bootstrap-servers",
        &servers,
        "--kafka-topic",
        &format!("{topic}-missing"),
        "--messages",
        "1",
        "--quiet",
    ]));
    let stderr = assert_exit(&missing, EXIT_USAGE_OR_CONNECT);
    assert!(stderr.contains("topics create"), "{stderr}");
}

#[test]
fn the_echo_baseline_speaks_enough_protocol_for_ack_only_runs() {
    let echo = EchoServer::start();
    let output = loadtest(&args(&[
        "--ws-url",
        &echo.ws_url,
        "--api-key",
        "unused",
        "--ack-only",
        "--connections",
        "2",
        "--messages",
        "100",
        "--quiet",
        "--max-error-rate",
        "0",
    ]));
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("acked 100"), "{stdout}");
}

#[test]
fn an_unreachable_gateway_exits_2_with_the_address_and_cause() {
    // A port that was free a moment ago: nothing listens there.
    let port = chatstream_test_support::ports::free_port();
    let url = format!("ws://127.0.0.1:{port}/api/v2/chat/ws");
    let output = loadtest(&args(&["--ws-url", &url, "--api-key", "k", "--quiet"]));
    let stderr = assert_exit(&output, EXIT_USAGE_OR_CONNECT);
    assert!(stderr.contains("cannot connect to"), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
}

#[test]
fn a_refused_api_key_exits_2_and_says_so() {
    let platform = Platform::start();
    let output = loadtest(&args(&[
        "--ws-url",
        &platform.ws_url,
        "--api-key",
        "cs_not_a_real_key",
        "--quiet",
    ]));
    let stderr = assert_exit(&output, EXIT_USAGE_OR_CONNECT);
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let conflicting = loadtest(&args(&["--rate", "10", "--concurrency", "2"]));
    assert!(assert_exit(&conflicting, EXIT_USAGE_OR_CONNECT).contains("cannot be used with"));

    let bad_limit = loadtest(&args(&["--api-key", "k", "--max-error-rate", "7"]));
    assert!(assert_exit(&bad_limit, EXIT_USAGE_OR_CONNECT).contains("--max-error-rate"));
}

/// The load tester exited with `code` (its stderr says why when not);
/// returns what it wrote on stderr.
fn assert_exit(output: &std::process::Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    stderr
}
