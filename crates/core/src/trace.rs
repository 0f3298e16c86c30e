//! Trace context across the log: the W3C `traceparent` of the span that
//! appends an event travels in the event (and as a Kafka header), and the
//! runner makes each record's handling span its child, so one trace follows
//! a user message from the edge through every processor.
//!
//! Tracing is off until the binary installs an exporter and calls `enable`;
//! while it is off, nothing here allocates or parses.
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (HTTP, gRPC metadata, Kafka) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How traces name the log: `messaging.system` (`kafka`, or
/// `chatstream_embedded` for the embedded log) and
/// `messaging.destination.name` (the topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Messaging {
    pub system: &'static str,
    pub destination: String,
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns trace context handling on (the binary does, once an OpenTelemetry
/// layer is installed).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are exported: edges and the log open their spans only then.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `traceparent` of the current span, or `None` when tracing is off
/// or the span has no valid context (e.g. it was filtered out).
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&tracing::Span::current())
}

/// The `traceparent` of `span`.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| format_traceparent(span_context))
}

/// `00-<trace id>-<span id>-<flags>`, the W3C form.
pub fn format_traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The remote span context a `traceparent` names; `None` when it is
/// malformed or names the invalid (all-zero) trace or span. Versions after
/// `00` are read by their first four fields, as the W3C spec asks.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    let lowercase_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !lowercase_hex(version, 2)
        || version == "ff"
        || (version == "00" && parts.next().is_some())
        || !lowercase_hex(trace_id, 32)
        || !lowercase_hex(span_id, 16)
        || !lowercase_hex(flags, 2)
    {
        return None;
    }
    let context = SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(span_id).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?) & TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// Makes `span` a child of the remote span `traceparent` names (before the
/// span is first entered). A missing or malformed `traceparent` leaves
/// `span` a root: a trace starts there.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(parent) = traceparent.and_then(parse_traceparent) {
        let context = opentelemetry::Context::new().with_remote_span_context(parent);
        // Only fails for a span no layer records: then there is nothing to parent.
        let _ = span.set_parent(context);
    }
}

/// Sets an OpenTelemetry attribute on `span` without making it a `tracing`
/// field (so it stays out of log lines).
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    span.set_attribute(key, value);
}

/// The producer span of a publish to the fan-out (live delivery to the
/// gateways' clients), or a disabled one while tracing is off. `what` is
/// `committed` or `delta`.
pub fn fanout_publish_span(what: &'static str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "fanout",
        otel.name = "publish fanout",
        otel.kind = "producer",
    );
    set_attribute(&span, "messaging.system", "chatstream_fanout");
    set_attribute(&span, "messaging.operation.type", "send");
    set_attribute(&span, "messaging.operation.name", "publish");
    set_attribute(&span, "messaging.destination.name", "fanout");
    set_attribute(&span, "chatstream.fanout.message", what);
    span
}

/// Sets a string-array attribute (e.g. `gen_ai.response.finish_reasons`).
pub fn set_string_list(span: &tracing::Span, key: &'static str, values: &[&str]) {
    let values = values
        .iter()
        .map(|value| opentelemetry::StringValue::from(value.to_string()))
        .collect();
    span.set_attribute(
        key,
        opentelemetry::Value::Array(opentelemetry::Array::String(values)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_parses_and_formats_back_unchanged() {
        let context = parse_traceparent(SAMPLE).expect("valid");
        assert!(context.is_remote());
        assert!(context.is_sampled());
        assert_eq!(format_traceparent(&context), SAMPLE);
        let unsampled = SAMPLE.replace("-01", "-00");
        assert_eq!(
            format_traceparent(&parse_traceparent(&unsampled).expect("valid")),
            unsampled
        );
    }

    #[test]
    fn malformed_or_invalid_traceparents_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?} was accepted");
        }
        // A later version may append fields.
        let future = format!("01{}-more", &SAMPLE[2..]);
        assert!(parse_traceparent(&future).is_some());
    }

    #[test]
    fn no_context_while_tracing_is_off() {
        // `enable` is never called in this test binary.
        let span = tracing::info_span!("off");
        let _entered = span.enter();
        assert_eq!(current_traceparent(), None);
    }
}
