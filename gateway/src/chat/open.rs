//! `open`: a new conversation, appended to the log and recorded in the
//! store before the reply, so a send right after the reply finds it on any
//! gateway (the projector would record it too, but maybe not that soon).
use std::sync::Arc;

use chatstream_config::tenants::Principal;
use chatstream_core::store::{ConversationRecord, ProjectionStore};
use chatstream_schemas::Event;
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
        let opened = self.open_checked(who, title).await;
        if let Err(error) = &opened {
            error.count_refusal();
        }
        opened
    }

    async fn open_checked(&self, who: &Principal, title: &str) -> Result<(String, u64), ChatError> {
        check_len("title", title)?;
        self.admit_request(who).await?;
        let (conversation_id, opening) = opening(who, title);
        let position = self.log.append(&who.tenant.id, &opening).await?;
        self.record_opened(who, &conversation_id, title).await;
        Ok((conversation_id, position.offset))
    }

    /// Records a conversation whose opening is durable on the log: in the
    /// store, for every gateway, and as known here.
    pub(super) async fn record_opened(&self, who: &Principal, conversation_id: &str, title: &str) {
        self.known_conversations
            .remember(&who.tenant.id, conversation_id);
        put_conversation(
            self.store.as_ref(),
            opened_record(who, conversation_id, title),
        )
        .await;
    }

    /// `record_opened` for a conversation a send opened, without waiting
    /// for the store: the ack and the reply's first token need no second
    /// durable write. This gateway knows the conversation at once; the
    /// store has it one commit later (and the projector records it from the
    /// log in any case), before a client could take its id to another
    /// gateway.
    pub(super) fn record_opened_by_send(&self, who: &Principal, conversation_id: &str) {
        self.known_conversations
            .remember(&who.tenant.id, conversation_id);
        let store = Arc::clone(&self.store);
        let record = opened_record(who, conversation_id, "");
        tokio::spawn(async move { put_conversation(store.as_ref(), record).await });
    }
}

fn opened_record(who: &Principal, conversation_id: &str, title: &str) -> ConversationRecord {
    ConversationRecord {
        tenant_id: who.tenant.id.clone(),
        conversation_id: conversation_id.to_owned(),
        title: title.to_owned(),
        created_at_ms: now_ms(),
        opened_by_key_id: who.key_id.clone(),
    }
}

async fn put_conversation(store: &dyn ProjectionStore, record: ConversationRecord) {
    if let Err(error) = store.put_conversation(&record).await {
        // Durable on the log already; the projector records it shortly.
        tracing::warn!(%error, conversation_id = %record.conversation_id, "could not record the conversation; the projector will");
    }
}

/// A new conversation's id and the event that opens it.
pub(super) fn opening(who: &Principal, title: &str) -> (String, Event) {
    let conversation_id = new_event_id();
    let event = client_event(
        who,
        &conversation_id,
        Payload::ConversationOpened(ConversationOpened {
            title: title.to_owned(),
            opened_by_key_id: who.key_id.clone(),
        }),
    );
    (conversation_id, event)
}

#[cfg(test)]
mod tests {
    use chatstream_core::store::ProjectionStore;
    use chatstream_schemas::pb::events::event::Payload;

    use crate::chat::testing::{Backends, principal};
    use crate::error::ChatError;

    #[tokio::test]
    async fn an_opened_conversation_is_on_the_log_and_in_the_store_before_the_reply() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");

        let (conversation_id, position) = core.open_conversation(&acme, "Trip").await.unwrap();

        let events = backends.events().await;
        assert_eq!(events.len(), 1);
        assert_eq!(position, 0);
        assert_eq!(events[0].conversation_id, conversation_id);
        assert_eq!(events[0].tenant_id, "acme");
        match &events[0].payload {
            Some(Payload::ConversationOpened(opened)) => {
                assert_eq!(opened.title, "Trip");
                assert_eq!(opened.opened_by_key_id, "acme-key");
            }
            other => panic!("expected ConversationOpened, got {other:?}"),
        }
        let record = backends
            .store
            .get_conversation("acme", &conversation_id)
            .await
            .unwrap()
            .expect("recorded before the reply");
        assert_eq!(record.title, "Trip");
    }

    #[tokio::test]
    async fn an_over_long_title_is_refused_and_nothing_is_appended() {
        let backends = Backends::new();
        let core = backends.core();
        let title = "t".repeat(crate::chat::MAX_ID_BYTES + 1);

        let error = core
            .open_conversation(&principal("acme"), &title)
            .await
            .unwrap_err();

        assert_eq!(error.code(), "invalid_request");
        assert!(matches!(error, ChatError::InvalidRequest(m) if m.starts_with("title")));
        assert!(backends.events().await.is_empty());
    }

    #[tokio::test]
    async fn a_conversation_is_opened_for_the_opening_tenant_only() {
        let backends = Backends::new();
        let core = backends.core();
        let (conversation_id, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();

        let theirs = backends
            .store
            .get_conversation("globex", &conversation_id)
            .await
            .unwrap();
        assert_eq!(theirs, None);
        let listed = backends
            .store
            .list_conversations("globex", None, 10)
            .await
            .unwrap();
        assert!(listed.is_empty(), "{listed:?}");
    }
}
