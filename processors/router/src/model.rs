//! The seam between the router and a model provider. Providers stream
//! chunks; the router turns them into deltas and one durable answer.
use futures::stream::BoxStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRequest {
    pub tenant_id: String,
    pub conversation_id: String,
    /// The user message being answered.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChunk {
    Token(String),
    Done { usage: Usage, finish_reason: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The provider refused or failed the request.
    #[error("model failed: {0}")]
    Failed(String),
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
