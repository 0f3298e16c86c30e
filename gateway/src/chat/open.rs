//! `open`: a new conversation, appended to the log and recorded in the
//! store before the reply, so a send right after the reply finds it (the
//! projector would record it too, but maybe not that soon).
use chatstream_config::tenants::Principal;
use chatstream_core::store::ConversationRecord;
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{ConversationOpened, event::Payload};

use super::{ChatCore, check_len, client_event, now_ms};
use crate::error::ChatError;

impl ChatCore {
    /// Opens a conversation; returns its id and the log offset of its
    /// `ConversationOpened` event.
    pub async fn open_conversation(
        &self,
        who: &Principal,
        title: &str,
    ) -> Result<(String, u64), ChatError> {
        check_len("title", title)?;
        self.admit_request(who).await?;
        self.append_conversation_opened(who, title).await
    }

    /// The work of `open_conversation`, without counting a request (a send
    /// that opens its conversation is one request).
    pub(super) async fn append_conversation_opened(
        &self,
        who: &Principal,
        title: &str,
    ) -> Result<(String, u64), ChatError> {
        let conversation_id = new_event_id();
        let event = client_event(
            who,
            &conversation_id,
            Payload::ConversationOpened(ConversationOpened {
                title: title.to_owned(),
                opened_by_key_id: who.key_id.clone(),
            }),
        );
        let position = self.log.append(&who.tenant.id, &event).await?;
        let record = ConversationRecord {
            tenant_id: who.tenant.id.clone(),
            conversation_id: conversation_id.clone(),
            title: title.to_owned(),
            created_at_ms: now_ms(),
            opened_by_key_id: who.key_id.clone(),
        };
        if let Err(error) = self.store.put_conversation(&record).await {
            // Durable on the log already; the projector records it shortly.
            tracing::warn!(%error, %conversation_id, "could not record the conversation; the projector will");
        }
        Ok((conversation_id, position.offset))
    }
}
