//! An OpenAI Chat Completions request as the mock provider reads it, and
//! the OpenAI-shaped error a bad one gets. Only what shapes the answer is
//! read; every other field (temperature, tools, user...) is accepted and
//! ignored, as a provider that does not support it would.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// A request the mock can answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The model as the client named it; echoed in every response body.
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`: the answer is cut there.
    pub max_tokens: Option<u32>,
    /// Words in the messages' text: the usage's prompt tokens.
    pub prompt_tokens: u32,
}

#[derive(Deserialize)]
struct WireRequest {
    model: String,
    messages: Vec<WireMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<WireStreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct WireMessage {
    role: String,
    /// A string, an array of content parts, or null (an assistant's tool call).
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize)]
struct WireStreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

impl ChatRequest {
    /// Reads a request body; the error says which field is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let wire: WireRequest = serde_json::from_slice(body).map_err(|error| {
            if error.is_data() {
                ApiError::invalid_request(None, format!("not a chat completion request: {error}"))
            } else {
                ApiError::invalid_json(&error)
            }
        })?;
        if wire.model.trim().is_empty() {
            return Err(ApiError::invalid_request(
                Some("model"),
                "`model` is empty".into(),
            ));
        }
        if wire.messages.is_empty() {
            return Err(ApiError::invalid_request(
                Some("messages"),
                "`messages` is empty: send at least one message".into(),
            ));
        }
        for (i, message) in wire.messages.iter().enumerate() {
            if !ROLES.contains(&message.role.as_str()) {
                return Err(ApiError::invalid_request(
                    Some(format!("messages[{i}].role").as_str()),
                    format!("unknown role {:?}", message.role),
                ));
            }
        }
        let max_tokens = wire.max_completion_tokens.or(wire.max_tokens);
        if max_tokens == Some(0) {
            return Err(ApiError::invalid_request(
                Some("max_tokens"),
                "`max_tokens` must be at least 1".into(),
            ));
        }
        let words: usize = wire
            .messages
            .iter()
            .filter_map(|m| m.content.as_ref())
            .map(words_in)
            .sum();
        Ok(Self {
            model: wire.model,
            stream: wire.stream.unwrap_or(false),
            include_usage: wire
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            max_tokens,
            prompt_tokens: u32::try_from(words.max(1)).unwrap_or(u32::MAX),
        })
    }
}

/// Words of a message's content: a string, or the `text` of its parts.
fn words_in(content: &Value) -> usize {
    match content {
        Value::String(text) => text.split_whitespace().count(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(|text| text.split_whitespace().count())
            .sum(),
        _ => 0,
    }
}

/// `{"error":{"message","type","param","code"}}` with its HTTP status, the
/// shape the OpenAI SDKs (and the gateways in front of the mock) read.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    fn invalid_json(error: &serde_json::Error) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_json",
            param: None,
            message: format!("the request body is not valid JSON: {error}"),
        }
    }

    fn invalid_request(param: Option<&str>, message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            param: param.map(str::to_owned),
            message,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "model_not_found",
            param: Some("model".into()),
            message: format!("the model {model:?} is not one this mock provider serves"),
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            param: None,
            message: format!(
                "no route {path}: this mock serves POST /v1/chat/completions and GET /v1/models"
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_request_with_usage_and_a_cap_is_read() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"three more words"}]}],
            "stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"temperature":0.2}"#;
        let request = ChatRequest::parse(body).unwrap();
        assert_eq!(
            request,
            ChatRequest {
                model: "m".into(),
                stream: true,
                include_usage: true,
                max_tokens: Some(5),
                prompt_tokens: 5,
            }
        );
    }

    #[test]
    fn defaults_are_a_whole_answer_without_usage() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":null}"#;
        let request = ChatRequest::parse(body).unwrap();
        assert!(!request.stream && !request.include_usage);
        assert_eq!(request.max_tokens, None);
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let error = ChatRequest::parse(b"{not json").unwrap_err();
        assert_eq!(
            (error.status, error.code),
            (StatusCode::BAD_REQUEST, "invalid_json")
        );
        let error = ChatRequest::parse(br#"{"model":"m"}"#).unwrap_err();
        assert_eq!(error.code, "invalid_request");
        assert!(error.message.contains("messages"), "{}", error.message);
        let error = ChatRequest::parse(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("messages"));
        let body = br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#;
        let error = ChatRequest::parse(body).unwrap_err();
        assert_eq!(error.param.as_deref(), Some("messages[0].role"));
        let body = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#;
        assert_eq!(
            ChatRequest::parse(body).unwrap_err().param.as_deref(),
            Some("max_tokens")
        );
    }
}
