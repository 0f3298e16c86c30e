//! Runs one tool call for a tenant: checks it is allowed and its arguments
//! match the tool's input schema, calls it within the time limit and the
//! tenant's concurrency limit, and turns every outcome, failures included,
//! into a result the model can read.
use std::fmt;

use chatstream_core::trace::{self, set_attribute};
use chatstream_schemas::pb::events::ToolCallRequested;
use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;

use crate::pool::{McpClientPool, PoolError};

/// Why a call failed, as the model and the events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolErrorKind {
    /// The tool ran and reported an error.
    ToolError,
    Timeout,
    InvalidArguments,
    ServerUnavailable,
    /// Not the tenant's server, or a tool the tenant may not call.
    NotAllowed,
    /// A person rejected the call, or did not approve it in time.
    Rejected,
}

impl ToolErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolError => "tool_error",
            Self::Timeout => "timeout",
            Self::InvalidArguments => "invalid_arguments",
            Self::ServerUnavailable => "server_unavailable",
            Self::NotAllowed => "not_allowed",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ToolErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call produced, ready to become a `ToolCallCompleted`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub content_text: String,
    pub structured_json: String,
    pub error: Option<ToolErrorKind>,
    pub truncated: bool,
}

impl ToolOutcome {
    pub fn failed(kind: ToolErrorKind, message: impl Into<String>) -> Self {
        Self {
            content_text: message.into(),
            structured_json: String::new(),
            error: Some(kind),
            truncated: false,
        }
    }
}

/// Runs `request` on the tenant's server. Never fails: errors are outcomes.
/// Traced as the GenAI `execute_tool <tool>` span.
pub async fn run_tool_call(
    pool: &McpClientPool,
    tenant_id: &str,
    request: &ToolCallRequested,
) -> ToolOutcome {
    let span = tool_span(request);
    let started = Instant::now();
    let outcome = call_checked(pool, tenant_id, request)
        .instrument(span.clone())
        .await;
    let kind = outcome.error.map_or("ok", ToolErrorKind::as_str);
    metrics::histogram!(chatstream_core::metric_catalog::MCP_TOOL_CALL_SECONDS, "outcome" => kind)
        .record(started.elapsed().as_secs_f64());
    if let Some(kind) = outcome.error
        && !span.is_disabled()
    {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", kind.as_str());
    }
    outcome
}

/// The span of one tool call, or a disabled one while tracing is off.
fn tool_span(request: &ToolCallRequested) -> tracing::Span {
    if !trace::enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "execute_tool",
        otel.name = format!("execute_tool {}", request.tool),
        otel.kind = "internal",
        otel.status_code = Empty,
        error.type = Empty,
    );
    set_attribute(&span, "gen_ai.operation.name", "execute_tool");
    set_attribute(&span, "gen_ai.tool.name", request.tool.clone());
    set_attribute(&span, "gen_ai.tool.call.id", request.call_id.clone());
    set_attribute(&span, "gen_ai.tool.type", "extension");
    set_attribute(&span, "chatstream.mcp.server", request.server.clone());
    span
}

async fn call_checked(
    pool: &McpClientPool,
    tenant_id: &str,
    request: &ToolCallRequested,
) -> ToolOutcome {
    let Some(server) = pool.server_config(tenant_id, &request.server) else {
        return ToolOutcome::failed(
            ToolErrorKind::NotAllowed,
            format!("no MCP server named {:?} is available", request.server),
        );
    };
    if !server.allows(&request.tool) {
        return ToolOutcome::failed(
            ToolErrorKind::NotAllowed,
            format!(
                "tool {:?} of server {:?} is not allowed",
                request.tool, request.server
            ),
        );
    }
    let arguments = match parse_arguments(&request.arguments_json) {
        Ok(arguments) => arguments,
        Err(message) => return ToolOutcome::failed(ToolErrorKind::InvalidArguments, message),
    };
    let timeout = server
        .call_timeout_ms
        .map(std::time::Duration::from_millis)
        .unwrap_or(pool.config().call_timeout());
    let deadline = Instant::now() + timeout;
    let timed_out = || {
        ToolOutcome::failed(
            ToolErrorKind::Timeout,
            format!(
                "tool {:?} did not finish within {} ms",
                request.tool,
                timeout.as_millis()
            ),
        )
    };

    let calls = pool.tenant_calls(tenant_id);
    let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, calls.acquire_owned()).await else {
        return timed_out();
    };

    let tools = match pool.list_tools(tenant_id, &request.server).await {
        Ok(tools) => tools,
        Err(error) => return unavailable(error),
    };
    let Some(tool) = tools.iter().find(|t| t.name == request.tool) else {
        return ToolOutcome::failed(
            ToolErrorKind::NotAllowed,
            format!("server {:?} has no tool {:?}", request.server, request.tool),
        );
    };
    let schema = serde_json::Value::Object((*tool.input_schema).clone());
    if let Err(message) = validate_arguments(&schema, &arguments) {
        return ToolOutcome::failed(ToolErrorKind::InvalidArguments, message);
    }

    let lease = match pool.peer(tenant_id, &request.server, deadline).await {
        Ok(lease) => lease,
        Err(error) => return unavailable(error),
    };
    let params = CallToolRequestParams::new(request.tool.clone()).with_arguments(arguments);
    let called = tokio::time::timeout_at(deadline, lease.peer.call_tool(params)).await;
    match called {
        Err(_) => timed_out(),
        Ok(Ok(result)) => {
            pool.report_healthy(tenant_id, &request.server).await;
            outcome_of(result, pool.config().max_result_bytes)
        }
        Ok(Err(ServiceError::McpError(error))) => {
            let kind = if error.code == ErrorCode::INVALID_PARAMS {
                ToolErrorKind::InvalidArguments
            } else {
                ToolErrorKind::ToolError
            };
            ToolOutcome::failed(kind, error.message.to_string())
        }
        Ok(Err(ServiceError::Timeout { .. })) => timed_out(),
        Ok(Err(error)) => {
            // The transport broke: the server crashed or went away mid-call.
            // The call is not retried: the tool may have had an effect.
            pool.report_broken(tenant_id, &request.server, lease.generation)
                .await;
            ToolOutcome::failed(
                ToolErrorKind::ServerUnavailable,
                format!(
                    "MCP server {:?} failed during the call: {error}",
                    request.server
                ),
            )
        }
    }
}

fn unavailable(error: PoolError) -> ToolOutcome {
    let kind = match error {
        PoolError::UnknownServer(_) => ToolErrorKind::NotAllowed,
        PoolError::Unavailable { .. } => ToolErrorKind::ServerUnavailable,
    };
    ToolOutcome::failed(kind, error.to_string())
}

fn parse_arguments(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(arguments)) => Ok(arguments),
        Ok(_) => Err("arguments must be a JSON object".into()),
        Err(error) => Err(format!("arguments are not valid JSON: {error}")),
    }
}

/// Checks arguments against the tool's input schema; the error lists what
/// is wrong, so the model can fix its call.
pub fn validate_arguments(
    schema: &serde_json::Value,
    arguments: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| format!("the tool's input schema is not valid: {e}"))?;
    let instance = serde_json::Value::Object(arguments.clone());
    let problems: Vec<String> = validator
        .iter_errors(&instance)
        .take(5)
        .map(|e| e.to_string())
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "arguments do not match the tool's input schema: {}",
            problems.join("; ")
        ))
    }
}

/// The model-visible form of a result, cut at `max_bytes`.
fn outcome_of(result: CallToolResult, max_bytes: usize) -> ToolOutcome {
    let text: Vec<String> = result.content.iter().map(describe_content).collect();
    let (content_text, mut truncated) = truncate(text.join("\n"), max_bytes);
    let mut structured_json = result
        .structured_content
        .map(|value| value.to_string())
        .unwrap_or_default();
    if content_text.len() + structured_json.len() > max_bytes {
        structured_json.clear(); // a cut JSON document is no use to anyone
        truncated = true;
    }
    ToolOutcome {
        content_text,
        structured_json,
        error: result
            .is_error
            .unwrap_or(false)
            .then_some(ToolErrorKind::ToolError),
        truncated,
    }
}

fn describe_content(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => format!("[image {}]", image.mime_type),
        ContentBlock::Audio(audio) => format!("[audio {}]", audio.mime_type),
        ContentBlock::Resource(_) => "[embedded resource]".into(),
        ContentBlock::ResourceLink(link) => format!("[resource {}]", link.uri),
        _ => "[content of a kind this client does not show]".into(),
    }
}

/// Cuts `text` to at most `max_bytes` on a character boundary.
fn truncate(mut text: String, max_bytes: usize) -> (String, bool) {
    if text.len() <= max_bytes {
        return (text, false);
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters_and_says_so() {
        assert_eq!(truncate("héllo".into(), 2), ("h".into(), true));
        assert_eq!(truncate("hello".into(), 5), ("hello".into(), false));
    }

    #[test]
    fn arguments_must_be_an_object_matching_the_schema() {
        assert!(parse_arguments("[1]").unwrap_err().contains("object"));
        assert!(parse_arguments("{").unwrap_err().contains("not valid JSON"));
        assert!(parse_arguments("").unwrap().is_empty());
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"a": {"type": "number"}},
            "required": ["a"]
        });
        let ok = parse_arguments(r#"{"a": 1}"#).unwrap();
        assert!(validate_arguments(&schema, &ok).is_ok());
        let wrong = parse_arguments(r#"{"a": "one"}"#).unwrap();
        let message = validate_arguments(&schema, &wrong).unwrap_err();
        assert!(message.contains("number"), "{message}");
        let missing = parse_arguments("{}").unwrap();
        assert!(
            validate_arguments(&schema, &missing)
                .unwrap_err()
                .contains("required")
        );
    }
}
