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
        let live = self
            .fanout
            .subscribe(&who.tenant.id, conversation_id)
            .await?;
        let delivery = Delivery {
            store: self.store.clone(),
            fanout: self.fanout.clone(),
            tenant_id: who.tenant.id.clone(),
            conversation_id: conversation_id.to_owned(),
            delivered_up_to: after_offset,
            out,
        };
        let subscribed = ChatReply::Subscribed {
            request_id,
            conversation_id: conversation_id.to_owned(),
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
        Ok(())
    }
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
                Ok(FanOutMessage::Committed(entry)) => self.deliver_committed(entry).await?,
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
