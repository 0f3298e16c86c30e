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

pub const TOKEN_USAGE: &str = "gen_ai_client_token_usage";
pub const OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";

/// The semantic conventions' advisory bucket boundaries: tokens, then seconds.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

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
