//! `decide_tool_call`: a person's approval or refusal of a tool call,
//! appended to the conversation for the mcp processor to act on.
use chatstream_config::tenants::Principal;
use chatstream_schemas::pb::events::{ToolCallApprovalDecided, event::Payload};

use super::{ChatCore, check_len, client_event};
use crate::command::{MessageAck, ToolCallDecision};
use crate::error::ChatError;

/// Longest reason a person may give for a tool-call decision.
const MAX_DECISION_REASON_BYTES: usize = 1024;

impl ChatCore {
    /// Records a person's decision on a tool call of one of the tenant's
    /// conversations; the mcp processor acts on it if the call still waits
    /// (and only for this tenant's calls).
    pub async fn decide_tool_call(
        &self,
        who: &Principal,
        decision: ToolCallDecision,
    ) -> Result<MessageAck, ChatError> {
        check_len("tool_call_event_id", &decision.tool_call_event_id)?;
        if decision.tool_call_event_id.is_empty() {
            return Err(ChatError::InvalidRequest(
                "tool_call_event_id is required".into(),
            ));
        }
        if decision.reason.len() > MAX_DECISION_REASON_BYTES {
            return Err(ChatError::InvalidRequest(format!(
                "reason is longer than {MAX_DECISION_REASON_BYTES} bytes"
            )));
        }
        self.admit_request(who).await?;
        self.require_conversation(who, &decision.conversation_id)
            .await?;
        let event = client_event(
            who,
            &decision.conversation_id,
            Payload::ToolCallApprovalDecided(Box::new(ToolCallApprovalDecided {
                call_id: String::new(),
                request_event_id: decision.tool_call_event_id,
                approved: decision.approved,
                reason: decision.reason,
                decided_by_key_id: who.key_id.clone(),
            })),
        );
        let position = self.log.append(&who.tenant.id, &event).await?;
        Ok(MessageAck {
            request_id: decision.request_id,
            conversation_id: decision.conversation_id,
            event_id: event.id,
            position: position.offset,
            duplicate: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use chatstream_schemas::pb::events::event::Payload;

    use super::MAX_DECISION_REASON_BYTES;
    use crate::chat::testing::{Backends, principal};
    use crate::command::ToolCallDecision;
    use crate::error::ChatError;

    fn decision(conversation_id: &str, tool_call_event_id: &str, reason: &str) -> ToolCallDecision {
        ToolCallDecision {
            request_id: Some("r-1".into()),
            conversation_id: conversation_id.to_owned(),
            tool_call_event_id: tool_call_event_id.to_owned(),
            approved: true,
            reason: reason.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_decision_is_appended_to_the_conversation_and_acked() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();

        let ack = core
            .decide_tool_call(&acme, decision(&conversation_id, "call-event", "fine"))
            .await
            .unwrap();

        assert_eq!(ack.request_id.as_deref(), Some("r-1"));
        assert!(!ack.duplicate);
        let events = backends.events().await;
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].id, ack.event_id);
        assert_eq!(ack.position, 1);
        match &events[1].payload {
            Some(Payload::ToolCallApprovalDecided(decided)) => {
                assert_eq!(decided.request_event_id, "call-event");
                assert!(decided.approved);
                assert_eq!(decided.reason, "fine");
                assert_eq!(decided.decided_by_key_id, "acme-key");
            }
            other => panic!("expected ToolCallApprovalDecided, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn malformed_decisions_are_refused_before_anything_is_appended() {
        let backends = Backends::new();
        let core = backends.core();
        let acme = principal("acme");
        let (conversation_id, _) = core.open_conversation(&acme, "").await.unwrap();
        let long_reason = "r".repeat(MAX_DECISION_REASON_BYTES + 1);
        let long_id = "c".repeat(crate::chat::MAX_ID_BYTES + 1);

        for refused in [
            decision(&conversation_id, "", ""),
            decision(&conversation_id, &long_id, ""),
            decision(&conversation_id, "call-event", &long_reason),
            decision("", "call-event", ""),
        ] {
            let error = core
                .decide_tool_call(&acme, refused.clone())
                .await
                .unwrap_err();
            assert_eq!(error.code(), "invalid_request", "{refused:?}");
        }
        assert_eq!(backends.events().await.len(), 1);
    }

    #[tokio::test]
    async fn a_tenant_cannot_decide_on_another_tenants_conversation() {
        let backends = Backends::new();
        let core = backends.core();
        let (theirs, _) = core
            .open_conversation(&principal("acme"), "")
            .await
            .unwrap();

        let error = core
            .decide_tool_call(&principal("globex"), decision(&theirs, "call-event", ""))
            .await
            .unwrap_err();

        assert_eq!(error, ChatError::ConversationNotFound(theirs));
        assert_eq!(backends.events().await.len(), 1);
    }
}
