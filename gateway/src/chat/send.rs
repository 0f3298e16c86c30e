//! `send`: a user message appended to the log (with the opening of its
//! conversation, in the same append, when it names none) and acked once
//! durable. Sends with a client message id go through `idempotency`, so a
//! retry is acked, not appended again.
use std::time::Instant;

use chatstream_config::tenants::Principal;
use chatstream_core::log::{LogError, LogPosition};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::{UserMessageSent, event::Payload};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::open::opening;
use super::subscribe::LiveWatch;
use super::{ChatCore, check_len, client_event};
use crate::command::{ChatReply, MessageAck, SendMessage};
use crate::error::ChatError;

/// Where `send_message_watched` delivers the conversation a send opens,
/// as `subscribe` would, until `stop` is cancelled or `out` closes.
pub struct Watcher {
    pub out: mpsc::Sender<ChatReply>,
    pub stop: CancellationToken,
}

/// A send's events before they are appended: the user message, after the
/// opening of its conversation when the send names none.
pub(super) struct NewMessage {
    conversation_id: String,
    /// The opening (when the send opens its conversation), then the message.
    pub(super) events: Vec<Event>,
    /// The watcher of a send that opens its conversation, already
    /// listening to it, so it misses no delta answering the message.
    watch: Option<(LiveWatch, Watcher)>,
}

impl NewMessage {
    fn opens_conversation(&self) -> bool {
        self.events.len() > 1
    }
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
        let sent = self.send_checked(who, message, watcher).await;
        if let Err(error) = &sent {
            error.count_refusal();
        }
        sent
    }

    async fn send_checked(
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

    /// Appends the user message (with its conversation's opening when the
    /// send names none, in the same append).
    pub(super) async fn append_user_message(
        &self,
        who: &Principal,
        message: &SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<Appended, ChatError> {
        let new = self.new_message(who, message, watcher).await?;
        let positions = timed_append(self.log.append_all(&who.tenant.id, &new.events)).await?;
        self.appended(who, message, new, &positions).await
    }

    /// A send's events. When the send opens its conversation, `watcher`
    /// starts listening to it here, before anything is appended.
    pub(super) async fn new_message(
        &self,
        who: &Principal,
        message: &SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<NewMessage, ChatError> {
        let mut events = Vec::with_capacity(2);
        let mut watch = None;
        let conversation_id = match &message.conversation_id {
            Some(id) => id.clone(),
            None => {
                let (id, opened) = opening(who, "");
                events.push(opened);
                if let Some(watcher) = watcher {
                    watch = Some((self.watch_live(who, &id).await?, watcher));
                }
                id
            }
        };
        events.push(client_event(
            who,
            &conversation_id,
            Payload::UserMessageSent(Box::new(UserMessageSent {
                client_message_id: message.client_message_id.clone().unwrap_or_default(),
                text: message.text.clone(),
                sent_by_key_id: who.key_id.clone(),
                context: message.context.clone(),
                model: message.model.clone(),
            })),
        ));
        Ok(NewMessage {
            conversation_id,
            events,
            watch,
        })
    }

    /// What follows a send's durable append at `positions`: the conversation
    /// it opened recorded and delivered to its watcher, and the ack.
    pub(super) async fn appended(
        &self,
        who: &Principal,
        message: &SendMessage,
        new: NewMessage,
        positions: &[LogPosition],
    ) -> Result<Appended, ChatError> {
        let (Some(first), Some(&position), Some(event)) =
            (positions.first(), positions.last(), new.events.last())
        else {
            return Err(LogError::Storage("an append reported no position".into()).into());
        };
        if new.opens_conversation() {
            self.record_opened_by_send(who, &new.conversation_id);
        }
        if let Some((watch, Watcher { out, stop })) = new.watch {
            // The opening is delivered as the reply to the send, not again.
            self.deliver(watch, None, Some(first.offset), out, stop);
        }
        metrics::counter!("chatstream_gateway_messages_total", "tenant" => who.tenant.id.clone())
            .increment(1);
        let ack = MessageAck {
            request_id: message.request_id.clone(),
            conversation_id: new.conversation_id,
            event_id: event.id.clone(),
            position: position.offset,
            duplicate: false,
        };
        Ok(Appended { ack, position })
    }
}

/// Awaits an append, recording how long it took.
pub(super) async fn timed_append<T>(append: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let appended = append.await;
    metrics::histogram!(chatstream_core::metric_catalog::GATEWAY_APPEND_SECONDS)
        .record(started.elapsed().as_secs_f64());
    appended
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chatstream_config::tenants::TenantLimits;
    use chatstream_core::fanout::{FanOut, FanOutMessage, TokenDelta};
    use chatstream_core::store::ProjectionStore;
    use chatstream_schemas::pb::events::{ContextMessage, event::Payload};
    use tokio::sync::{Notify, mpsc};
    use tokio_util::sync::CancellationToken;

    use super::Watcher;
    use crate::chat::testing::{
        Backends, Cue, ScriptedLog, Then, message, next_reply, principal, principal_with_limits,
    };
    use crate::command::ChatReply;
    use crate::error::ChatError;

    #[tokio::test]
    async fn a_send_naming_no_conversation_opens_one_and_is_acked_with_its_position() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");

        let ack = core
            .send_message(&acme, message(None, None, "hello"))
            .await
            .unwrap();

        assert!(!ack.duplicate);
        let events = backends.events().await;
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            events[0].payload,
            Some(Payload::ConversationOpened(_))
        ));
        assert_eq!(events[1].id, ack.event_id);
        assert_eq!(ack.position, 1);
        match &events[1].payload {
            Some(Payload::UserMessageSent(sent)) => {
                assert_eq!(sent.text, "hello");
                assert_eq!(sent.sent_by_key_id, "acme-key");
            }
            other => panic!("expected UserMessageSent, got {other:?}"),
        }
        for event in &events {
            assert_eq!(event.conversation_id, ack.conversation_id);
            assert_eq!(event.tenant_id, "acme");
        }
        // Known here at once; recorded in the store for the other gateways
        // right after the ack (the ack does not wait for it).
        core.send_message(&acme, message(Some(&ack.conversation_id), None, "again"))
            .await
            .expect("the conversation is known to this gateway");
        let recorded = async {
            loop {
                let found = backends
                    .store
                    .get_conversation("acme", &ack.conversation_id)
                    .await
                    .unwrap();
                match found {
                    Some(record) => return record,
                    None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                }
            }
        };
        let record = tokio::time::timeout(std::time::Duration::from_secs(5), recorded)
            .await
            .expect("the store records the conversation");
        assert_eq!(record.opened_by_key_id, "acme-key");
    }

    #[tokio::test]
    async fn a_send_to_an_open_conversation_appends_one_user_message() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();

        let ack = core
            .send_message(&acme, message(Some(&conversation_id), None, "hi"))
            .await
            .unwrap();

        assert_eq!(ack.conversation_id, conversation_id);
        assert_eq!(backends.user_messages().await.len(), 1);
    }

    #[tokio::test]
    async fn requests_that_break_the_rules_are_refused_before_anything_is_appended() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let small = principal_with_limits(
            "small",
            TenantLimits {
                max_message_bytes: Some(10),
                ..Default::default()
            },
        );
        let with_context = {
            let mut sent = message(None, None, "hello");
            sent.context = vec![ContextMessage {
                text: "123456".into(),
                ..Default::default()
            }];
            sent
        };
        let long_id = "m".repeat(crate::chat::MAX_ID_BYTES + 1);
        let cases = [
            (
                &acme,
                message(None, None, &"x".repeat(1025)),
                "message_too_large",
            ),
            (
                &small,
                message(None, None, "hello world"),
                "message_too_large",
            ),
            (&small, with_context, "message_too_large"),
            (&acme, message(None, None, " \n\t"), "invalid_request"),
            (
                &acme,
                message(None, Some(&long_id), "hi"),
                "invalid_request",
            ),
            (
                &acme,
                message(Some("nope"), None, "hi"),
                "conversation_not_found",
            ),
            (
                &acme,
                message(Some(&long_id), None, "hi"),
                "invalid_request",
            ),
        ];
        for (who, sent, code) in cases {
            let error = core.send_message(who, sent.clone()).await.unwrap_err();
            assert_eq!(error.code(), code, "{sent:?}: {error}");
        }
        let error = core
            .send_message(&small, message(None, None, "hello world"))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ChatError::MessageTooLarge {
                size: 11,
                limit: 10
            }
        );
        assert!(backends.events().await.is_empty());
    }

    #[tokio::test]
    async fn a_tenant_cannot_send_into_another_tenants_conversation() {
        let backends = Backends::new();
        let core = backends.core();
        let (theirs, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();

        let error = core
            .send_message(&principal("globex"), message(Some(&theirs), None, "hi"))
            .await
            .unwrap_err();

        assert_eq!(error, ChatError::ConversationNotFound(theirs));
        assert!(backends.user_messages().await.is_empty());
    }

    #[tokio::test]
    async fn a_watched_send_subscribes_to_the_conversation_it_opens_before_appending() {
        let backends = Backends::new();
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let log = ScriptedLog::new(
            backends.log.clone(),
            [Cue::Hold {
                entered: entered.clone(),
                release: release.clone(),
                then: Then::Append,
            }],
        );
        let core = Arc::new(backends.core_with_log(log));
        let (out, mut replies) = mpsc::channel(16);
        let watcher = Watcher {
            out,
            stop: CancellationToken::new(),
        };
        let sending = tokio::spawn({
            let core = core.clone();
            async move {
                core.send_message_watched(
                    &principal("acme"),
                    message(None, None, "hi"),
                    Some(watcher),
                )
                .await
            }
        });

        // The user message is not on the log yet; a delta answering it
        // (as a fast router would send) must reach the watcher.
        entered.notified().await;
        let conversation_id = backends.events().await[0].conversation_id.clone();
        let delta = TokenDelta {
            conversation_id: conversation_id.clone(),
            reply_to: "u".into(),
            index: 0,
            text: "You".into(),
        };
        backends
            .fanout
            .publish(
                "acme",
                &conversation_id,
                FanOutMessage::Delta(delta.clone()),
            )
            .await
            .unwrap();
        release.notify_one();
        let ack = sending.await.unwrap().unwrap();

        assert_eq!(ack.conversation_id, conversation_id);
        assert!(matches!(
            next_reply(&mut replies).await,
            ChatReply::Subscribed { conversation_id: c, .. } if c == conversation_id
        ));
        assert!(matches!(next_reply(&mut replies).await, ChatReply::Delta(d) if d == delta));
    }

    #[tokio::test]
    async fn a_retried_watched_send_opens_nothing_and_leaves_the_watcher_unused() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let first = core
            .send_message(&acme, message(None, Some("m-1"), "hi"))
            .await
            .unwrap();
        let (out, mut replies) = mpsc::channel(16);
        let watcher = Watcher {
            out,
            stop: CancellationToken::new(),
        };

        let retry = core
            .send_message_watched(&acme, message(None, Some("m-1"), "hi"), Some(watcher))
            .await
            .unwrap();

        assert!(retry.duplicate);
        assert_eq!(retry.conversation_id, first.conversation_id);
        // The watcher was dropped unused: its channel closes with nothing in it.
        assert!(replies.recv().await.is_none());
        assert_eq!(backends.events().await.len(), 2);
    }
}
