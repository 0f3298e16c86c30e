//! The shared processor metrics (`chatstream_core::runner::PROCESSOR_METRICS`)
//! are a contract dashboards and alerts rely on: every processor kind the
//! binary runs must emit every one of them on `/metrics`. The kinds come
//! from the binary itself (`chatstream processor -h`), so a new kind is
//! checked without touching this test. The exposition as a whole follows
//! `chatstream_core::metric_catalog`: a `# HELP` line for every metric,
//! histograms (with buckets) where latencies are, and no summaries.
mod support;

use std::time::Duration;

use chatstream_core::metric_catalog::{METRICS, MetricKind};
use chatstream_core::runner::PROCESSOR_METRICS;

/// The kinds `chatstream processor` accepts, which are also the processors'
/// `processor` labels (a unit test in `src/processors.rs` holds them equal).
fn processor_kinds() -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatstream"))
        .args(["processor", "-h"])
        .output()
        .expect("run chatstream processor -h");
    let help = String::from_utf8_lossy(&output.stdout);
    let list = help
        .split_once("[possible values: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no possible values in `chatstream processor -h`:\n{help}"));
    list.split(',').map(|kind| kind.trim().to_owned()).collect()
}

/// `metric{...processor="kind"...}` pairs that `/metrics` lacks.
fn missing(exposition: &str, kinds: &[String]) -> Vec<String> {
    let mut missing = Vec::new();
    for kind in kinds {
        for metric in PROCESSOR_METRICS {
            let label = format!("processor=\"{kind}\"");
            let present = exposition.lines().any(|line| {
                // A histogram's series are its `_bucket`, `_sum` and `_count`.
                line.strip_prefix(metric).is_some_and(|rest| {
                    (rest.starts_with('{') || rest.starts_with("_count{")) && rest.contains(&label)
                })
            });
            if !present {
                missing.push(format!("{metric}{{{label}}}"));
            }
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_processor_kind_emits_every_shared_metric() {
    let kinds = processor_kinds();
    assert!(!kinds.is_empty(), "the binary lists no processor kinds");
    let platform = support::Platform::start(&[]).await;
    // One turn through the platform, so the counters move as well as exist,
    // and one refusal (an empty message).
    let mut ws = platform.ws(platform.key("acme")).await;
    ws.send_message(None, "hello").await;
    let mut client = platform.grpc().await;
    let refused = client
        .send_message(support::authed(
            chatstream_schemas::pb::gateway::SendMessageRequest {
                text: " ".into(),
                ..Default::default()
            },
            platform.key("acme"),
        ))
        .await;
    assert!(refused.is_err(), "an empty message is refused");

    // The lag gauge is published once a second.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (status, body) = support::http_get(&platform.http_addr, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        let mut missing = missing(&body, &kinds);
        missing.extend(missing_histograms(&body));
        if missing.is_empty() {
            check_exposition(&body);
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics lacks {missing:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The histograms one turn must have observed, each with buckets: the
/// append (ack path), every processor's handling, the model call and its
/// first token, the fan-out delay. Missing ones are returned.
fn missing_histograms(exposition: &str) -> Vec<String> {
    [
        "chatstream_gateway_append_seconds",
        "chatstream_processor_handle_seconds",
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "gen_ai_client_token_usage",
        "chatstream_fanout_delay_seconds",
    ]
    .into_iter()
    .filter(|name| {
        let bucket = format!("{name}_bucket{{");
        !exposition
            .lines()
            .any(|line| line.starts_with(&bucket) && line.contains("le=\"+Inf\""))
    })
    .map(|name| format!("{name}_bucket"))
    .chain(
        (!exposition.lines().any(|line| {
            line.starts_with("chatstream_gateway_refusals_total{")
                && line.contains("reason=\"invalid_request\"")
        }))
        .then(|| "chatstream_gateway_refusals_total{reason=\"invalid_request\"}".to_owned()),
    )
    .collect()
}

/// Every metric family has `# HELP`; the catalog's types are the rendered
/// ones (histograms with increasing `le` buckets); nothing is a summary.
fn check_exposition(exposition: &str) {
    let mut helped = std::collections::HashSet::new();
    let mut typed = std::collections::HashMap::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!help.trim().is_empty(), "empty help for {name}");
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("a type");
            typed.insert(name.to_owned(), kind.to_owned());
        }
    }
    assert!(!typed.is_empty(), "no metrics:\n{exposition}");
    for (name, kind) in &typed {
        assert!(helped.contains(name), "{name} has no # HELP line");
        assert_ne!(kind, "summary", "{name} is a summary, not a histogram");
    }
    for spec in METRICS {
        let Some(kind) = typed.get(spec.name) else {
            continue; // not observed in this run (e.g. tool calls)
        };
        let expected = match spec.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        assert_eq!(kind, expected, "{} is rendered as a {kind}", spec.name);
        if spec.kind == MetricKind::Histogram {
            // The first series' bucket bounds are the catalog's.
            let prefix = format!("{}_bucket{{", spec.name);
            let first_series: Vec<f64> = exposition
                .lines()
                .filter(|line| line.starts_with(&prefix))
                .map_while(|line| {
                    let le = line.split("le=\"").nth(1)?.split('"').next()?;
                    le.parse::<f64>().ok()
                })
                .take(spec.buckets.len())
                .collect();
            assert_eq!(first_series, spec.buckets, "{}'s buckets", spec.name);
        }
    }
    for name in typed.keys().filter(|name| name.starts_with("chatstream_")) {
        assert!(
            METRICS.iter().any(|spec| spec.name == name),
            "{name} is emitted but not in chatstream_core::metric_catalog::METRICS"
        );
    }
}

/// `docs/observability.md` lists every metric of the catalog.
#[test]
fn every_metric_is_documented() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/observability.md"),
    )
    .expect("read docs/observability.md");
    for spec in METRICS {
        assert!(
            docs.contains(&format!("`{}`", spec.name)),
            "docs/observability.md does not list {}",
            spec.name
        );
    }
}
