//! One client connection's state, shared by the WebSocket and gRPC
//! `Converse` edges: who it is, and which conversations it subscribed to.
use std::collections::HashMap;
use std::sync::Arc;

use chatstream_config::tenants::Principal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::chat::{ChatCore, MAX_ID_BYTES};
use crate::command::{ChatCommand, ChatReply};
use crate::error::ChatError;
use crate::traces::ConnectionTrace;

pub struct Session {
    core: Arc<ChatCore>,
    principal: Principal,
    out: mpsc::Sender<ChatReply>,
    subscriptions: HashMap<String, CancellationToken>,
    max_subscriptions: usize,
    trace: ConnectionTrace,
}

impl Session {
    pub fn new(
        core: Arc<ChatCore>,
        principal: Principal,
        out: mpsc::Sender<ChatReply>,
        max_subscriptions: usize,
    ) -> Self {
        Self {
            core,
            principal,
            out,
            subscriptions: HashMap::new(),
            max_subscriptions,
            trace: ConnectionTrace::default(),
        }
    }

    /// Traces each command as a span continuing `trace`'s context.
    pub fn with_trace(mut self, trace: ConnectionTrace) -> Self {
        self.trace = trace;
        self
    }

    pub fn has_subscriptions(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    /// Executes one command; its reply (or error) goes to the connection.
    pub async fn handle(&mut self, command: ChatCommand) {
        let span = self.trace.command_span(command.name());
        self.handle_command(command).instrument(span).await
    }

    async fn handle_command(&mut self, command: ChatCommand) {
        if command
            .request_id()
            .is_some_and(|id| id.len() > MAX_ID_BYTES)
        {
            let error = ChatError::InvalidRequest(format!(
                "request_id is longer than {MAX_ID_BYTES} bytes"
            ));
            return self.reply_error(None, error).await;
        }
        let reply = match command {
            ChatCommand::Open { request_id, title } => {
                match self.core.open_conversation(&self.principal, &title).await {
                    Ok((conversation_id, position)) => ChatReply::Opened {
                        request_id,
                        conversation_id,
                        position,
                    },
                    Err(error) => ChatReply::Error { request_id, error },
                }
            }
            ChatCommand::Send(message) => {
                let request_id = message.request_id.clone();
                match self.core.send_message(&self.principal, message).await {
                    Ok(ack) => ChatReply::Ack(ack),
                    Err(error) => ChatReply::Error { request_id, error },
                }
            }
            ChatCommand::Subscribe {
                request_id,
                conversation_id,
                after_position,
            } => {
                // On success the delivery task replies `Subscribed` before any event.
                match self
                    .subscribe(request_id.clone(), &conversation_id, after_position)
                    .await
                {
                    Ok(()) => return,
                    Err(error) => ChatReply::Error { request_id, error },
                }
            }
            ChatCommand::DecideToolCall(decision) => {
                let request_id = decision.request_id.clone();
                match self.core.decide_tool_call(&self.principal, decision).await {
                    Ok(ack) => ChatReply::Ack(ack),
                    Err(error) => ChatReply::Error { request_id, error },
                }
            }
            ChatCommand::Unsubscribe {
                request_id,
                conversation_id,
            } => {
                if let Some(stop) = self.subscriptions.remove(&conversation_id) {
                    stop.cancel();
                }
                ChatReply::Unsubscribed {
                    request_id,
                    conversation_id,
                }
            }
        };
        self.reply(reply).await;
    }

    pub async fn reply_error(&self, request_id: Option<String>, error: ChatError) {
        self.reply(ChatReply::Error { request_id, error }).await;
    }

    async fn reply(&self, reply: ChatReply) {
        // A closed channel means the connection is going away; nothing to tell.
        let _ = self.out.send(reply).await;
    }

    /// Subscribing again to the same conversation restarts it from the new position.
    async fn subscribe(
        &mut self,
        request_id: Option<String>,
        conversation_id: &str,
        after_position: Option<u64>,
    ) -> Result<(), ChatError> {
        if !self.subscriptions.contains_key(conversation_id)
            && self.subscriptions.len() >= self.max_subscriptions
        {
            return Err(ChatError::TooManySubscriptions(self.max_subscriptions));
        }
        let stop = CancellationToken::new();
        if let Some(previous) = self.subscriptions.remove(conversation_id) {
            previous.cancel();
        }
        self.core
            .subscribe(
                &self.principal,
                request_id,
                conversation_id,
                after_position,
                self.out.clone(),
                stop.clone(),
            )
            .await?;
        self.subscriptions.insert(conversation_id.to_owned(), stop);
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for stop in self.subscriptions.values() {
            stop.cancel();
        }
    }
}
