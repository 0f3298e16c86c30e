//! Send reservations in Redis: one key per tenant and client message id,
//! `SET NX` with a lifetime, holding `pending` while the send is appended
//! and then its outcome as JSON.
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::keyspace::RedisKeyspace;
use crate::ratelimit::lazy_connection;
use chatstream_core::log::LogPosition;
use chatstream_core::sends::{Reservation, ReservationError, SendReservations};
use chatstream_core::store::ClientMessageRecord;

const PENDING: &str = "pending";

#[derive(Debug, Clone)]
pub struct RedisSendReservationsConfig {
    pub url: String,
    pub keyspace: RedisKeyspace,
    /// How long an outcome is kept for retries (the store keeps it for good).
    pub lifetime: Duration,
    /// How long a `pending` reservation lives if its gateway dies mid-send.
    pub pending_lifetime: Duration,
    pub response_timeout: Duration,
}

impl RedisSendReservationsConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            keyspace: RedisKeyspace::default(),
            lifetime: Duration::from_secs(600),
            pending_lifetime: Duration::from_secs(30),
            response_timeout: Duration::from_secs(1),
        }
    }

    pub fn with_keyspace(mut self, keyspace: RedisKeyspace) -> Self {
        self.keyspace = keyspace;
        self
    }
}

#[derive(Clone)]
pub struct RedisSendReservations {
    connection: ConnectionManager,
    config: RedisSendReservationsConfig,
}

/// The stored outcome (the tenant and id are in the key).
#[derive(Serialize, Deserialize)]
struct Outcome {
    conversation_id: String,
    event_id: String,
    partition: u32,
    offset: u64,
}

impl RedisSendReservations {
    /// Connects lazily; must be called on a Tokio runtime.
    pub fn new(config: RedisSendReservationsConfig) -> Result<Self, ReservationError> {
        let connection = lazy_connection(&config.url, config.response_timeout)
            .map_err(|error| ReservationError::Unavailable(error.to_string()))?;
        Ok(Self { connection, config })
    }

    fn key(&self, tenant_id: &str, client_message_id: &str) -> String {
        self.config
            .keyspace
            .client_message_key(tenant_id, client_message_id)
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, ReservationError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(
            self.config.response_timeout,
            command.query_async(&mut connection),
        )
        .await
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ReservationError::Unavailable(error.to_string())),
            Err(_) => Err(ReservationError::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.config.response_timeout
            ))),
        }
    }

    fn parse(
        tenant_id: &str,
        client_message_id: &str,
        value: Option<String>,
    ) -> Result<Reservation, ReservationError> {
        match value.as_deref() {
            None => Ok(Reservation::Reserved),
            Some(PENDING) => Ok(Reservation::InProgress),
            Some(json) => {
                let outcome: Outcome = serde_json::from_str(json)
                    .map_err(|error| ReservationError::Corrupt(error.to_string()))?;
                Ok(Reservation::Completed(ClientMessageRecord {
                    tenant_id: tenant_id.to_owned(),
                    client_message_id: client_message_id.to_owned(),
                    conversation_id: outcome.conversation_id,
                    event_id: outcome.event_id,
                    position: LogPosition {
                        partition: outcome.partition,
                        offset: outcome.offset,
                    },
                }))
            }
        }
    }
}

#[async_trait]
impl SendReservations for RedisSendReservations {
    async fn reserve(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Reservation, ReservationError> {
        let key = self.key(tenant_id, client_message_id);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(PENDING)
            .arg("NX")
            .arg("PX")
            .arg(self.config.pending_lifetime.as_millis() as u64)
            .arg("GET");
        // SET ... NX GET (Redis 7): the value that was there, nil when we set it.
        let previous: Option<String> = self.query(&set).await?;
        Self::parse(tenant_id, client_message_id, previous)
    }

    async fn lookup(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<Reservation, ReservationError> {
        let value: Option<String> = self
            .query(redis::cmd("GET").arg(self.key(tenant_id, client_message_id)))
            .await?;
        Self::parse(tenant_id, client_message_id, value)
    }

    async fn complete(&self, record: &ClientMessageRecord) -> Result<(), ReservationError> {
        let outcome = Outcome {
            conversation_id: record.conversation_id.clone(),
            event_id: record.event_id.clone(),
            partition: record.position.partition,
            offset: record.position.offset,
        };
        let json = serde_json::to_string(&outcome)
            .map_err(|error| ReservationError::Corrupt(error.to_string()))?;
        let mut set = redis::cmd("SET");
        set.arg(self.key(&record.tenant_id, &record.client_message_id))
            .arg(json)
            .arg("PX")
            .arg(self.config.lifetime.as_millis() as u64);
        self.query::<()>(&set).await
    }

    async fn release(
        &self,
        tenant_id: &str,
        client_message_id: &str,
    ) -> Result<(), ReservationError> {
        // Only a pending reservation: an outcome stays for retries.
        let script = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let mut connection = self.connection.clone();
        let key = self.key(tenant_id, client_message_id);
        let mut invocation = script.key(key);
        invocation.arg(PENDING);
        match tokio::time::timeout(
            self.config.response_timeout,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(ReservationError::Unavailable(error.to_string())),
            Err(_) => Err(ReservationError::Unavailable("release timed out".into())),
        }
    }
}
