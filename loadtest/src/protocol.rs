//! What the load generator says and hears, whatever the transport: the few
//! client frames it sends and the server frames it measures. The WebSocket
//! and gRPC clients translate to and from these, so the measuring code in
//! `driver.rs` is written once.
use std::sync::Arc;

/// A frame the load generator sends.
#[derive(Clone, Debug)]
pub enum Outgoing {
    Open {
        request_id: String,
    },
    Subscribe {
        request_id: String,
        conversation_id: String,
    },
    Send {
        request_id: String,
        conversation_id: String,
        /// The idempotency key; `None` sends none.
        client_message_id: Option<String>,
        text: Arc<str>,
    },
}

/// A server frame, reduced to what is measured.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Opened {
        request_id: Option<String>,
        conversation_id: String,
    },
    Subscribed,
    Ack {
        request_id: Option<String>,
        event_id: String,
    },
    /// A token of the reply to the user message `reply_to`.
    Delta {
        reply_to: String,
    },
    /// A committed event that ends the reply to the user message `causation_id`.
    ReplyCommitted {
        causation_id: String,
        outcome: ReplyOutcome,
    },
    Error {
        request_id: Option<String>,
        code: String,
        message: String,
    },
    /// Anything else (our own committed message, history, frame types added later).
    Other,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReplyOutcome {
    /// `chatstream.assistant_message.v1`
    Answered,
    /// `chatstream.error.v1` with this code.
    Failed { code: String },
}

pub const ASSISTANT_MESSAGE_TYPE: &str = "chatstream.assistant_message.v1";
pub const ERROR_EVENT_TYPE: &str = "chatstream.error.v1";

/// Why a connection could not be used.
#[derive(Debug, Clone)]
pub enum TransportError {
    /// Could not connect or authenticate: the address and the cause.
    Connect(String),
    /// The connection ended or broke while in use.
    Lost(String),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Connect(cause) | TransportError::Lost(cause) => f.write_str(cause),
        }
    }
}

/// Message text of `bytes` bytes made of words, so that the mock model
/// streams one token per word as it would for real prose.
pub fn message_text(bytes: usize) -> Arc<str> {
    const WORDS: [&str; 8] = [
        "load", "test", "message", "about", "stream", "latency", "under", "pressure",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut i = 0;
    while text.len() < bytes {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(WORDS[i % WORDS.len()]);
        i += 1;
    }
    text.truncate(bytes);
    // A message may not end in whitespace only; a trailing space is harmless
    // but a text made of nothing but spaces would be rejected.
    if text.trim().is_empty() {
        text = "x".repeat(bytes.max(1));
    }
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_text_has_the_requested_size_and_words() {
        for size in [1, 2, 5, 64, 1000] {
            let text = message_text(size);
            assert_eq!(text.len(), size);
            assert!(!text.trim().is_empty());
        }
        assert!(message_text(64).split(' ').count() > 5);
    }
}
