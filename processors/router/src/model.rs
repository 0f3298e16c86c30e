//! The seam between the router and a model provider. Providers stream
//! chunks; the router turns them into deltas and one durable answer.
use std::time::Duration;

use futures::stream::BoxStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant message's tool call.
    Tool,
}

impl Role {
    /// The role's name in the OpenAI wire format (Anthropic has no `tool`
    /// role: its providers send results as `user` content blocks).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of the conversation as models see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    /// The text; for a failed tool, the error kind and message.
    pub content: String,
    /// The tool calls an assistant message made.
    pub tool_calls: Vec<ToolCallChunk>,
    /// For a `Tool` message: the call it answers.
    pub tool_call_id: String,
    /// For a `Tool` message: the tool failed (or was refused).
    pub is_error: bool,
}

impl ChatMessage {
    fn text(role: Role, content: &str) -> Self {
        Self {
            role,
            content: content.to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
            is_error: false,
        }
    }

    pub fn system(content: &str) -> Self {
        Self::text(Role::System, content)
    }

    pub fn user(content: &str) -> Self {
        Self::text(Role::User, content)
    }

    pub fn assistant(content: &str) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// An assistant message that asks for `call`.
    pub fn tool_call(call: ToolCallChunk) -> Self {
        Self {
            tool_calls: vec![call],
            ..Self::text(Role::Assistant, "")
        }
    }

    /// The result of the call `call_id`.
    pub fn tool_result(call_id: &str, content: &str, is_error: bool) -> Self {
        Self {
            tool_call_id: call_id.to_owned(),
            is_error,
            ..Self::text(Role::Tool, content)
        }
    }
}

/// A tool call as a model streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallChunk {
    /// The model's id for the call.
    pub call_id: String,
    /// The name the model called: a `ToolSpec` name, or `<server>.<tool>`.
    pub name: String,
    /// A JSON object, as text.
    pub arguments_json: String,
}

/// A tool offered to the model, as providers describe functions.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name the model calls it by (letters, digits, `_` and `-`).
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub input_schema: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub tenant_id: String,
    pub conversation_id: String,
    /// The provider's model name; empty lets the provider choose (the mock).
    pub model: String,
    /// The conversation so far, oldest first; the last is the user message
    /// or tool result being answered.
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    /// Tools the model may call; none offers no tools.
    pub tools: Vec<ToolSpec>,
}

impl CompletionRequest {
    /// A request answering one user message, with no earlier context.
    pub fn for_text(tenant_id: &str, conversation_id: &str, text: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            model: String::new(),
            messages: vec![ChatMessage::user(text)],
            max_tokens: None,
            tools: Vec::new(),
        }
    }

    /// Text of the last user message: what is being answered.
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChunk {
    Token(String),
    /// Usage the provider reported before the end (e.g. Anthropic's
    /// `message_start`); counts are totals so far, not increments.
    Usage(Usage),
    Done {
        usage: Usage,
        finish_reason: String,
    },
    /// The model asks for a tool; the step ends with the call, not a reply.
    ToolCall(ToolCallChunk),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The provider refused or failed the request (the mock's scripted
    /// failure, or anything not worth another attempt).
    #[error("model failed: {0}")]
    Failed(String),
    /// No connection could be made, or it broke before a response.
    #[error("cannot reach the provider: {0}")]
    Connect(String),
    /// The provider answered with an HTTP error status.
    #[error("provider answered {status}: {message}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The provider sent an error inside the stream (e.g. Anthropic's
    /// `overloaded_error`); `retryable` says whether another attempt may help.
    #[error("provider error {kind}: {message}")]
    Provider {
        kind: String,
        message: String,
        retryable: bool,
    },
    /// The stream broke off before the provider said it was done.
    #[error("the stream ended early: {0}")]
    Interrupted(String),
    /// The provider sent something that does not follow its protocol.
    #[error("malformed provider stream: {0}")]
    Protocol(String),
}

impl ModelError {
    /// Whether another attempt (the same or the next candidate) may succeed:
    /// connect errors, 5xx, 429, overload, cut-off streams, and malformed
    /// streams (a broken endpoint, which another candidate may not share).
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Connect(_) | ModelError::Interrupted(_) | ModelError::Protocol(_) => true,
            ModelError::Status { status, .. } => *status == 429 || *status >= 500,
            ModelError::Provider { retryable, .. } => *retryable,
            ModelError::Failed(_) => false,
        }
    }

    /// Stable code for events and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::Failed(_) => "model_error",
            ModelError::Connect(_) => "connect",
            ModelError::Status { status: 429, .. } => "rate_limited",
            ModelError::Status { status, .. } if *status >= 500 => "server_error",
            ModelError::Status { .. } => "client_error",
            ModelError::Provider { .. } => "provider_error",
            ModelError::Interrupted(_) => "interrupted",
            ModelError::Protocol(_) => "protocol",
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

pub trait ChatModel: Send + Sync + 'static {
    /// The model name recorded on the assistant message, e.g. `mock`.
    fn name(&self) -> &str;

    /// Streams the reply: tokens, then exactly one `Done`, or an error.
    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>>;
}
