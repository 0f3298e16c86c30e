//! The pool serves a server's `tools/list` from its cache until the server
//! sends `notifications/tools/list_changed`, then lists again; the change
//! is one tenant's server's and no other tenant sees it. The server is
//! `tests/servers/dynamic_tools.py`, run by the Python of the venv that
//! holds `mcp-server-time` (the official `mcp` package comes with it).
mod support;

use std::collections::HashMap;
use std::time::Duration;

use chatstream_mcp::call::run_tool_call;
use chatstream_mcp::{McpClientPool, ToolCatalog};
use chatstream_schemas::pb::events::ToolCallRequested;
use chatstream_test_support::services;
use support::*;

const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/servers/dynamic_tools.py"
);

/// Tenants `acme` and `globex` each have their own `dynamic` server.
fn pool(python: &str) -> McpClientPool {
    let servers = servers_yaml(&format!(
        "- name: dynamic\n  transport: {{type: stdio, command: {python:?}, args: [{SERVER:?}]}}\n"
    ));
    let tenants = HashMap::from([
        ("acme".to_owned(), servers.clone()),
        ("globex".to_owned(), servers),
    ]);
    McpClientPool::new(tenants, test_config())
}

async fn tool_names(pool: &McpClientPool, tenant: &str) -> Vec<String> {
    let mut names: Vec<String> = pool
        .tools_for_tenant(tenant)
        .await
        .into_iter()
        .map(|t| t.tool)
        .collect();
    names.sort();
    names
}

async fn add_tool(pool: &McpClientPool, tenant: &str, name: &str, notify: bool) {
    let request = ToolCallRequested {
        call_id: format!("add-{name}"),
        server: "dynamic".into(),
        tool: "add_tool".into(),
        arguments_json: serde_json::json!({"name": name, "notify": notify}).to_string(),
        turn_depth: 1,
        turn_prompt: "test".into(),
    };
    let outcome = run_tool_call(pool, tenant, &request).await;
    assert_eq!(outcome.error, None, "{outcome:?}");
    assert_eq!(outcome.content_text, format!("added {name}"));
}

#[tokio::test]
async fn a_changed_tool_list_is_listed_again_for_that_tenant_only() {
    let Some(python) = services::mcp_python() else {
        return;
    };
    let pool = pool(&python);
    assert_eq!(tool_names(&pool, "acme").await, ["add_tool"]);
    assert_eq!(tool_names(&pool, "globex").await, ["add_tool"]);

    // Added without a word: the cached list stands.
    add_tool(&pool, "acme", "quiet", false).await;
    assert_eq!(tool_names(&pool, "acme").await, ["add_tool"]);

    // Announced: the next listings fetch the new list.
    add_tool(&pool, "acme", "loud", true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = tool_names(&pool, "acme").await;
        if names == ["add_tool", "loud", "quiet"] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acme still lists {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tool_names(&pool, "globex").await, ["add_tool"]);
}
