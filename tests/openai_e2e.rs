//! The OpenAI-compatible HTTP API of `chatstream dev`, over real HTTP:
//! whole and streamed answers, every error status, the events each
//! request leaves, and that another tenant cannot reach them.
mod support;

use std::time::Duration;

use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::pb::gateway as pb;
use chatstream_schemas::ws::{ClientFrame, ServerFrame};
use chatstream_test_support::grpc;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Platform, authed};

fn base_url(platform: &Platform) -> String {
    format!("http://{}/v1", platform.http_addr)
}

fn chat(text: &str) -> Value {
    json!({ "model": "mock", "messages": [{ "role": "user", "content": text }] })
}

async fn post(platform: &Platform, api_key: Option<&str>, body: &Value) -> reqwest::Response {
    post_raw(platform, api_key, body.to_string()).await
}

async fn post_raw(platform: &Platform, api_key: Option<&str>, body: String) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/chat/completions", base_url(platform)))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("HTTP request")
}

/// The OpenAI error object of a response, after checking its status.
async fn expect_error(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    let error = body["error"].clone();
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "no {field} in {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    error
}

fn conversation_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-chatstream-conversation-id")
        .expect("the conversation id header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The `data:` payloads of a server-sent event stream, in order.
fn sse_data(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

async fn history(platform: &Platform, api_key: &str, conversation_id: &str) -> Vec<Payload> {
    let mut client = platform.grpc().await;
    let response = grpc::get_conversation(&mut client, api_key, conversation_id)
        .await
        .expect("history");
    response
        .events
        .into_iter()
        .filter_map(|e| e.event.and_then(|e| e.payload))
        .collect()
}

#[tokio::test]
async fn a_completion_answers_with_the_reply_and_its_usage_and_leaves_events() {
    let platform = Platform::start(&[]).await;
    let key = platform.key("acme");
    let body = json!({
        "model": "mock",
        "temperature": 0.5,
        "messages": [
            { "role": "system", "content": "be brief" },
            { "role": "user", "content": "earlier question" },
            { "role": "assistant", "content": "earlier answer" },
            { "role": "user", "content": "hello there" },
        ],
    });
    let response = post(&platform, Some(key), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let conversation_id = conversation_of(&response);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["model"], "mock");
    assert_eq!(completion["choices"].as_array().unwrap().len(), 1);
    let choice = &completion["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "You said: hello there");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        completion["usage"],
        json!({ "prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6 })
    );

    // The request became ordinary events: a conversation with the last
    // user message and the assistant's reply to it.
    let events = history(&platform, key, &conversation_id).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(events[0], Payload::ConversationOpened(_)));
    assert!(matches!(&events[1], Payload::UserMessageSent(m) if m.text == "hello there"));
    // The earlier messages and the model travel with it, for the router.
    let Payload::UserMessageSent(sent) = &events[1] else {
        unreachable!()
    };
    let context: Vec<_> = sent
        .context
        .iter()
        .map(|m| format!("{}: {}", m.role, m.text))
        .collect();
    assert_eq!(
        context,
        [
            "system: be brief",
            "user: earlier question",
            "assistant: earlier answer"
        ]
    );
    assert_eq!(sent.model, "mock");
    assert!(
        matches!(&events[2], Payload::AssistantMessage(m) if m.text == "You said: hello there")
    );
    let message_id = completion["id"].as_str().unwrap().strip_prefix("chatcmpl-");
    let mut client = platform.grpc().await;
    let reply = client
        .get_conversation(authed(
            pb::GetConversationRequest {
                conversation_id: conversation_id.clone(),
                after_position: Some(0),
                ..Default::default()
            },
            key,
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        Some(reply[0].event.as_ref().unwrap().id.as_str()),
        message_id
    );
    assert_eq!(
        Some(reply[1].event.as_ref().unwrap().causation_id.as_str()),
        message_id
    );

    // Another tenant can reach none of it, by gRPC or WebSocket.
    let globex = platform.key("globex");
    let status = grpc::get_conversation(&mut client, globex, &conversation_id)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut eve = platform.ws(globex).await;
    eve.send(&ClientFrame::Subscribe {
        request_id: None,
        conversation_id,
        after_position: None,
    })
    .await;
    eve.expect_error("conversation_not_found").await;
}

#[tokio::test]
async fn a_streamed_completion_sends_chunks_then_usage_then_done() {
    let platform = Platform::start(&[]).await;
    let key = platform.key("acme");
    let mut body = chat("stream this please");
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let response = post(&platform, Some(key), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let conversation_id = conversation_of(&response);
    let data = sse_data(&response.text().await.unwrap());

    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(&chunk["id"], id);
        assert_eq!(chunk["model"], "mock");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    // Every token of the mock's reply is its own chunk: none was missed.
    let contents: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|text| !text.is_empty())
        .collect();
    assert_eq!(contents, ["You", " said:", " stream", " this", " please"]);
    let (usage, rest) = chunks.split_last().unwrap();
    let finish = rest.last().unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert!(rest.iter().all(|c| c["usage"].is_null()));
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({ "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8 })
    );

    let events = history(&platform, key, &conversation_id).await;
    assert!(
        matches!(events.last(), Some(Payload::AssistantMessage(m)) if m.text == "You said: stream this please"),
        "{events:?}"
    );

    // Without stream_options there is no usage chunk.
    let mut body = chat("short");
    body["stream"] = json!(true);
    let data = sse_data(
        &post(&platform, Some(key), &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    let last_chunk: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last_chunk["choices"][0]["finish_reason"], "stop");
    assert!(last_chunk.get("usage").is_none());
}

#[tokio::test]
async fn bad_requests_get_openai_errors_with_the_right_status() {
    let platform = Platform::start(&[("CHATSTREAM_MAX_MESSAGE_BYTES", "64")]).await;
    let key = platform.key("acme");

    let error = expect_error(
        post(&platform, None, &chat("hi")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(error["code"], "invalid_api_key");
    let error = expect_error(
        post(&platform, Some("cs_not_a_key"), &chat("hi")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(error["code"], "invalid_api_key");

    let error = expect_error(
        post_raw(&platform, Some(key), "{\"model\":".into()).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["code"], "invalid_json");
    let cases = [
        (json!({ "model": "mock" }), "messages"),
        (json!({ "model": "mock", "messages": [] }), "messages"),
        (
            json!({ "model": "mock", "messages": [{ "role": "system", "content": "x" }] }),
            "messages",
        ),
        (json!({ "model": "mock", "messages": "hi" }), "messages"),
        (
            json!({ "model": "mock", "messages": [{ "role": "user", "content": 42 }] }),
            "messages[0].content",
        ),
        (
            json!({ "model": "mock", "stream": "yes", "messages": [{ "role": "user", "content": "x" }] }),
            "stream",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }] }),
            "model",
        ),
    ];
    for (body, param) in cases {
        let error = expect_error(
            post(&platform, Some(key), &body).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], param, "{body}");
    }
    // Whitespace-only text is refused by the same rule as on every edge.
    let error = expect_error(
        post(&platform, Some(key), &chat("   ")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["code"], "invalid_request");

    let mut unknown_model = chat("hi");
    unknown_model["model"] = json!("gpt-4o");
    let error = expect_error(
        post(&platform, Some(key), &unknown_model).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error["code"], "model_not_found");
    assert_eq!(error["param"], "model");

    let error = expect_error(
        post(&platform, Some(key), &chat(&"x".repeat(65))).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(error["code"], "message_too_large");
    // A body beyond what any message could need is refused before parsing.
    let huge = chat(&"x".repeat(200 * 1024));
    let error = expect_error(
        post(&platform, Some(key), &huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(error["code"], "message_too_large");

    // The model failing is a server error, whole or streamed (after the
    // stream started: an error event and no [DONE]).
    let error = expect_error(
        post(&platform, Some(key), &chat("/mock error boom")).await,
        StatusCode::BAD_GATEWAY,
    )
    .await;
    assert_eq!(error["code"], "model_error");
    assert!(error["message"].as_str().unwrap().contains("boom"));
    let mut streamed = chat("/mock error boom");
    streamed["stream"] = json!(true);
    let data = sse_data(
        &post(&platform, Some(key), &streamed)
            .await
            .text()
            .await
            .unwrap(),
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "model_error", "{data:?}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
}

#[tokio::test]
async fn models_lists_what_the_tenant_may_use() {
    let platform = Platform::start(&[]).await;
    let client = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut request = client.get(format!("{}{path}", base_url(&platform)));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let key = platform.key("acme");
    let list: Value = get("/models", Some(key))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], "mock");
    assert_eq!(list["data"][0]["object"], "model");
    let model: Value = get("/models/mock", Some(key))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["id"], "mock");
    let error = expect_error(
        get("/models/gpt-4o", Some(key)).await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error["code"], "model_not_found");
    expect_error(
        get("/models", None).await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn over_its_rate_a_tenant_gets_429_with_retry_after_and_others_do_not() {
    let platform = Platform::start(&[
        ("CHATSTREAM_REQUESTS_PER_SECOND", "1"),
        ("CHATSTREAM_BURST", "2"),
    ])
    .await;
    let key = platform.key("acme");
    // One completion is one request, though it opens a conversation too.
    for i in 0..2 {
        let response = post(&platform, Some(key), &chat(&format!("m{i}"))).await;
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
    }
    let response = post(&platform, Some(key), &chat("one too many")).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!(
        (1..=2).contains(&retry_after),
        "retry after {retry_after} s at 1/s"
    );
    let error = expect_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(error["code"], "rate_limit_exceeded");

    let response = post(
        &platform,
        Some(platform.key("globex")),
        &chat("independent"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let response = post(&platform, Some(key), &chat("later")).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_returns_the_same_completion() {
    let platform = Platform::start(&[]).await;
    let key = platform.key("acme");
    let send = || async {
        let response = reqwest::Client::new()
            .post(format!("{}/chat/completions", base_url(&platform)))
            .bearer_auth(key)
            .header("idempotency-key", "retry-me-1")
            .json(&chat("only once"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let conversation_id = conversation_of(&response);
        (conversation_id, response.json::<Value>().await.unwrap())
    };
    let (first_conversation, first) = send().await;
    let (second_conversation, second) = send().await;
    assert_eq!(first_conversation, second_conversation);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "You said: only once"
    );
    let events = history(&platform, key, &first_conversation).await;
    let sends = events
        .iter()
        .filter(|e| matches!(e, Payload::UserMessageSent(_)))
        .count();
    assert_eq!(sends, 1, "{events:?}");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_harms_nothing() {
    let platform = Platform::start(&[("CHATSTREAM_MOCK_TOKEN_DELAY_MS", "20")]).await;
    let key = platform.key("acme");
    let text = "word ".repeat(50);
    let mut body = chat(text.trim());
    body["stream"] = json!(true);
    let response = post(&platform, Some(key), &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let conversation_id = conversation_of(&response);
    let mut bytes = response.bytes_stream();
    let first = bytes.next().await.expect("a first chunk").unwrap();
    assert!(first.starts_with(b"data: "));
    drop(bytes);

    // The gateway still serves, and the reply was still committed.
    let response = post(&platform, Some(key), &chat("still there?")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let events = history(&platform, key, &conversation_id).await;
        if matches!(events.last(), Some(Payload::AssistantMessage(_))) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = platform.ws(key).await;
    ws.send(&ClientFrame::Subscribe {
        request_id: None,
        conversation_id,
        after_position: None,
    })
    .await;
    assert!(matches!(
        ws.next_frame().await,
        ServerFrame::Subscribed { .. }
    ));
}
