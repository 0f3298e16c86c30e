//! The `mock-provider` binary over a real socket: a streamed answer is
//! exactly N content chunks, the finish and usage chunks, then `[DONE]`; a
//! whole answer is one `chat.completion`; bad requests get OpenAI-shaped
//! errors; the delays hold as lower bounds; and `chatstream-loadtest
//! --transport openai --openai-model` drives it as it drives a gateway.
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

/// The mock provider on a free port, killed when the test ends.
struct MockProvider {
    child: Child,
    /// The API root, `http://127.0.0.1:PORT/v1`.
    base_url: String,
}

impl MockProvider {
    fn start(flags: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-provider"))
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mock-provider");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the address line");
        let address = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim();
        Self {
            base_url: format!("http://{address}/v1"),
            child,
        }
    }

    async fn post(&self, body: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/chat/completions", self.base_url))
            .header("content-type", "application/json")
            .bearer_auth("sk-anything")
            .body(body.to_owned())
            .send()
            .await
            .expect("the mock answers")
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data` of each server-sent event, parsed unless it is `[DONE]`.
fn events(body: &str) -> Vec<Option<Value>> {
    body.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            let data = event.strip_prefix("data: ").expect("a data line");
            (data != "[DONE]").then(|| serde_json::from_str(data).expect("a JSON chunk"))
        })
        .collect()
}

fn content(chunk: &Value) -> &str {
    chunk["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap_or_default()
}

const STREAMED: &str = r#"{"model":"bench","messages":[{"role":"user","content":"say five words"}],"stream":true,"stream_options":{"include_usage":true}}"#;

#[tokio::test]
async fn a_streamed_answer_is_n_content_chunks_then_finish_usage_and_done() {
    let mock = MockProvider::start(&["--tokens", "5"]);
    let response = mock.post(STREAMED).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{response:?}"
    );
    let events = events(&response.text().await.unwrap());

    let (done, chunks) = events.split_last().unwrap();
    assert!(done.is_none(), "the stream ends with [DONE]");
    let chunks: Vec<&Value> = chunks.iter().map(|c| c.as_ref().unwrap()).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "bench");
        assert_eq!(chunk["id"], chunks[0]["id"], "one completion id");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let tokens: Vec<&str> = chunks
        .iter()
        .map(|c| content(c))
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(tokens.len(), 5, "{chunks:?}");
    let finish: Vec<_> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    );
    // role, 5 tokens, finish, usage
    assert_eq!(chunks.len(), 8);
}

#[tokio::test]
async fn without_include_usage_no_usage_chunk_is_sent() {
    let mock = MockProvider::start(&["--tokens", "3"]);
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let events = events(&mock.post(body).await.text().await.unwrap());
    // role, 3 tokens, finish, [DONE]
    assert_eq!(events.len(), 6);
    assert!(
        events
            .iter()
            .flatten()
            .all(|chunk| chunk.get("usage").is_none())
    );
}

#[tokio::test]
async fn a_whole_answer_is_one_chat_completion_with_usage() {
    let mock = MockProvider::start(&["--tokens", "4"]);
    let body = r#"{"model":"bench","messages":[{"role":"user","content":"hello"}]}"#;
    let response = mock.post(body).await;
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "bench");
    let choice = &completion["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Mock provider tokens arrive");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(completion["usage"]["completion_tokens"], 4);
    assert_eq!(completion["usage"]["prompt_tokens"], 1);

    let capped =
        r#"{"model":"bench","messages":[{"role":"user","content":"hello"}],"max_tokens":2}"#;
    let completion: Value = mock.post(capped).await.json().await.unwrap();
    assert_eq!(completion["choices"][0]["finish_reason"], "length");
    assert_eq!(completion["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_errors() {
    let mock = MockProvider::start(&["--model", "bench"]);

    let response = mock.post("{not json").await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["code"], "invalid_json");

    let response = mock.post(r#"{"model":"bench","messages":[]}"#).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "messages");

    let response = mock
        .post(r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#)
        .await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "model_not_found");

    let models: Value = reqwest::get(format!("{}/models", mock.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "bench");
}

#[tokio::test]
async fn tokens_wait_at_least_their_delays() {
    let mock = MockProvider::start(&[
        "--tokens",
        "3",
        "--first-token-delay-ms",
        "150",
        "--token-delay-ms",
        "30",
    ]);
    let sent = Instant::now();
    let response = mock.post(STREAMED).await;
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut first_token = None;
    while let Some(bytes) = body.next().await {
        text.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap());
        // Only whole events: the network may cut one anywhere.
        let complete = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
        let token_seen = events(complete)
            .iter()
            .flatten()
            .any(|c| !content(c).is_empty());
        if first_token.is_none() && token_seen {
            first_token = Some(sent.elapsed());
        }
    }
    let done = sent.elapsed();
    assert!(
        first_token.unwrap() >= Duration::from_millis(150),
        "{first_token:?}"
    );
    assert!(done >= Duration::from_millis(150 + 2 * 30), "{done:?}");
}

/// Runs the load tester against the mock; its JSON report.
fn loadtest(mock: &MockProvider, flags: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("run.json");
    let output = Command::new(env!("CARGO_BIN_EXE_chatstream-loadtest"))
        .args(["--transport", "openai", "--openai-url", &mock.base_url])
        .args(["--api-key", "sk-anything", "--quiet", "--json-out"])
        .arg(&report)
        .args(flags)
        .output()
        .expect("run chatstream-loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

#[test]
fn the_load_tester_streams_from_the_mock_with_the_model_it_names() {
    let mock = MockProvider::start(&["--model", "bench", "--tokens", "4"]);
    let closed_loop = [
        "--connections",
        "2",
        "--concurrency",
        "2",
        "--messages",
        "20",
        "--wait-for",
        "completion",
    ];
    let mut flags = vec!["--openai-model", "bench"];
    flags.extend(closed_loop);
    let report = loadtest(&mock, &flags);
    assert_eq!(report["replied"], 20, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["latency_ms"]["ttft"]["p50"].as_f64().unwrap() > 0.0);

    // The default model, `mock`, is not one this provider serves.
    let report = loadtest(&mock, &closed_loop);
    assert_eq!(report["failed"], 20, "{report}");
    assert_eq!(
        report["errors_by_kind"]["server:model_not_found"], 20,
        "{report}"
    );
}
