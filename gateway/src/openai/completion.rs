//! The Chat Completions response bodies: `chat.completion` for a whole
//! reply, `chat.completion.chunk` for each server-sent event of a stream.
use axum::body::Bytes;
use chatstream_schemas::pb::events::{AssistantMessage, TokenUsage};
use serde_json::{Value, json};

/// What every body of one completion shares.
#[derive(Debug, Clone)]
pub struct CompletionMeta {
    /// `chatcmpl-<event id of the user message>`: ties the completion to its events.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model as the client named it.
    pub model: String,
}

pub fn completion(meta: &CompletionMeta, reply: &AssistantMessage) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": reply.text, "refusal": null },
            "logprobs": null,
            "finish_reason": finish_reason(reply),
        }],
        "usage": usage(reply.usage.as_ref()),
    })
}

/// A chunk with one choice; with `include_usage`, every chunk but the last
/// carries `"usage": null`, as OpenAI's do.
pub fn chunk(
    meta: &CompletionMeta,
    delta: Value,
    finish_reason: Option<&str>,
    include_usage: bool,
) -> Value {
    let mut chunk = chunk_envelope(meta);
    chunk["choices"] = json!([{
        "index": 0,
        "delta": delta,
        "logprobs": null,
        "finish_reason": finish_reason,
    }]);
    if include_usage {
        chunk["usage"] = Value::Null;
    }
    chunk
}

/// The last chunk when `stream_options.include_usage` is set: no choices,
/// the whole request's usage.
pub fn usage_chunk(meta: &CompletionMeta, reply: &AssistantMessage) -> Value {
    let mut chunk = chunk_envelope(meta);
    chunk["choices"] = json!([]);
    chunk["usage"] = usage(reply.usage.as_ref());
    chunk
}

fn chunk_envelope(meta: &CompletionMeta) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
    })
}

pub fn finish_reason(reply: &AssistantMessage) -> &str {
    if reply.finish_reason.is_empty() {
        "stop"
    } else {
        &reply.finish_reason
    }
}

fn usage(usage: Option<&TokenUsage>) -> Value {
    match usage {
        Some(usage) => json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        }),
        None => Value::Null,
    }
}

/// One server-sent event carrying `data`.
pub fn sse_event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The event that ends a successful stream.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CompletionMeta {
        CompletionMeta {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "mock".into(),
        }
    }

    fn reply() -> AssistantMessage {
        AssistantMessage {
            text: "You said: hi".into(),
            model: "mock".into(),
            usage: Some(TokenUsage {
                prompt_tokens: 1,
                completion_tokens: 3,
                total_tokens: 4,
            }),
            finish_reason: "stop".into(),
        }
    }

    #[test]
    fn a_completion_has_one_choice_and_the_usage() {
        let body = completion(&meta(), &reply());
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["content"], "You said: hi");
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(body["usage"]["total_tokens"], 4);
    }

    #[test]
    fn chunks_carry_usage_only_at_the_end() {
        let first = chunk(&meta(), json!({"content": "You"}), None, true);
        assert_eq!(first["object"], "chat.completion.chunk");
        assert!(first["usage"].is_null() && first.get("usage").is_some());
        assert!(
            chunk(&meta(), json!({}), Some("stop"), false)
                .get("usage")
                .is_none()
        );
        let last = usage_chunk(&meta(), &reply());
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], 3);
        assert_eq!(
            sse_event(&json!({"a": 1})),
            Bytes::from_static(b"data: {\"a\":1}\n\n")
        );
    }
}
