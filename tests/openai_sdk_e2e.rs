//! The official OpenAI SDKs against `chatstream dev`, streaming and not:
//! Python (tests/python/openai_sdk_check.py, with the Python at
//! CHATSTREAM_TEST_PYTHON) and JavaScript on Node.js
//! (tests/js/openai_sdk_check.cjs, with the `openai` package installed
//! under CHATSTREAM_TEST_OPENAI_JS). Then the events their requests left,
//! read back over gRPC. scripts/test.sh installs both SDKs.
mod support;

use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::pb::gateway as pb;
use chatstream_test_support::services;
use serde_json::Value;
use support::{Platform, authed};

/// Runs an SDK check script against the platform as tenant `acme` and
/// returns the JSON line it prints.
async fn run_check(
    platform: &Platform,
    program: &str,
    script: &str,
    env: &[(&str, &str)],
) -> Value {
    let script = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(program)
        .arg(&script)
        .env(
            "CHATSTREAM_OPENAI_BASE_URL",
            format!("http://{}/v1", platform.http_addr),
        )
        .env("CHATSTREAM_OPENAI_API_KEY", platform.key("acme"))
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// Each conversation the SDK reported holds the user message and the reply
/// it saw, tied to the completion id, and another tenant cannot read it.
async fn check_events(platform: &Platform, report: &Value) {
    let key = platform.key("acme");
    let mut client = platform.grpc().await;
    for mode in ["plain", "streamed"] {
        let seen = &report[mode];
        let conversation_id = seen["conversation_id"].as_str().unwrap();
        let request = || pb::GetConversationRequest {
            conversation_id: conversation_id.to_owned(),
            ..Default::default()
        };
        let events = client
            .get_conversation(authed(request(), key))
            .await
            .expect("the conversation exists")
            .into_inner()
            .events;
        let events: Vec<_> = events.into_iter().filter_map(|e| e.event).collect();
        assert_eq!(events.len(), 3, "{mode}: {events:?}");
        let user_message = &events[1];
        assert_eq!(
            seen["completion_id"].as_str(),
            Some(format!("chatcmpl-{}", user_message.id).as_str()),
            "{mode}"
        );
        assert!(
            matches!(&user_message.payload, Some(Payload::UserMessageSent(m)) if m.text == seen["user_text"]),
            "{mode}: {user_message:?}"
        );
        let reply = &events[2];
        assert_eq!(reply.causation_id, user_message.id, "{mode}");
        assert!(
            matches!(&reply.payload, Some(Payload::AssistantMessage(m)) if m.text == seen["reply_text"]),
            "{mode}: {reply:?}"
        );

        let status = client
            .get_conversation(authed(request(), platform.key("globex")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{mode}");
    }
}

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    let Some(python) = services::python_with_openai() else {
        return;
    };
    let platform = Platform::start(&[]).await;
    let report = run_check(&platform, &python, "python/openai_sdk_check.py", &[]).await;
    check_events(&platform, &report).await;
}

#[tokio::test]
async fn the_official_javascript_sdk_works_unchanged() {
    let Some(sdk_dir) = services::openai_js() else {
        return;
    };
    let platform = Platform::start(&[]).await;
    let env = [("CHATSTREAM_TEST_OPENAI_JS", sdk_dir.as_str())];
    let report = run_check(&platform, "node", "js/openai_sdk_check.cjs", &env).await;
    check_events(&platform, &report).await;
}
