//! `chatstream tail` against the real binary: the events `chatstream dev`
//! appended, read back from its data dir after it stopped (the embedded
//! log is one process's), filtered by tenant, conversation and offset.
mod support;

use std::time::Duration;

use chatstream_test_support::platform::run_subcommand;
use serde_json::Value;
use support::Platform;

const LIMIT: Duration = Duration::from_secs(30);

async fn tail(data_dir: &str, args: &[&str]) -> String {
    let mut all = vec!["--data-dir", data_dir];
    all.extend_from_slice(args);
    let output = run_subcommand(env!("CARGO_BIN_EXE_chatstream"), "tail", &all, LIMIT).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn tail_prints_a_tenants_events_as_json_lines_and_filters_them() {
    let mut platform = Platform::start(&[]).await;
    let mut acme = platform.ws(platform.key("acme")).await;
    let (_, _, first) = acme.send_message(None, "acme first").await;
    let (_, _, second) = acme.send_message(None, "acme second").await;
    let mut globex = platform.ws(platform.key("globex")).await;
    globex.send_message(None, "globex only").await;
    platform.stop().await;
    let data_dir = platform.data_dir.path().to_str().expect("utf-8 path");

    let lines = json_lines(&tail(data_dir, &["--tenant", "acme", "--json"]).await);
    assert!(
        lines
            .iter()
            .all(|line| line["event"]["tenant_id"] == "acme"),
        "{lines:?}"
    );
    let texts: Vec<&str> = lines
        .iter()
        .filter(|line| line["event"]["type"] == "chatstream.user_message.sent.v1")
        .map(|line| line["event"]["data"]["text"].as_str().expect("text"))
        .collect();
    assert_eq!(texts, ["acme first", "acme second"]);

    let only_second = json_lines(
        &tail(
            data_dir,
            &["--tenant", "acme", "--conversation", &second, "--json"],
        )
        .await,
    );
    assert!(!only_second.is_empty());
    assert!(
        only_second
            .iter()
            .all(|line| line["event"]["conversation_id"] == second.as_str()),
        "{only_second:?}"
    );

    // From the offset of the second conversation's first event on: exactly
    // the tail of the whole listing.
    let offset = only_second[0]["offset"].as_u64().expect("offset");
    let from_offset = json_lines(
        &tail(
            data_dir,
            &["--tenant", "acme", "--from", &offset.to_string(), "--json"],
        )
        .await,
    );
    let expected: Vec<Value> = lines
        .iter()
        .filter(|line| line["offset"].as_u64().expect("offset") >= offset)
        .cloned()
        .collect();
    assert!(expected.len() < lines.len(), "the offset skips something");
    assert_eq!(from_offset, expected);
    assert!(
        lines
            .iter()
            .any(|line| line["event"]["conversation_id"] == first.as_str()),
        "the whole listing has the first conversation"
    );

    let readable = tail(data_dir, &["--tenant", "globex"]).await;
    assert!(
        readable
            .lines()
            .any(|line| line.contains("globex") && line.contains("chatstream.user_message.sent.v1")),
        "{readable}"
    );
}
