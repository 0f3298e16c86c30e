//! Logs (text or JSON, filtered by `LOG_LEVEL`), OpenTelemetry traces over
//! OTLP/gRPC (configured by the standard `OTEL_*` variables, off unless an
//! endpoint is set) and the Prometheus recorder.
use std::io::IsTerminal;

use chatstream_config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The trace exporter, while tracing is on: `shutdown` exports what is
/// still buffered.
#[must_use = "shut telemetry down at exit, or the last spans are lost"]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes the spans still buffered (up to the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "cannot flush the last spans");
        }
    }
}

/// Installs the logger and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the trace exporter.
/// `service` names the process in traces unless `OTEL_SERVICE_NAME` does.
/// Call inside the runtime: the gRPC exporter's channel lives on it.
pub fn init(level: &str, format: LogFormat, service: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| anyhow::anyhow!("LOG_LEVEL {level:?} is not valid: {e}"))?;
    // Colour codes are for people at a terminal; in a file or a pipe (a log
    // collector, `grep`) they are noise.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match format {
        LogFormat::Json => fmt.json().with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    };
    let tracer_provider = tracer_provider(service)?;
    // Each layer filters for itself: `LOG_LEVEL=warn` keeps log lines
    // quiet without silencing the spans traces are made of.
    let otel = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("chatstream"))
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|metadata| {
                // chatstream's own spans, and warnings and errors inside them.
                metadata.target().starts_with("chatstream")
                    && (metadata.is_span() || *metadata.level() <= tracing::Level::WARN)
            }))
            .with_filter(LevelFilter::INFO)
    });
    Registry::default()
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))?;
    if tracer_provider.is_some() {
        chatstream_core::trace::enable();
    }
    Ok(Telemetry { tracer_provider })
}

/// The OTLP/gRPC span exporter the `OTEL_*` variables describe, or `None`
/// when they ask for no traces (no endpoint, `OTEL_SDK_DISABLED=true`,
/// `OTEL_TRACES_EXPORTER=none`). The SDK reads the rest itself:
/// `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*`, `OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_RESOURCE_ATTRIBUTES`.
fn tracer_provider(service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = |value: Result<String, std::env::VarError>| {
        value.ok().filter(|value| !value.trim().is_empty())
    };
    let endpoint = set(std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| set(std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")));
    let disabled =
        set(std::env::var("OTEL_SDK_DISABLED")).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let exporter = set(std::env::var("OTEL_TRACES_EXPORTER")).unwrap_or_else(|| "otlp".into());
    if endpoint.is_none() || disabled || exporter.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if !exporter.eq_ignore_ascii_case("otlp") {
        anyhow::bail!("OTEL_TRACES_EXPORTER={exporter} is not supported (use otlp or none)");
    }
    let protocol = set(std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| set(std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")))
        .unwrap_or_else(|| "grpc".into());
    if protocol != "grpc" {
        anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: chatstream exports OTLP over gRPC"
        );
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up the OTLP trace exporter: {e}"))?;
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource(service))
            .build(),
    ))
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`),
/// named `service` when those name no service.
fn resource(service: &str) -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(service.to_owned())
            .build()
    }
}

/// The Prometheus recorder, with every metric of `metric_catalog`
/// described (`# HELP`, unit) and every histogram given its buckets; a
/// histogram the catalog does not know gets the fast-path seconds buckets,
/// so none is ever rendered as a summary.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    use chatstream_core::metric_catalog::{FAST_SECONDS, METRICS, MetricKind, describe_all};
    use metrics_exporter_prometheus::Matcher;
    let invalid = |e| anyhow::anyhow!("invalid histogram buckets: {e}");
    let mut builder = PrometheusBuilder::new()
        .set_buckets(&FAST_SECONDS)
        .map_err(invalid)?;
    for spec in METRICS
        .iter()
        .filter(|spec| spec.kind == MetricKind::Histogram)
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(spec.name.to_owned()), spec.buckets)
            .map_err(invalid)?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    describe_all();
    Ok(handle)
}
