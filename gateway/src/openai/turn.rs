//! One turn for a stateless API: append the user message in a fresh
//! conversation (through `ChatCore`, so limits and idempotency apply), then
//! follow that conversation until the reply to the message is committed.
use chatstream_config::tenants::Principal;
use chatstream_schemas::pb::events::{AssistantMessage, ErrorOccurred, event::Payload};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Gateway;
use crate::chat::Watcher;
use crate::command::{ChatReply, MessageAck, SendMessage};
use crate::error::ChatError;

/// Replies buffered for one request before delivery waits for it.
const REPLY_BUFFER: usize = 256;

/// What the reply to the turn's message did next.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyUpdate {
    /// The next piece of the reply, right after the pieces before it.
    Delta(String),
    /// The committed reply. `unstreamed` is the end of its text that no
    /// `Delta` carried (all of it when the deltas were missed).
    Completed {
        unstreamed: String,
        reply: AssistantMessage,
    },
    /// The committed error event: the model did not answer.
    Failed(ErrorOccurred),
    /// Delivery stopped (a backend went away); the reply may still come.
    Interrupted(ChatError),
}

/// Turns a conversation's delivery into the updates of one reply: deltas
/// in order without gaps or repeats, then the committed outcome. A turn
/// with tool calls has several steps; each streams its own deltas, caused
/// by the event the step answers (the user message, then each tool result).
#[derive(Debug)]
pub struct ReplyTracker {
    /// Event id of the user message being answered: the turn's correlation id.
    turn: String,
    /// The event the current step answers; its deltas are the reply's.
    reply_to: String,
    next_index: u32,
    /// What the current step streamed.
    streamed: String,
    /// A delta was missed: the rest of the text comes from the committed reply.
    gapped: bool,
}

impl ReplyTracker {
    pub fn new(turn: String) -> Self {
        Self {
            reply_to: turn.clone(),
            turn,
            next_index: 0,
            streamed: String::new(),
            gapped: false,
        }
    }

    fn in_turn(&self, event: &chatstream_schemas::Event) -> bool {
        event.correlation_id == self.turn || event.causation_id == self.turn
    }

    /// The update `reply` makes, if it concerns this reply.
    pub fn observe(&mut self, reply: ChatReply) -> Option<ReplyUpdate> {
        match reply {
            ChatReply::Delta(delta) if delta.reply_to == self.reply_to => {
                if self.gapped || delta.index < self.next_index {
                    return None;
                }
                if delta.index > self.next_index {
                    self.gapped = true;
                    return None;
                }
                self.next_index += 1;
                self.streamed.push_str(&delta.text);
                Some(ReplyUpdate::Delta(delta.text))
            }
            ChatReply::Event(entry) if self.in_turn(&entry.event) => {
                match entry.event.payload {
                    // A tool answered: the next step streams the reply.
                    Some(Payload::ToolCallCompleted(_)) => {
                        self.reply_to = entry.event.id;
                        self.next_index = 0;
                        self.streamed.clear();
                        self.gapped = false;
                        None
                    }
                    Some(Payload::AssistantMessage(reply)) => {
                        let unstreamed = match reply.text.strip_prefix(self.streamed.as_str()) {
                            Some(rest) => rest.to_owned(),
                            None => {
                                tracing::warn!(reply_to = %self.reply_to, "streamed deltas differ from the committed reply");
                                String::new()
                            }
                        };
                        Some(ReplyUpdate::Completed { unstreamed, reply })
                    }
                    Some(Payload::ErrorOccurred(error)) => Some(ReplyUpdate::Failed(error)),
                    // Other consequences of the message (e.g. a tool call) are not the reply.
                    _ => None,
                }
            }
            ChatReply::Error {
                request_id: None,
                error,
            } => Some(ReplyUpdate::Interrupted(error)),
            _ => None,
        }
    }
}

/// The accepted message's reply as it arrives. Dropping it (the client
/// went away) stops the delivery behind it.
pub struct ReplyWatch {
    replies: mpsc::Receiver<ChatReply>,
    tracker: ReplyTracker,
    _stop: DropGuard,
}

impl ReplyWatch {
    /// The next update; `None` when delivery ended without one.
    pub async fn next(&mut self) -> Option<ReplyUpdate> {
        loop {
            let reply = self.replies.recv().await?;
            if let Some(update) = self.tracker.observe(reply) {
                return Some(update);
            }
        }
    }
}

/// Appends `message` as a user message in a new conversation and follows
/// its reply from before the append, so no delta is missed. A retry with
/// the same `client_message_id` (the idempotency key) appends nothing and
/// follows the original message's reply instead (from its committed
/// events; its deltas may be over).
pub async fn start_turn(
    gateway: &Gateway,
    who: &Principal,
    message: SendMessage,
) -> Result<(MessageAck, ReplyWatch), ChatError> {
    let (out, replies) = mpsc::channel(REPLY_BUFFER);
    let stop = CancellationToken::new();
    // Guarded from here: a send that fails after subscribing stops the delivery too.
    let stop_on_drop = stop.clone().drop_guard();
    let watcher = Watcher {
        out: out.clone(),
        stop: stop.clone(),
    };
    let ack = gateway
        .core
        .send_message_watched(who, message, Some(watcher))
        .await?;
    if ack.duplicate {
        gateway
            .core
            .subscribe(
                who,
                None,
                &ack.conversation_id,
                Some(ack.position),
                out,
                stop.clone(),
            )
            .await?;
    }
    let watch = ReplyWatch {
        replies,
        tracker: ReplyTracker::new(ack.event_id.clone()),
        _stop: stop_on_drop,
    };
    Ok((ack, watch))
}

#[cfg(test)]
mod tests {
    use chatstream_core::fanout::TokenDelta;
    use chatstream_core::log::LogPosition;
    use chatstream_core::store::HistoryEntry;
    use chatstream_schemas::Event;

    use super::*;

    fn delta(reply_to: &str, index: u32, text: &str) -> ChatReply {
        ChatReply::Delta(TokenDelta {
            conversation_id: "c".into(),
            reply_to: reply_to.into(),
            index,
            text: text.into(),
        })
    }

    fn committed(causation_id: &str, payload: Payload) -> ChatReply {
        ChatReply::Event(HistoryEntry {
            position: LogPosition {
                partition: 0,
                offset: 2,
            },
            event: Event {
                id: "reply".into(),
                causation_id: causation_id.into(),
                payload: Some(payload),
                ..Default::default()
            },
        })
    }

    fn answer(text: &str) -> AssistantMessage {
        AssistantMessage {
            text: text.into(),
            model: "mock".into(),
            usage: None,
            finish_reason: "stop".into(),
        }
    }

    #[test]
    fn deltas_in_order_then_the_committed_reply() {
        let mut tracker = ReplyTracker::new("m".into());
        assert_eq!(
            tracker.observe(delta("m", 0, "You")),
            Some(ReplyUpdate::Delta("You".into()))
        );
        // A repeat and another message's delta are not this reply's.
        assert_eq!(tracker.observe(delta("m", 0, "You")), None);
        assert_eq!(tracker.observe(delta("other", 1, " no")), None);
        assert_eq!(
            tracker.observe(delta("m", 1, " said:")),
            Some(ReplyUpdate::Delta(" said:".into()))
        );
        let reply = answer("You said: hi");
        assert_eq!(
            tracker.observe(committed("m", Payload::AssistantMessage(reply.clone()))),
            Some(ReplyUpdate::Completed {
                unstreamed: " hi".into(),
                reply
            })
        );
    }

    #[test]
    fn after_a_missed_delta_the_rest_comes_from_the_committed_reply() {
        let mut tracker = ReplyTracker::new("m".into());
        assert_eq!(
            tracker.observe(delta("m", 0, "You")),
            Some(ReplyUpdate::Delta("You".into()))
        );
        assert_eq!(tracker.observe(delta("m", 2, " hi")), None);
        assert_eq!(tracker.observe(delta("m", 1, " said:")), None);
        let reply = answer("You said: hi");
        assert_eq!(
            tracker.observe(committed("m", Payload::AssistantMessage(reply.clone()))),
            Some(ReplyUpdate::Completed {
                unstreamed: " said: hi".into(),
                reply
            })
        );
    }

    #[test]
    fn a_tool_call_turn_follows_the_step_after_the_result() {
        let mut tracker = ReplyTracker::new("m".into());
        let mut request = committed("m", Payload::ToolCallRequested(Box::default()));
        if let ChatReply::Event(entry) = &mut request {
            entry.event.id = "req".into();
            entry.event.correlation_id = "m".into();
        }
        assert_eq!(
            tracker.observe(request),
            None,
            "a tool call is not the reply"
        );
        let mut result = committed("req", Payload::ToolCallCompleted(Box::default()));
        if let ChatReply::Event(entry) = &mut result {
            entry.event.id = "res".into();
            entry.event.correlation_id = "m".into();
        }
        assert_eq!(tracker.observe(result), None);
        assert_eq!(tracker.observe(delta("m", 5, "stale")), None);
        assert_eq!(
            tracker.observe(delta("res", 0, "It is")),
            Some(ReplyUpdate::Delta("It is".into()))
        );
        let reply = answer("It is noon");
        let mut done = committed("res", Payload::AssistantMessage(reply.clone()));
        if let ChatReply::Event(entry) = &mut done {
            entry.event.correlation_id = "m".into();
        }
        assert_eq!(
            tracker.observe(done),
            Some(ReplyUpdate::Completed {
                unstreamed: " noon".into(),
                reply
            })
        );
    }

    #[test]
    fn errors_and_interruptions() {
        let mut tracker = ReplyTracker::new("m".into());
        let failure = ErrorOccurred {
            code: "model_error".into(),
            message: "boom".into(),
            source: "router".into(),
            retryable: true,
        };
        assert_eq!(
            tracker.observe(committed("other", Payload::ErrorOccurred(failure.clone()))),
            None
        );
        assert_eq!(
            tracker.observe(committed("m", Payload::ErrorOccurred(failure.clone()))),
            Some(ReplyUpdate::Failed(failure))
        );
        let error = ChatError::Unavailable("live delivery".into());
        assert_eq!(
            tracker.observe(ChatReply::Error {
                request_id: None,
                error: error.clone()
            }),
            Some(ReplyUpdate::Interrupted(error))
        );
    }
}
