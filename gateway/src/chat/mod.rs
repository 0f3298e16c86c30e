//! What the gateway does, whatever the protocol: one file per command
//! (open, send, history, subscribe, tool decision), with idempotent sends
//! and admission (live delivery up, rate limits, connection counts) in
//! modules of their own. `ChatCore` holds the backends they share.
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use chatstream_config::tenants::Principal;
use chatstream_core::fanout::FanOut;
use chatstream_core::log::EventLog;
use chatstream_core::ratelimit::RateLimiter;
use chatstream_core::sends::SendReservations;
use chatstream_core::store::ProjectionStore;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::event::Payload;

use crate::error::ChatError;

pub mod admission;
mod history;
mod idempotency;
mod known_conversations;
mod open;
mod send;
mod subscribe;
mod tool_decision;

#[cfg(test)]
mod testing;

pub use history::{MAX_HISTORY_PAGE, MAX_HISTORY_PAGE_BYTES};
pub use send::Watcher;

use admission::refusals::Refusals;
use idempotency::SendDeduplication;
use known_conversations::KnownConversations;

/// Longest accepted client message id, conversation id, title or request id.
pub const MAX_ID_BYTES: usize = 256;

/// Platform-wide limits; a tenant's own limits override them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLimits {
    pub max_message_bytes: usize,
    /// Sends and opens per second per tenant; unlimited when `None`.
    pub requests_per_second: Option<f64>,
    pub burst: Option<u32>,
}

pub struct ChatCore {
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    rate_limiter: Arc<dyn RateLimiter>,
    limits: ChatLimits,
    /// Makes a retried send (same client message id) append nothing new.
    deduplication: SendDeduplication,
    /// Conversations known to exist, so most checks read no store.
    known_conversations: KnownConversations,
    /// Requests refused before anything was appended, until reported on the log.
    refusals: Arc<Refusals>,
}

impl ChatCore {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn ProjectionStore>,
        fanout: Arc<dyn FanOut>,
        rate_limiter: Arc<dyn RateLimiter>,
        limits: ChatLimits,
    ) -> Self {
        Self {
            log,
            store,
            fanout,
            rate_limiter,
            limits,
            deduplication: SendDeduplication::in_one_process(),
            known_conversations: KnownConversations::default(),
            refusals: Arc::default(),
        }
    }

    /// Shares client message ids with other gateways, so a retry that
    /// reaches another gateway mid-send gets the same answer.
    pub fn with_send_reservations(mut self, reservations: Arc<dyn SendReservations>) -> Self {
        self.deduplication = self.deduplication.shared_with(reservations);
        self
    }

    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    pub fn store(&self) -> &Arc<dyn ProjectionStore> {
        &self.store
    }

    pub fn fanout(&self) -> &Arc<dyn FanOut> {
        &self.fanout
    }

    /// The refusals this core counted; `Refusals::report_until` puts them
    /// on the log.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// The conversation must exist for this tenant; another tenant's id is
    /// "not found" too, so ids cannot be probed across tenants.
    async fn require_conversation(
        &self,
        who: &Principal,
        conversation_id: &str,
    ) -> Result<(), ChatError> {
        if conversation_id.is_empty() {
            return Err(ChatError::InvalidRequest(
                "conversation_id is required".into(),
            ));
        }
        check_len("conversation_id", conversation_id)?;
        let tenant_id = &who.tenant.id;
        if self
            .known_conversations
            .contains(tenant_id, conversation_id)
        {
            return Ok(());
        }
        match self
            .store
            .get_conversation(tenant_id, conversation_id)
            .await?
        {
            Some(_) => {
                self.known_conversations
                    .remember(tenant_id, conversation_id);
                Ok(())
            }
            None => Err(ChatError::ConversationNotFound(conversation_id.to_owned())),
        }
    }
}

/// An event caused by a client: a fresh id, which also starts the turn's
/// correlation.
fn client_event(
    who: &Principal,
    conversation_id: &str,
    payload: Payload,
) -> chatstream_schemas::Event {
    let id = new_event_id();
    new_event(
        id.clone(),
        EventContext {
            tenant_id: &who.tenant.id,
            conversation_id,
            causation_id: "",
            correlation_id: &id,
        },
        payload,
    )
}

fn check_len(field: &str, value: &str) -> Result<(), ChatError> {
    if value.len() > MAX_ID_BYTES {
        return Err(ChatError::InvalidRequest(format!(
            "{field} is longer than {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
