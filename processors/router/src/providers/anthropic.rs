//! The Anthropic Messages API (`POST {base}/v1/messages`, `stream: true`):
//! `message_start` (input tokens), `content_block_delta` text deltas,
//! `message_delta` (stop reason, output tokens so far), `message_stop`,
//! `ping`, and `error` events such as `overloaded_error`. Tools go out as
//! `tools` (one call per step: `disable_parallel_tool_use`); a call streams
//! as a `tool_use` content block whose input arrives as `input_json_delta`
//! fragments, and results go back as `tool_result` blocks of a user message.
use std::collections::BTreeMap;

use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;

use crate::model::{
    ChatMessage, ChatModel, CompletionRequest, ModelChunk, ModelError, Role, ToolCallChunk, Usage,
};
use crate::providers::http::{
    ApiKey, Decoded, Endpoint, StreamDecoder, decode_stream, parse_json, post_event_stream,
};
use crate::providers::sse::SseEvent;

/// The API version these events follow.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the policy gives none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug, Clone)]
pub struct AnthropicModel {
    /// Base URL e.g. `https://api.anthropic.com`; `/v1/messages` is appended.
    endpoint: Endpoint,
}

impl AnthropicModel {
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<ApiKey>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            endpoint: Endpoint::new(name, base_url, api_key, client),
        }
    }

    fn body(request: &CompletionRequest) -> serde_json::Value {
        // System prompts are a top-level field here, not a message role.
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(wire_message)
            .collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "stream": true,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if !request.tools.is_empty() {
            let tools: Vec<_> = request
                .tools
                .iter()
                .map(|tool| {
                    json!({
                        "name": tool.name,
                        "description": tool.description,
                        "input_schema": tool.input_schema,
                    })
                })
                .collect();
            body["tools"] = json!(tools);
            body["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
        }
        body
    }
}

fn wire_message(message: &ChatMessage) -> serde_json::Value {
    match message.role {
        // Results are content blocks of a user message here.
        Role::Tool => json!({"role": "user", "content": [{
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.content,
            "is_error": message.is_error,
        }]}),
        Role::Assistant if !message.tool_calls.is_empty() => {
            let text = (!message.content.is_empty())
                .then(|| json!({"type": "text", "text": message.content}));
            let calls = message.tool_calls.iter().map(|call| {
                // The input is an object; arguments that are not one (a
                // model's slip, already refused by the mcp processor) go as {}.
                let input = serde_json::from_str::<serde_json::Value>(&call.arguments_json)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .unwrap_or_else(|| json!({}));
                json!({"type": "tool_use", "id": call.call_id, "name": call.name, "input": input})
            });
            let blocks: Vec<_> = text.into_iter().chain(calls).collect();
            json!({"role": "assistant", "content": blocks})
        }
        role => json!({"role": role.as_str(), "content": message.content}),
    }
}

impl ChatModel for AnthropicModel {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
        let mut http = self
            .endpoint
            .post("/v1/messages")
            .header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(key) = &self.endpoint.api_key {
            http = http.header("x-api-key", key.expose());
        }
        let body = Self::body(&request);
        decode_stream(post_event_stream(http, body), EventDecoder::default())
    }
}

#[derive(Default)]
struct EventDecoder {
    usage: Usage,
    stop_reason: Option<String>,
    /// `tool_use` blocks being streamed, by content block index.
    tool_calls: BTreeMap<u32, ToolCallChunk>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u32,
        content_block: StartedBlock,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        #[serde(default)]
        index: u32,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping` and event types added later: nothing to do.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartedBlock {
    ToolUse {
        id: String,
        name: String,
    },
    /// Text and thinking blocks: their deltas carry the content.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Thinking and signature deltas: not part of the answer.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct MessageDelta {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

impl EventDecoder {
    fn add_usage(&mut self, usage: Option<WireUsage>) -> Option<ModelChunk> {
        let usage = usage?;
        if let Some(input) = usage.input_tokens {
            self.usage.prompt_tokens = input;
        }
        // `output_tokens` in `message_delta` is cumulative.
        if let Some(output) = usage.output_tokens {
            self.usage.completion_tokens = output;
        }
        Some(ModelChunk::Usage(self.usage))
    }
}

/// Anthropic's stop reasons in the OpenAI vocabulary the rest of chatstream uses.
fn finish_reason(stop_reason: Option<&str>) -> String {
    match stop_reason {
        None | Some("end_turn") | Some("stop_sequence") => "stop",
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some(other) => other,
    }
    .to_owned()
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ModelError> {
        let wire: WireEvent = parse_json("anthropic", &event.data)?;
        let chunks = match wire {
            WireEvent::MessageStart { message } => {
                self.add_usage(message.usage).into_iter().collect()
            }
            WireEvent::ContentBlockStart {
                index,
                content_block: StartedBlock::ToolUse { id, name },
            } => {
                let call = ToolCallChunk {
                    call_id: id,
                    name,
                    arguments_json: String::new(),
                };
                self.tool_calls.insert(index, call);
                Vec::new()
            }
            WireEvent::ContentBlockStart { .. } => Vec::new(),
            WireEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } if !text.is_empty() => vec![ModelChunk::Token(text)],
            WireEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::InputJsonDelta { partial_json },
            } => {
                let Some(call) = self.tool_calls.get_mut(&index) else {
                    return Err(ModelError::Protocol(format!(
                        "anthropic input_json_delta for block {index}, which is not a tool_use block"
                    )));
                };
                call.arguments_json.push_str(&partial_json);
                Vec::new()
            }
            WireEvent::ContentBlockDelta { .. } => Vec::new(),
            WireEvent::ContentBlockStop { index } => match self.tool_calls.remove(&index) {
                Some(mut call) => {
                    if call.arguments_json.trim().is_empty() {
                        call.arguments_json = "{}".into();
                    }
                    vec![ModelChunk::ToolCall(call)]
                }
                None => Vec::new(),
            },
            WireEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                self.add_usage(usage).into_iter().collect()
            }
            WireEvent::MessageStop => {
                return Ok(Decoded::Finished(vec![ModelChunk::Done {
                    usage: self.usage,
                    finish_reason: finish_reason(self.stop_reason.as_deref()),
                }]));
            }
            WireEvent::Error { error } => {
                // Overload (HTTP 529's in-stream form), rate limits and
                // internal errors pass; a bad request would fail again.
                let retryable = matches!(
                    error.kind.as_str(),
                    "overloaded_error" | "api_error" | "rate_limit_error" | "timeout_error"
                );
                return Err(ModelError::Provider {
                    kind: error.kind,
                    message: error.message,
                    retryable,
                });
            }
            WireEvent::Other => Vec::new(),
        };
        Ok(Decoded::Chunks(chunks))
    }

    fn ended_early(&mut self) -> Result<Vec<ModelChunk>, ModelError> {
        Err(ModelError::Interrupted(
            "anthropic stream closed before message_stop".into(),
        ))
    }
}
