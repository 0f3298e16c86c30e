//! Errors a client can get, each with a stable code, mapped once per edge
//! to a gRPC status, an HTTP status or a WebSocket error frame.
use chatstream_core::fanout::FanOutError;
use chatstream_core::log::LogError;
use chatstream_core::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("missing or unknown API key")]
    Unauthenticated,
    #[error("frame is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("message text is {size} bytes; the limit is {limit}")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("conversation {0:?} not found")]
    ConversationNotFound(String),
    #[error("client_message_id {0:?} was already used in another conversation")]
    ClientMessageConflict(String),
    #[error("rate limit exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited { retry_after: std::time::Duration },
    #[error("at most {0} subscriptions per connection")]
    TooManySubscriptions(usize),
    #[error("the tenant has its maximum of {0} open connections")]
    TooManyConnections(u32),
    #[error("{0}: temporarily unavailable, retry")]
    Unavailable(String),
}

impl ChatError {
    /// The stable code clients switch on (docs/protocol.md lists them).
    /// Counts this error on `chatstream_gateway_refusals_total` by its code.
    pub fn count_refusal(&self) {
        metrics::counter!(chatstream_core::metric_catalog::GATEWAY_REFUSALS, "reason" => self.code())
            .increment(1);
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::InvalidJson(_) => "invalid_json",
            Self::UnknownType(_) => "unknown_type",
            Self::InvalidRequest(_) => "invalid_request",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::ConversationNotFound(_) => "conversation_not_found",
            Self::ClientMessageConflict(_) => "client_message_conflict",
            Self::RateLimited { .. } => "rate_limited",
            Self::TooManySubscriptions(_) => "too_many_subscriptions",
            Self::TooManyConnections(_) => "too_many_connections",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// When to retry, for errors that say.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            Self::Unauthenticated => Code::Unauthenticated,
            Self::InvalidJson(_)
            | Self::UnknownType(_)
            | Self::InvalidRequest(_)
            | Self::MessageTooLarge { .. } => Code::InvalidArgument,
            Self::ConversationNotFound(_) => Code::NotFound,
            Self::ClientMessageConflict(_) => Code::AlreadyExists,
            Self::RateLimited { .. }
            | Self::TooManySubscriptions(_)
            | Self::TooManyConnections(_) => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
        };
        let mut status = tonic::Status::new(code, self.to_string());
        if let Some(retry_after) = self.retry_after() {
            // Whole seconds, rounded up, as HTTP's Retry-After.
            let seconds = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = seconds.to_string().parse() {
                status.metadata_mut().insert("retry-after", value);
            }
        }
        status
    }
}

// Backend errors are logged in full where they happen; clients get a
// retryable error that names the backend, not its internals.
impl From<LogError> for ChatError {
    fn from(error: LogError) -> Self {
        tracing::warn!(%error, "event log error");
        Self::Unavailable("event log".into())
    }
}

impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "projection store error");
        Self::Unavailable("projection store".into())
    }
}

impl From<FanOutError> for ChatError {
    fn from(error: FanOutError) -> Self {
        tracing::warn!(%error, "fan-out error");
        Self::Unavailable("live delivery".into())
    }
}
