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
