//! The OpenTelemetry GenAI client metrics, in their Prometheus forms, so
//! dashboards built for them work unchanged: `gen_ai_client_token_usage`
//! (by `gen_ai_token_type`), `gen_ai_client_operation_duration_seconds` and
//! `gen_ai_client_operation_time_to_first_chunk_seconds`, one operation per
//! model call attempt. Labels are bounded by the model catalog (no tenant):
//! `gen_ai_operation_name`, `gen_ai_provider_name` (the provider endpoint's
//! name in the config), `gen_ai_request_model` and `gen_ai_response_model`
//! (the provider's model name: providers' responses are not read for
//! another), and `error_type` on failed operations.
use std::time::Duration;

use crate::model::Usage;
use crate::providers::CatalogEntry;

// Named, described and bucketed in the one list of chatstream's metrics.
pub use chatstream_core::metric_catalog::{
    CALL_SECONDS as SECONDS_BUCKETS, GENAI_OPERATION_DURATION as OPERATION_DURATION,
    GENAI_TIME_TO_FIRST_CHUNK as TIME_TO_FIRST_CHUNK, GENAI_TOKEN_USAGE as TOKEN_USAGE,
    TOKEN_BUCKETS,
};

fn labels(entry: &CatalogEntry) -> [(&'static str, String); 4] {
    [
        ("gen_ai_operation_name", "chat".to_owned()),
        ("gen_ai_provider_name", entry.provider.clone()),
        ("gen_ai_request_model", entry.provider_model.clone()),
        ("gen_ai_response_model", entry.provider_model.clone()),
    ]
}

/// One attempt's length; `error` is its error code when it failed.
pub fn record_operation(entry: &CatalogEntry, took: Duration, error: Option<&'static str>) {
    let mut labels = labels(entry).to_vec();
    if let Some(code) = error {
        labels.push(("error_type", code.to_owned()));
    }
    metrics::histogram!(OPERATION_DURATION, &labels).record(took.as_secs_f64());
}

/// When an attempt's first token arrived, after it started.
pub fn record_first_chunk(entry: &CatalogEntry, after: Duration) {
    metrics::histogram!(TIME_TO_FIRST_CHUNK, &labels(entry)).record(after.as_secs_f64());
}

/// An attempt's input and output tokens (reported, or estimated).
pub fn record_tokens(entry: &CatalogEntry, usage: Usage) {
    for (token_type, count) in [
        ("input", usage.prompt_tokens),
        ("output", usage.completion_tokens),
    ] {
        let mut labels = labels(entry).to_vec();
        labels.push(("gen_ai_token_type", token_type.to_owned()));
        metrics::histogram!(TOKEN_USAGE, &labels).record(f64::from(count));
    }
}
