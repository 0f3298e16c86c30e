//! The Redis rate limiter: each tenant's GCRA arrival time in one Redis key,
//! read and written by one Lua script in one round trip, on the Redis
//! server's clock. Every gateway replica shares the key, so a tenant's limit
//! holds once across all of them.
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use crate::keyspace::RedisKeyspace;
use chatstream_core::ratelimit::{Gcra, RateDecision, RateLimit, RateLimitError, RateLimiter};

#[derive(Debug, Clone)]
pub struct RedisRateLimiterConfig {
    /// e.g. `redis://127.0.0.1:6379/0`
    pub url: String,
    pub keyspace: RedisKeyspace,
    /// How long a check may take, reconnecting included, before it fails
    /// with `Unavailable`: a request must not hang on a dead Redis.
    pub response_timeout: Duration,
}

impl RedisRateLimiterConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            keyspace: RedisKeyspace::default(),
            response_timeout: Duration::from_secs(1),
        }
    }

    pub fn with_keyspace(mut self, keyspace: RedisKeyspace) -> Self {
        self.keyspace = keyspace;
        self
    }
}

/// Rate limits shared by every gateway replica. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    keyspace: RedisKeyspace,
    script: Script,
    response_timeout: Duration,
}

impl RedisRateLimiter {
    /// Connects lazily (on the first check) and reconnects by itself after
    /// Redis went away. Must be called on a Tokio runtime.
    pub fn new(config: RedisRateLimiterConfig) -> Result<Self, RateLimitError> {
        let connection = lazy_connection(&config.url, config.response_timeout)?;
        Ok(Self::with_connection(
            connection,
            config.keyspace,
            config.response_timeout,
        ))
    }

    /// A limiter on an existing connection (shared with other Redis users).
    pub fn with_connection(
        connection: ConnectionManager,
        keyspace: RedisKeyspace,
        response_timeout: Duration,
    ) -> Self {
        Self {
            connection,
            keyspace,
            script: Script::new(include_str!("gcra.lua")),
            response_timeout,
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(
        &self,
        tenant_id: &str,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError> {
        let gcra = Gcra::new(limit)?;
        // Microseconds: the server's clock resolution. A rate above a
        // million per second rounds to one request per microsecond.
        // (`gcra` validated the limit; its tolerance is interval × burst.)
        let interval = micros(gcra.emission_interval).max(1);
        let tolerance = interval.saturating_mul(u64::from(limit.burst));
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(self.keyspace.rate_limit_key(tenant_id));
        invocation.arg(interval).arg(tolerance);
        // EVALSHA, falling back to EVAL (which caches the script) when the
        // server does not know it yet, e.g. after a restart.
        let reply = tokio::time::timeout(
            self.response_timeout,
            invocation.invoke_async::<(i64, i64)>(&mut connection),
        )
        .await;
        match reply {
            Ok(Ok((1, _))) => Ok(RateDecision::Allowed),
            Ok(Ok((_, retry_after))) => Ok(RateDecision::Limited {
                retry_after: Duration::from_micros(u64::try_from(retry_after).unwrap_or(0)),
            }),
            Ok(Err(error)) => Err(RateLimitError::Unavailable(format!(
                "rate limit check failed: {error}"
            ))),
            Err(_) => Err(RateLimitError::Unavailable(format!(
                "Redis did not answer a rate limit check within {:?}",
                self.response_timeout
            ))),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A reconnecting connection that fails fast while Redis is down, instead
/// of retrying for seconds inside a request.
pub(crate) fn lazy_connection(
    url: &str,
    response_timeout: Duration,
) -> Result<ConnectionManager, RateLimitError> {
    let client = Client::open(url).map_err(|error| {
        RateLimitError::Unavailable(format!("invalid Redis URL {url:?}: {error}"))
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(response_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|error| RateLimitError::Unavailable(format!("Redis connection: {error}")))
}
