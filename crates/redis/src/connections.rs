//! Connection counts shared by every gateway, in Redis: per tenant, one hash
//! with a field per gateway holding that gateway's count and a lease.
//!
//! Why not one `INCR`/`DECR` counter per tenant: a gateway that crashes
//! never sends its `DECR`s, and its connections would count forever. Here a
//! gateway's share stops counting when its lease runs out, and a live
//! gateway renews its leases (every third of the lease) by writing its own
//! count, which it knows exactly; so a release that could not reach Redis
//! is corrected by the next renewal, and a crashed gateway's share is gone
//! one lease later. Admission (`acquire.lua`) sums the live shares and adds
//! this gateway's in one atomic script on the server's clock.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::keyspace::RedisKeyspace;
use crate::ratelimit::lazy_connection;
use chatstream_core::ratelimit::RateLimitError;
use chatstream_core::ratelimit::connections::ConnectionCounter;

#[derive(Debug, Clone)]
pub struct RedisConnectionCounterConfig {
    pub url: String,
    pub keyspace: RedisKeyspace,
    /// Unique per gateway process (e.g. pod name plus a random suffix).
    pub gateway_id: String,
    /// How long a gateway's counts outlive its last renewal.
    pub lease: Duration,
    pub response_timeout: Duration,
}

impl RedisConnectionCounterConfig {
    pub fn new(url: impl Into<String>, gateway_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            keyspace: RedisKeyspace::default(),
            gateway_id: gateway_id.into(),
            lease: Duration::from_secs(30),
            response_timeout: Duration::from_secs(1),
        }
    }

    pub fn with_keyspace(mut self, keyspace: RedisKeyspace) -> Self {
        self.keyspace = keyspace;
        self
    }
}

/// One gateway's view of the shared connection counts. Renews its leases in
/// the background until dropped. Cloning shares it.
#[derive(Clone)]
pub struct RedisConnectionCounter {
    inner: Arc<Inner>,
    _stop_renewal: Arc<DropGuard>,
}

struct Inner {
    connection: ConnectionManager,
    keyspace: RedisKeyspace,
    gateway_id: String,
    lease_ms: u64,
    response_timeout: Duration,
    acquire: Script,
    set: Script,
    /// This gateway's open connections per tenant: what its Redis entries
    /// are renewed from. Held across the Redis call, so this gateway's
    /// writes for a tenant reach Redis in order.
    open: Mutex<HashMap<String, u32>>,
}

impl RedisConnectionCounter {
    /// Connects lazily; must be called on a Tokio runtime.
    pub fn new(config: RedisConnectionCounterConfig) -> Result<Self, RateLimitError> {
        let lease_ms = u64::try_from(config.lease.as_millis())
            .ok()
            .filter(|lease| *lease > 0)
            .ok_or_else(|| {
                RateLimitError::InvalidLimit(format!(
                    "connection lease {:?} must be at least 1 ms",
                    config.lease
                ))
            })?;
        let inner = Arc::new(Inner {
            connection: lazy_connection(&config.url, config.response_timeout)?,
            keyspace: config.keyspace,
            gateway_id: config.gateway_id,
            lease_ms,
            response_timeout: config.response_timeout,
            acquire: Script::new(include_str!("acquire.lua")),
            set: Script::new(include_str!("set.lua")),
            open: Mutex::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(renew_leases(
            Arc::downgrade(&inner),
            config.lease / 3,
            stop.clone(),
        ));
        Ok(Self {
            inner,
            _stop_renewal: Arc::new(stop.drop_guard()),
        })
    }

    /// Writes this gateway's count of every tenant it holds connections of,
    /// renewing their leases. Runs periodically by itself.
    pub async fn renew(&self) -> Result<(), RateLimitError> {
        self.inner.renew().await
    }
}

#[async_trait]
impl ConnectionCounter for RedisConnectionCounter {
    async fn acquire(&self, tenant_id: &str, max: u32) -> Result<bool, RateLimitError> {
        let inner = &self.inner;
        let mut open = inner.open.lock().await;
        let mine = open.get(tenant_id).copied().unwrap_or(0) + 1;
        let mut invocation = inner.acquire.key(inner.keyspace.connections_key(tenant_id));
        invocation
            .arg(&inner.gateway_id)
            .arg(mine)
            .arg(max)
            .arg(inner.lease_ms);
        let mut connection = inner.connection.clone();
        let counted: i64 = inner
            .within_timeout(invocation.invoke_async(&mut connection))
            .await?;
        if counted == 1 {
            open.insert(tenant_id.to_owned(), mine);
        }
        Ok(counted == 1)
    }

    async fn release(&self, tenant_id: &str) -> Result<(), RateLimitError> {
        let mut open = self.inner.open.lock().await;
        let Some(count) = open.get(tenant_id).copied() else {
            return Ok(());
        };
        // Local first: if Redis cannot be told now, the next renewal tells it.
        let mine = count.saturating_sub(1);
        if mine == 0 {
            open.remove(tenant_id);
        } else {
            open.insert(tenant_id.to_owned(), mine);
        }
        self.inner.write_count(tenant_id, mine).await
    }
}

impl Inner {
    async fn write_count(&self, tenant_id: &str, count: u32) -> Result<(), RateLimitError> {
        let mut invocation = self.set.key(self.keyspace.connections_key(tenant_id));
        invocation
            .arg(&self.gateway_id)
            .arg(count)
            .arg(self.lease_ms);
        let mut connection = self.connection.clone();
        self.within_timeout(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(drop)
    }

    async fn renew(&self) -> Result<(), RateLimitError> {
        let tenants: Vec<String> = self.open.lock().await.keys().cloned().collect();
        let mut first_error = None;
        for tenant in tenants {
            // One tenant at a time under the lock, so an acquire or release
            // in between is neither blocked for long nor overwritten.
            let open = self.open.lock().await;
            let Some(count) = open.get(&tenant).copied() else {
                continue;
            };
            if let Err(error) = self.write_count(&tenant, count).await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn within_timeout<T>(
        &self,
        request: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RateLimitError> {
        match tokio::time::timeout(self.response_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(RateLimitError::Unavailable(format!(
                "connection count failed: {error}"
            ))),
            Err(_) => Err(RateLimitError::Unavailable(format!(
                "Redis did not answer a connection count within {:?}",
                self.response_timeout
            ))),
        }
    }
}

async fn renew_leases(inner: std::sync::Weak<Inner>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(error) = inner.renew().await {
            tracing::warn!(%error, "could not renew connection count leases");
        }
    }
}
