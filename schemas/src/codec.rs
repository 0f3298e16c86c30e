//! The log's value encoding: protobuf `Event`, checked on the way in and out
//! so a processor never sees an envelope without the fields it relies on.
use prost::Message;

use crate::pb::events::Event;

/// Content type of a log record's value (the Kafka `content-type` header).
pub const CONTENT_TYPE: &str = "application/protobuf; proto=chatstream.events.v1.Event";

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("event is not valid protobuf: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("event is missing {0}")]
    MissingField(&'static str),
}

pub fn encode(event: &Event) -> Vec<u8> {
    event.encode_to_vec()
}

/// Decodes and validates an event read from the log.
pub fn decode(bytes: &[u8]) -> Result<Event, CodecError> {
    let event = Event::decode(bytes)?;
    validate(&event)?;
    Ok(event)
}

/// Checks the envelope fields every consumer relies on.
pub fn validate(event: &Event) -> Result<(), CodecError> {
    if event.id.is_empty() {
        return Err(CodecError::MissingField("id"));
    }
    if event.tenant_id.is_empty() {
        return Err(CodecError::MissingField("tenant_id"));
    }
    let Some(payload) = &event.payload else {
        return Err(CodecError::MissingField("payload"));
    };
    // Facts about a whole tenant belong to no conversation.
    if event.conversation_id.is_empty() && !crate::event::is_tenant_fact(payload) {
        return Err(CodecError::MissingField("conversation_id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventContext, new_event};
    use crate::pb::events::{ConversationOpened, RequestsRefused, UserMessageSent, event::Payload};

    #[test]
    fn round_trips_and_rejects_garbage() {
        let event = new_event(
            crate::ids::new_event_id(),
            EventContext {
                tenant_id: "t",
                conversation_id: "c",
                causation_id: "",
                correlation_id: "",
            },
            Payload::UserMessageSent(Box::new(UserMessageSent {
                text: "hi".into(),
                ..Default::default()
            })),
        );
        assert_eq!(decode(&encode(&event)).unwrap(), event);
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff]),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(decode(&[]), Err(CodecError::MissingField("id"))));
    }

    #[test]
    fn only_tenant_facts_may_leave_the_conversation_out() {
        let event = |payload: Payload| {
            new_event(
                "e1".into(),
                EventContext {
                    tenant_id: "acme",
                    conversation_id: "",
                    causation_id: "",
                    correlation_id: "",
                },
                payload,
            )
        };
        let refused = event(Payload::RequestsRefused(RequestsRefused {
            reason: "rate_limited".into(),
            count: 1,
            ..RequestsRefused::default()
        }));
        assert_eq!(decode(&encode(&refused)).unwrap(), refused);
        let opened = event(Payload::ConversationOpened(ConversationOpened::default()));
        assert!(matches!(
            decode(&encode(&opened)),
            Err(CodecError::MissingField("conversation_id"))
        ));
    }
}
