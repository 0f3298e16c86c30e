//! The Anthropic Messages API (`POST {base}/v1/messages`, `stream: true`):
//! `message_start` (input tokens), `content_block_delta` text deltas,
//! `message_delta` (stop reason, output tokens so far), `message_stop`,
//! `ping`, and `error` events such as `overloaded_error`.
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;

use crate::model::{ChatModel, CompletionRequest, ModelChunk, ModelError, Role, Usage};
use crate::providers::http::{
    ApiKey, Decoded, StreamDecoder, decode_stream, parse_json, post_event_stream,
};
use crate::providers::sse::SseEvent;

/// The API version these events follow.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when the policy gives none.
const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug, Clone)]
pub struct AnthropicModel {
    name: String,
    /// e.g. `https://api.anthropic.com`; `/v1/messages` is appended.
    base_url: String,
    api_key: Option<ApiKey>,
    client: reqwest::Client,
}

impl AnthropicModel {
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<ApiKey>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            client,
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
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
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
        body
    }
}

impl ChatModel for AnthropicModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
        let mut http = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(key) = &self.api_key {
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
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockDelta {
        delta: BlockDelta,
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
    /// `ping`, `content_block_start`, `content_block_stop` and event types
    /// added later: nothing to do.
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
enum BlockDelta {
    TextDelta {
        text: String,
    },
    /// Tool input and thinking deltas: not part of the text answer.
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
            WireEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
            } if !text.is_empty() => vec![ModelChunk::Token(text)],
            WireEvent::ContentBlockDelta { .. } => Vec::new(),
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
