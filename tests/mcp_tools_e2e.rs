//! A turn with a tool call, end to end against the real binary and a real
//! MCP server: the user's message, the mock model asking for a tool, the
//! mcp processor running it on `server-everything` (stdio), and the router
//! finishing the answer with the result, all seen by a WebSocket client.
mod support;

use chatstream_schemas::ws::{ClientFrame, EventBody, ServerFrame};
use chatstream_test_support::fake_provider::{ProviderServer, Reply, openai_chunk};
use chatstream_test_support::services;
use chatstream_test_support::turns::{read_turn, send_and_read_turn};
use serde_json::{Value, json};
use support::Platform;

/// A tenant's `mcp_servers` entry for server-everything over stdio, with
/// `extra` lines (e.g. `allowed_tools: [echo]`) indented to fit.
fn everything_servers(everything: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("        {extra}\n")
    };
    format!(
        "    mcp_servers:\n      - name: everything\n        transport: {{type: stdio, command: {everything:?}, args: [stdio]}}\n{extra}"
    )
}

/// `chatstream dev` with extra env vars where tenant `acme` has
/// server-everything over stdio (with `extra` lines), or `None` after
/// saying why the test does not run.
async fn platform_with_everything(env: &[(&str, &str)], extra: &str) -> Option<Platform> {
    let everything = services::mcp_server("CHATSTREAM_TEST_MCP_EVERYTHING")?;
    let servers = everything_servers(&everything, extra);
    Some(Platform::start_with_tenant_config(env, &[("acme", &servers)]).await)
}

/// A platform whose tenant `acme` has the everything server (with `extra`
/// lines in its entry), and `tenant`'s client, which asked the mock model
/// for a tool call (`/mock tool <call>`) in a new conversation it
/// subscribed to: the platform, the client, the user message's event id
/// and the conversation id. `None` when the server is not installed.
async fn asking_for_tool(
    extra: &str,
    tenant: &str,
    call: &str,
) -> Option<(Platform, support::Ws, String, String)> {
    let platform = platform_with_everything(&[], extra).await?;
    let mut ws = platform.ws(platform.key(tenant)).await;
    let (user_event_id, conversation_id) =
        ws.send_and_subscribe(&format!("/mock tool {call}")).await;
    Some((platform, ws, user_event_id, conversation_id))
}

#[tokio::test]
async fn a_model_uses_a_tool_on_a_real_mcp_server_within_one_turn() {
    let Some((_platform, mut ws, user_event_id, _)) = asking_for_tool(
        "allowed_tools: [get-sum, echo]",
        "acme",
        r#"everything.get-sum {"a":20,"b":22}"#,
    )
    .await
    else {
        return;
    };
    let turn = read_turn(&mut ws, &user_event_id).await;
    let (events, deltas) = (turn.events(), turn.deltas());

    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match &e.body {
            EventBody::UserMessageSent { .. } => "user",
            EventBody::ToolCallRequested(_) => "tool_requested",
            EventBody::ToolCallCompleted { .. } => "tool_completed",
            EventBody::AssistantMessage { .. } => "assistant",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["user", "tool_requested", "tool_completed", "assistant"],
        "{events:#?}"
    );
    let EventBody::ToolCallRequested(request) = &events[1].body else {
        unreachable!()
    };
    assert_eq!(events[1].causation_id, user_event_id);
    assert_eq!(
        (request.server.as_str(), request.tool.as_str()),
        ("everything", "get-sum")
    );
    assert_eq!(request.turn_depth, 1);

    let EventBody::ToolCallCompleted {
        content_text,
        is_error,
        ..
    } = &events[2].body
    else {
        unreachable!()
    };
    assert_eq!(events[2].causation_id, events[1].id);
    assert!(!is_error, "{:?}", events[2]);
    assert!(
        content_text.contains("42"),
        "the real server's answer: {content_text}"
    );

    let EventBody::AssistantMessage { text, .. } = &events[3].body else {
        unreachable!()
    };
    assert_eq!(events[3].causation_id, events[2].id);
    assert!(
        text.contains("42"),
        "the answer uses the tool's result: {text}"
    );
    let streamed: String = deltas
        .iter()
        .filter(|(reply_to, _)| *reply_to == events[2].id)
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(&streamed, text, "the client saw the answer stream");
}

#[tokio::test]
async fn another_tenants_model_cannot_call_the_tool() {
    let Some((_platform, mut ws, user_event_id, _)) = asking_for_tool(
        "",
        "globex",
        r#"everything.echo {"message":"acme's secrets"}"#,
    )
    .await
    else {
        return;
    };
    let events = read_turn(&mut ws, &user_event_id).await.events();
    let completed = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ToolCallCompleted {
                is_error,
                error_kind,
                content_text,
                ..
            } => Some((*is_error, error_kind.clone(), content_text.clone())),
            _ => None,
        })
        .expect("the call was answered");
    assert!(completed.0, "{completed:?}");
    assert_eq!(completed.1, "not_allowed", "{completed:?}");
    assert!(!completed.2.contains("Echo"), "{completed:?}");
    let answer = events.last().unwrap();
    let EventBody::AssistantMessage { text, .. } = &answer.body else {
        panic!("{answer:?}")
    };
    assert!(text.contains("not_allowed"), "the model is told: {text}");
}

#[tokio::test]
async fn a_person_approves_a_tool_call_over_websocket() {
    let Some((platform, mut ws, user_event_id, conversation_id)) = asking_for_tool(
        "require_approval: [echo]",
        "acme",
        r#"everything.echo {"message":"approved!"}"#,
    )
    .await
    else {
        return;
    };
    let frames = ws
        .frames_until(|f| {
            matches!(f, ServerFrame::Event { event, .. }
                if matches!(event.body, EventBody::ToolCallApprovalRequested { .. }))
        })
        .await;
    let Some(ServerFrame::Event { event: asked, .. }) = frames.last() else {
        unreachable!()
    };
    let tool_call_event_id = asked.causation_id.clone();

    // Another tenant cannot decide on it: the conversation is not theirs.
    let mut intruder = platform.ws(platform.key("globex")).await;
    intruder
        .send(&ClientFrame::DecideToolCall {
            request_id: Some("d".into()),
            conversation_id: conversation_id.clone(),
            tool_call_event_id: tool_call_event_id.clone(),
            approved: true,
            reason: None,
        })
        .await;
    intruder.expect_error("conversation_not_found").await;

    ws.send(&ClientFrame::DecideToolCall {
        request_id: Some("d".into()),
        conversation_id: conversation_id.clone(),
        tool_call_event_id,
        approved: true,
        reason: Some("looks fine".into()),
    })
    .await;
    let events = read_turn(&mut ws, &user_event_id).await.events();
    let completed = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ToolCallCompleted {
                is_error,
                content_text,
                ..
            } => Some((*is_error, content_text.clone())),
            _ => None,
        })
        .expect("the approved call ran");
    assert!(!completed.0, "{completed:?}");
    assert!(completed.1.contains("approved!"), "{completed:?}");
    let EventBody::AssistantMessage { text, .. } = &events.last().unwrap().body else {
        panic!("{events:#?}")
    };
    assert!(text.contains("approved!"), "{text}");

    // Over gRPC: another tenant is refused, the owner rejects the next call.
    let (second_event_id, _, _) = ws
        .send_message(
            Some(&conversation_id),
            r#"/mock tool everything.echo {"message":"no"}"#,
        )
        .await;
    let frames = ws
        .frames_until(|f| {
            matches!(f, ServerFrame::Event { event, .. }
                if event.correlation_id == second_event_id
                    && matches!(event.body, EventBody::ToolCallApprovalRequested { .. }))
        })
        .await;
    let Some(ServerFrame::Event { event: asked, .. }) = frames.last() else {
        unreachable!()
    };
    let decide = |key: &str, approved: bool| {
        support::authed(
            chatstream_schemas::pb::gateway::DecideToolCallRequest {
                request_id: String::new(),
                conversation_id: conversation_id.clone(),
                tool_call_event_id: asked.causation_id.clone(),
                approved,
                reason: "not this one".into(),
            },
            key,
        )
    };
    let mut grpc = platform.grpc().await;
    let refused = grpc
        .decide_tool_call(decide(platform.key("globex"), true))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
    grpc.decide_tool_call(decide(platform.key("acme"), false))
        .await
        .expect("decision acked");
    let events = read_turn(&mut ws, &second_event_id).await.events();
    let rejected = events
        .iter()
        .find_map(|e| match &e.body {
            EventBody::ToolCallCompleted { error_kind, .. } => Some(error_kind.clone()),
            _ => None,
        })
        .expect("the rejected call has a result");
    assert_eq!(rejected, "rejected");
}

/// An OpenAI-compatible provider that, until the conversation holds a tool
/// result, asks for the offered tool named `<server>__echo`; then answers
/// with the result. It records every request.
async fn echoing_provider() -> ProviderServer {
    let provider = ProviderServer::start().await;
    provider.respond_with(|request| {
        let request = &request.body;
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        let result = messages.iter().find(|m| m["role"] == "tool");
        let echo = request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str())
            .find(|name| name.ends_with("__echo"));
        let stop = |finish| openai_chunk(json!({}), Some(finish));
        let body = match (result, echo) {
            (Some(result), _) => {
                let text = format!("The echo said: {}", result["content"].as_str().unwrap_or_default());
                openai_chunk(json!({"content": text}), None) + &stop("stop")
            }
            (None, Some(name)) => {
                let call = json!({"tool_calls": [{"index": 0, "id": "call_e2e", "type": "function",
                    "function": {"name": name, "arguments": "{\"message\":\"hi from the model\"}"}}]});
                openai_chunk(call, None) + &stop("tool_calls")
            }
            (None, None) => openai_chunk(json!({"content": "no echo tool offered"}), None) + &stop("stop"),
        };
        Reply::sse(&(body + "data: [DONE]\n\n"))
    });
    provider
}

#[tokio::test]
async fn a_real_provider_is_offered_the_tenants_tools_and_one_runs_on_the_real_server() {
    let provider = echoing_provider().await;
    let provider_url = format!("{}/v1", provider.base_url());
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("chatstream.yaml");
    std::fs::write(
        &config_path,
        format!(
            "models:\n  providers: {{p: {{kind: openai, base_url: \"{provider_url}\"}}}}\n  catalog: {{gpt: {{provider: p}}}}\n  default_routing: {{candidates: [{{model: gpt}}], retries: 0}}\n"
        ),
    )
    .unwrap();
    let env = [("CHATSTREAM_CONFIG", config_path.to_str().unwrap())];
    let Some(platform) = platform_with_everything(&env, "allowed_tools: [get-sum, echo]").await
    else {
        return;
    };

    let mut acme = platform.ws(platform.key("acme")).await;
    let events = send_and_read_turn(&mut acme, "please echo something")
        .await
        .events();
    let called = events.iter().find_map(|e| match &e.body {
        EventBody::ToolCallRequested(request) => Some(format!(
            "{}.{} {}",
            request.server, request.tool, request.arguments_json
        )),
        _ => None,
    });
    assert_eq!(
        called.as_deref(),
        Some(r#"everything.echo {"message":"hi from the model"}"#),
        "the offered name maps back to the tenant's server and tool: {events:?}"
    );
    let answer = events.last().unwrap();
    let EventBody::AssistantMessage { text, .. } = &answer.body else {
        panic!("{answer:?}")
    };
    assert!(
        text.starts_with("The echo said:") && text.contains("hi from the model"),
        "the real server's result reached the model: {text}"
    );

    let requests = provider.requests();
    assert_eq!(requests.len(), 2, "one call per step: {requests:?}");
    let mut offered: Vec<&str> = requests[0].body["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    offered.sort();
    // Only the tools the tenant allows, from the real server's tools/list.
    assert_eq!(offered, ["everything__echo", "everything__get-sum"]);
    let echo = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "everything__echo")
        .unwrap();
    assert!(
        echo["function"]["parameters"]["properties"]["message"].is_object(),
        "the server's input schema: {echo}"
    );
    let second = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(second[0]["content"], "please echo something");
    assert_eq!(
        second[1]["tool_calls"][0]["function"]["name"],
        "everything__echo"
    );
    assert_eq!(second[2]["role"], "tool");
    assert_eq!(second[2]["tool_call_id"], "call_e2e");

    // Another tenant's model is offered nothing.
    let mut globex = platform.ws(platform.key("globex")).await;
    let events = send_and_read_turn(&mut globex, "please echo something")
        .await
        .events();
    let answer = events.last().unwrap();
    assert!(
        matches!(&answer.body, EventBody::AssistantMessage { text, .. } if text == "no echo tool offered"),
        "{answer:?}"
    );
    let requests = provider.requests();
    assert!(requests[2].body.get("tools").is_none(), "{:?}", requests[2]);
}

#[tokio::test]
async fn a_tool_turn_completes_over_the_openai_http_api() {
    let Some(platform) = platform_with_everything(&[], "allowed_tools: [echo]").await else {
        return;
    };
    let url = format!("http://{}/v1/chat/completions", platform.http_addr);
    let client = reqwest::Client::new();
    let ask = |stream: bool| {
        let body = json!({
            "model": "mock",
            "stream": stream,
            "messages": [{"role": "user", "content": "/mock tool everything.echo {\"message\":\"over http\"}"}],
        });
        client
            .post(&url)
            .bearer_auth(platform.key("acme"))
            .json(&body)
            .send()
    };

    let response = ask(false).await.unwrap();
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(
        content.contains("returned") && content.contains("over http"),
        "the answer after the tool: {completion}"
    );

    let response = ask(true).await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let streamed: String = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| {
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        streamed.contains("returned") && streamed.contains("over http"),
        "the streamed answer after the tool: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}
