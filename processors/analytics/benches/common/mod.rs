//! What both analytics benches feed the processor: one turn of four events
//! (user message, routing decision, usage, answer).
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, derived_event, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::{
    AssistantMessage, ModelRoutingDecided, ModelUsageRecorded, TokenUsage, UserMessageSent,
    event::Payload,
};

/// A turn of `conversation` answered by `model`. No client message id: the
/// benches measure analytics, not the store's claim of retried sends.
pub fn turn(tenant: &str, conversation: &str, model: &str) -> Vec<Event> {
    let sent = new_event(
        new_event_id(),
        EventContext {
            tenant_id: tenant,
            conversation_id: conversation,
            causation_id: "",
            correlation_id: "",
        },
        Payload::UserMessageSent(Box::new(UserMessageSent {
            text: "a question".into(),
            ..UserMessageSent::default()
        })),
    );
    let usage = TokenUsage {
        prompt_tokens: 120,
        completion_tokens: 40,
        total_tokens: 160,
    };
    let routing = derived_event(
        &sent,
        101,
        Payload::ModelRoutingDecided(Box::new(ModelRoutingDecided {
            attempt: 1,
            model: model.into(),
            provider: "openai".into(),
            reason: "primary".into(),
            ..ModelRoutingDecided::default()
        })),
    );
    let recorded = derived_event(
        &sent,
        100,
        Payload::ModelUsageRecorded(Box::new(ModelUsageRecorded {
            model: model.into(),
            provider: "openai".into(),
            usage: Some(usage),
            cost_micros: 90,
            attempts: 1,
            time_to_first_token_ms: 180,
            ..ModelUsageRecorded::default()
        })),
    );
    let answer = derived_event(
        &sent,
        0,
        Payload::AssistantMessage(AssistantMessage {
            text: "an answer".into(),
            model: model.into(),
            usage: Some(usage),
            finish_reason: "stop".into(),
        }),
    );
    vec![sent, routing, recorded, answer]
}
