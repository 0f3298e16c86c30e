//! Short-lived reservations of client message ids, shared by every gateway:
//! the first gateway to see a send with a given id reserves it before
//! appending, so a retry that reaches another gateway at the same time
//! waits for the first one's result instead of appending a second copy,
//! and both clients are told the same event. The projection store keeps the
//! outcome for good; a reservation only needs to outlive the retry window.
use async_trait::async_trait;

use crate::store::ClientMessageRecord;

/// What `reserve` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The id is this caller's: append, then `complete` (or `release`).
    Reserved,
    /// Another send with this id is being appended right now.
    InProgress,
    /// A send with this id was appended: this is its outcome.
    Completed(ClientMessageRecord),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReservationError {
    #[error("send reservations unavailable: {0}")]
    Unavailable(String),
    #[error("send reservation is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait SendReservations: Send + Sync + 'static {
    /// Reserves `client_message_id` of `tenant_id` unless a send holds or
    /// held it within the reservation's lifetime.
    async fn reserve(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Reservation, ReservationError>;

    /// What a reservation holds now (`Reserved` when it is free).
    async fn lookup(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Reservation, ReservationError>;

    /// Records the outcome of a reserved send, for retries to find.
    async fn complete(&self, record: &ClientMessageRecord) -> Result<(), ReservationError>;

    /// Gives up a reservation whose send failed, so a retry may go ahead.
    async fn release(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<(), ReservationError>;
}
