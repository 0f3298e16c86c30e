//! Which copy of a retried send counts: a client retrying after a lost ack
//! can leave two copies of one send on the log, and every processor keeps
//! the same one by claiming its client message id in the store, first wins.
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;

use super::{ClientMessageRecord, ProjectionStore, StoreError};
use crate::log::LogPosition;

/// Whether `event` is the send that won its client message id. A client
/// retrying after a lost ack can leave two copies on the log; every
/// processor keeps the same one by claiming the id first-wins.
pub async fn is_first_send(
    store: &dyn ProjectionStore,
    event: &Event,
    position: LogPosition,
) -> Result<bool, StoreError> {
    let Some(Payload::UserMessageSent(sent)) = &event.payload else {
        return Ok(true);
    };
    if sent.client_message_id.is_empty() {
        return Ok(true);
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
