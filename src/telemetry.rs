//! Logs (text or JSON, filtered by `LOG_LEVEL`) and the Prometheus recorder.
use std::io::IsTerminal;

use chatstream_config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

pub fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("LOG_LEVEL {level:?} is not valid: {e}"))?;
    // Colour codes are for people at a terminal; in a file or a pipe (a log
    // collector, `grep`) they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    use chatstream_router::genai_metrics::{
        OPERATION_DURATION, SECONDS_BUCKETS, TIME_TO_FIRST_CHUNK, TOKEN_BUCKETS, TOKEN_USAGE,
    };
    use metrics_exporter_prometheus::Matcher;
    // The GenAI metrics are histograms with the semantic conventions'
    // buckets (others stay summaries, as before).
    let histogram =
        |name: &str, buckets: &[f64]| (Matcher::Full(name.to_owned()), buckets.to_vec());
    let mut builder = PrometheusBuilder::new();
    for (matcher, buckets) in [
        histogram(TOKEN_USAGE, &TOKEN_BUCKETS),
        histogram(OPERATION_DURATION, &SECONDS_BUCKETS),
        histogram(TIME_TO_FIRST_CHUNK, &SECONDS_BUCKETS),
    ] {
        builder = builder
            .set_buckets_for_metric(matcher, &buckets)
            .map_err(|e| anyhow::anyhow!("invalid histogram buckets: {e}"))?;
    }
    builder
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))
}
