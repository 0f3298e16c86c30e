//! What a real provider is sent: the conversation so far (earlier turns
//! from the projected history, tool rounds as calls and results), and the
//! tenant's own tools with their schemas; and how a provider's tool call
//! becomes the tenant's `ToolCallRequested`.
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_config::models::ModelsConfig;
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::Processor;
use chatstream_core::tools::{ToolCatalog, ToolDescriptor};
use chatstream_projector::ConversationProjector;
use chatstream_router::ModelRouter;
use chatstream_router::mock::MockModel;
use chatstream_router::providers::build_catalog;
use chatstream_router::routing::Routing;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{ConversationOpened, event::Payload};
use chatstream_schemas::{Event, codec};
use chatstream_test_support::conformance::user_message;
use chatstream_test_support::embedded::EmbeddedBackends;
use serde_json::{Value, json};
use support::*;

/// A tenant whose tools never finish listing (a hung MCP server).
struct HangingTools;

#[async_trait]
impl ToolCatalog for HangingTools {
    async fn tools_for_tenant(&self, _tenant_id: &str) -> Vec<ToolDescriptor> {
        std::future::pending().await
    }
}

/// Tools by tenant, as the mcp processor would list them.
struct StaticTools(HashMap<String, Vec<ToolDescriptor>>);

#[async_trait]
impl ToolCatalog for StaticTools {
    async fn tools_for_tenant(&self, tenant_id: &str) -> Vec<ToolDescriptor> {
        self.0.get(tenant_id).cloned().unwrap_or_default()
    }
}

struct Harness {
    log: Arc<dyn EventLog>,
    router: ModelRouter,
    projector: ConversationProjector,
    provider: ProviderServer,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let provider = ProviderServer::start().await;
    let yaml = format!(
        "providers: {{p: {{kind: openai, base_url: \"{}/v1\"}}}}\ncatalog: {{gpt: {{provider: p}}}}\ndefault_routing: {{candidates: [{{model: gpt}}], retries: 0}}\n",
        provider.base_url()
    );
    let config: ModelsConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let catalog = build_catalog(&config, &MockModel::new(Duration::ZERO)).unwrap();
    let routing = Arc::new(Routing::new(&config, catalog, &[]).unwrap());
    let (log, store, fanout, dir) = EmbeddedBackends::open().into_parts();
    let time = ToolDescriptor {
        server: "time".into(),
        tool: "get_current_time".into(),
        description: "The current time in a timezone".into(),
        input_schema: json!({
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"]
        }),
    };
    let tools = StaticTools(HashMap::from([("acme".to_owned(), vec![time])]));
    let router = ModelRouter::with_routing(log.clone(), store.clone(), fanout.clone(), routing)
        .with_tools(Arc::new(tools));
    Harness {
        projector: ConversationProjector::new(log.clone(), store, fanout),
        log,
        router,
        provider,
        _dir: dir,
    }
}

impl Harness {
    /// Appends `event`, lets the router handle it and projects everything
    /// new, as a running platform would (the router also reads back what it
    /// appended); returns what the router appended.
    async fn step(&self, event: &Event) -> Vec<Event> {
        let position = self.log.append(&event.tenant_id, event).await.unwrap();
        self.router.handle(event, position).await.unwrap();
        let appended = self.read_from(position.offset + 1).await;
        self.projector.handle(event, position).await.unwrap();
        for (position, event) in &appended {
            self.projector.handle(event, *position).await.unwrap();
            // The router reads its own output back from the log, too.
            self.router.handle(event, *position).await.unwrap();
        }
        appended.into_iter().map(|(_, event)| event).collect()
    }

    async fn read_from(&self, offset: u64) -> Vec<(LogPosition, Event)> {
        let records = self.log.read(0, offset, 10_000).await.unwrap();
        records
            .iter()
            .map(|r| (r.position, codec::decode(&r.value).unwrap()))
            .collect()
    }

    async fn open(&self, tenant: &str, conversation: &str) {
        let opened = new_event(
            new_event_id(),
            EventContext {
                tenant_id: tenant,
                conversation_id: conversation,
                causation_id: "",
                correlation_id: "",
            },
            Payload::ConversationOpened(ConversationOpened::default()),
        );
        self.step(&opened).await;
    }

    /// The messages the provider got in its `n`th request, as `role: text`.
    fn sent_messages(&self, n: usize) -> Vec<String> {
        let body = &self.provider.requests()[n].body;
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let text = match (&m["content"], &m["tool_calls"]) {
                    (Value::String(text), _) => text.clone(),
                    (_, Value::Array(calls)) => format!(
                        "call {} {}",
                        calls[0]["function"]["name"].as_str().unwrap(),
                        calls[0]["function"]["arguments"].as_str().unwrap()
                    ),
                    _ => String::new(),
                };
                format!("{}: {text}", m["role"].as_str().unwrap())
            })
            .collect()
    }
}

fn payload_of<'a>(events: &'a [Event], kind: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} in {events:?}"))
}

#[tokio::test]
async fn a_tool_round_and_earlier_turns_reach_the_provider_in_its_own_format() {
    let h = harness().await;
    h.open("acme", "c").await;
    h.provider.script([
        Reply::sse(&openai_tool_call_stream(
            "call_9",
            "time__get_current_time",
            &[r#"{"timezone":"#, r#""UTC"}"#],
        )),
        Reply::sse(&openai_stream(&["It is", " noon."], 30)),
        Reply::sse(&openai_stream(&["You're", " welcome."], 40)),
    ]);

    // The model is offered the tenant's tool and asks for it.
    let asked = h.step(&user_message("acme", "c", "what time is it?")).await;
    let offered = &h.provider.requests()[0].body["tools"];
    assert_eq!(offered.as_array().unwrap().len(), 1, "{offered}");
    assert_eq!(offered[0]["function"]["name"], "time__get_current_time");
    assert_eq!(
        offered[0]["function"]["parameters"]["required"][0],
        "timezone"
    );
    let request = payload_of(&asked, chatstream_schemas::event::TOOL_CALL_REQUESTED);
    let Some(Payload::ToolCallRequested(call)) = &request.payload else {
        unreachable!()
    };
    assert_eq!(
        (
            call.server.as_str(),
            call.tool.as_str(),
            call.call_id.as_str()
        ),
        ("time", "get_current_time", "call_9"),
        "the offered name maps back to the tenant's server and tool"
    );
    assert_eq!(call.arguments_json, r#"{"timezone":"UTC"}"#);

    // The result continues the turn: the provider sees the call and result.
    let answered = h.step(&completed(request, "12:00 UTC")).await;
    let answer = payload_of(&answered, chatstream_schemas::event::ASSISTANT_MESSAGE);
    assert!(
        matches!(&answer.payload, Some(Payload::AssistantMessage(m)) if m.text == "It is noon.")
    );
    assert_eq!(
        h.sent_messages(1),
        [
            "user: what time is it?",
            r#"assistant: call time__get_current_time {"timezone":"UTC"}"#,
            "tool: 12:00 UTC",
        ]
    );
    let second = &h.provider.requests()[1].body;
    assert_eq!(
        second["messages"][1]["tool_calls"][0]["id"],
        second["messages"][2]["tool_call_id"]
    );

    // The next message carries the whole earlier turn.
    h.step(&user_message("acme", "c", "thanks")).await;
    assert_eq!(
        h.sent_messages(2),
        [
            "user: what time is it?",
            r#"assistant: call time__get_current_time {"timezone":"UTC"}"#,
            "tool: 12:00 UTC",
            "assistant: It is noon.",
            "user: thanks",
        ]
    );
}

#[tokio::test]
async fn tenants_see_only_their_own_tools_and_conversations() {
    let h = harness().await;
    h.open("acme", "c").await;
    h.open("globex", "c").await;
    h.provider
        .set_default(Reply::sse(&openai_stream(&["ok"], 3)));

    h.step(&user_message("acme", "c", "acme's secret plan"))
        .await;
    // Same conversation id, another tenant: none of acme's turn, no tools.
    h.step(&user_message("globex", "c", "hello")).await;
    let globex = &h.provider.requests()[1].body;
    assert_eq!(h.sent_messages(1), ["user: hello"]);
    assert!(globex.get("tools").is_none(), "{globex}");

    // A model that names another tenant's tool (or makes one up) gets a
    // request the mcp processor refuses for this tenant.
    h.provider.script([Reply::sse(&openai_tool_call_stream(
        "call_1",
        "time__get_current_time",
        &["{}"],
    ))]);
    let asked = h.step(&user_message("globex", "c", "time?")).await;
    let request = payload_of(&asked, chatstream_schemas::event::TOOL_CALL_REQUESTED);
    assert_eq!(request.tenant_id, "globex");
    assert_eq!(
        h.sent_messages(2),
        ["user: hello", "assistant: ok", "user: time?"]
    );
}

#[tokio::test]
async fn a_tool_list_that_hangs_does_not_hold_the_answer() {
    let mut h = harness().await;
    h.router = h
        .router
        .with_tools(Arc::new(HangingTools))
        .with_tool_listing_wait(Duration::from_millis(200));
    h.open("acme", "c").await;
    h.provider
        .set_default(Reply::sse(&openai_stream(&["ok"], 3)));
    // Fails, rather than hangs, if the turn waits for the list.
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        h.step(&user_message("acme", "c", "hello")),
    )
    .await
    .expect("the turn went on without the tools");
    payload_of(&answered, chatstream_schemas::event::ASSISTANT_MESSAGE);
    let sent = &h.provider.requests()[0].body;
    assert!(sent.get("tools").is_none(), "{sent}");
}
