//! Redis hot state: the fan-out between replicas, recent history in front
//! of the store, and the gateway's shared rate limits, connection counts
//! and send reservations.
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chatstream_config::Config;
use chatstream_core::fanout::FanOut;
use chatstream_core::ratelimit::RateLimiter;
use chatstream_core::ratelimit::connections::ConnectionCounter;
use chatstream_core::sends::SendReservations;
use chatstream_core::store::ProjectionStore;
use chatstream_redis::connections::{RedisConnectionCounter, RedisConnectionCounterConfig};
use chatstream_redis::fanout::{RedisFanOut, RedisFanOutConfig};
use chatstream_redis::keyspace::RedisKeyspace;
use chatstream_redis::ratelimit::{RedisRateLimiter, RedisRateLimiterConfig};
use chatstream_redis::recent::{RecentHistoryConfig, RecentHistoryStore};
use chatstream_redis::sends::{RedisSendReservations, RedisSendReservationsConfig};

/// How long startup waits for Redis before it fails.
const REDIS_CONNECT_WAIT: Duration = Duration::from_secs(10);

pub fn recent_history(
    config: &Config,
    url: &str,
    store: Arc<dyn ProjectionStore>,
) -> anyhow::Result<Arc<dyn ProjectionStore>> {
    let recent = RecentHistoryConfig::new(url.to_owned()).with_keyspace(keyspace(config));
    Ok(Arc::new(
        RecentHistoryStore::new(store, recent).context("cannot start recent history in Redis")?,
    ))
}

pub async fn open_fanout(config: &Config, url: &str) -> anyhow::Result<Arc<dyn FanOut>> {
    let fanout_config = RedisFanOutConfig::new(url.to_owned()).with_keyspace(keyspace(config));
    let fanout = RedisFanOut::connect(fanout_config, REDIS_CONNECT_WAIT)
        .await
        .context("cannot start the Redis fan-out")?;
    Ok(Arc::new(fanout))
}

pub fn open_rate_limiter(config: &Config, url: &str) -> anyhow::Result<Arc<dyn RateLimiter>> {
    let limiter_config =
        RedisRateLimiterConfig::new(url.to_owned()).with_keyspace(keyspace(config));
    Ok(Arc::new(
        RedisRateLimiter::new(limiter_config).context("cannot start the Redis rate limiter")?,
    ))
}

pub fn open_send_reservations(
    config: &Config,
    url: &str,
) -> anyhow::Result<Arc<dyn SendReservations>> {
    let mut reservations_config =
        RedisSendReservationsConfig::new(url.to_owned()).with_keyspace(keyspace(config));
    reservations_config.pending_lifetime =
        Duration::from_millis(config.redis.send_reservation_pending_ms);
    Ok(Arc::new(
        RedisSendReservations::new(reservations_config)
            .context("cannot start send reservations in Redis")?,
    ))
}

pub fn open_connection_counter(
    config: &Config,
    url: &str,
) -> anyhow::Result<Arc<dyn ConnectionCounter>> {
    let gateway_id = format!(
        "{}-{}-{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    );
    let counter_config = RedisConnectionCounterConfig::new(url.to_owned(), gateway_id)
        .with_keyspace(keyspace(config));
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
