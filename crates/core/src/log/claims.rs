//! Logs that deduplicate sends themselves: a send's client message id is
//! claimed in the same durable commit as the send's events, so an acked
//! send and its claim never exist apart (no second write, no window
//! between them) and a retry is recognised after a crash too. The embedded
//! log does this. Kafka cannot (a produce cannot be made conditional), so
//! there the gateway reserves ids across gateways and claims them in the
//! projection store instead.
use async_trait::async_trait;
use chatstream_schemas::Event;

use super::{LogError, LogPosition};
use crate::store::ClientMessageRecord;

/// The client message id a send claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendClaim {
    pub tenant_id: String,
    pub client_message_id: String,
}

/// What `append_claiming` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimedAppend {
    /// The events were appended, at these positions (in order); the claim
    /// now names the last of them.
    Appended(Vec<LogPosition>),
    /// An earlier append holds the claim; nothing was appended.
    Earlier(ClientMessageRecord),
}

#[async_trait]
pub trait ClaimingLog: Send + Sync {
    /// Appends `events` under `key`, in order and in one durable commit,
    /// unless an earlier append claimed `claim`; the claim then records the
    /// last event (its conversation, id and position). Copies racing each
    /// other are decided by the log: exactly one appends.
    async fn append_claiming(
        &self,
        key: &str,
        claim: &SendClaim,
        events: &[Event],
    ) -> Result<ClaimedAppend, LogError>;

    /// The append that claimed `client_message_id` of `tenant_id`, if any.
    async fn claimed(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Option<ClientMessageRecord>, LogError>;
}
