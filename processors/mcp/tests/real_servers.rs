//! The mcp processor against real third-party MCP servers:
//! `@modelcontextprotocol/server-everything` (npm; stdio and Streamable
//! HTTP) and `mcp-server-time` (PyPI; stdio).
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chatstream_core::log::LogPosition;
use chatstream_core::runner::Processor;
use chatstream_mcp::ToolCatalog;
use chatstream_test_support::ports::{free_port, wait_for_port};
use support::*;

/// Where the tests' requests sit on the log.
const FIRST: LogPosition = LogPosition {
    partition: 0,
    offset: 0,
};

fn acme_only(
    everything: &str,
    time: &str,
) -> HashMap<String, Vec<chatstream_config::mcp::McpServerConfig>> {
    HashMap::from([("acme".to_owned(), acme_servers(everything, time))])
}

/// The setup where only tenant `acme` has the real servers, or `None`
/// after saying why not.
fn acme_setup() -> Option<Setup> {
    let (everything, time) = real_servers()?;
    Some(setup(acme_only(&everything, &time), test_config()))
}

#[tokio::test]
async fn lists_each_tenants_allowed_tools_with_their_schemas() {
    let Some(setup) = acme_setup() else {
        return;
    };

    let tools = setup.pool.tools_for_tenant("acme").await;
    let names: Vec<String> = tools.iter().map(|t| t.qualified_name()).collect();
    assert!(names.contains(&"everything.echo".to_owned()), "{names:?}");
    assert!(
        names.contains(&"everything.get-sum".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"time.get_current_time".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"time.convert_time".to_owned()),
        "a tool outside the allowlist is not offered: {names:?}"
    );
    let sum = tools.iter().find(|t| t.tool == "get-sum").unwrap();
    assert_eq!(sum.input_schema["type"], "object");
    assert!(
        sum.input_schema["properties"]["a"].is_object(),
        "{:?}",
        sum.input_schema
    );
    assert!(!sum.description.is_empty());

    // The list is cached: a second call reuses the running server.
    let pid = setup
        .pool
        .server_pid("acme", "everything")
        .await
        .expect("running");
    assert_eq!(setup.pool.tools_for_tenant("acme").await.len(), tools.len());
    assert_eq!(setup.pool.server_pid("acme", "everything").await, Some(pid));

    assert!(setup.pool.tools_for_tenant("globex").await.is_empty());
}

#[tokio::test]
async fn calls_tools_on_stdio_servers_and_appends_the_results() {
    let Some(setup) = acme_setup() else {
        return;
    };

    let echo = call(
        &setup,
        &tool_request("acme", "everything", "echo", r#"{"message":"hello tools"}"#),
    )
    .await;
    assert!(!echo.is_error, "{echo:?}");
    assert!(echo.content_text.contains("hello tools"), "{echo:?}");
    assert_eq!(echo.request.as_ref().unwrap().tool, "echo");

    let sum = call(
        &setup,
        &tool_request("acme", "everything", "get-sum", r#"{"a":2,"b":3}"#),
    )
    .await;
    assert!(!sum.is_error, "{sum:?}");
    assert!(sum.content_text.contains('5'), "{sum:?}");

    let now = call(
        &setup,
        &tool_request("acme", "time", "get_current_time", r#"{"timezone":"UTC"}"#),
    )
    .await;
    assert!(!now.is_error, "{now:?}");
    assert!(now.content_text.contains("UTC"), "{now:?}");
    assert!(!now.truncated);
}

#[tokio::test]
async fn a_redelivered_request_runs_the_tool_once() {
    let Some((everything, time)) = real_servers() else {
        return;
    };
    let setup = setup(acme_only(&everything, &time), test_config());
    let request = tool_request("acme", "everything", "echo", r#"{"message":"once"}"#);
    call(&setup, &request).await;

    // Redelivered, then handled by a fresh processor (a restart) on the same store.
    setup.processor.handle(&request, FIRST).await.unwrap();
    let restarted = chatstream_mcp::McpProcessor::new(
        setup.log.clone(),
        setup.store.clone(),
        std::sync::Arc::new(chatstream_mcp::McpClientPool::new(
            acme_only(&everything, &time),
            test_config(),
        )),
    );
    restarted.handle(&request, FIRST).await.unwrap();
    assert_eq!(results_of(setup.log.as_ref(), &request).await.len(), 1);
    assert!(
        setup.store.is_processed("mcp", &request.id).await.unwrap(),
        "the request is marked processed"
    );
}

#[tokio::test]
async fn a_tool_error_is_a_result_the_model_sees() {
    let Some(setup) = acme_setup() else {
        return;
    };
    let done = call(
        &setup,
        &tool_request(
            "acme",
            "time",
            "get_current_time",
            r#"{"timezone":"Not/AZone"}"#,
        ),
    )
    .await;
    assert!(done.is_error, "{done:?}");
    assert_eq!(done.error_kind, "tool_error");
    assert!(done.content_text.contains("Not/AZone"), "{done:?}");
}

#[tokio::test]
async fn invalid_arguments_are_refused_before_the_call() {
    let Some(setup) = acme_setup() else {
        return;
    };
    let wrong_type = call(
        &setup,
        &tool_request("acme", "everything", "get-sum", r#"{"a":"two","b":3}"#),
    )
    .await;
    assert!(wrong_type.is_error);
    assert_eq!(wrong_type.error_kind, "invalid_arguments");
    assert!(
        wrong_type.content_text.contains("input schema"),
        "{wrong_type:?}"
    );

    let missing = call(
        &setup,
        &tool_request("acme", "everything", "get-sum", r#"{"a":2}"#),
    )
    .await;
    assert_eq!(missing.error_kind, "invalid_arguments");
    assert!(missing.content_text.contains("\"b\""), "{missing:?}");

    let not_json = call(
        &setup,
        &tool_request("acme", "everything", "echo", "{message"),
    )
    .await;
    assert_eq!(not_json.error_kind, "invalid_arguments");
    assert!(
        not_json.content_text.contains("not valid JSON"),
        "{not_json:?}"
    );

    let not_allowed = call(&setup, &tool_request("acme", "time", "convert_time", "{}")).await;
    assert_eq!(not_allowed.error_kind, "not_allowed");
}

#[tokio::test]
async fn a_slow_tool_times_out_and_the_server_stays_usable() {
    let Some(setup) = acme_setup() else {
        return;
    };
    // The `everything` server's timeout is 3 s; this operation takes 10 s.
    let started = Instant::now();
    let slow = call(
        &setup,
        &tool_request(
            "acme",
            "everything",
            "trigger-long-running-operation",
            r#"{"duration":10,"steps":2}"#,
        ),
    )
    .await;
    assert!(slow.is_error);
    assert_eq!(slow.error_kind, "timeout", "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    let echo = call(
        &setup,
        &tool_request("acme", "everything", "echo", r#"{"message":"still here"}"#),
    )
    .await;
    assert!(!echo.is_error, "{echo:?}");
}

#[tokio::test]
async fn a_large_result_is_cut_and_marked() {
    let Some(setup) = acme_setup() else {
        return;
    };
    let long = "x".repeat(10_000);
    let done = call(
        &setup,
        &tool_request(
            "acme",
            "everything",
            "echo",
            &format!(r#"{{"message":"{long}"}}"#),
        ),
    )
    .await;
    assert!(!done.is_error, "{done:?}");
    assert!(done.truncated);
    assert!(done.content_text.len() <= 4096);
    assert!(done.content_text.len() > 4000);
}

#[tokio::test]
async fn a_server_that_crashes_mid_call_gives_an_error_and_is_restarted() {
    let Some((everything, time)) = real_servers() else {
        return;
    };
    let setup = std::sync::Arc::new(setup(acme_only(&everything, &time), test_config()));
    let warm = call(
        &setup,
        &tool_request("acme", "everything", "echo", r#"{"message":"warm"}"#),
    )
    .await;
    assert!(!warm.is_error);
    let pid = setup
        .pool
        .server_pid("acme", "everything")
        .await
        .expect("running");

    let request = tool_request(
        "acme",
        "everything",
        "trigger-long-running-operation",
        r#"{"duration":2,"steps":2}"#,
    );
    let in_flight = {
        let setup = setup.clone();
        let request = request.clone();
        tokio::spawn(async move { call(&setup, &request).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let crashed = in_flight.await.unwrap();
    assert!(crashed.is_error, "{crashed:?}");
    assert_eq!(crashed.error_kind, "server_unavailable", "{crashed:?}");

    // The next call restarts the server (after a short backoff).
    let again = call(
        &setup,
        &tool_request("acme", "everything", "echo", r#"{"message":"back"}"#),
    )
    .await;
    assert!(!again.is_error, "{again:?}");
    assert!(again.content_text.contains("back"));
    let new_pid = setup
        .pool
        .server_pid("acme", "everything")
        .await
        .expect("restarted");
    assert_ne!(new_pid, pid);
}

#[tokio::test]
async fn a_tenant_cannot_reach_another_tenants_servers() {
    let Some((everything, time)) = real_servers() else {
        return;
    };
    let mut servers = acme_only(&everything, &time);
    // globex has its own server, also called `time`, that allows nothing of acme's.
    servers.insert(
        "globex".into(),
        servers_yaml(&format!(
            "- name: time\n  transport: {{type: stdio, command: {time:?}}}\n  allowed_tools: [convert_time]\n"
        )),
    );
    let setup = setup(servers, test_config());

    let denied = call(
        &setup,
        &tool_request("globex", "everything", "echo", r#"{"message":"steal"}"#),
    )
    .await;
    assert!(denied.is_error);
    assert_eq!(denied.error_kind, "not_allowed");
    assert!(!denied.content_text.contains("acme"), "{denied:?}");
    assert_eq!(setup.pool.server_pid("globex", "everything").await, None);
    assert_eq!(
        setup.pool.server_pid("acme", "everything").await,
        None,
        "acme's server was never started for globex"
    );

    // Same server name, globex's own policy: acme's allowed tool is not allowed here.
    let other_policy = call(
        &setup,
        &tool_request(
            "globex",
            "time",
            "get_current_time",
            r#"{"timezone":"UTC"}"#,
        ),
    )
    .await;
    assert_eq!(other_policy.error_kind, "not_allowed");

    let globex_tools = setup.pool.tools_for_tenant("globex").await;
    let names: Vec<String> = globex_tools.iter().map(|t| t.qualified_name()).collect();
    assert_eq!(names, vec!["time.convert_time".to_owned()]);
    assert!(setup.pool.tools_for_tenant("nobody").await.is_empty());
}

#[tokio::test]
async fn calls_tools_over_streamable_http() {
    let Some((everything, time)) = real_servers() else {
        return;
    };
    let port = free_port();
    let mut server = tokio::process::Command::new(&everything)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start mcp-server-everything streamableHttp");
    wait_for_port(port, Duration::from_secs(20), "the HTTP MCP server").await;

    let mut servers = acme_only(&everything, &time);
    servers.get_mut("acme").unwrap().extend(servers_yaml(&format!(
        "- name: web\n  transport: {{type: streamable_http, url: 'http://127.0.0.1:{port}/mcp', headers: {{X-Test: chatstream}}}}\n"
    )));
    let setup = setup(servers, test_config());

    let names: Vec<String> = setup
        .pool
        .tools_for_tenant("acme")
        .await
        .iter()
        .map(|t| t.qualified_name())
        .collect();
    assert!(names.contains(&"web.echo".to_owned()), "{names:?}");
    let echo = call(
        &setup,
        &tool_request("acme", "web", "echo", r#"{"message":"over http"}"#),
    )
    .await;
    assert!(!echo.is_error, "{echo:?}");
    assert!(echo.content_text.contains("over http"));
    let sum = call(
        &setup,
        &tool_request("acme", "web", "get-sum", r#"{"a":40,"b":2}"#),
    )
    .await;
    assert!(sum.content_text.contains("42"), "{sum:?}");

    // The server goes away: calls fail as unavailable, never hang.
    server.kill().await.unwrap();
    let gone = call(
        &setup,
        &tool_request("acme", "web", "echo", r#"{"message":"anyone?"}"#),
    )
    .await;
    assert!(gone.is_error);
    assert!(
        ["server_unavailable", "timeout"].contains(&gone.error_kind.as_str()),
        "{gone:?}"
    );
}

#[tokio::test]
async fn idle_servers_are_closed_and_started_again_on_use() {
    let Some((everything, time)) = real_servers() else {
        return;
    };
    let config = chatstream_mcp::McpSettings {
        idle_timeout_ms: 200,
        ..test_config()
    };
    let setup = setup(acme_only(&everything, &time), config);
    call(
        &setup,
        &tool_request("acme", "everything", "echo", r#"{"message":"one"}"#),
    )
    .await;
    let pid = setup
        .pool
        .server_pid("acme", "everything")
        .await
        .expect("running");
    assert_eq!(setup.pool.close_idle().await, 0, "just used: kept");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(setup.pool.close_idle().await, 1);
    assert_eq!(setup.pool.server_pid("acme", "everything").await, None);
    let gone = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .status()
        .unwrap();
    assert!(!gone.success(), "the idle server's process has exited");

    let again = call(
        &setup,
        &tool_request("acme", "everything", "echo", r#"{"message":"two"}"#),
    )
    .await;
    assert!(!again.is_error, "{again:?}");
}
