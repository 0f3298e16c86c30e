//! The task that owns the fan-out's connection to Redis: connects (and
//! reconnects with backoff), sends the subscribe/unsubscribe commands the
//! registry asks for, in order, and checks the connection's health.
//! Everything the connection receives is handled by `Shared::on_push`.
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, ProtocolVersion, Value};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::registry::{Session, SubscriptionCommand};
use super::{PubSubMode, RedisFanOutConfig, RedisFanOutError, Shared, push_handler};

/// A client for `config.url` that speaks RESP3, which lets one connection
/// carry subscriptions and ordinary commands at once.
pub(super) fn client(config: &RedisFanOutConfig) -> Result<Client, RedisFanOutError> {
    let invalid = |error: redis::RedisError| RedisFanOutError::InvalidUrl {
        url: config.url.clone(),
        message: error.to_string(),
    };
    let info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(invalid)?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings)).map_err(invalid)
}

/// Runs sessions until `stop` is cancelled; then ends the last one.
pub(super) async fn run(
    shared: Arc<Shared>,
    client: Client,
    config: RedisFanOutConfig,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(config.reconnect_min_delay, config.reconnect_max_delay);
    let mut session_id = 0;
    let mut failed_attempts = 0u32;
    loop {
        session_id += 1;
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = open(&shared, &client, &config, session_id) => opened,
        };
        match opened {
            Ok(()) => {
                tracing::info!(url = %config.url, "Redis fan-out connected");
                backoff.reset();
                failed_attempts = 0;
                let reason = tokio::select! {
                    () = stop.cancelled() => {
                        shared.end_session(session_id, "the fan-out shut down");
                        return;
                    }
                    reason = serve(&shared, &config, session_id) => reason,
                };
                shared.end_session(session_id, &reason);
            }
            Err(error) => {
                failed_attempts += 1;
                // Loud once per outage, quiet while it lasts.
                if failed_attempts == 1 {
                    tracing::warn!(url = %config.url, %error, "cannot connect to Redis; retrying");
                } else {
                    tracing::debug!(url = %config.url, %error, failed_attempts, "cannot connect to Redis");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Connects, finds out which pub/sub the server has, and makes the new
/// connection the registry's current session.
async fn open(
    shared: &Arc<Shared>,
    client: &Client,
    config: &RedisFanOutConfig,
    session_id: u64,
) -> Result<(), redis::RedisError> {
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_push_sender(push_handler(shared, session_id));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&connection_config)
        .await?;
    let mode = match config.mode {
        Some(mode) => mode,
        None => detect_mode(&mut connection, config).await?,
    };
    tracing::debug!(?mode, "Redis fan-out pub/sub mode");
    shared
        .registry()
        .start_session(Session::new(session_id, connection, mode));
    shared.connected.send_replace(true);
    Ok(())
}

/// Sharded pub/sub if the server knows `SPUBLISH` (Redis 7+), else classic.
async fn detect_mode(
    connection: &mut MultiplexedConnection,
    config: &RedisFanOutConfig,
) -> Result<PubSubMode, redis::RedisError> {
    let probe = redis::cmd("SPUBLISH")
        .arg(config.keyspace.fanout_probe_channel())
        .arg("")
        .query_async::<i64>(connection)
        .await;
    match probe {
        Ok(_) => Ok(PubSubMode::Sharded),
        // The server answered with an error (unknown command): it is older.
        Err(error) if error.code().is_some() => Ok(PubSubMode::Classic),
        Err(error) => Err(error),
    }
}

/// Serves a session until its connection fails; returns why.
async fn serve(shared: &Shared, config: &RedisFanOutConfig, session_id: u64) -> String {
    let mut health_check = tokio::time::interval(config.health_check_interval);
    health_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    health_check.tick().await;
    loop {
        tokio::select! {
            () = shared.connection_lost.notified() => {
                // A wake-up left over from an earlier session is ignored.
                if shared.registry().current_session() != Some(session_id) {
                    return "the connection to Redis was lost".to_owned();
                }
            }
            () = shared.subscriptions_changed.notified() => {
                if let Err(reason) = send_subscription_commands(shared).await {
                    return reason;
                }
            }
            _ = health_check.tick() => {
                let Ok((mut connection, _)) = shared.registry().publisher() else {
                    return "the connection to Redis was lost".to_owned();
                };
                if let Err(error) = redis::cmd("PING").query_async::<Value>(&mut connection).await {
                    return format!("Redis health check failed: {error}");
                }
            }
        }
    }
}

/// Sends what the registry asks for as one pipeline, so a burst of
/// (re)subscriptions costs one round trip.
async fn send_subscription_commands(shared: &Shared) -> Result<(), String> {
    let (commands, connection) = {
        let mut registry = shared.registry();
        let commands = registry.take_commands();
        (commands, registry.publisher())
    };
    if commands.is_empty() {
        return Ok(());
    }
    let Ok((mut connection, mode)) = connection else {
        return Err("the connection to Redis was lost".to_owned());
    };
    let mut pipeline = redis::pipe();
    for command in &commands {
        let (name, channel) = match (command, mode) {
            (SubscriptionCommand::Subscribe(channel), PubSubMode::Sharded) => {
                ("SSUBSCRIBE", channel)
            }
            (SubscriptionCommand::Subscribe(channel), PubSubMode::Classic) => {
                ("SUBSCRIBE", channel)
            }
            (SubscriptionCommand::Unsubscribe(channel), PubSubMode::Sharded) => {
                ("SUNSUBSCRIBE", channel)
            }
            (SubscriptionCommand::Unsubscribe(channel), PubSubMode::Classic) => {
                ("UNSUBSCRIBE", channel)
            }
        };
        pipeline.cmd(name).arg(channel);
    }
    let replies = connection
        .send_packed_commands(&pipeline, 0, commands.len())
        .await
        .map_err(|error| format!("Redis (un)subscribe failed: {error}"))?;
    // A refused subscription (e.g. an ACL without channel rights) would
    // leave its subscribers waiting for a confirmation that never comes;
    // starting over tells them, and gets logged.
    match replies
        .iter()
        .find(|reply| matches!(reply, Value::ServerError(_)))
    {
        Some(refused) => Err(format!("Redis refused a subscription: {refused:?}")),
        None => Ok(()),
    }
}

/// Exponential backoff with jitter between reconnect attempts, so replicas
/// that lost Redis together do not reconnect in lockstep.
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.current.mul_f64(rand::random_range(0.5..=1.0));
        self.current = (self.current * 2).min(self.max);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(700));
        let mut backoff = Backoff::new(min, max);
        let delays: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        for (attempt, delay) in delays.iter().enumerate() {
            let ceiling = (min * 2u32.pow(attempt as u32)).min(max);
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "attempt {attempt}: {delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
