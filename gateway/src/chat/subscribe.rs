//! `subscribe`: a conversation delivered from a position with no gap and no
//! duplicate: committed events from history, then live deltas and events
//! from the fan-out, catching up from history again after falling behind.
use std::sync::Arc;

use chatstream_config::tenants::Principal;
use chatstream_core::fanout::{FanOut, FanOutError, FanOutMessage, FanOutStream};
use chatstream_core::store::{HistoryEntry, ProjectionStore};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ChatCore;
use crate::command::ChatReply;
use crate::error::ChatError;

/// History entries read per store round trip while replaying.
const REPLAY_PAGE: usize = 500;

impl ChatCore {
    /// Starts delivering a conversation to `out`: a `Subscribed` reply,
    /// committed events after `after_offset` from history, then live deltas
    /// and events, until `stop` is cancelled or `out` closes.
    pub async fn subscribe(
        &self,
        who: &Principal,
        request_id: Option<String>,
        conversation_id: &str,
        after_offset: Option<u64>,
        out: mpsc::Sender<ChatReply>,
        stop: CancellationToken,
    ) -> Result<(), ChatError> {
        self.require_conversation(who, conversation_id).await?;
        // Subscribe before reading history: whatever is committed after the
        // history read is then already on its way to us.
        let live = self.watch_live(who, conversation_id).await?;
        self.deliver(live, request_id, after_offset, out, stop);
        Ok(())
    }

    /// Listens to a conversation's live messages from now on, before
    /// anything is delivered: a send opening a conversation listens before
    /// it appends, so it misses no delta answering it.
    pub(super) async fn watch_live(
        &self,
        who: &Principal,
        conversation_id: &str,
    ) -> Result<LiveWatch, ChatError> {
        let live = self
            .fanout
            .subscribe(&who.tenant.id, conversation_id)
            .await?;
        Ok(LiveWatch {
            live,
            tenant_id: who.tenant.id.clone(),
            conversation_id: conversation_id.to_owned(),
        })
    }

    /// Delivers what `watch` listens to (see `subscribe`), after a
    /// `Subscribed` reply, in a task of its own.
    pub(super) fn deliver(
        &self,
        watch: LiveWatch,
        request_id: Option<String>,
        after_offset: Option<u64>,
        out: mpsc::Sender<ChatReply>,
        stop: CancellationToken,
    ) {
        let LiveWatch {
            live,
            tenant_id,
            conversation_id,
        } = watch;
        let subscribed = ChatReply::Subscribed {
            request_id,
            conversation_id: conversation_id.clone(),
        };
        let delivery = Delivery {
            store: self.store.clone(),
            fanout: self.fanout.clone(),
            tenant_id,
            conversation_id,
            delivered_up_to: after_offset,
            out,
        };
        tokio::spawn(async move {
            if delivery.send(subscribed).await.is_err() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = delivery.run(live) => {}
            }
        });
    }
}

/// A conversation's live stream, listened to but not delivered yet.
pub(super) struct LiveWatch {
    live: FanOutStream,
    tenant_id: String,
    conversation_id: String,
}

/// One subscription's delivery task: replays history, then forwards live
/// messages, dropping committed events at or before what it delivered.
struct Delivery {
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    tenant_id: String,
    conversation_id: String,
    delivered_up_to: Option<u64>,
    out: mpsc::Sender<ChatReply>,
}

/// Why delivery stopped.
enum Stopped {
    ClientGone,
    Failed(ChatError),
}

impl Delivery {
    async fn run(mut self, mut live: FanOutStream) {
        let stopped = loop {
            if let Err(stopped) = self.replay_history().await {
                break stopped;
            }
            match self.forward_live(&mut live).await {
                // Fell behind the live stream: resubscribe, then catch up from history again.
                Ok(()) => match self
                    .fanout
                    .subscribe(&self.tenant_id, &self.conversation_id)
                    .await
                {
                    Ok(fresh) => live = fresh,
                    Err(error) => break Stopped::Failed(error.into()),
                },
                Err(stopped) => break stopped,
            }
        };
        if let Stopped::Failed(error) = stopped {
            let _ = self
                .out
                .send(ChatReply::Error {
                    request_id: None,
                    error,
                })
                .await;
        }
    }

    async fn replay_history(&mut self) -> Result<(), Stopped> {
        loop {
            let page = self
                .store
                .read_history(
                    &self.tenant_id,
                    &self.conversation_id,
                    self.delivered_up_to,
                    REPLAY_PAGE,
                )
                .await
                .map_err(|e| Stopped::Failed(e.into()))?;
            let complete = page.len() < REPLAY_PAGE;
            for entry in page {
                self.deliver_committed(entry).await?;
            }
            if complete {
                return Ok(());
            }
        }
    }

    /// Returns `Ok` when the subscriber lagged and must catch up.
    async fn forward_live(&mut self, live: &mut FanOutStream) -> Result<(), Stopped> {
        while let Some(item) = live.next().await {
            match item {
                Ok(FanOutMessage::Delta(delta)) => self.send(ChatReply::Delta(delta)).await?,
                Ok(FanOutMessage::Committed(entry)) => {
                    self.deliver_committed(Arc::unwrap_or_clone(entry)).await?
                }
                Err(FanOutError::Lagged { skipped }) => {
                    tracing::debug!(skipped, conversation_id = %self.conversation_id, "subscriber lagged; catching up from history");
                    return Ok(());
                }
                Err(error) => return Err(Stopped::Failed(error.into())),
            }
        }
        Err(Stopped::Failed(ChatError::Unavailable(
            "live delivery".into(),
        )))
    }

    async fn deliver_committed(&mut self, entry: HistoryEntry) -> Result<(), Stopped> {
        let offset = entry.position.offset;
        if self.delivered_up_to.is_some_and(|up_to| offset <= up_to) {
            return Ok(());
        }
        self.send(ChatReply::Event(entry)).await?;
        self.delivered_up_to = Some(offset);
        Ok(())
    }

    async fn send(&self, reply: ChatReply) -> Result<(), Stopped> {
        self.out.send(reply).await.map_err(|_| Stopped::ClientGone)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chatstream_core::fanout::in_process::InProcessFanOut;
    use chatstream_core::fanout::{FanOut, FanOutMessage, TokenDelta};
    use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
    use chatstream_core::store::{ConversationRecord, ProjectionStore};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use crate::chat::ChatCore;
    use crate::chat::testing::{
        Backends, LIMITS, UnreachableFanOut, answer, next_reply, offsets, principal,
    };
    use crate::command::ChatReply;
    use crate::error::ChatError;

    #[tokio::test]
    async fn history_after_the_position_comes_first_then_live_messages_without_duplicates() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
        for offset in 1..=4 {
            backends
                .project_answer("acme", &conversation_id, offset, "a")
                .await;
        }
        let (out, mut replies) = mpsc::channel(16);

        core.subscribe(
            &acme,
            Some("r-1".into()),
            &conversation_id,
            Some(2),
            out,
            CancellationToken::new(),
        )
        .await
        .unwrap();

        assert!(matches!(
            next_reply(&mut replies).await,
            ChatReply::Subscribed { request_id: Some(r), .. } if r == "r-1"
        ));
        let replayed = [
            next_reply(&mut replies).await,
            next_reply(&mut replies).await,
        ];
        assert_eq!(offsets(&replayed), [3, 4]);

        let delta = TokenDelta {
            conversation_id: conversation_id.clone(),
            reply_to: "u".into(),
            index: 0,
            text: "You".into(),
        };
        let again = answer("acme", &conversation_id, 4, "a");
        let next = backends
            .project_answer("acme", &conversation_id, 5, "b")
            .await;
        for message in [
            FanOutMessage::Committed(again.into()),
            FanOutMessage::Committed(next.into()),
            FanOutMessage::Delta(delta.clone()),
        ] {
            backends
                .fanout
                .publish("acme", &conversation_id, message)
                .await
                .unwrap();
        }
        let live = [
            next_reply(&mut replies).await,
            next_reply(&mut replies).await,
        ];
        assert_eq!(offsets(&live[..1]), [5], "the copy of 4 is dropped");
        assert!(matches!(&live[1], ChatReply::Delta(d) if *d == delta));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_catches_up_without_gap_or_duplicate() {
        let backends = Backends::new();
        let fanout = Arc::new(InProcessFanOut::with_capacity(2));
        let core = ChatCore::new(
            backends.log.clone(),
            backends.store.clone(),
            fanout.clone(),
            Arc::new(InProcessRateLimiter::new()),
            LIMITS,
        );
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
        // Nobody reads until the end: delivery blocks, the fan-out drops
        // messages for it, and it must recover them from history.
        let (out, mut replies) = mpsc::channel(1);
        core.subscribe(
            &acme,
            None,
            &conversation_id,
            None,
            out,
            CancellationToken::new(),
        )
        .await
        .unwrap();

        for offset in 1..=20 {
            // As the projector does: recorded first, then published.
            let entry = backends
                .project_answer("acme", &conversation_id, offset, "a")
                .await;
            fanout
                .publish(
                    "acme",
                    &conversation_id,
                    FanOutMessage::Committed(entry.into()),
                )
                .await
                .unwrap();
        }

        assert!(matches!(
            next_reply(&mut replies).await,
            ChatReply::Subscribed { .. }
        ));
        let mut delivered = Vec::new();
        for _ in 1..=20 {
            delivered.push(next_reply(&mut replies).await);
        }
        assert_eq!(offsets(&delivered), (1..=20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_stopped_subscription_delivers_nothing_more() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
        let (out, mut replies) = mpsc::channel(16);
        let stop = CancellationToken::new();
        core.subscribe(&acme, None, &conversation_id, None, out, stop.clone())
            .await
            .unwrap();
        assert!(matches!(
            next_reply(&mut replies).await,
            ChatReply::Subscribed { .. }
        ));

        stop.cancel();

        // The delivery task ends and drops its sender: the channel closes.
        assert!(replies.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_tenant_cannot_subscribe_to_another_tenants_conversation() {
        let backends = Backends::new();
        let core = backends.core();
        let (theirs, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();
        backends.project_answer("acme", &theirs, 1, "secret").await;
        let (out, mut replies) = mpsc::channel(16);

        let error = core
            .subscribe(
                &principal("globex"),
                None,
                &theirs,
                None,
                out,
                CancellationToken::new(),
            )
            .await
            .unwrap_err();

        assert_eq!(error, ChatError::ConversationNotFound(theirs));
        assert!(replies.recv().await.is_none(), "nothing was delivered");
    }

    #[tokio::test]
    async fn subscribing_while_live_delivery_is_down_is_retryable() {
        let backends = Backends::new();
        backends
            .store
            .put_conversation(&ConversationRecord {
                tenant_id: "acme".into(),
                conversation_id: "c".into(),
                title: String::new(),
                created_at_ms: 0,
                opened_by_key_id: "acme-key".into(),
            })
            .await
            .unwrap();
        let core = ChatCore::new(
            backends.log.clone(),
            backends.store.clone(),
            Arc::new(UnreachableFanOut),
            Arc::new(InProcessRateLimiter::new()),
            LIMITS,
        );
        let (out, _replies) = mpsc::channel(16);

        let error = core
            .subscribe(
                &principal("acme"),
                None,
                "c",
                None,
                out,
                CancellationToken::new(),
            )
            .await
            .unwrap_err();

        assert_eq!(error, ChatError::Unavailable("live delivery".into()));
    }
}
