//! Opens the backend behind each seam as the config chooses: the embedded
//! ones for one process, Kafka, ScyllaDB and Redis for many.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatstream_runtime::config::{Config, LogBackend, StoreBackend};
use chatstream_runtime::deadletter::DeadLetterSink;
use chatstream_runtime::deadletter::embedded::EmbeddedDeadLetters;
use chatstream_runtime::fanout::FanOut;
use chatstream_runtime::fanout::in_process::InProcessFanOut;
use chatstream_runtime::fanout::redis::{RedisFanOut, RedisFanOutConfig};
use chatstream_runtime::log::EventLog;
use chatstream_runtime::log::embedded::EmbeddedLog;
use chatstream_runtime::log::kafka::{KafkaDeadLetters, KafkaLog};
use chatstream_runtime::ratelimit::RateLimiter;
use chatstream_runtime::ratelimit::connections::ConnectionCounter;
use chatstream_runtime::ratelimit::connections::in_process::InProcessConnectionCounter;
use chatstream_runtime::ratelimit::connections::redis::{
    RedisConnectionCounter, RedisConnectionCounterConfig,
};
use chatstream_runtime::ratelimit::in_process::InProcessRateLimiter;
use chatstream_runtime::ratelimit::redis::{RedisRateLimiter, RedisRateLimiterConfig};
use chatstream_runtime::redis_keyspace::RedisKeyspace;
use chatstream_runtime::sends::SendReservations;
use chatstream_runtime::sends::redis::{RedisSendReservations, RedisSendReservationsConfig};
use chatstream_runtime::store::ProjectionStore;
use chatstream_runtime::store::embedded::EmbeddedStore;
use chatstream_runtime::store::recent::{RecentHistoryConfig, RecentHistoryStore};
use chatstream_runtime::store::scylla::ScyllaStore;

/// How long startup waits for Redis before it fails.
const REDIS_CONNECT_WAIT: Duration = Duration::from_secs(10);

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

pub async fn open_log(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<dyn EventLog>> {
    Ok(match config.log.backend {
        LogBackend::Embedded => Arc::new(
            EmbeddedLog::open(data_dir, config.log.partitions)
                .context("cannot open the embedded event log")?,
        ),
        LogBackend::Kafka => Arc::new(
            KafkaLog::connect(config.kafka_log())
                .await
                .context("cannot connect to the Kafka event log")?,
        ),
    })
}

/// Where processors put records they give up on: beside the log (the
/// data dir, or the log's dead-letter topic).
pub async fn open_dead_letters(
    config: &Config,
    data_dir: &Path,
) -> anyhow::Result<Arc<dyn DeadLetterSink>> {
    Ok(match config.log.backend {
        LogBackend::Embedded => Arc::new(
            EmbeddedDeadLetters::open(data_dir)
                .context("cannot open the embedded dead-letter store")?,
        ),
        LogBackend::Kafka => Arc::new(
            KafkaDeadLetters::connect(&config.kafka_log())
                .await
                .context("cannot connect to the Kafka dead-letter topic")?,
        ),
    })
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
        StoreBackend::Scylla => {
            let store_config = config
                .scylla_store()
                .context("the scylla section of the config is not valid")?;
            Arc::new(ScyllaStore::connect(store_config).await.context(
                "cannot connect to the ScyllaDB projection store (has `chatstream schema apply` run?)",
            )?)
        }
    };
    let Some(url) = &config.redis.url else {
        return Ok(store);
    };
    let recent = RecentHistoryConfig::new(url.clone()).with_keyspace(keyspace(config));
    Ok(Arc::new(
        RecentHistoryStore::new(store, recent).context("cannot start recent history in Redis")?,
    ))
}

/// Redis pub/sub when Redis is configured, so replicas see each other's
/// deltas; in-process otherwise.
pub async fn open_fanout(config: &Config) -> anyhow::Result<Arc<dyn FanOut>> {
    let Some(url) = &config.redis.url else {
        return Ok(Arc::new(InProcessFanOut::default()));
    };
    let fanout_config = RedisFanOutConfig::new(url.clone()).with_keyspace(keyspace(config));
    let fanout = RedisFanOut::connect(fanout_config, REDIS_CONNECT_WAIT)
        .await
        .context("cannot start the Redis fan-out")?;
    Ok(Arc::new(fanout))
}

/// One limit per tenant across every replica when Redis is configured.
pub fn open_rate_limiter(config: &Config) -> anyhow::Result<Arc<dyn RateLimiter>> {
    let Some(url) = &config.redis.url else {
        return Ok(Arc::new(InProcessRateLimiter::new()));
    };
    let limiter_config = RedisRateLimiterConfig::new(url.clone()).with_keyspace(keyspace(config));
    Ok(Arc::new(
        RedisRateLimiter::new(limiter_config).context("cannot start the Redis rate limiter")?,
    ))
}

/// Client message ids reserved across gateways while a send with one is
/// appended; only needed (and only built) when Redis is configured.
pub fn open_send_reservations(
    config: &Config,
) -> anyhow::Result<Option<Arc<dyn SendReservations>>> {
    let Some(url) = &config.redis.url else {
        return Ok(None);
    };
    let reservations_config =
        RedisSendReservationsConfig::new(url.clone()).with_keyspace(keyspace(config));
    Ok(Some(Arc::new(
        RedisSendReservations::new(reservations_config)
            .context("cannot start send reservations in Redis")?,
    )))
}

/// Each tenant's open connections, counted across every gateway when Redis
/// is configured (this gateway's share under a lease it renews).
pub fn open_connection_counter(config: &Config) -> anyhow::Result<Arc<dyn ConnectionCounter>> {
    let Some(url) = &config.redis.url else {
        return Ok(Arc::new(InProcessConnectionCounter::new()));
    };
    let gateway_id = format!(
        "{}-{}-{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    );
    let counter_config =
        RedisConnectionCounterConfig::new(url.clone(), gateway_id).with_keyspace(keyspace(config));
    Ok(Arc::new(
        RedisConnectionCounter::new(counter_config)
            .context("cannot start the Redis connection counter")?,
    ))
}

/// This machine's name (a pod's name in Kubernetes), for telling gateways apart.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "gateway".to_owned())
}

fn keyspace(config: &Config) -> RedisKeyspace {
    RedisKeyspace::new(config.redis.key_prefix.clone())
}
