//! The headers of an event record: CloudEvents 1.0 in Kafka binary mode
//! (the `ce_` attributes as headers, the protobuf event as the value), its
//! content type, and the W3C trace context. External consumers route and
//! trace by these headers without decoding the value.
use chatstream_schemas::{Event, codec};
use rdkafka::message::{Header, OwnedHeaders};

pub const CE_ID: &str = "ce_id";
pub const CE_TYPE: &str = "ce_type";
pub const CE_SOURCE: &str = "ce_source";
pub const CE_SPECVERSION: &str = "ce_specversion";
pub const CE_TIME: &str = "ce_time";
pub const CE_SUBJECT: &str = "ce_subject";
pub const CONTENT_TYPE: &str = "content-type";
pub const TRACEPARENT: &str = "traceparent";

/// `ce_source` of every event chatstream produces.
pub const SOURCE: &str = "chatstream";
/// The CloudEvents version the headers follow.
pub const SPEC_VERSION: &str = "1.0";

/// The headers of `event`'s record, in the order they are written.
/// `ce_time` (RFC 3339) is left out when the event has no occurrence time,
/// as CloudEvents allows; `traceparent` when the event carries no trace
/// context (tracing is off).
pub fn event_headers(event: &Event) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        (CE_ID, event.id.clone()),
        (CE_TYPE, event.r#type.clone()),
        (CE_SOURCE, SOURCE.to_owned()),
        (CE_SPECVERSION, SPEC_VERSION.to_owned()),
    ];
    if let Some(occurred_at) = &event.occurred_at {
        // prost's `Timestamp` displays as RFC 3339 in UTC.
        headers.push((CE_TIME, occurred_at.to_string()));
    }
    headers.push((CE_SUBJECT, event.conversation_id.clone()));
    headers.push((CONTENT_TYPE, codec::CONTENT_TYPE.to_owned()));
    // The event carries the context of the span that appended it (see
    // `chatstream_core::log::traced`); the header repeats it for consumers
    // that trace without decoding the value.
    if !event.traceparent.is_empty() {
        headers.push((TRACEPARENT, event.traceparent.clone()));
    }
    headers
}

/// librdkafka's form of `headers`.
pub(super) fn to_kafka_headers(headers: &[(&str, String)]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |kafka_headers, (key, value)| {
            kafka_headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use chatstream_schemas::event::{EventContext, USER_MESSAGE_SENT, new_event};
    use chatstream_schemas::pb::events::event::Payload;
    use rdkafka::message::Headers;

    use super::*;

    fn event() -> Event {
        let mut event = new_event(
            "0192-event".into(),
            EventContext {
                tenant_id: "acme",
                conversation_id: "conversation-7",
                causation_id: "",
                correlation_id: "",
            },
            Payload::UserMessageSent(Box::default()),
        );
        if let Some(occurred_at) = event.occurred_at.as_mut() {
            occurred_at.seconds = 1_700_000_000;
            occurred_at.nanos = 123_000_000;
        }
        event
    }

    #[test]
    fn carries_the_cloudevents_attributes_and_content_type() {
        let headers = event_headers(&event());
        let expected = [
            (CE_ID, "0192-event"),
            (CE_TYPE, USER_MESSAGE_SENT),
            (CE_SOURCE, "chatstream"),
            (CE_SPECVERSION, "1.0"),
            (CE_TIME, "2023-11-14T22:13:20.123Z"),
            (CE_SUBJECT, "conversation-7"),
            (CONTENT_TYPE, codec::CONTENT_TYPE),
        ];
        let got: Vec<(&str, &str)> = headers
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_traceparent_survives_the_codec_and_the_headers() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut event = event();
        assert!(
            event_headers(&event)
                .iter()
                .all(|(key, _)| *key != TRACEPARENT),
            "no trace context, no header"
        );
        event.traceparent = traceparent.to_owned();
        let decoded = codec::decode(&codec::encode(&event)).expect("decodes");
        assert_eq!(decoded.traceparent, traceparent);
        let kafka = to_kafka_headers(&event_headers(&decoded));
        let header = (0..kafka.count())
            .map(|index| kafka.get(index))
            .find(|header| header.key == TRACEPARENT)
            .expect("a traceparent header");
        assert_eq!(header.value, Some(traceparent.as_bytes()));
        // The header names the same span the event does.
        let parsed = chatstream_core::trace::parse_traceparent(
            std::str::from_utf8(header.value.unwrap()).unwrap(),
        )
        .expect("a valid traceparent");
        assert_eq!(
            chatstream_core::trace::format_traceparent(&parsed),
            traceparent
        );
    }

    #[test]
    fn leaves_out_an_unknown_time() {
        let mut event = event();
        event.occurred_at = None;
        assert!(event_headers(&event).iter().all(|(key, _)| *key != CE_TIME));
    }

    #[test]
    fn converts_to_kafka_headers_in_order() {
        let headers = event_headers(&event());
        let kafka = to_kafka_headers(&headers);
        assert_eq!(kafka.count(), headers.len());
        for (index, (key, value)) in headers.iter().enumerate() {
            let header = kafka.get(index);
            assert_eq!(header.key, *key);
            assert_eq!(header.value, Some(value.as_bytes()));
        }
    }
}
