//! Tool calls inside a turn: the model asks for a tool, the router appends
//! `ToolCallRequested` and ends that step; the mcp processor answers with
//! `ToolCallCompleted`, and the router continues the turn from it with the
//! result in the conversation, up to a maximum depth per turn.
use chatstream_schemas::pb::events::{
    ErrorOccurred, ToolCallCompleted, ToolCallRequested, event::Payload,
};

use crate::model::{ChatMessage, Role};

/// Tool calls one user message may lead to before the turn is ended.
pub const MAX_TOOL_DEPTH: u32 = 4;

/// A tool call as a model streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallChunk {
    /// The model's id for the call.
    pub call_id: String,
    /// `<server>.<tool>`, as the tools are offered to the model.
    pub name: String,
    /// A JSON object, as text.
    pub arguments_json: String,
}

/// Where a step of a turn starts from.
pub struct TurnStep {
    pub messages: Vec<ChatMessage>,
    /// Tool calls already made in this turn.
    pub depth: u32,
    /// The user message that started the turn.
    pub prompt: String,
}

impl TurnStep {
    pub fn first(prompt: &str) -> Self {
        Self {
            messages: vec![ChatMessage {
                role: Role::User,
                content: prompt.to_owned(),
            }],
            depth: 0,
            prompt: prompt.to_owned(),
        }
    }

    /// The step after a tool call: the conversation so far with the call and
    /// its result. Providers without a tool role get both as plain text.
    pub fn after_tool(done: &ToolCallCompleted) -> Self {
        let request = done.request.clone().unwrap_or_default();
        let outcome = if done.is_error {
            format!("failed ({}): {}", done.error_kind, done.content_text)
        } else if done.truncated {
            format!("returned (cut at the size limit): {}", done.content_text)
        } else {
            format!("returned: {}", done.content_text)
        };
        Self {
            messages: vec![
                ChatMessage {
                    role: Role::User,
                    content: request.turn_prompt.clone(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: format!(
                        "{TOOL_CALL_NOTE}{}.{} {}",
                        request.server, request.tool, request.arguments_json
                    ),
                },
                ChatMessage {
                    role: Role::User,
                    content: format!(
                        "{TOOL_RESULT_NOTE}{}.{} {outcome}",
                        request.server, request.tool
                    ),
                },
            ],
            depth: request.turn_depth,
            prompt: request.turn_prompt,
        }
    }

    /// Completes the step's outcome: a tool request gets its place in the
    /// turn, or ends the turn with an error past the maximum depth.
    pub fn finish(&self, answer: Payload) -> Payload {
        let Payload::ToolCallRequested(mut request) = answer else {
            return answer;
        };
        if self.depth >= MAX_TOOL_DEPTH {
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

/// How the conversation shows a call and a result to the model.
pub const TOOL_CALL_NOTE: &str = "[tool call] ";
pub const TOOL_RESULT_NOTE: &str = "[tool result] ";

/// The request a model's tool call becomes (depth and prompt are the step's).
pub fn tool_request(call: ToolCallChunk) -> Payload {
    let (server, tool) = call.name.split_once('.').unwrap_or(("", &call.name));
    Payload::ToolCallRequested(Box::new(ToolCallRequested {
        call_id: call.call_id,
        server: server.to_owned(),
        tool: tool.to_owned(),
        arguments_json: call.arguments_json,
        turn_depth: 0,
        turn_prompt: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_step_carries_the_turn_and_stops_at_the_maximum_depth() {
        let call = ToolCallChunk {
            call_id: "c1".into(),
            name: "time.get_current_time".into(),
            arguments_json: r#"{"timezone":"UTC"}"#.into(),
        };
        let first = TurnStep::first("what time is it?");
        let Payload::ToolCallRequested(request) = first.finish(tool_request(call.clone())) else {
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
        assert_eq!(next.depth, 1);
        assert_eq!(next.messages.len(), 3);
        assert!(next.messages[2].content.ends_with("returned: 12:00"));

        let deepest = TurnStep {
            depth: MAX_TOOL_DEPTH,
            ..TurnStep::first("x")
        };
        let Payload::ErrorOccurred(error) = deepest.finish(tool_request(call)) else {
            panic!("an error")
        };
        assert_eq!(error.code, "tool_depth_exceeded");
    }
}
