//! Event types and constructors: one place that fills the envelope, so every
//! producer sets type, version, time and causation the same way.
use std::time::SystemTime;

use crate::pb::events::{Event, event::Payload};

/// Version of the envelope and payload meanings in this build.
pub const SCHEMA_VERSION: u32 = 1;

pub const CONVERSATION_OPENED: &str = "chatstream.conversation.opened.v1";
pub const USER_MESSAGE_SENT: &str = "chatstream.user_message.sent.v1";
pub const ASSISTANT_MESSAGE: &str = "chatstream.assistant_message.v1";
pub const ERROR_OCCURRED: &str = "chatstream.error.v1";
pub const TOOL_CALL_REQUESTED: &str = "chatstream.tool_call.requested.v1";
pub const TOOL_CALL_COMPLETED: &str = "chatstream.tool_call.completed.v1";
pub const TOOL_CALL_APPROVAL_REQUESTED: &str = "chatstream.tool_call.approval_requested.v1";
pub const TOOL_CALL_APPROVAL_DECIDED: &str = "chatstream.tool_call.approval_decided.v1";
pub const MODEL_ROUTING_DECIDED: &str = "chatstream.model.routing_decided.v1";
pub const MODEL_ATTEMPT_FAILED: &str = "chatstream.model.attempt_failed.v1";
pub const MODEL_USAGE_RECORDED: &str = "chatstream.model.usage_recorded.v1";
pub const REQUESTS_REFUSED: &str = "chatstream.requests.refused.v1";

/// The `type` string of a payload (also the CloudEvents `ce_type`).
pub fn type_of(payload: &Payload) -> &'static str {
    match payload {
        Payload::ConversationOpened(_) => CONVERSATION_OPENED,
        Payload::UserMessageSent(_) => USER_MESSAGE_SENT,
        Payload::AssistantMessage(_) => ASSISTANT_MESSAGE,
        Payload::ErrorOccurred(_) => ERROR_OCCURRED,
        Payload::ToolCallRequested(_) => TOOL_CALL_REQUESTED,
        Payload::ToolCallCompleted(_) => TOOL_CALL_COMPLETED,
        Payload::ToolCallApprovalRequested(_) => TOOL_CALL_APPROVAL_REQUESTED,
        Payload::ToolCallApprovalDecided(_) => TOOL_CALL_APPROVAL_DECIDED,
        Payload::ModelRoutingDecided(_) => MODEL_ROUTING_DECIDED,
        Payload::ModelAttemptFailed(_) => MODEL_ATTEMPT_FAILED,
        Payload::ModelUsageRecorded(_) => MODEL_USAGE_RECORDED,
        Payload::RequestsRefused(_) => REQUESTS_REFUSED,
    }
}

/// Whether `payload` is a fact about its tenant as a whole (its event's
/// `conversation_id` is empty) rather than about one conversation.
pub fn is_tenant_fact(payload: &Payload) -> bool {
    matches!(payload, Payload::RequestsRefused(_))
}

/// Where an event sits in its conversation and what caused it.
#[derive(Debug, Clone)]
pub struct EventContext<'a> {
    pub tenant_id: &'a str,
    pub conversation_id: &'a str,
    pub causation_id: &'a str,
    pub correlation_id: &'a str,
}

/// Builds a complete envelope around `payload`, stamped with the current time.
pub fn new_event(id: String, context: EventContext<'_>, payload: Payload) -> Event {
    Event {
        id,
        tenant_id: context.tenant_id.to_owned(),
        conversation_id: context.conversation_id.to_owned(),
        r#type: type_of(&payload).to_owned(),
        occurred_at: Some(prost_types::Timestamp::from(SystemTime::now())),
        causation_id: context.causation_id.to_owned(),
        correlation_id: context.correlation_id.to_owned(),
        schema_version: SCHEMA_VERSION,
        // Stamped by the log when it appends the event inside a traced span.
        traceparent: String::new(),
        payload: Some(payload),
    }
}

/// The `index`-th event a processor derives from `cause`: its id derives
/// from the cause's (a redelivery derives the same one), it is caused by
/// `cause` and carries on the cause's correlation (or starts it from the
/// cause when the cause has none).
pub fn derived_event(cause: &Event, index: u32, payload: Payload) -> Event {
    let correlation_id = if cause.correlation_id.is_empty() {
        &cause.id
    } else {
        &cause.correlation_id
    };
    new_event(
        crate::ids::derived_event_id(&cause.id, index),
        EventContext {
            tenant_id: &cause.tenant_id,
            conversation_id: &cause.conversation_id,
            causation_id: &cause.id,
            correlation_id,
        },
        payload,
    )
}
