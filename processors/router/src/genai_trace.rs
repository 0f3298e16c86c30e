//! The OpenTelemetry GenAI client span of one model call attempt:
//! `chat <model>`, kind client, with `gen_ai.operation.name`,
//! `gen_ai.provider.name` (the provider endpoint's name in the config, as
//! on the metrics), `gen_ai.request.model`, `gen_ai.response.model`, the
//! usage tokens and finish reason, or `error.type` when it failed. Tokens
//! streamed to clients during the call are its children's work.
use chatstream_core::trace::{self, set_attribute, set_string_list};
use tracing::Span;
use tracing::field::Empty;

use crate::model::Usage;
use crate::providers::CatalogEntry;

/// The attempt's span, or a disabled one while tracing is off.
pub fn chat_span(entry: &CatalogEntry) -> Span {
    if !trace::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "chat",
        otel.name = format!("chat {}", request_model(entry)),
        otel.kind = "client",
        otel.status_code = Empty,
        error.type = Empty,
    );
    set_attribute(&span, "gen_ai.operation.name", "chat");
    set_attribute(&span, "gen_ai.provider.name", entry.provider.clone());
    set_attribute(
        &span,
        "gen_ai.request.model",
        request_model(entry).to_owned(),
    );
    set_attribute(&span, "chatstream.model", entry.id.clone());
    span
}

/// A finished attempt: what the provider answered with and what it cost.
pub fn record_finished(span: &Span, entry: &CatalogEntry, usage: Usage, finish_reason: &str) {
    // Providers' responses are not read for another model name (as on the metrics).
    set_attribute(
        span,
        "gen_ai.response.model",
        request_model(entry).to_owned(),
    );
    record_usage(span, Some(usage));
    set_string_list(span, "gen_ai.response.finish_reasons", &[finish_reason]);
}

/// A failed attempt: its error code, and what it used up to the failure.
pub fn record_failed(span: &Span, code: &'static str, usage: Option<Usage>) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", code);
    record_usage(span, usage);
}

fn record_usage(span: &Span, usage: Option<Usage>) {
    if let Some(usage) = usage {
        set_attribute(
            span,
            "gen_ai.usage.input_tokens",
            i64::from(usage.prompt_tokens),
        );
        set_attribute(
            span,
            "gen_ai.usage.output_tokens",
            i64::from(usage.completion_tokens),
        );
    }
}

/// The model name sent to the provider; the catalog id for the built-in
/// mock of `chatstream dev`, which has none of its own.
fn request_model(entry: &CatalogEntry) -> &str {
    if entry.provider_model.is_empty() {
        &entry.id
    } else {
        &entry.provider_model
    }
}
