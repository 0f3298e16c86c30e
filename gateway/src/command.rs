//! The one internal command type every edge converts into, and the replies
//! every edge converts back out of.
use chatstream_core::fanout::TokenDelta;
use chatstream_core::store::HistoryEntry;
use chatstream_schemas::pb::events::ContextMessage;

use crate::error::ChatError;

#[derive(Debug, Clone, PartialEq)]
pub enum ChatCommand {
    Open {
        request_id: Option<String>,
        title: String,
    },
    Send(SendMessage),
    Subscribe {
        request_id: Option<String>,
        conversation_id: String,
        after_position: Option<u64>,
    },
    Unsubscribe {
        request_id: Option<String>,
        conversation_id: String,
    },
    DecideToolCall(ToolCallDecision),
}

/// A person's answer to a tool call waiting for approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallDecision {
    pub request_id: Option<String>,
    pub conversation_id: String,
    /// Id of the `ToolCallRequested` event.
    pub tool_call_event_id: String,
    pub approved: bool,
    pub reason: String,
}

impl ChatCommand {
    /// The command's name in the protocols (`send`, `open`...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Open { .. } => "open",
            Self::Send(_) => "send",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::DecideToolCall(_) => "decide_tool_call",
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Open { request_id, .. }
            | Self::Subscribe { request_id, .. }
            | Self::Unsubscribe { request_id, .. } => request_id.as_deref(),
            Self::Send(message) => message.request_id.as_deref(),
            Self::DecideToolCall(decision) => decision.request_id.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SendMessage {
    pub request_id: Option<String>,
    /// `None`: open a new conversation for this message.
    pub conversation_id: Option<String>,
    pub client_message_id: Option<String>,
    pub text: String,
    /// Earlier messages sent along (the stateless OpenAI-compatible API).
    pub context: Vec<ContextMessage>,
    /// The catalog model asked for; empty lets routing choose.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAck {
    pub request_id: Option<String>,
    pub conversation_id: String,
    pub event_id: String,
    pub position: u64,
    pub duplicate: bool,
}

// A committed event is the largest reply by far; replies go straight
// through a channel to the connection's writer, so copying its bytes costs
// less than an allocation per delivered event would.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ChatReply {
    Opened {
        request_id: Option<String>,
        conversation_id: String,
        position: u64,
    },
    Ack(MessageAck),
    Subscribed {
        request_id: Option<String>,
        conversation_id: String,
    },
    Unsubscribed {
        request_id: Option<String>,
        conversation_id: String,
    },
    Delta(TokenDelta),
    Event(HistoryEntry),
    Error {
        request_id: Option<String>,
        error: ChatError,
    },
}

/// Empty strings from protocols without optional fields mean "absent".
pub fn non_empty(value: String) -> Option<String> {
    if value.is_empty() { None } else { Some(value) }
}
