//! Idempotent sends: a client message id is appended once, and every send
//! with it (a retry, or a copy racing the original) is acked with the same
//! event. Per-id locks cover one gateway, the projection store remembers
//! outcomes for good, and shared reservations cover several gateways.
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstream_config::tenants::Principal;
use chatstream_core::log::LogPosition;
use chatstream_core::sends::{Reservation, SendReservations};
use chatstream_core::store::ClientMessageRecord;
use tokio::sync::Mutex;

use super::ChatCore;
use super::send::{Appended, Watcher};
use crate::command::{MessageAck, SendMessage};
use crate::error::ChatError;

/// How long a send waits for another gateway's send with the same client
/// message id to finish before it gives up (retryably).
const RESERVATION_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting send looks at another gateway's reservation again.
const RESERVATION_POLL: Duration = Duration::from_millis(10);
/// Stripes of the per-id locks.
const SEND_LOCKS: usize = 64;

/// What keeps sends with one client message id from being appended twice.
pub(super) struct SendDeduplication {
    /// Striped locks so concurrent sends with one client message id
    /// (a retry racing its original) are appended once.
    locks: Vec<Mutex<()>>,
    /// Client message ids reserved across gateways; `None` in one process,
    /// where `locks` suffice.
    reservations: Option<Arc<dyn SendReservations>>,
}

impl SendDeduplication {
    pub(super) fn in_one_process() -> Self {
        Self {
            locks: (0..SEND_LOCKS).map(|_| Mutex::new(())).collect(),
            reservations: None,
        }
    }

    pub(super) fn shared_with(mut self, reservations: Arc<dyn SendReservations>) -> Self {
        self.reservations = Some(reservations);
        self
    }

    fn lock_of(&self, tenant_id: &str, client_message_id: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        (tenant_id, client_message_id).hash(&mut hasher);
        &self.locks[(hasher.finish() % self.locks.len() as u64) as usize]
    }
}

impl ChatCore {
    /// Appends `message` unless a send with its client message id was
    /// appended before (here, in the store, or on another gateway), in
    /// which case that send's ack comes back marked `duplicate`.
    pub(super) async fn append_once(
        &self,
        who: &Principal,
        client_message_id: String,
        message: SendMessage,
        watcher: Option<Watcher>,
    ) -> Result<MessageAck, ChatError> {
        let _guard = self
            .deduplication
            .lock_of(&who.tenant.id, &client_message_id)
            .lock()
            .await;
        if let Some(earlier) = self
            .store
            .get_client_message(&who.tenant.id, &client_message_id)
            .await?
        {
            return ack_for_retry(message, earlier);
        }
        if let Some(earlier) = self.reserve(who, &client_message_id).await? {
            return ack_for_retry(message, earlier);
        }
        let acked = match self.append_user_message(who, &message, watcher).await {
            Ok(appended) => self.claim(who, &client_message_id, message, appended).await,
            Err(error) => Err(error),
        };
        self.settle(who, &client_message_id, &acked).await;
        acked
    }

    /// Reserves a client message id across gateways. `Some` is the outcome
    /// of an earlier send with it (waiting while one is in progress).
    async fn reserve(
        &self,
        who: &Principal,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, ChatError> {
        let Some(reservations) = &self.deduplication.reservations else {
            return Ok(None);
        };
        let deadline = Instant::now() + RESERVATION_WAIT;
        let mut found = reservations
            .reserve(&who.tenant.id, client_message_id)
            .await;
        loop {
            match found {
                Ok(Reservation::Reserved) => return Ok(None),
                Ok(Reservation::Completed(earlier)) => return Ok(Some(earlier)),
                Ok(Reservation::InProgress) if Instant::now() < deadline => {
                    tokio::time::sleep(RESERVATION_POLL).await;
                    found = match reservations.lookup(&who.tenant.id, client_message_id).await {
                        // Released by a failed send (or expired): take it.
                        Ok(Reservation::Reserved) => {
                            reservations
                                .reserve(&who.tenant.id, client_message_id)
                                .await
                        }
                        other => other,
                    };
                }
                Ok(Reservation::InProgress) => {
                    return Err(ChatError::Unavailable(
                        "an earlier send with this client_message_id".into(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "send reservations unavailable");
                    return Err(ChatError::Unavailable("send reservations".into()));
                }
            }
        }
    }

    /// Records the outcome of an appended send under its client message id;
    /// when an earlier send with the id won, answers with that one.
    async fn claim(
        &self,
        who: &Principal,
        client_message_id: &str,
        message: SendMessage,
        appended: Appended,
    ) -> Result<MessageAck, ChatError> {
        let record = ClientMessageRecord {
            tenant_id: who.tenant.id.clone(),
            client_message_id: client_message_id.to_owned(),
            conversation_id: appended.ack.conversation_id.clone(),
            event_id: appended.ack.event_id.clone(),
            position: appended.position,
        };
        // The message is durable whatever happens here; the projector
        // claims the id too, so a failure only widens the retry window.
        match self.store.claim_client_message(&record).await {
            Ok(winner) if winner.event_id != record.event_id => ack_for_retry(message, winner),
            Ok(_) => Ok(appended.ack),
            Err(error) => {
                tracing::warn!(%error, "could not record client message id; the projector will");
                Ok(appended.ack)
            }
        }
    }

    /// Tells other gateways how a reserved send ended: its outcome, or that
    /// it failed and a retry may go ahead.
    async fn settle(
        &self,
        who: &Principal,
        client_message_id: &str,
        acked: &Result<MessageAck, ChatError>,
    ) {
        let Some(reservations) = &self.deduplication.reservations else {
            return;
        };
        let settled = match acked {
            Ok(ack) => {
                let record = ClientMessageRecord {
                    tenant_id: who.tenant.id.clone(),
                    client_message_id: client_message_id.to_owned(),
                    conversation_id: ack.conversation_id.clone(),
                    event_id: ack.event_id.clone(),
                    position: LogPosition {
                        partition: self.log.partition_for(&who.tenant.id),
                        offset: ack.position,
                    },
                };
                reservations.complete(&record).await
            }
            Err(_) => {
                reservations
                    .release(&who.tenant.id, client_message_id)
                    .await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, "could not settle a send reservation; it expires by itself");
        }
    }
}

/// The ack for a send whose client message id an earlier send used; a
/// conflict when the earlier one went to another conversation.
fn ack_for_retry(
    message: SendMessage,
    earlier: ClientMessageRecord,
) -> Result<MessageAck, ChatError> {
    if let Some(conversation_id) = &message.conversation_id
        && *conversation_id != earlier.conversation_id
    {
        return Err(ChatError::ClientMessageConflict(earlier.client_message_id));
    }
    Ok(MessageAck {
        request_id: message.request_id,
        conversation_id: earlier.conversation_id,
        event_id: earlier.event_id,
        position: earlier.position.offset,
        duplicate: true,
    })
}
