//! Errors in OpenAI's JSON shape, `{"error":{"message","type","param","code"}}`,
//! with the HTTP status the OpenAI SDKs map to their exception classes.
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ChatError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `requests`, `server_error`.
    pub kind: &'static str,
    /// A stable machine-readable code: OpenAI's where one exists
    /// (`invalid_api_key`, `model_not_found`, `rate_limit_exceeded`),
    /// chatstream's otherwise (docs/protocol.md).
    pub code: &'static str,
    /// The request field at fault, e.g. `messages[0].role`.
    pub param: Option<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        Self {
            status,
            kind,
            code,
            param: None,
            message,
            retry_after: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// A malformed request: the field `param` is missing or wrong.
    pub fn invalid_request(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message.into(),
        )
        .with_param(param)
    }

    /// A request body that is valid JSON but not a request at all.
    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message.into(),
        )
    }

    pub fn invalid_json(error: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_json",
            format!("the request body is not valid JSON: {error}"),
        )
    }

    pub fn missing_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "no API key: send the header `Authorization: Bearer <api key>`".into(),
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("the model {model:?} does not exist or you do not have access to it"),
        )
        .with_param("model")
    }

    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "unavailable",
            "starting: not ready to accept requests yet, retry".into(),
        )
    }

    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "unavailable",
            "server shutting down; retry".into(),
        )
    }

    /// No reply in time. The message was accepted: the reply, when it
    /// comes, is recorded in the conversation all the same.
    pub fn reply_timeout(waited: Duration, conversation_id: &str) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            "timeout",
            format!(
                "no reply from the model within {} s; the message was recorded in conversation {conversation_id} and the reply will be too",
                waited.as_secs_f64()
            ),
        )
    }

    /// The model failed to answer (a committed `chatstream.error.v1` event).
    pub fn model_failed(code: &str, message: &str) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "model_error",
            format!("the model failed ({code}): {message}"),
        )
    }

    /// The body could not be read: too large, or not a complete body.
    pub fn from_body_rejection(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "invalid_request_error",
                "message_too_large",
                format!("request body too large: {}", rejection.body_text()),
            )
        } else {
            Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                format!("cannot read the request body: {}", rejection.body_text()),
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl From<ChatError> for OpenAiError {
    fn from(error: ChatError) -> Self {
        let message = error.to_string();
        let retry_after = error.retry_after();
        let (status, kind, code, param) = match &error {
            ChatError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                None,
            ),
            ChatError::InvalidJson(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                None,
            ),
            ChatError::UnknownType(_) | ChatError::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                None,
            ),
            ChatError::MessageTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "message_too_large",
                Some("messages"),
            ),
            ChatError::ConversationNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "conversation_not_found",
                None,
            ),
            ChatError::ClientMessageConflict(_) => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                "client_message_conflict",
                None,
            ),
            ChatError::RateLimited { .. }
            | ChatError::TooManySubscriptions(_)
            | ChatError::TooManyConnections(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                None,
            ),
            ChatError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
                None,
            ),
        };
        Self {
            status,
            kind,
            code,
            param: param.map(str::to_owned),
            message,
            retry_after,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up: a client waiting that long is let through.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds as u64));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_429_with_retry_after_rounded_up_to_seconds() {
        let error = OpenAiError::from(ChatError::RateLimited {
            retry_after: Duration::from_millis(1200),
        });
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn backend_errors_are_503_and_sizes_413() {
        let unavailable = OpenAiError::from(ChatError::Unavailable("event log".into()));
        assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.body()["error"]["type"], "server_error");
        let too_large = OpenAiError::from(ChatError::MessageTooLarge { size: 10, limit: 5 });
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_large.body()["error"]["code"], "message_too_large");
    }

    #[test]
    fn the_body_has_all_four_fields() {
        let body = OpenAiError::model_not_found("gpt-x").body();
        let error = body["error"].as_object().unwrap();
        assert_eq!(error.len(), 4);
        assert_eq!(error["param"], "model");
        assert_eq!(error["code"], "model_not_found");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains("gpt-x"));
    }
}
