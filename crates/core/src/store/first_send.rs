//! Which copy of a retried send counts: a client retrying after a lost ack
//! can leave two copies of one send on the log, and every processor keeps
//! the same one. A log that claims client message ids (`log::claims`) knows
//! which copy claimed the id; otherwise processors claim it in the store,
//! first wins.
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;

use super::{ClientMessageRecord, ProjectionStore, StoreError};
use crate::log::{EventLog, LogError, LogPosition};

#[derive(Debug, thiserror::Error)]
pub enum FirstSendError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `event` is the send that won its client message id. Asking a
/// log that claimed the id is a read; claiming it in the store is a
/// durable write, needed only for sends the log did not claim (Kafka, or
/// events appended without a claim).
pub async fn is_first_send(
    log: &dyn EventLog,
    store: &dyn ProjectionStore,
    event: &Event,
    position: LogPosition,
) -> Result<bool, FirstSendError> {
    let Some(Payload::UserMessageSent(sent)) = &event.payload else {
        return Ok(true);
    };
    if sent.client_message_id.is_empty() {
        return Ok(true);
    }
    if let Some(claims) = log.claiming()
        && let Some(claim) = claims
            .claimed(&event.tenant_id, &sent.client_message_id)
            .await?
    {
        return Ok(claim.event_id == event.id);
    }
    let winner = store
        .claim_client_message(&ClientMessageRecord {
            tenant_id: event.tenant_id.clone(),
            client_message_id: sent.client_message_id.clone(),
            conversation_id: event.conversation_id.clone(),
            event_id: event.id.clone(),
            position,
        })
        .await?;
    Ok(winner.event_id == event.id)
}
