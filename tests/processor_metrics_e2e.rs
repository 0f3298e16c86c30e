//! The shared processor metrics (`chatstream_core::runner::PROCESSOR_METRICS`)
//! are a contract dashboards and alerts rely on: every processor kind the
//! binary runs must emit every one of them on `/metrics`. The kinds come
//! from the binary itself (`chatstream processor -h`), so a new kind is
//! checked without touching this test.
mod support;

use std::time::Duration;

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
                line.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with('{') && rest.contains(&label))
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
    // One turn through the platform, so the counters move as well as exist.
    let mut ws = platform.ws(platform.key("acme")).await;
    ws.send_message(None, "hello").await;

    // The lag gauge is published once a second.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let (status, body) = support::http_get(&platform.http_addr, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        let missing = missing(&body, &kinds);
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/metrics lacks {missing:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
