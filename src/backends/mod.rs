//! Opens the backend behind each seam as the config chooses: the embedded
//! and in-process ones for one process; Kafka, ScyllaDB and Redis (each
//! behind the Cargo feature of its name) for many. This is the one place
//! that lists the backends.
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chatstream_config::{Config, LogBackend, StoreBackend};
use chatstream_core::analytics::AnalyticsStore;
use chatstream_core::analytics::embedded::EmbeddedAnalytics;
use chatstream_core::deadletter::DeadLetterSink;
use chatstream_core::deadletter::embedded::EmbeddedDeadLetters;
use chatstream_core::fanout::FanOut;
use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::log::EventLog;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::traced::TracedLog;
use chatstream_core::ratelimit::RateLimiter;
use chatstream_core::ratelimit::connections::ConnectionCounter;
use chatstream_core::ratelimit::connections::in_process::InProcessConnectionCounter;
use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
use chatstream_core::sends::SendReservations;
use chatstream_core::store::ProjectionStore;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_core::trace::Messaging;

#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "scylla")]
mod scylla;

/// The error for a config that names a backend this binary was built
/// without (`cargo build --no-default-features` is embedded-only).
#[cfg_attr(
    all(feature = "kafka", feature = "scylla", feature = "redis"),
    allow(dead_code)
)]
fn not_built(feature: &str, setting: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{setting} is configured, but this chatstream was built without the `{feature}` feature; \
         rebuild with `--features {feature}` (a default build has every backend)"
    )
}

/// Fails unless every backend can be shared by several processes: a role
/// that runs alone (`gateway`, `processor`) would otherwise serve a
/// platform of its own that no other replica sees.
pub fn require_shared(config: &Config, role: &str) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if config.log.backend != LogBackend::Kafka {
        missing.push("log.backend: kafka (CHATSTREAM_LOG_BACKEND=kafka, KAFKA_BOOTSTRAP_SERVERS)");
    }
    if config.store.backend != StoreBackend::Scylla {
        missing.push("store.backend: scylla (CHATSTREAM_STORE_BACKEND=scylla, SCYLLA_NODES)");
    }
    if config.redis.url.is_none() {
        missing.push("redis.url (REDIS_URL)");
    }
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "`chatstream {role}` runs beside other replicas, so its backends must be shared; \
         configure {} (or run everything in one process with `chatstream dev`)",
        missing.join(", ")
    )
}

/// The log, the stores and the fan-out: what the gateway and every
/// processor read and write (in `chatstream dev`, the same instances).
#[derive(Clone)]
pub struct CoreBackends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn ProjectionStore>,
    pub fanout: Arc<dyn FanOut>,
    /// Written by the analytics processor, read by the gateway's queries.
    pub analytics: Arc<dyn AnalyticsStore>,
}

impl CoreBackends {
    /// Opens each as the config chooses; embedded ones in its data dir.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            log: open_log(config, &config.data_dir).await?,
            store: open_store(config, &config.data_dir).await?,
            fanout: open_fanout(config).await?,
            analytics: open_analytics(config, &config.data_dir).await?,
        })
    }
}

/// The configured log; while tracing is on, behind `TracedLog`, so every
/// append is a span and its events carry the trace on.
pub async fn open_log(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<dyn EventLog>> {
    let (log, system): (Arc<dyn EventLog>, _) = match config.log.backend {
        LogBackend::Embedded => (
            Arc::new(
                EmbeddedLog::open(data_dir, config.log.partitions)
                    .context("cannot open the embedded event log")?,
            ),
            "chatstream_embedded",
        ),
        #[cfg(feature = "kafka")]
        LogBackend::Kafka => (kafka::open_log(config).await?, "kafka"),
        #[cfg(not(feature = "kafka"))]
        LogBackend::Kafka => return Err(not_built("kafka", "log.backend: kafka")),
    };
    if !chatstream_core::trace::enabled() {
        return Ok(log);
    }
    let messaging = Messaging {
        system,
        // The embedded log has no topic; traces name it as Kafka's would be.
        destination: config.kafka.topic.clone(),
    };
    Ok(Arc::new(TracedLog::new(log, messaging)))
}

/// Where processors put records they give up on: beside the log (the
/// data dir, or the log's dead-letter topic).
pub async fn open_dead_letters(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn DeadLetterSink>> {
    match config.log.backend {
        LogBackend::Embedded => Ok(Arc::new(
            EmbeddedDeadLetters::open(data_dir)
                .context("cannot open the embedded dead-letter store")?,
        )),
        #[cfg(feature = "kafka")]
        LogBackend::Kafka => kafka::open_dead_letters(config).await,
        #[cfg(not(feature = "kafka"))]
        LogBackend::Kafka => Err(not_built("kafka", "log.backend: kafka")),
    }
}

/// The configured store; with Redis, behind recent history in Redis
/// streams, so resuming clients are served from memory.
pub async fn open_store(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn ProjectionStore>> {
    let store: Arc<dyn ProjectionStore> = match config.store.backend {
        StoreBackend::Embedded => Arc::new(
            EmbeddedStore::open(data_dir).context("cannot open the embedded projection store")?,
        ),
        #[cfg(feature = "scylla")]
        StoreBackend::Scylla => scylla::open_store(config).await?,
        #[cfg(not(feature = "scylla"))]
        StoreBackend::Scylla => return Err(not_built("scylla", "store.backend: scylla")),
    };
    match &config.redis.url {
        None => Ok(store),
        #[cfg(feature = "redis")]
        Some(url) => redis::recent_history(config, url, store),
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(not_built("redis", "redis.url")),
    }
}

/// The analytics projection, on the store backend the config chooses.
pub async fn open_analytics(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn AnalyticsStore>> {
    match config.store.backend {
        StoreBackend::Embedded => Ok(Arc::new(
            EmbeddedAnalytics::open(data_dir)
                .context("cannot open the embedded analytics store")?,
        )),
        #[cfg(feature = "scylla")]
        StoreBackend::Scylla => scylla::open_analytics(config).await,
        #[cfg(not(feature = "scylla"))]
        StoreBackend::Scylla => Err(not_built("scylla", "store.backend: scylla")),
    }
}

/// Redis pub/sub when Redis is configured, so replicas see each other's
/// deltas; in-process otherwise.
pub async fn open_fanout(config: &Config) -> anyhow::Result<Arc<dyn FanOut>> {
    match &config.redis.url {
        None => Ok(Arc::new(InProcessFanOut::default())),
        #[cfg(feature = "redis")]
        Some(url) => redis::open_fanout(config, url).await,
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(not_built("redis", "redis.url")),
    }
}

/// One limit per tenant across every replica when Redis is configured.
pub fn open_rate_limiter(config: &Config) -> anyhow::Result<Arc<dyn RateLimiter>> {
    match &config.redis.url {
        None => Ok(Arc::new(InProcessRateLimiter::new())),
        #[cfg(feature = "redis")]
        Some(url) => redis::open_rate_limiter(config, url),
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(not_built("redis", "redis.url")),
    }
}

/// Client message ids reserved across gateways while a send with one is
/// appended; only needed (and only built) when Redis is configured.
pub fn open_send_reservations(
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn SendReservations>>> {
    match &config.redis.url {
        None => Ok(None),
        #[cfg(feature = "redis")]
        Some(url) => redis::open_send_reservations(config, url).map(Some),
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(not_built("redis", "redis.url")),
    }
}

/// Each tenant's open connections, counted across every gateway when Redis
/// is configured (this gateway's share under a lease it renews).
pub fn open_connection_counter(config: &Config) -> anyhow::Result<Arc<dyn ConnectionCounter>> {
    match &config.redis.url {
        None => Ok(Arc::new(InProcessConnectionCounter::new())),
        #[cfg(feature = "redis")]
        Some(url) => redis::open_connection_counter(config, url),
        #[cfg(not(feature = "redis"))]
        Some(_) => Err(not_built("redis", "redis.url")),
    }
}
