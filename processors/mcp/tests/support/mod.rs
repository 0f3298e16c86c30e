//! Real MCP servers for the tests, found through the env vars the test
//! script sets (`chatstream_test_support::services`), and a tenant setup
//! that uses them on the embedded backends.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use chatstream_config::mcp::McpServerConfig;
use chatstream_core::log::EventLog;
use chatstream_core::store::ProjectionStore;
use chatstream_mcp::{McpClientPool, McpProcessor, McpSettings};
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{ToolCallCompleted, ToolCallRequested, event::Payload};
use chatstream_test_support::embedded::{EmbeddedBackends, events_caused_by};
use chatstream_test_support::services;

/// `mcp-server-everything` (npm) and `mcp-server-time` (PyPI).
pub fn real_servers() -> Option<(String, String)> {
    let everything = services::mcp_server("CHATSTREAM_TEST_MCP_EVERYTHING")?;
    let time = services::mcp_server("CHATSTREAM_TEST_MCP_TIME")?;
    Some((everything, time))
}

pub fn servers_yaml(yaml: &str) -> Vec<McpServerConfig> {
    serde_yaml_ng::from_str(yaml).expect("servers yaml")
}

/// Tenant `acme` has the stdio servers `everything` and `time` (only
/// `get_current_time` allowed); tenant `globex` has none.
pub fn acme_servers(everything: &str, time: &str) -> Vec<McpServerConfig> {
    servers_yaml(&format!(
        "- name: everything\n  transport: {{type: stdio, command: {everything:?}, args: [stdio]}}\n  call_timeout_ms: 3000\n\
         - name: time\n  transport: {{type: stdio, command: {time:?}, args: [--local-timezone, UTC]}}\n  allowed_tools: [get_current_time]\n"
    ))
}

pub fn test_config() -> McpSettings {
    McpSettings {
        call_timeout_ms: 10_000,
        restart_backoff_ms: 100,
        max_result_bytes: 4096,
        ..McpSettings::default()
    }
}

pub struct Setup {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn ProjectionStore>,
    pub pool: Arc<McpClientPool>,
    pub processor: McpProcessor,
    _dir: tempfile::TempDir,
}

pub fn setup(servers: HashMap<String, Vec<McpServerConfig>>, config: McpSettings) -> Setup {
    let (log, store, _, dir) = EmbeddedBackends::open().into_parts();
    let pool = Arc::new(McpClientPool::new(servers, config));
    let processor = McpProcessor::new(log.clone(), store.clone(), pool.clone());
    Setup {
        log,
        store,
        pool,
        processor,
        _dir: dir,
    }
}

pub fn tool_request(tenant: &str, server: &str, tool: &str, arguments_json: &str) -> Event {
    let cause = new_event_id();
    new_event(
        new_event_id(),
        EventContext {
            tenant_id: tenant,
            conversation_id: "c1",
            causation_id: &cause,
            correlation_id: &cause,
        },
        Payload::ToolCallRequested(Box::new(ToolCallRequested {
            call_id: format!("call-{tool}"),
            server: server.into(),
            tool: tool.into(),
            arguments_json: arguments_json.into(),
            turn_depth: 1,
            turn_prompt: "test".into(),
        })),
    )
}

/// Every `ToolCallCompleted` on the log caused by `request`.
pub async fn results_of(log: &dyn EventLog, request: &Event) -> Vec<(Event, ToolCallCompleted)> {
    events_caused_by(log, &request.id)
        .await
        .into_iter()
        .filter_map(|e| match e.payload.clone() {
            Some(Payload::ToolCallCompleted(done)) => Some((e, *done)),
            _ => None,
        })
        .collect()
}

/// Appends `request`, lets the processor handle it, and returns its one result.
pub async fn call(setup: &Setup, request: &Event) -> ToolCallCompleted {
    use chatstream_core::runner::Processor;
    let position = setup.log.append(&request.tenant_id, request).await.unwrap();
    setup.processor.handle(request, position).await.unwrap();
    let mut results = results_of(setup.log.as_ref(), request).await;
    assert_eq!(results.len(), 1, "exactly one result for {request:?}");
    let (event, done) = results.remove(0);
    assert_eq!(
        event.id,
        chatstream_schemas::ids::derived_event_id(&request.id, 0)
    );
    assert_eq!(event.correlation_id, request.correlation_id);
    assert_eq!(event.tenant_id, request.tenant_id);
    done
}
