//! OpenAI-compatible Chat Completions (`POST {base}/chat/completions`) with
//! `stream: true`: `data:` chunks carrying `choices[0].delta.content`, a
//! final chunk with `usage` (asked for with `stream_options.include_usage`)
//! and `data: [DONE]`. OpenAI, vLLM, Ollama, llama.cpp and LM Studio speak it.
use futures::stream::BoxStream;
use serde::Deserialize;
use serde_json::json;

use crate::model::{ChatModel, CompletionRequest, ModelChunk, ModelError, Usage};
use crate::providers::http::{
    ApiKey, Decoded, StreamDecoder, decode_stream, parse_json, post_event_stream,
};
use crate::providers::sse::SseEvent;

#[derive(Debug, Clone)]
pub struct OpenAiModel {
    name: String,
    /// e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    base_url: String,
    api_key: Option<ApiKey>,
    client: reqwest::Client,
}

impl OpenAiModel {
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
        let messages: Vec<_> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
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
        body
    }
}

impl ChatModel for OpenAiModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
        let mut http = self
            .client
            .post(format!("{}/chat/completions", self.base_url));
        if let Some(key) = &self.api_key {
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
    fn done(&mut self) -> ModelChunk {
        ModelChunk::Done {
            usage: self.usage.unwrap_or_default(),
            finish_reason: self.finish_reason.take().unwrap_or_else(|| "stop".into()),
        }
    }
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Decoded::Finished(vec![self.done()]));
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
            if let Some(text) = choice.delta.and_then(|d| d.content)
                && !text.is_empty()
            {
                chunks.push(ModelChunk::Token(text));
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
            Ok(vec![self.done()])
        } else {
            Err(ModelError::Interrupted(
                "openai stream closed before [DONE]".into(),
            ))
        }
    }
}
