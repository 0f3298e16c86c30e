//! Each provider against a real HTTP server on loopback speaking its
//! documented wire format: streaming with SSE framing edge cases, usage,
//! error statuses with Retry-After, in-stream errors, malformed chunks and
//! streams cut off in the middle.
mod support;

use std::time::Duration;

use chatstream_router::model::{
    ChatMessage, CompletionRequest, ModelChunk, ModelError, ToolCallChunk, ToolSpec, Usage,
};
use chatstream_router::providers::anthropic::AnthropicModel;
use chatstream_router::providers::http::{ApiKey, http_client};
use chatstream_router::providers::openai::OpenAiModel;
use support::*;

fn request(model: &str) -> CompletionRequest {
    CompletionRequest {
        tenant_id: "acme".into(),
        conversation_id: "c".into(),
        model: model.into(),
        messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hello")],
        max_tokens: Some(64),
        tools: Vec::new(),
    }
}

/// A request after a tool round: the call, its result, and a tool on offer.
fn tool_request(model: &str) -> CompletionRequest {
    let call = ToolCallChunk {
        call_id: "call_1".into(),
        name: "time__get_current_time".into(),
        arguments_json: r#"{"timezone":"UTC"}"#.into(),
    };
    CompletionRequest {
        messages: vec![
            ChatMessage::system("be brief"),
            ChatMessage::user("what time is it?"),
            ChatMessage::tool_call(call),
            ChatMessage::tool_result("call_1", "12:00 UTC", false),
        ],
        tools: vec![ToolSpec {
            name: "time__get_current_time".into(),
            description: "The current time".into(),
            input_schema: serde_json::json!({
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"]
            }),
        }],
        ..request(model)
    }
}

fn tool_calls(chunks: &[Result<ModelChunk, ModelError>]) -> Vec<ToolCallChunk> {
    chunks
        .iter()
        .filter_map(|c| match c {
            Ok(ModelChunk::ToolCall(call)) => Some(call.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn openai_offers_tools_sends_tool_rounds_and_parses_a_streamed_call() {
    let server = ProviderServer::start().await;
    let stream = openai_tool_call_stream(
        "call_2",
        "time__get_current_time",
        &[r#"{"time"#, r#"zone":"#, r#""Europe/Paris"}"#],
    );
    // Cut into small TCP pieces too: the call's parts cross reads.
    server.script([Reply::sse_in_pieces(&stream, 7)]);
    let (text, chunks) = collect(&openai(&server).await, tool_request("gpt-4o")).await;
    assert_eq!(text, "");
    assert_eq!(
        tool_calls(&chunks),
        [ToolCallChunk {
            call_id: "call_2".into(),
            name: "time__get_current_time".into(),
            arguments_json: r#"{"timezone":"Europe/Paris"}"#.into(),
        }]
    );
    assert!(
        matches!(last(&chunks), Ok(ModelChunk::Done { finish_reason, usage }) if finish_reason == "tool_calls" && usage.completion_tokens == 7),
        "{chunks:?}"
    );

    let body = &server.requests()[0].body;
    let tool = &body["tools"][0];
    assert_eq!(tool["type"], "function");
    assert_eq!(tool["function"]["name"], "time__get_current_time");
    assert_eq!(tool["function"]["parameters"]["required"][0], "timezone");
    assert_eq!(body["parallel_tool_calls"], false);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], serde_json::Value::Null);
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_1");
    assert_eq!(messages[2]["tool_calls"][0]["type"], "function");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["arguments"],
        r#"{"timezone":"UTC"}"#
    );
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "call_1");
    assert_eq!(messages[3]["content"], "12:00 UTC");
}

#[tokio::test]
async fn openai_tool_call_without_a_name_is_a_protocol_error() {
    let server = ProviderServer::start().await;
    let stream = openai_tool_call_stream("call_2", "", &["{}"]);
    server.script([Reply::sse(&stream)]);
    let (_, chunks) = collect(&openai(&server).await, tool_request("m")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    assert_eq!(error.code(), "protocol", "{error}");
}

#[tokio::test]
async fn anthropic_offers_tools_sends_tool_rounds_and_parses_tool_use() {
    let server = ProviderServer::start().await;
    let stream = anthropic_tool_use_stream(
        "Let me check.",
        "toolu_2",
        "time__get_current_time",
        &[r#"{"timezone": "#, r#""Asia/Tokyo"}"#],
    );
    server.script([Reply::sse_in_pieces(&stream, 9)]);
    let (text, chunks) = collect(&anthropic(&server).await, tool_request("claude")).await;
    assert_eq!(text, "Let me check.");
    assert_eq!(
        tool_calls(&chunks),
        [ToolCallChunk {
            call_id: "toolu_2".into(),
            name: "time__get_current_time".into(),
            arguments_json: r#"{"timezone": "Asia/Tokyo"}"#.into(),
        }]
    );
    assert!(
        matches!(last(&chunks), Ok(ModelChunk::Done { finish_reason, .. }) if finish_reason == "tool_calls"),
        "{chunks:?}"
    );

    let body = &server.requests()[0].body;
    assert_eq!(body["system"], "be brief");
    assert_eq!(body["tools"][0]["name"], "time__get_current_time");
    assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    assert_eq!(body["tool_choice"]["disable_parallel_tool_use"], true);
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{messages:?}");
    let call = &messages[1]["content"][0];
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        (call["type"].as_str(), call["id"].as_str()),
        (Some("tool_use"), Some("call_1"))
    );
    assert_eq!(call["input"]["timezone"], "UTC", "input is an object");
    let result = &messages[2]["content"][0];
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], "call_1");
    assert_eq!(result["content"], "12:00 UTC");
    assert_eq!(result["is_error"], false);
}

#[tokio::test]
async fn anthropic_input_for_a_block_that_is_not_tool_use_is_a_protocol_error() {
    let server = ProviderServer::start().await;
    let delta = serde_json::json!({
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": "{}"}
    });
    let stream = format!(
        "{}event: content_block_delta\ndata: {delta}\n\n",
        anthropic_start(3)
    );
    server.script([Reply::sse(&stream)]);
    let (_, chunks) = collect(&anthropic(&server).await, tool_request("claude")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    assert_eq!(error.code(), "protocol", "{error}");
}

async fn openai(server: &ProviderServer) -> OpenAiModel {
    OpenAiModel::new(
        "openai",
        &format!("{}/v1", server.base_url()),
        Some(ApiKey::new("sk-test")),
        http_client(Duration::from_secs(2)),
    )
}

async fn anthropic(server: &ProviderServer) -> AnthropicModel {
    AnthropicModel::new(
        "anthropic",
        &server.base_url(),
        Some(ApiKey::new("ak-test")),
        http_client(Duration::from_secs(2)),
    )
}

fn last(chunks: &[Result<ModelChunk, ModelError>]) -> &Result<ModelChunk, ModelError> {
    chunks.last().expect("at least one chunk")
}

#[tokio::test]
async fn openai_streams_tokens_and_usage_and_sends_the_documented_request() {
    let server = ProviderServer::start().await;
    server.script([Reply::sse(&openai_stream(&["Hel", "lo", " there"], 9))]);
    let (text, chunks) = collect(&openai(&server).await, request("gpt-4o-mini")).await;
    assert_eq!(text, "Hello there");
    assert_eq!(
        last(&chunks),
        &Ok(ModelChunk::Done {
            usage: Usage {
                prompt_tokens: 9,
                completion_tokens: 3
            },
            finish_reason: "stop".into()
        })
    );

    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.headers["authorization"], "Bearer sk-test");
    assert_eq!(sent.body["model"], "gpt-4o-mini");
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(sent.body["max_tokens"], 64);
    assert_eq!(sent.body["messages"][0]["role"], "system");
    assert_eq!(sent.body["messages"][1]["content"], "hello");
}

#[tokio::test]
async fn openai_framing_edge_cases_parse_alike() {
    let plain = openai_stream(&["a", "b"], 1);
    // Keep-alive comments, CRLF line ends, a chunk's JSON split over two
    // `data:` lines (joined with a newline, which JSON allows), and the
    // whole body cut into 3-byte TCP pieces.
    let framed = format!(": keep-alive\n\n{}", plain)
        .replace("\"object\"", "\ndata: \"object\"")
        .replace('\n', "\r\n");
    let server = ProviderServer::start().await;
    server.script([Reply::sse_in_pieces(&framed, 3)]);
    let (text, chunks) = collect(&openai(&server).await, request("m")).await;
    assert_eq!(text, "ab", "{chunks:?}");
    assert!(
        matches!(last(&chunks), Ok(ModelChunk::Done { usage, .. }) if usage.prompt_tokens == 1)
    );
}

#[tokio::test]
async fn openai_error_statuses_carry_retry_after() {
    let server = ProviderServer::start().await;
    server.script([
        Reply::Status {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#.into(),
        },
        Reply::status(503, r#"{"error":{"message":"overloaded"}}"#),
        Reply::status(401, r#"{"error":{"message":"bad key"}}"#),
    ]);
    let model = openai(&server).await;
    let (_, chunks) = collect(&model, request("m")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    assert_eq!(error.code(), "rate_limited");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
    assert!(error.is_retryable());
    assert!(error.to_string().contains("Rate limit reached"), "{error}");

    let (_, chunks) = collect(&model, request("m")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    assert_eq!((error.code(), error.is_retryable()), ("server_error", true));

    let (_, chunks) = collect(&model, request("m")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    assert_eq!(
        (error.code(), error.is_retryable()),
        ("client_error", false)
    );
}

#[tokio::test]
async fn openai_stream_cut_off_or_malformed_or_failing_midway() {
    let server = ProviderServer::start().await;
    let full = openai_stream(&["one", " two", " three"], 4);
    let two_tokens: String = full.split_inclusive("\n\n").take(2).collect();
    server.script([
        Reply::Stream {
            pieces: vec![Piece::Bytes(two_tokens.clone())],
            end: End::Reset,
        },
        Reply::sse(&two_tokens), // closed cleanly, but without [DONE]
        Reply::sse(&format!("{two_tokens}data: {{\"choices\": [oops\n\n")),
        Reply::sse(&format!(
            "{two_tokens}data: {{\"error\":{{\"message\":\"server had an error\",\"type\":\"server_error\"}}}}\n\n"
        )),
    ]);
    let model = openai(&server).await;
    for expected in ["interrupted", "interrupted", "protocol", "provider_error"] {
        let (text, chunks) = collect(&model, request("m")).await;
        assert_eq!(text, "one two", "{expected}: {chunks:?}");
        let Err(error) = last(&chunks) else {
            panic!("{expected}: {chunks:?}")
        };
        assert_eq!(error.code(), expected, "{error}");
        assert!(error.is_retryable(), "{error}");
    }
}

#[tokio::test]
async fn a_server_that_is_down_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let model = OpenAiModel::new(
        "openai",
        &format!("http://{addr}/v1"),
        None,
        http_client(Duration::from_secs(1)),
    );
    let (_, chunks) = collect(&model, request("m")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    assert_eq!(error.code(), "connect", "{error}");
}

#[tokio::test]
async fn anthropic_streams_text_and_usage_and_sends_the_documented_request() {
    let server = ProviderServer::start().await;
    let body = format!(
        "{}{}{}{}",
        anthropic_start(12),
        anthropic_text("Hi"),
        anthropic_text(" there"),
        anthropic_end(2, "end_turn")
    );
    server.script([Reply::sse_in_pieces(&body.replace('\n', "\r\n"), 5)]);
    let (text, chunks) = collect(&anthropic(&server).await, request("claude-haiku")).await;
    assert_eq!(text, "Hi there");
    assert!(chunks.contains(&Ok(ModelChunk::Usage(Usage {
        prompt_tokens: 12,
        completion_tokens: 1
    }))));
    assert_eq!(
        last(&chunks),
        &Ok(ModelChunk::Done {
            usage: Usage {
                prompt_tokens: 12,
                completion_tokens: 2
            },
            finish_reason: "stop".into()
        })
    );
    let sent = &server.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], "ak-test");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent.body["model"], "claude-haiku");
    assert_eq!(sent.body["max_tokens"], 64);
    assert_eq!(sent.body["stream"], true);
    assert_eq!(sent.body["system"], "be brief");
    assert_eq!(sent.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent.body["messages"][0]["role"], "user");
}

#[tokio::test]
async fn anthropic_max_tokens_stop_maps_to_length() {
    let server = ProviderServer::start().await;
    let body = format!(
        "{}{}{}",
        anthropic_start(3),
        anthropic_text("x"),
        anthropic_end(64, "max_tokens")
    );
    server.script([Reply::sse(&body)]);
    let (_, chunks) = collect(&anthropic(&server).await, request("c")).await;
    assert!(
        matches!(last(&chunks), Ok(ModelChunk::Done { finish_reason, .. }) if finish_reason == "length"),
        "{chunks:?}"
    );
}

#[tokio::test]
async fn anthropic_errors_overload_cut_off_and_malformed() {
    let server = ProviderServer::start().await;
    let started = format!("{}{}", anthropic_start(7), anthropic_text("par"));
    server.script([
        Reply::sse(&format!(
            "{started}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n"
        )),
        Reply::Stream {
            pieces: vec![Piece::Bytes(started.clone())],
            end: End::Reset,
        },
        Reply::sse(&format!("{started}event: content_block_delta\ndata: {{not json\n\n")),
        Reply::Status {
            status: 529,
            headers: vec![("retry-after", "1".into())],
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .into(),
        },
        Reply::sse(&format!(
            "{started}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"invalid_request_error\", \"message\": \"bad\"}}}}\n\n"
        )),
    ]);
    let model = anthropic(&server).await;
    for (expected, retryable) in [
        ("provider_error", true),
        ("interrupted", true),
        ("protocol", true),
        ("server_error", true),
        ("provider_error", false),
    ] {
        let (_, chunks) = collect(&model, request("c")).await;
        let Err(error) = last(&chunks) else {
            panic!("{expected}: {chunks:?}")
        };
        assert_eq!(
            (error.code(), error.is_retryable()),
            (expected, retryable),
            "{error}"
        );
    }
}

#[tokio::test]
async fn https_endpoints_go_through_tls() {
    // A plain-TCP peer answering a TLS client hello with plain HTTP: the
    // client must fail in the TLS handshake (so HTTPS is supported), not
    // refuse the scheme.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let model = OpenAiModel::new(
        "openai",
        &format!("https://{addr}/v1"),
        None,
        http_client(Duration::from_secs(2)),
    );
    let (_, chunks) = collect(&model, request("m")).await;
    let Err(error) = last(&chunks) else {
        panic!("{chunks:?}")
    };
    let message = error.to_string().to_lowercase();
    assert_eq!(error.code(), "connect", "{error}");
    assert!(!message.contains("scheme"), "{error}");
    assert!(
        message.contains("tls") || message.contains("handshake") || message.contains("corrupt"),
        "{error}"
    );
}
