//! The Redis fan-out: a conversation's deltas and committed events go to one
//! Redis pub/sub channel, so a subscriber on any gateway replica receives
//! what any processor published.
//!
//! Each process keeps ONE connection to Redis (RESP3, so publishing and
//! subscriptions share it) and multiplexes its local subscribers onto it:
//! the first local subscriber of a conversation subscribes on Redis, the
//! last one to leave unsubscribes (`registry`). Sharded pub/sub
//! (`SPUBLISH`/`SSUBSCRIBE`, Redis 7+) is used when the server has it (on a
//! cluster it keeps a channel's traffic on the shard of the tenant's hash
//! slot instead of broadcasting it to every node), classic pub/sub
//! otherwise. This client talks to one node; cluster-aware routing is not
//! built yet. When the connection drops, every subscription ends with
//! `FanOutError::Unavailable` (its subscriber re-subscribes and catches up
//! from history) and the `session` task reconnects with backoff.
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::registry::{ChannelState, Registry};
use crate::keyspace::RedisKeyspace;
use chatstream_core::fanout::{FanOut, FanOutError, FanOutMessage, FanOutStream};

mod envelope;
mod registry;
mod session;

/// Which pub/sub commands carry the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubMode {
    /// `SPUBLISH`/`SSUBSCRIBE` (Redis 7+): a channel lives on the shard of
    /// its hash slot instead of being broadcast to every cluster node.
    Sharded,
    /// `PUBLISH`/`SUBSCRIBE`.
    Classic,
}

#[derive(Debug, Clone)]
pub struct RedisFanOutConfig {
    /// e.g. `redis://127.0.0.1:6379/0`. RESP3 is always used (Redis 6+).
    pub url: String,
    pub keyspace: RedisKeyspace,
    /// `None`: sharded when the server supports it, classic otherwise.
    pub mode: Option<PubSubMode>,
    /// Messages a subscriber may fall behind by before it is told it lagged.
    pub subscriber_capacity: usize,
    /// How long a command (publish, health check) may take, and how long
    /// `subscribe` waits for the server's confirmation, before failing.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
    /// How often an idle connection is checked with `PING`, so a silently
    /// dead one (no FIN, e.g. a network partition) is noticed.
    pub health_check_interval: Duration,
    pub reconnect_min_delay: Duration,
    pub reconnect_max_delay: Duration,
}

impl RedisFanOutConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            keyspace: RedisKeyspace::default(),
            mode: None,
            subscriber_capacity: 1024,
            response_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            health_check_interval: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_secs(5),
        }
    }

    pub fn with_keyspace(mut self, keyspace: RedisKeyspace) -> Self {
        self.keyspace = keyspace;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisFanOutError {
    #[error("invalid Redis URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("Redis at {url} did not answer within {waited:?}")]
    Unreachable { url: String, waited: Duration },
}

/// Fan-out through Redis pub/sub, for several gateway and processor replicas.
/// Cloning is cheap and shares the connection; the connection closes (and
/// every subscription ends) when the last clone is dropped.
#[derive(Clone)]
pub struct RedisFanOut {
    shared: Arc<Shared>,
    _stop_session: Arc<DropGuard>,
}

/// State shared by the handles, the subscriptions, the session task and the
/// connection's push handler.
struct Shared {
    registry: Mutex<Registry<MultiplexedConnection>>,
    keyspace: RedisKeyspace,
    subscribe_timeout: Duration,
    /// Wakes the session task to send subscribe/unsubscribe commands.
    subscriptions_changed: Notify,
    /// Wakes the session task: the connection reported that it closed.
    connection_lost: Notify,
    /// Follows the registry's session, for waiting until connected.
    connected: watch::Sender<bool>,
}

impl RedisFanOut {
    /// Starts the fan-out; it connects in the background (and reconnects
    /// whenever the connection drops). Until connected, `publish` and
    /// `subscribe` fail with `Unavailable`. Must be called on a Tokio runtime.
    pub fn new(config: RedisFanOutConfig) -> Result<Self, RedisFanOutError> {
        let client = session::client(&config)?;
        let shared = Arc::new(Shared {
            registry: Mutex::new(Registry::new(config.subscriber_capacity)),
            keyspace: config.keyspace.clone(),
            subscribe_timeout: config.response_timeout,
            subscriptions_changed: Notify::new(),
            connection_lost: Notify::new(),
            connected: watch::Sender::new(false),
        });
        let stop = CancellationToken::new();
        tokio::spawn(session::run(
            Arc::clone(&shared),
            client,
            config,
            stop.clone(),
        ));
        Ok(Self {
            shared,
            _stop_session: Arc::new(stop.drop_guard()),
        })
    }

    /// `new`, then waits up to `wait` for the first connection.
    pub async fn connect(
        config: RedisFanOutConfig,
        wait: Duration,
    ) -> Result<Self, RedisFanOutError> {
        let url = config.url.clone();
        let fanout = Self::new(config)?;
        if fanout.wait_until_connected(wait).await {
            Ok(fanout)
        } else {
            Err(RedisFanOutError::Unreachable { url, waited: wait })
        }
    }

    /// Whether the connection to Redis is up (for readiness).
    pub fn is_connected(&self) -> bool {
        // The registry, not `connected`: it changes in the same step that
        // ends or starts the subscriptions.
        self.shared.registry().mode().is_some()
    }

    /// Waits up to `wait` for the connection to be up; returns whether it is.
    pub async fn wait_until_connected(&self, wait: Duration) -> bool {
        let mut connected = self.shared.connected.subscribe();
        tokio::time::timeout(wait, connected.wait_for(|up| *up))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// The pub/sub commands in use, while connected.
    pub fn pubsub_mode(&self) -> Option<PubSubMode> {
        self.shared.registry().mode()
    }

    /// Conversations this process holds a Redis subscription for (for metrics).
    pub fn watched_conversations(&self) -> usize {
        self.shared.registry().watched_conversations()
    }
}

#[async_trait]
impl FanOut for RedisFanOut {
    async fn publish(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        message: FanOutMessage,
    ) -> Result<(), FanOutError> {
        let channel = self
            .shared
            .keyspace
            .fanout_channel(tenant_id, conversation_id);
        let payload = envelope::encode(&message);
        let (mut connection, mode) = self.shared.registry().publisher()?;
        let command = match mode {
            PubSubMode::Sharded => "SPUBLISH",
            PubSubMode::Classic => "PUBLISH",
        };
        redis::cmd(command)
            .arg(&channel)
            .arg(payload)
            .query_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(|error| FanOutError::Unavailable(format!("publish to Redis failed: {error}")))
    }

    async fn subscribe(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<FanOutStream, FanOutError> {
        let channel = self
            .shared
            .keyspace
            .fanout_channel(tenant_id, conversation_id);
        let joined = self
            .shared
            .registry()
            .join(&channel, tenant_id, conversation_id)?;
        if joined.needs_subscribe {
            self.shared.subscriptions_changed.notify_one();
        }
        // Built before waiting, so a cancelled or failed subscribe still
        // leaves (and unsubscribes when it was the only subscriber).
        let subscription = Subscription {
            messages: BroadcastStream::new(joined.messages),
            state: joined.state,
            finished: false,
            _leave: Leave {
                shared: Arc::clone(&self.shared),
                channel,
                generation: joined.generation,
            },
        };
        let mut state = subscription.state.clone();
        let settled = tokio::time::timeout(
            self.shared.subscribe_timeout,
            state.wait_for(|state| *state != ChannelState::Subscribing),
        )
        .await;
        let outcome = match settled {
            Ok(Ok(state)) => state.clone(),
            Ok(Err(_)) => ChannelState::Lost("the fan-out shut down".to_owned()),
            Err(_) => ChannelState::Lost(format!(
                "Redis did not confirm the subscription within {:?}",
                self.shared.subscribe_timeout
            )),
        };
        match outcome {
            ChannelState::Active => Ok(Box::pin(subscription)),
            ChannelState::Lost(reason) => Err(FanOutError::Unavailable(reason)),
            ChannelState::Subscribing => Err(FanOutError::Unavailable(
                "subscription still pending".to_owned(),
            )),
        }
    }

    async fn ping(&self) -> Result<(), FanOutError> {
        if self.is_connected() {
            Ok(())
        } else {
            Err(FanOutError::Unavailable(
                "not connected to Redis (reconnecting)".into(),
            ))
        }
    }
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry<MultiplexedConnection>> {
        // Every registry update leaves it consistent, even one that
        // panicked half-way through a caller; keep serving.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by the connection for every push it receives (messages,
    /// subscription confirmations, disconnection), in the order they came
    /// off the socket; it must not block.
    fn on_push(&self, session_id: u64, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = push.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    tracing::warn!("skipping a pub/sub message without channel or payload");
                    return;
                };
                let (Some(channel), Value::BulkString(payload)) = (text(channel), payload) else {
                    tracing::warn!("skipping a pub/sub message of unexpected shape");
                    return;
                };
                match envelope::decode(&payload) {
                    Ok(message) => self.registry().deliver(session_id, &channel, message),
                    Err(error) => {
                        metrics::counter!("chatstream_fanout_malformed_messages_total")
                            .increment(1);
                        tracing::warn!(%channel, %error, "skipping a malformed fan-out message");
                    }
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                if let Some(channel) = push.data.into_iter().next().and_then(text) {
                    self.registry().confirm_subscribed(session_id, &channel);
                }
            }
            PushKind::Disconnection => {
                self.end_session(session_id, "the connection to Redis was lost");
            }
            _ => {}
        }
    }

    /// Ends every subscription of the session if it is still current.
    fn end_session(&self, session_id: u64, reason: &str) {
        if self.registry().end_session(session_id, reason) {
            self.connected.send_replace(false);
            self.connection_lost.notify_one();
            tracing::warn!(reason, "Redis fan-out disconnected; subscriptions ended");
        }
    }
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// The push handler the connection calls; holds the shared state weakly,
/// since the connection itself lives inside it.
fn push_handler(
    shared: &Arc<Shared>,
    session_id: u64,
) -> impl Fn(PushInfo) -> Result<(), Infallible> + Send + Sync + 'static {
    let shared = Arc::downgrade(shared);
    move |push| {
        if let Some(shared) = shared.upgrade() {
            shared.on_push(session_id, push);
        }
        Ok(())
    }
}

/// One local subscriber's stream. Field order matters: the receiver inside
/// `messages` is dropped before `Leave` counts the receivers left.
struct Subscription {
    messages: BroadcastStream<Arc<FanOutMessage>>,
    state: watch::Receiver<ChannelState>,
    finished: bool,
    _leave: Leave,
}

impl Stream for Subscription {
    type Item = Result<FanOutMessage, FanOutError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.messages).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(message))) => Poll::Ready(Some(Ok(Arc::unwrap_or_clone(message)))),
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(skipped)))) => {
                Poll::Ready(Some(Err(FanOutError::Lagged { skipped })))
            }
            // The registry dropped the channel: the subscription is over,
            // and the subscriber must hear why before the stream ends.
            Poll::Ready(None) => {
                self.finished = true;
                let reason = match &*self.state.borrow() {
                    ChannelState::Lost(reason) => reason.clone(),
                    _ => "the Redis subscription ended".to_owned(),
                };
                Poll::Ready(Some(Err(FanOutError::Unavailable(reason))))
            }
        }
    }
}

/// Leaves the conversation when a subscriber's stream is dropped.
struct Leave {
    shared: Arc<Shared>,
    channel: String,
    generation: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if self.shared.registry().leave(&self.channel, self.generation) {
            self.shared.subscriptions_changed.notify_one();
        }
    }
}
