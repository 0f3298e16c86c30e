//! The official `openai` Python SDK against `chatstream dev`, streaming and
//! not (tests/python/openai_sdk_check.py), then the events its requests
//! left, read back over gRPC. Needs CHATSTREAM_TEST_PYTHON: a Python with
//! the `openai` package (scripts/test.sh makes a venv for it).
mod support;

use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::pb::gateway as pb;
use serde_json::Value;
use support::{Platform, authed};

/// The Python to run the SDK with, or why there is none.
fn python_with_openai() -> Result<String, String> {
    let python = std::env::var("CHATSTREAM_TEST_PYTHON")
        .map_err(|_| "CHATSTREAM_TEST_PYTHON is not set (scripts/test.sh sets it)".to_owned())?;
    let check = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !check.status.success() {
        let stderr = String::from_utf8_lossy(&check.stderr);
        let reason = stderr.lines().last().unwrap_or("no output");
        return Err(format!("{python} cannot import openai: {reason}"));
    }
    Ok(python)
}

#[tokio::test]
async fn the_official_python_sdk_works_unchanged() {
    let python = match python_with_openai() {
        Ok(python) => python,
        Err(reason) if std::env::var("CHATSTREAM_TEST_STRICT").as_deref() == Ok("1") => {
            panic!("the OpenAI SDK test must run here: {reason}")
        }
        Err(reason) => {
            println!("not run: {reason}");
            return;
        }
    };
    let platform = Platform::start(&[]).await;
    let key = platform.key("acme");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/openai_sdk_check.py"
    );
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .env(
            "CHATSTREAM_OPENAI_BASE_URL",
            format!("http://{}/v1", platform.http_addr),
        )
        .env("CHATSTREAM_OPENAI_API_KEY", key)
        .output()
        .await
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    let mut client = platform.grpc().await;
    for mode in ["plain", "streamed"] {
        let seen = &report[mode];
        let conversation_id = seen["conversation_id"].as_str().unwrap();
        let events = client
            .get_conversation(authed(
                pb::GetConversationRequest {
                    conversation_id: conversation_id.to_owned(),
                    ..Default::default()
                },
                key,
            ))
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

        // Another tenant cannot read what the SDK created.
        let status = client
            .get_conversation(authed(
                pb::GetConversationRequest {
                    conversation_id: conversation_id.to_owned(),
                    ..Default::default()
                },
                platform.key("globex"),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{mode}");
    }
}
