//! Tool calls inside a turn: the router offers the tenant's tools to the
//! model; when the model asks for one, the router appends
//! `ToolCallRequested` and ends that step; the mcp processor answers with
//! `ToolCallCompleted`, and the router continues the turn from it, up to a
//! maximum depth per turn.
use std::collections::HashMap;

use chatstream_core::tools::ToolDescriptor;
use chatstream_schemas::pb::events::{
    ErrorOccurred, ToolCallCompleted, ToolCallRequested, event::Payload,
};

use crate::model::{ToolCallChunk, ToolSpec};

/// Tool calls one user message may lead to before the turn is ended.
pub const MAX_TOOL_DEPTH: u32 = 4;
/// Longest function name OpenAI and Anthropic accept.
const MAX_TOOL_NAME_LEN: usize = 64;

/// The name a model calls a tool by. Providers accept only letters,
/// digits, `_` and `-` (no dots), so server and tool are joined by `__`.
pub fn wire_name(server: &str, tool: &str) -> String {
    let name: String = format!("{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name.chars().take(MAX_TOOL_NAME_LEN).collect()
}

/// The tools offered in one model call, and the way back from the name a
/// model calls to the tenant's server and tool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OfferedTools {
    specs: Vec<ToolSpec>,
    by_name: HashMap<String, (String, String)>,
}

impl OfferedTools {
    pub fn new(tools: &[ToolDescriptor]) -> Self {
        let mut offered = Self::default();
        for tool in tools {
            let base = wire_name(&tool.server, &tool.tool);
            // Two tools whose names clean up alike get distinct names.
            let mut name = base.clone();
            let mut n = 2;
            while offered.by_name.contains_key(&name) {
                let suffix = format!("_{n}");
                let keep = MAX_TOOL_NAME_LEN - suffix.len();
                name = format!("{}{suffix}", base.chars().take(keep).collect::<String>());
                n += 1;
            }
            offered
                .by_name
                .insert(name.clone(), (tool.server.clone(), tool.tool.clone()));
            offered.specs.push(ToolSpec {
                name,
                description: tool.description.clone(),
                input_schema: tool.input_schema.clone(),
            });
        }
        offered
    }

    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// The name `server`'s `tool` is offered under (or would be).
    pub fn name_of(&self, server: &str, tool: &str) -> String {
        self.by_name
            .iter()
            .find(|(_, (s, t))| s == server && t == tool)
            .map_or_else(|| wire_name(server, tool), |(name, _)| name.clone())
    }

    /// The server and tool a model's call names. A name that was not
    /// offered is read as `<server>.<tool>` or `<server>__<tool>`; the mcp
    /// processor refuses whatever the tenant does not have.
    pub fn resolve(&self, name: &str) -> (String, String) {
        if let Some((server, tool)) = self.by_name.get(name) {
            return (server.clone(), tool.clone());
        }
        let (server, tool) = name
            .split_once('.')
            .or_else(|| name.split_once("__"))
            .unwrap_or(("", name));
        (server.to_owned(), tool.to_owned())
    }

    /// The request a model's tool call becomes (depth and prompt are the step's).
    pub fn request_for(&self, call: ToolCallChunk) -> Payload {
        let (server, tool) = self.resolve(&call.name);
        Payload::ToolCallRequested(Box::new(ToolCallRequested {
            call_id: call.call_id,
            server,
            tool,
            arguments_json: call.arguments_json,
            turn_depth: 0,
            turn_prompt: String::new(),
        }))
    }
}

/// Where a step of a turn starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnStep {
    /// Tool calls already made in this turn.
    pub depth: u32,
    /// The user message that started the turn.
    pub prompt: String,
}

impl TurnStep {
    pub fn first(prompt: &str) -> Self {
        Self {
            depth: 0,
            prompt: prompt.to_owned(),
        }
    }

    /// The step after a tool call.
    pub fn after_tool(done: &ToolCallCompleted) -> Self {
        let request = done.request.clone().unwrap_or_default();
        Self {
            depth: request.turn_depth,
            prompt: request.turn_prompt,
        }
    }

    /// Whether the model may still call a tool in this step.
    pub fn may_call_tools(&self) -> bool {
        self.depth < MAX_TOOL_DEPTH
    }

    /// Completes the step's outcome: a tool request gets its place in the
    /// turn, or ends the turn with an error past the maximum depth.
    pub fn finish(&self, answer: Payload) -> Payload {
        let Payload::ToolCallRequested(mut request) = answer else {
            return answer;
        };
        if !self.may_call_tools() {
            return Payload::ErrorOccurred(ErrorOccurred {
                code: "tool_depth_exceeded".into(),
                message: format!(
                    "the model asked for more than {MAX_TOOL_DEPTH} tool calls in one turn"
                ),
                source: crate::ModelRouter::NAME.into(),
                retryable: false,
            });
        }
        request.turn_depth = self.depth + 1;
        request.turn_prompt = self.prompt.clone();
        Payload::ToolCallRequested(request)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn descriptor(server: &str, tool: &str) -> ToolDescriptor {
        ToolDescriptor {
            server: server.into(),
            tool: tool.into(),
            description: format!("{tool} on {server}"),
            input_schema: json!({"type": "object"}),
        }
    }

    #[test]
    fn offered_names_are_valid_function_names_and_resolve_back() {
        let offered = OfferedTools::new(&[
            descriptor("time", "get_current_time"),
            descriptor("my.files", "read file"),
            descriptor("my_files", "read_file"),
            descriptor("x", &"long".repeat(30)),
        ]);
        let names: Vec<_> = offered.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names[0], "time__get_current_time");
        assert_eq!(names[1], "my_files__read_file");
        assert_eq!(
            names[2], "my_files__read_file_2",
            "a clash gets its own name"
        );
        assert_eq!(names[3].len(), 64);
        for name in &names {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            );
        }
        assert_eq!(
            offered.resolve("my_files__read_file"),
            ("my.files".into(), "read file".into())
        );
        assert_eq!(
            offered.resolve("my_files__read_file_2"),
            ("my_files".into(), "read_file".into())
        );
        assert_eq!(
            offered.name_of("my_files", "read_file"),
            "my_files__read_file_2"
        );
        // Names never offered: the mock's `<server>.<tool>`, or a guess.
        assert_eq!(
            offered.resolve("other.tool"),
            ("other".into(), "tool".into())
        );
        assert_eq!(offered.resolve("a__b"), ("a".into(), "b".into()));
    }

    #[test]
    fn a_tool_step_carries_the_turn_and_stops_at_the_maximum_depth() {
        let call = ToolCallChunk {
            call_id: "c1".into(),
            name: "time__get_current_time".into(),
            arguments_json: r#"{"timezone":"UTC"}"#.into(),
        };
        let offered = OfferedTools::new(&[descriptor("time", "get_current_time")]);
        let first = TurnStep::first("what time is it?");
        let Payload::ToolCallRequested(request) = first.finish(offered.request_for(call.clone()))
        else {
            panic!("a tool request")
        };
        assert_eq!(
            (request.server.as_str(), request.tool.as_str()),
            ("time", "get_current_time")
        );
        assert_eq!(request.turn_depth, 1);
        assert_eq!(request.turn_prompt, "what time is it?");

        let done = ToolCallCompleted {
            call_id: "c1".into(),
            request: Some(*request),
            content_text: "12:00".into(),
            ..Default::default()
        };
        let next = TurnStep::after_tool(&done);
        assert_eq!(
            next,
            TurnStep {
                depth: 1,
                prompt: "what time is it?".into()
            }
        );

        let deepest = TurnStep {
            depth: MAX_TOOL_DEPTH,
            ..TurnStep::first("x")
        };
        assert!(!deepest.may_call_tools());
        let Payload::ErrorOccurred(error) = deepest.finish(offered.request_for(call)) else {
            panic!("an error")
        };
        assert_eq!(error.code, "tool_depth_exceeded");
    }
}
