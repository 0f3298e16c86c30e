//! OpenAI-compatible Chat Completions (`POST {base}/chat/completions`) with
//! `stream: true`: `data:` chunks carrying `choices[0].delta.content`, a
//! final chunk with `usage` (asked for with `stream_options.include_usage`)
//! and `data: [DONE]`. OpenAI, vLLM, Ollama, llama.cpp and LM Studio speak it.
//! Tools go out as `tools` functions (one call per step:
//! `parallel_tool_calls: false`); a call streams as `delta.tool_calls`
//! pieces keyed by index, whose `arguments` text arrives in fragments.
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

#[derive(Debug, Clone)]
pub struct OpenAiModel {
    /// Base URL e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    endpoint: Endpoint,
}

impl OpenAiModel {
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
        let messages: Vec<_> = request.messages.iter().map(wire_message).collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(max_tokens) = request.max_tokens {
            // `max_tokens` is what every compatible server understands;
            // OpenAI still accepts it next to `max_completion_tokens`.
            body["max_tokens"] = json!(max_tokens);
        }
        if !request.tools.is_empty() {
            let tools: Vec<_> = request
                .tools
                .iter()
                .map(|tool| {
                    json!({"type": "function", "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.input_schema,
                    }})
                })
                .collect();
            body["tools"] = json!(tools);
            body["parallel_tool_calls"] = json!(false);
        }
        body
    }
}

fn wire_message(message: &ChatMessage) -> serde_json::Value {
    match message.role {
        Role::Tool => json!({
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content,
        }),
        Role::Assistant if !message.tool_calls.is_empty() => {
            let calls: Vec<_> = message
                .tool_calls
                .iter()
                .map(|call| {
                    json!({"id": call.call_id, "type": "function", "function": {
                        "name": call.name,
                        "arguments": call.arguments_json,
                    }})
                })
                .collect();
            let content = (!message.content.is_empty()).then_some(&message.content);
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        role => json!({"role": role.as_str(), "content": message.content}),
    }
}

impl ChatModel for OpenAiModel {
    fn name(&self) -> &str {
        &self.endpoint.name
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
        let mut http = self.endpoint.post("/chat/completions");
        if let Some(key) = &self.endpoint.api_key {
            http = http.bearer_auth(key.expose());
        }
        let body = Self::body(&request);
        decode_stream(post_event_stream(http, body), ChunkDecoder::default())
    }
}

#[derive(Default)]
struct ChunkDecoder {
    usage: Option<Usage>,
    finish_reason: Option<String>,
    /// Tool calls being streamed, by their index in the message.
    tool_calls: BTreeMap<u32, ToolCallChunk>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a tool call: the first carries id and name, the others
/// more of the arguments text.
#[derive(Deserialize)]
struct ToolCallDelta {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ChunkDecoder {
    /// The end of the reply: its tool calls, then `Done`.
    fn done(&mut self) -> Result<Vec<ModelChunk>, ModelError> {
        let mut chunks = Vec::new();
        for (index, mut call) in std::mem::take(&mut self.tool_calls) {
            if call.name.is_empty() {
                return Err(ModelError::Protocol(format!(
                    "openai tool call {index} has no function name"
                )));
            }
            if call.call_id.is_empty() {
                call.call_id = format!("call_{index}");
            }
            if call.arguments_json.trim().is_empty() {
                call.arguments_json = "{}".into();
            }
            chunks.push(ModelChunk::ToolCall(call));
        }
        chunks.push(ModelChunk::Done {
            usage: self.usage.unwrap_or_default(),
            finish_reason: self.finish_reason.take().unwrap_or_else(|| "stop".into()),
        });
        Ok(chunks)
    }

    fn add_tool_call_piece(&mut self, piece: ToolCallDelta) {
        let call = self
            .tool_calls
            .entry(piece.index)
            .or_insert_with(|| ToolCallChunk {
                call_id: String::new(),
                name: String::new(),
                arguments_json: String::new(),
            });
        if let Some(id) = piece.id.filter(|id| !id.is_empty()) {
            call.call_id = id;
        }
        if let Some(function) = piece.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                call.name = name;
            }
            if let Some(arguments) = function.arguments {
                call.arguments_json.push_str(&arguments);
            }
        }
    }
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Decoded::Finished(self.done()?));
        }
        let chunk: Chunk = parse_json("openai", data)?;
        if let Some(error) = chunk.error {
            let kind = error.kind.unwrap_or_else(|| "error".into());
            let code = error.code.map(|c| c.to_string()).unwrap_or_default();
            // Mid-stream errors on compatible servers are overloads and
            // server faults far more often than bad requests.
            let retryable = !kind.contains("invalid_request") && !code.contains("context_length");
            return Err(ModelError::Provider {
                kind,
                message: error.message,
                retryable,
            });
        }
        let mut chunks = Vec::new();
        for choice in chunk.choices {
            let delta = choice.delta.unwrap_or(Delta {
                content: None,
                tool_calls: None,
            });
            if let Some(text) = delta.content
                && !text.is_empty()
            {
                chunks.push(ModelChunk::Token(text));
            }
            for piece in delta.tool_calls.unwrap_or_default() {
                self.add_tool_call_piece(piece);
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        if let Some(usage) = chunk.usage {
            let usage = Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
            };
            self.usage = Some(usage);
            chunks.push(ModelChunk::Usage(usage));
        }
        Ok(Decoded::Chunks(chunks))
    }

    fn ended_early(&mut self) -> Result<Vec<ModelChunk>, ModelError> {
        // Some compatible servers close without `[DONE]` after a finish
        // reason; without one the answer was cut off.
        if self.finish_reason.is_some() {
            self.done()
        } else {
            Err(ModelError::Interrupted(
                "openai stream closed before [DONE]".into(),
            ))
        }
    }
}
