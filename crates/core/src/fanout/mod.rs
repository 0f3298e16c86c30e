//! The fan-out seam: live delivery of token deltas and committed events to
//! whoever is subscribed to a conversation right now. Nothing here is
//! durable; a subscriber that falls behind is told so and recovers from
//! the projection store.
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;

use crate::store::HistoryEntry;

pub mod in_process;

/// A piece of an assistant reply while it streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDelta {
    pub conversation_id: String,
    /// Event id of the user message being answered.
    pub reply_to: String,
    pub index: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FanOutMessage {
    Delta(TokenDelta),
    /// Published after the event is in the projection store, so a subscriber
    /// that subscribes first and then reads history misses nothing.
    /// Shared: the fan-out hands every subscriber the same entry.
    Committed(Arc<HistoryEntry>),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FanOutError {
    /// The subscriber fell behind and `skipped` messages were dropped for it;
    /// it must re-read history from its last position.
    #[error("subscriber lagged behind; {skipped} messages were dropped")]
    Lagged { skipped: u64 },
    #[error("fan-out unavailable: {0}")]
    Unavailable(String),
}

/// Live messages of one conversation, from the moment `subscribe` returned.
pub type FanOutStream = Pin<Box<dyn Stream<Item = Result<FanOutMessage, FanOutError>> + Send>>;

#[async_trait]
pub trait FanOut: Send + Sync + 'static {
    /// Delivers `message` to the current subscribers of the conversation.
    /// No subscriber is not an error: the message is dropped.
    async fn publish(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        message: FanOutMessage,
    ) -> Result<(), FanOutError>;

    /// Subscribes to a conversation. The subscription is active when this
    /// returns: everything published afterwards is delivered, in publish order.
    async fn subscribe(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<FanOutStream, FanOutError>;

    /// Cheap check that publishing and subscribing can work now (for
    /// readiness). An in-process fan-out always can.
    async fn ping(&self) -> Result<(), FanOutError> {
        Ok(())
    }
}
