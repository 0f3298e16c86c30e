//! Every Prometheus metric chatstream emits, in one list: name, type, base
//! unit, help text and histogram buckets. The binary describes them all at
//! start (so `/metrics` has a `# HELP` line for each) and gives each
//! histogram its buckets (no summaries); `docs/observability.md` is this
//! list in prose, and the metrics test checks the exposition against it.
use metrics::Unit;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: MetricKind,
    /// Its labels, for the docs.
    pub labels: &'static str,
    pub unit: Option<Unit>,
    pub help: &'static str,
    /// A histogram's bucket bounds.
    pub buckets: &'static [f64],
}

const fn counter(name: &'static str, labels: &'static str, help: &'static str) -> MetricSpec {
    MetricSpec {
        name,
        kind: MetricKind::Counter,
        labels,
        unit: Some(Unit::Count),
        help,
        buckets: &[],
    }
}

const fn gauge(
    name: &'static str,
    labels: &'static str,
    unit: Unit,
    help: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        kind: MetricKind::Gauge,
        labels,
        unit: Some(unit),
        help,
        buckets: &[],
    }
}

const fn histogram(
    name: &'static str,
    labels: &'static str,
    unit: Unit,
    buckets: &'static [f64],
    help: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        kind: MetricKind::Histogram,
        labels,
        unit: Some(unit),
        help,
        buckets,
    }
}

/// Seconds of work on the platform's own path (appends, handling, fan-out):
/// 0.5 ms to 10 s.
pub const FAST_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds of calls that wait for others (models, tools), the OpenTelemetry
/// GenAI conventions' advisory buckets: 10 ms to 82 s.
pub const CALL_SECONDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Tokens, the GenAI conventions' advisory buckets.
pub const TOKEN_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

// The shared processor metrics, emitted by the runner for every processor.
pub const PROCESSOR_EVENTS_RECEIVED: &str = "chatstream_processor_events_received_total";
pub const PROCESSOR_EVENTS_PROCESSED: &str = "chatstream_processor_events_processed_total";
pub const PROCESSOR_EVENTS_FAILED: &str = "chatstream_processor_events_failed_total";
pub const PROCESSOR_DEAD_LETTERS: &str = "chatstream_processor_dead_letters_total";
pub const PROCESSOR_HANDLE_SECONDS: &str = "chatstream_processor_handle_seconds";
pub const PROCESSOR_LAG: &str = "chatstream_processor_lag";
pub const PROCESSOR_PARTITION_ASSIGNED: &str = "chatstream_processor_partition_assigned";
pub const PROCESSOR_IN_FLIGHT: &str = "chatstream_processor_in_flight";
pub const PROCESSOR_PARTITION_PAUSES: &str = "chatstream_processor_partition_pauses_total";

// The gateway's.
pub const GATEWAY_APPEND_SECONDS: &str = "chatstream_gateway_append_seconds";
pub const GATEWAY_REFUSALS: &str = "chatstream_gateway_refusals_total";

// The processors' own.
pub const FANOUT_DELAY_SECONDS: &str = "chatstream_fanout_delay_seconds";
pub const MCP_TOOL_CALL_SECONDS: &str = "chatstream_mcp_tool_call_duration_seconds";

// The OpenTelemetry GenAI client metrics (the router's model calls).
pub const GENAI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
pub const GENAI_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
pub const GENAI_TIME_TO_FIRST_CHUNK: &str = "gen_ai_client_operation_time_to_first_chunk_seconds";

/// The metrics every processor emits, whatever its kind, each with a
/// `processor` label: the contract dashboards and alerts rely on.
pub const PROCESSOR_METRICS: [&str; 9] = [
    PROCESSOR_EVENTS_RECEIVED,
    PROCESSOR_EVENTS_PROCESSED,
    PROCESSOR_EVENTS_FAILED,
    PROCESSOR_DEAD_LETTERS,
    PROCESSOR_HANDLE_SECONDS,
    PROCESSOR_LAG,
    PROCESSOR_PARTITION_ASSIGNED,
    PROCESSOR_IN_FLIGHT,
    PROCESSOR_PARTITION_PAUSES,
];

/// Every metric, by component.
pub const METRICS: &[MetricSpec] = &[
    // Every processor (the runner).
    counter(
        PROCESSOR_EVENTS_RECEIVED,
        "processor",
        "Records a processor took from the log to handle.",
    ),
    counter(
        PROCESSOR_EVENTS_PROCESSED,
        "processor",
        "Records a processor handled successfully.",
    ),
    counter(
        PROCESSOR_EVENTS_FAILED,
        "processor, reason",
        "Records a processor gave up on (reason: undecodable or handler); each goes to the dead letters.",
    ),
    counter(
        PROCESSOR_DEAD_LETTERS,
        "processor, reason",
        "Records stored as dead letters (reason: undecodable or handler_failed).",
    ),
    histogram(
        PROCESSOR_HANDLE_SECONDS,
        "processor, outcome",
        Unit::Seconds,
        &FAST_SECONDS,
        "Time a processor spent handling one record, retries included (outcome: processed or failed).",
    ),
    gauge(
        PROCESSOR_LAG,
        "processor, partition",
        Unit::Count,
        "Records on a partition the processor's consumer group has not committed yet (consumer lag).",
    ),
    gauge(
        PROCESSOR_PARTITION_ASSIGNED,
        "processor, partition",
        Unit::Count,
        "1 while this replica owns the partition, 0 once it lost it.",
    ),
    gauge(
        PROCESSOR_IN_FLIGHT,
        "processor",
        Unit::Count,
        "Records a processor is handling now in this process.",
    ),
    counter(
        PROCESSOR_PARTITION_PAUSES,
        "processor",
        "Times a partition was paused because it held too many records (backpressure).",
    ),
    // The gateway.
    histogram(
        GATEWAY_APPEND_SECONDS,
        "",
        Unit::Seconds,
        &FAST_SECONDS,
        "Time from the gateway's append of a user message to the log's durable ack (the ack path).",
    ),
    gauge(
        "chatstream_gateway_connections",
        "transport",
        Unit::Count,
        "Open WebSocket and gRPC Converse connections on this gateway.",
    ),
    counter(
        GATEWAY_REFUSALS,
        "reason",
        "Requests and connections the gateway refused, by error code (e.g. rate_limited, too_many_connections, message_too_large, budget_exceeded).",
    ),
    counter(
        "chatstream_gateway_connections_refused_total",
        "tenant",
        "Connections refused because the tenant is at its connection limit.",
    ),
    counter(
        "chatstream_gateway_rate_limited_total",
        "tenant",
        "Requests refused by the tenant's rate limit.",
    ),
    counter(
        "chatstream_gateway_messages_total",
        "tenant",
        "User messages appended to the log.",
    ),
    counter(
        "chatstream_gateway_openai_completions_total",
        "tenant, stream",
        "OpenAI-compatible chat completions served.",
    ),
    // The fan-out.
    histogram(
        FANOUT_DELAY_SECONDS,
        "",
        Unit::Seconds,
        &FAST_SECONDS,
        "Time from an event's occurrence to its publish to the fan-out as committed (after the projector recorded it).",
    ),
    counter(
        "chatstream_fanout_malformed_messages_total",
        "",
        "Fan-out messages from Redis that could not be decoded and were dropped.",
    ),
    // The router.
    histogram(
        GENAI_OPERATION_DURATION,
        "gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_response_model, error_type",
        Unit::Seconds,
        &CALL_SECONDS,
        "Duration of one model call attempt (OpenTelemetry GenAI client operation duration).",
    ),
    histogram(
        GENAI_TIME_TO_FIRST_CHUNK,
        "gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_response_model",
        Unit::Seconds,
        &CALL_SECONDS,
        "Time from the start of a model call to its first token (time to first token).",
    ),
    histogram(
        GENAI_TOKEN_USAGE,
        "gen_ai_operation_name, gen_ai_provider_name, gen_ai_request_model, gen_ai_response_model, gen_ai_token_type",
        Unit::Count,
        &TOKEN_BUCKETS,
        "Tokens one model call attempt used, by type (input or output).",
    ),
    counter(
        "chatstream_router_tokens_total",
        "model, kind",
        "Tokens the router's turns used (kind: prompt or completion).",
    ),
    counter(
        "chatstream_router_context_total",
        "source",
        "Conversation contexts the router loaded (source: cache or store).",
    ),
    counter(
        "chatstream_router_attempts_total",
        "provider, model, outcome",
        "Model call attempts, by provider endpoint, catalog model and outcome (ok or the error code).",
    ),
    // The mcp processor.
    histogram(
        MCP_TOOL_CALL_SECONDS,
        "outcome",
        Unit::Seconds,
        &CALL_SECONDS,
        "Duration of one MCP tool call (outcome: ok or the error kind).",
    ),
    counter(
        "chatstream_mcp_tool_calls_total",
        "outcome",
        "MCP tool calls, by outcome (ok or the error kind).",
    ),
];

/// Gives every metric its `# HELP` text and unit (call once, after the
/// recorder is installed).
pub fn describe_all() {
    for spec in METRICS {
        match (spec.kind, spec.unit) {
            (MetricKind::Counter, Some(unit)) => {
                metrics::describe_counter!(spec.name, unit, spec.help)
            }
            (MetricKind::Counter, None) => metrics::describe_counter!(spec.name, spec.help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(spec.name, unit, spec.help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(spec.name, spec.help),
            (MetricKind::Histogram, Some(unit)) => {
                metrics::describe_histogram!(spec.name, unit, spec.help)
            }
            (MetricKind::Histogram, None) => metrics::describe_histogram!(spec.name, spec.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_histograms_have_increasing_buckets() {
        let mut names = std::collections::HashSet::new();
        for spec in METRICS {
            assert!(names.insert(spec.name), "{} listed twice", spec.name);
            assert!(!spec.help.is_empty(), "{} has no help", spec.name);
            if spec.kind == MetricKind::Histogram {
                assert!(
                    spec.buckets.windows(2).all(|pair| pair[0] < pair[1])
                        && !spec.buckets.is_empty(),
                    "{} needs increasing buckets",
                    spec.name
                );
            }
            if spec.kind == MetricKind::Counter {
                assert!(spec.name.ends_with("_total"), "{} is a counter", spec.name);
            }
        }
        for name in PROCESSOR_METRICS {
            assert!(names.contains(name), "{name} is not in the catalog");
        }
    }
}
