//! The in-process fan-out: one `tokio::sync::broadcast` channel per
//! conversation, created by the first subscriber and removed when the last
//! one leaves, so memory follows live conversations rather than all ever seen.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{FanOut, FanOutError, FanOutMessage, FanOutStream};

/// (tenant id, conversation id): a conversation id alone is not unique
/// across tenants.
type ConversationKey = (String, String);

type Channels = Arc<Mutex<HashMap<ConversationKey, broadcast::Sender<FanOutMessage>>>>;

/// Fan-out within one process, for `chatstream dev` and single-node installs.
#[derive(Clone)]
pub struct InProcessFanOut {
    channels: Channels,
    capacity: usize,
}

impl InProcessFanOut {
    /// Messages a subscriber may fall behind by before it is told it lagged
    /// (then it catches up from history). Every conversation with a
    /// subscriber holds this many slots from its first subscriber on: at
    /// 1,024 the slots of a conversation opened per OpenAI request cost
    /// about 120 KiB, zeroed by the kernel each time.
    pub const DEFAULT_CAPACITY: usize = 256;

    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// A fan-out whose subscribers may fall `capacity` messages behind
    /// (at least 1) before they are told they lagged.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            channels: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Conversations with at least one live subscriber (for metrics).
    pub fn active_conversations(&self) -> usize {
        lock(&self.channels).len()
    }
}

impl Default for InProcessFanOut {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl FanOut for InProcessFanOut {
    async fn publish(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        message: FanOutMessage,
    ) -> Result<(), FanOutError> {
        let key = (tenant_id.to_owned(), conversation_id.to_owned());
        let mut channels = lock(&self.channels);
        if let Some(sender) = channels.get(&key)
            && sender.send(message).is_err()
        {
            // Every receiver is gone; normally their streams remove the
            // channel when dropped, this is the backstop.
            channels.remove(&key);
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<FanOutStream, FanOutError> {
        let key = (tenant_id.to_owned(), conversation_id.to_owned());
        // Subscribing under the lock makes the subscription active before
        // this returns, and keeps a concurrent unsubscribe from removing
        // the channel in between.
        let receiver = lock(&self.channels)
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        Ok(Box::pin(Subscription {
            messages: BroadcastStream::new(receiver),
            _unsubscribe: Unsubscribe {
                channels: Arc::clone(&self.channels),
                key,
            },
        }))
    }
}

/// One subscriber's stream. Field order matters: the receiver inside
/// `messages` is dropped before `Unsubscribe` counts the receivers left.
struct Subscription {
    messages: BroadcastStream<FanOutMessage>,
    _unsubscribe: Unsubscribe,
}

impl Stream for Subscription {
    type Item = Result<FanOutMessage, FanOutError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.messages).poll_next(cx).map(|item| {
            item.map(|received| {
                received.map_err(
                    |BroadcastStreamRecvError::Lagged(skipped)| FanOutError::Lagged { skipped },
                )
            })
        })
    }
}

/// Removes the conversation's channel when its last subscriber leaves.
struct Unsubscribe {
    channels: Channels,
    key: ConversationKey,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut channels = lock(&self.channels);
        if channels
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.key);
        }
    }
}

/// The map stays consistent even if a holder panicked (every update is a
/// single insert or remove), so a poisoned lock is still usable.
fn lock(
    channels: &Channels,
) -> MutexGuard<'_, HashMap<ConversationKey, broadcast::Sender<FanOutMessage>>> {
    channels.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::fanout::TokenDelta;

    fn delta(index: u32) -> FanOutMessage {
        FanOutMessage::Delta(TokenDelta {
            conversation_id: "c".into(),
            reply_to: "e".into(),
            index,
            text: index.to_string(),
        })
    }

    #[tokio::test]
    async fn forgets_a_conversation_when_its_last_subscriber_leaves() {
        let fanout = InProcessFanOut::new();
        let first = fanout.subscribe("t", "c").await.unwrap();
        let second = fanout.subscribe("t", "c").await.unwrap();
        drop(fanout.subscribe("t", "other").await.unwrap());
        assert_eq!(fanout.active_conversations(), 1);

        drop(first);
        assert_eq!(
            fanout.active_conversations(),
            1,
            "one subscriber is still there"
        );
        drop(second);
        assert_eq!(fanout.active_conversations(), 0);
    }

    #[tokio::test]
    async fn publishing_to_a_conversation_nobody_watches_allocates_nothing() {
        let fanout = InProcessFanOut::new();
        fanout.publish("t", "c", delta(0)).await.unwrap();
        assert_eq!(fanout.active_conversations(), 0);
    }

    #[tokio::test]
    async fn lag_is_reported_with_the_number_of_dropped_messages() {
        let fanout = InProcessFanOut::with_capacity(4);
        let mut stream = fanout.subscribe("t", "c").await.unwrap();
        for index in 0..10 {
            fanout.publish("t", "c", delta(index)).await.unwrap();
        }
        assert_eq!(
            stream.next().await,
            Some(Err(FanOutError::Lagged { skipped: 6 }))
        );
        assert_eq!(
            stream.next().await,
            Some(Ok(delta(6))),
            "delivery resumes at the oldest kept message"
        );
    }
}
