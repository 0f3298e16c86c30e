//! `send`: a user message appended to the log (opening its conversation
//! when it names none) and acked once durable. Sends with a client message
//! id go through `idempotency`, so a retry is acked, not appended again.
use std::time::Instant;

use chatstream_config::tenants::Principal;
use chatstream_core::log::LogPosition;
use chatstream_schemas::pb::events::{UserMessageSent, event::Payload};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ChatCore, check_len, client_event};
use crate::command::{ChatReply, MessageAck, SendMessage};
use crate::error::ChatError;

/// Where `send_message_watched` delivers the conversation a send opens,
/// as `subscribe` would, until `stop` is cancelled or `out` closes.
pub struct Watcher {
    pub out: mpsc::Sender<ChatReply>,
    pub stop: CancellationToken,
}

/// A user message on the log, before its client message id is claimed.
pub(super) struct Appended {
    pub(super) ack: MessageAck,
    pub(super) position: LogPosition,
}

impl ChatCore {
    /// Appends a user message and returns its ack once it is durable. A
    /// retry with the same client message id gets the original ack back.
    pub async fn send_message(
        &self,
        who: &Principal,
        message: SendMessage,
    ) -> Result<MessageAck, ChatError> {
        self.send_message_watched(who, message, None).await
    }

    /// `send_message` for a caller that waits for the reply: when the send
    /// opens a new conversation, `watcher` is subscribed to it before the
    /// message is appended, so it misses no delta. A retried send (a
    /// duplicate ack) opens nothing and leaves `watcher` unused.
    pub async fn send_message_watched(
        &self,
        who: &Principal,
        message: SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<MessageAck, ChatError> {
        self.check_message(who, &message)?;
        if let Some(id) = &message.conversation_id {
            self.require_conversation(who, id).await?;
        }
        self.admit_request(who).await?;
        match message.client_message_id.clone() {
            Some(client_message_id) => {
                self.append_once(who, client_message_id, message, watcher)
                    .await
            }
            None => Ok(self.append_user_message(who, &message, watcher).await?.ack),
        }
    }

    /// What can be refused without asking a backend: size, empty text,
    /// an over-long client message id.
    fn check_message(&self, who: &Principal, message: &SendMessage) -> Result<(), ChatError> {
        let limit = who
            .tenant
            .limits
            .max_message_bytes
            .unwrap_or(self.limits.max_message_bytes);
        let context_bytes: usize = message.context.iter().map(|m| m.text.len()).sum();
        let size = message.text.len() + context_bytes;
        if size > limit {
            return Err(ChatError::MessageTooLarge { size, limit });
        }
        if message.text.trim().is_empty() {
            return Err(ChatError::InvalidRequest("text must not be empty".into()));
        }
        if let Some(id) = &message.client_message_id {
            check_len("client_message_id", id)?;
        }
        Ok(())
    }

    /// Appends the user message (opening its conversation first when the
    /// send names none).
    pub(super) async fn append_user_message(
        &self,
        who: &Principal,
        message: &SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<Appended, ChatError> {
        let conversation_id = match &message.conversation_id {
            Some(id) => id.clone(),
            // Part of this send: no second rate-limit check.
            None => {
                let (id, opened_at) = self.append_conversation_opened(who, "").await?;
                if let Some(Watcher { out, stop }) = watcher {
                    self.subscribe(who, None, &id, Some(opened_at), out, stop)
                        .await?;
                }
                id
            }
        };
        let event = client_event(
            who,
            &conversation_id,
            Payload::UserMessageSent(Box::new(UserMessageSent {
                client_message_id: message.client_message_id.clone().unwrap_or_default(),
                text: message.text.clone(),
                sent_by_key_id: who.key_id.clone(),
                context: message.context.clone(),
                model: message.model.clone(),
            })),
        );
        let started = Instant::now();
        let position = self.log.append(&who.tenant.id, &event).await?;
        metrics::histogram!("chatstream_gateway_append_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("chatstream_gateway_messages_total", "tenant" => who.tenant.id.clone())
            .increment(1);

        let ack = MessageAck {
            request_id: message.request_id.clone(),
            conversation_id,
            event_id: event.id.clone(),
            position: position.offset,
            duplicate: false,
        };
        Ok(Appended { ack, position })
    }
}
