//! Reading one turn off a WebSocket subscription: from the user's message
//! to its end (the assistant's answer or an error), and what the turn
//! consisted of (its events, the streamed deltas).
use chatstream_schemas::ws::{EventBody, EventJson, ServerFrame};

use crate::ws::Ws;

/// The frames of one turn, up to and including the event that ended it.
#[derive(Debug)]
pub struct Turn {
    pub user_event_id: String,
    pub frames: Vec<ServerFrame>,
}

/// Reads frames until the turn started by the user message `user_event_id`
/// ends: an assistant message or an error of that turn (every event of a
/// turn is correlated with its user message).
pub async fn read_turn(ws: &mut Ws, user_event_id: &str) -> Turn {
    let frames = ws
        .frames_until(|f| {
            matches!(f, ServerFrame::Event { event, .. }
                if event.correlation_id == user_event_id
                    && matches!(event.body, EventBody::AssistantMessage { .. } | EventBody::ErrorOccurred { .. }))
        })
        .await;
    Turn {
        user_event_id: user_event_id.to_owned(),
        frames,
    }
}

/// Sends `text` in a new conversation, subscribes to it and reads the
/// turn it starts.
pub async fn send_and_read_turn(ws: &mut Ws, text: &str) -> Turn {
    let (user_event_id, _) = ws.send_and_subscribe(text).await;
    read_turn(ws, &user_event_id).await
}

impl Turn {
    /// The turn's committed events in order: the user message and every
    /// event correlated with it.
    pub fn events(&self) -> Vec<EventJson> {
        self.committed()
            .filter(|e| e.id == self.user_event_id || e.correlation_id == self.user_event_id)
            .cloned()
            .collect()
    }

    /// The events the user message caused directly (routing, usage, the
    /// first answer or tool call), in order.
    pub fn caused_by_the_message(&self) -> Vec<EventJson> {
        self.committed()
            .filter(|e| e.causation_id == self.user_event_id)
            .cloned()
            .collect()
    }

    /// Every delta read, as (the message it answers, its text).
    pub fn deltas(&self) -> Vec<(String, String)> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                ServerFrame::Delta { reply_to, text, .. } => Some((reply_to.clone(), text.clone())),
                _ => None,
            })
            .collect()
    }

    /// The text of the deltas that answer the user message itself.
    pub fn reply_deltas(&self) -> String {
        self.deltas()
            .into_iter()
            .filter(|(reply_to, _)| *reply_to == self.user_event_id)
            .map(|(_, text)| text)
            .collect()
    }

    /// The event that ended the turn.
    pub fn end(&self) -> &EventJson {
        match self.frames.last() {
            Some(ServerFrame::Event { event, .. }) => event,
            other => unreachable!("a turn ends with an event, not {other:?}"),
        }
    }

    fn committed(&self) -> impl Iterator<Item = &EventJson> {
        self.frames.iter().filter_map(|f| match f {
            ServerFrame::Event { event, .. } => Some(event),
            _ => None,
        })
    }
}
