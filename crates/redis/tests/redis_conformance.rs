//! The Redis backends against the shared conformance suites, plus what only
//! a shared backend can be asked: two processes see each other's messages
//! exactly once, two rate limiters enforce one limit, two gateways share a
//! tenant's connection maximum (and a crashed one's share expires), and the
//! fan-out and limiter survive an outage of a Redis of the test's own.
//!
//! Uses the Redis at `CHATSTREAM_TEST_REDIS` (default
//! `redis://127.0.0.1:6379`), with a fresh key prefix per test. When it
//! cannot be reached the tests print "not run: ..." and return, unless
//! `CHATSTREAM_TEST_STRICT=1` (set by `scripts/test.sh`): then they fail.
//! The outage test starts its own `redis-server` on a free port; it never
//! stops the shared one.

use std::time::{Duration, Instant};

use chatstream_core::fanout::{FanOut, FanOutError, FanOutMessage, FanOutStream, TokenDelta};
use chatstream_core::ratelimit::connections::ConnectionCounter;
use chatstream_core::ratelimit::{RateDecision, RateLimit, RateLimitError, RateLimiter};
use chatstream_core::store::HistoryEntry;
use chatstream_redis::connections::{RedisConnectionCounter, RedisConnectionCounterConfig};
use chatstream_redis::fanout::{PubSubMode, RedisFanOut, RedisFanOutConfig};
use chatstream_redis::keyspace::RedisKeyspace;
use chatstream_redis::ratelimit::{RedisRateLimiter, RedisRateLimiterConfig};
use chatstream_test_support::conformance::ratelimit::{SATURATION_BURST, assert_rate, saturate};
use chatstream_test_support::conformance::{history_entry, unique, user_message};
use chatstream_test_support::ports::free_port;
use chatstream_test_support::redis_server::OwnRedis;
use chatstream_test_support::services;
use futures::StreamExt;

/// How long anything that should be prompt may take before a test fails.
const PROMPTLY: Duration = Duration::from_secs(5);

// --- Subjects -----------------------------------------------------------------

/// A key prefix no other test (or run) uses.
fn fresh_keyspace() -> RedisKeyspace {
    RedisKeyspace::new(unique("cstest"))
}

fn fanout_config(
    url: &str,
    keyspace: &RedisKeyspace,
    mode: Option<PubSubMode>,
) -> RedisFanOutConfig {
    RedisFanOutConfig {
        mode,
        // Below the lag case's 10,000 messages.
        subscriber_capacity: 256,
        health_check_interval: Duration::from_millis(500),
        reconnect_max_delay: Duration::from_millis(500),
        ..RedisFanOutConfig::new(url).with_keyspace(keyspace.clone())
    }
}

async fn connect_fanout(
    url: &str,
    keyspace: &RedisKeyspace,
    mode: Option<PubSubMode>,
) -> RedisFanOut {
    RedisFanOut::connect(fanout_config(url, keyspace, mode), PROMPTLY)
        .await
        .expect("connect the fan-out")
}

async fn redis_fanout(mode: Option<PubSubMode>) -> Option<(RedisFanOut, ())> {
    let url = services::redis()?;
    Some((connect_fanout(&url, &fresh_keyspace(), mode).await, ()))
}

fn rate_limiter(url: &str, keyspace: &RedisKeyspace) -> RedisRateLimiter {
    RedisRateLimiter::new(RedisRateLimiterConfig::new(url).with_keyspace(keyspace.clone()))
        .expect("rate limiter")
}

async fn redis_rate_limiter() -> Option<(RedisRateLimiter, ())> {
    let url = services::redis()?;
    Some((rate_limiter(&url, &fresh_keyspace()), ()))
}

chatstream_test_support::fanout_conformance_tests!(if_available: redis_fanout(None));
chatstream_test_support::ratelimit_conformance_tests!(if_available: redis_rate_limiter());

/// The same fan-out suite over classic pub/sub (what a Redis 6 gets).
mod classic_pubsub {
    use super::*;

    chatstream_test_support::fanout_conformance_tests!(if_available: redis_fanout(Some(PubSubMode::Classic)));
}

// --- Helpers -------------------------------------------------------------------

fn delta(index: u32) -> FanOutMessage {
    FanOutMessage::Delta(TokenDelta {
        conversation_id: "c".to_owned(),
        reply_to: "event-1".to_owned(),
        index,
        text: format!("token {index}"),
    })
}

fn committed(tenant: &str, offset: u64) -> FanOutMessage {
    FanOutMessage::Committed(history_entry(1, offset, user_message(tenant, "c", "hello")).into())
}

async fn next(stream: &mut FanOutStream, what: &str) -> Option<Result<FanOutMessage, FanOutError>> {
    tokio::time::timeout(PROMPTLY, stream.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PROMPTLY:?}"))
}

async fn next_message(stream: &mut FanOutStream, what: &str) -> FanOutMessage {
    match next(stream, what).await {
        Some(Ok(message)) => message,
        other => panic!("{what}: expected a message, got {other:?}"),
    }
}

/// Subscribers (connections) Redis counts on the conversation's channel.
async fn redis_subscribers(url: &str, channel: &str, mode: PubSubMode) -> i64 {
    let client = redis::Client::open(url).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let subcommand = match mode {
        PubSubMode::Sharded => "SHARDNUMSUB",
        PubSubMode::Classic => "NUMSUB",
    };
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg(subcommand)
        .arg(channel)
        .query_async(&mut connection)
        .await
        .expect("PUBSUB");
    count
}

/// Polls `condition` until it holds or `PROMPTLY` passes; for effects that
/// have no confirmation to wait for (another server's view of things).
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PROMPTLY;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {PROMPTLY:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- Two processes, one conversation -----------------------------------------

async fn two_processes_deliver_every_message_exactly_once(mode: Option<PubSubMode>) {
    let Some(url) = services::redis() else { return };
    let keyspace = fresh_keyspace();
    // Like two gateway processes: separate connections, one key prefix.
    let gateway_1 = connect_fanout(&url, &keyspace, mode).await;
    let gateway_2 = connect_fanout(&url, &keyspace, mode).await;
    let mode = gateway_1.pubsub_mode().expect("connected");
    let tenant = unique("tenant");

    let mut first_on_1 = gateway_1.subscribe(&tenant, "c").await.expect("subscribe");
    let mut second_on_1 = gateway_1.subscribe(&tenant, "c").await.expect("subscribe");
    let mut on_2 = gateway_2.subscribe(&tenant, "c").await.expect("subscribe");
    let channel = keyspace.fanout_channel(&tenant, "c");
    assert_eq!(gateway_1.watched_conversations(), 1);
    assert_eq!(
        redis_subscribers(&url, &channel, mode).await,
        2,
        "one Redis subscription per process, however many local subscribers"
    );

    let mut published: Vec<FanOutMessage> = (0..50).map(delta).collect();
    published.push(committed(&tenant, 7));
    for message in &published {
        gateway_2
            .publish(&tenant, "c", message.clone())
            .await
            .expect("publish on gateway 2");
    }
    let marker = delta(1_000);
    gateway_1
        .publish(&tenant, "c", marker.clone())
        .await
        .expect("publish on gateway 1");
    for (name, stream) in [
        ("first subscriber on gateway 1", &mut first_on_1),
        ("second subscriber on gateway 1", &mut second_on_1),
        ("subscriber on gateway 2", &mut on_2),
    ] {
        for (n, expected) in published.iter().enumerate() {
            assert_eq!(
                &next_message(stream, name).await,
                expected,
                "{name}: message {n} in publish order"
            );
        }
        assert_eq!(
            next_message(stream, name).await,
            marker,
            "{name}: nothing twice, then the other process's message"
        );
    }

    // The last local subscriber leaving releases the Redis subscription.
    drop((first_on_1, second_on_1));
    eventually("gateway 1 unsubscribes on Redis", || async {
        redis_subscribers(&url, &channel, mode).await == 1
    })
    .await;
    assert_eq!(gateway_1.watched_conversations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_every_message_exactly_once_sharded_when_available() {
    two_processes_deliver_every_message_exactly_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_every_message_exactly_once_classic() {
    two_processes_deliver_every_message_exactly_once(Some(PubSubMode::Classic)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_pubsub_is_used_when_the_server_has_it() {
    let Some(url) = services::redis() else { return };
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let server_has_spublish = redis::cmd("SPUBLISH")
        .arg(unique("probe"))
        .arg("")
        .query_async::<i64>(&mut connection)
        .await
        .is_ok();
    let (fanout, ()) = redis_fanout(None).await.expect("reachable");
    let expected = if server_has_spublish {
        PubSubMode::Sharded
    } else {
        PubSubMode::Classic
    };
    assert_eq!(fanout.pubsub_mode(), Some(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_on_the_channel_is_skipped() {
    let Some(url) = services::redis() else { return };
    let keyspace = fresh_keyspace();
    let fanout = connect_fanout(&url, &keyspace, None).await;
    let tenant = unique("tenant");
    let mut stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");

    let client = redis::Client::open(url.as_str()).expect("client");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let publish = match fanout.pubsub_mode() {
        Some(PubSubMode::Sharded) => "SPUBLISH",
        _ => "PUBLISH",
    };
    let channel = keyspace.fanout_channel(&tenant, "c");
    for garbage in [&b"not an envelope"[..], &[], &[1, 2, 0, 0, 0, 9]] {
        redis::cmd(publish)
            .arg(&channel)
            .arg(garbage)
            .query_async::<i64>(&mut connection)
            .await
            .expect("publish garbage");
    }
    fanout
        .publish(&tenant, "c", delta(1))
        .await
        .expect("publish");
    assert_eq!(
        next_message(&mut stream, "subscriber").await,
        delta(1),
        "the garbage is skipped, the subscription lives on"
    );
}

// --- One rate limit across gateways -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rate_limiters_enforce_one_limit() {
    let Some(url) = services::redis() else { return };
    let keyspace = fresh_keyspace();
    let (gateway_1, gateway_2) = (rate_limiter(&url, &keyspace), rate_limiter(&url, &keyspace));
    let tenant = unique("tenant");
    let limit = RateLimit {
        per_second: 200.0,
        burst: SATURATION_BURST,
    };
    let window = Duration::from_millis(1500);
    let ((allowed_1, elapsed_1), (allowed_2, elapsed_2)) = tokio::join!(
        saturate(&gateway_1, &tenant, limit, window),
        saturate(&gateway_2, &tenant, limit, window),
    );
    eprintln!(
        "two gateways: {allowed_1} + {allowed_2} allowed in {:?} at {}/s, burst {}",
        elapsed_1.max(elapsed_2),
        limit.per_second,
        limit.burst
    );
    assert!(allowed_1 > 0 && allowed_2 > 0, "both gateways got a share");
    assert_rate(
        allowed_1 + allowed_2,
        limit,
        elapsed_1.max(elapsed_2),
        "two gateways sharing one limit",
    );
}

// --- An outage of a Redis of our own -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_reported_and_recovered_from_by_itself() {
    let Some(mut server) = OwnRedis::start().await else {
        return;
    };
    let url = server.url();
    let keyspace = fresh_keyspace();
    let fanout = connect_fanout(&url, &keyspace, None).await;
    let limiter = rate_limiter(&url, &keyspace);
    let limit = RateLimit {
        per_second: 1000.0,
        burst: 1000,
    };
    let tenant = unique("tenant");
    assert_eq!(
        limiter.check(&tenant, limit).await,
        Ok(RateDecision::Allowed)
    );
    let mut stream = fanout.subscribe(&tenant, "c").await.expect("subscribe");
    fanout
        .publish(&tenant, "c", delta(0))
        .await
        .expect("publish");
    assert_eq!(
        next_message(&mut stream, "before the outage").await,
        delta(0)
    );

    server.kill().await;

    // Every live subscription is told, then ends.
    match next(&mut stream, "during the outage").await {
        Some(Err(FanOutError::Unavailable(reason))) => {
            eprintln!("subscriber told: {reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        next(&mut stream, "after Unavailable").await.is_none(),
        "the stream ends"
    );
    assert!(!fanout.is_connected());
    assert_eq!(fanout.watched_conversations(), 0);
    assert!(matches!(
        fanout.publish(&tenant, "c", delta(1)).await,
        Err(FanOutError::Unavailable(_))
    ));
    assert!(matches!(
        fanout.subscribe(&tenant, "c").await,
        Err(FanOutError::Unavailable(_))
    ));
    assert!(matches!(
        limiter.check(&tenant, limit).await,
        Err(RateLimitError::Unavailable(_))
    ));

    server.restart().await;
    let restarted = Instant::now();

    // Both reconnect by themselves.
    assert!(
        fanout.wait_until_connected(PROMPTLY).await,
        "the fan-out reconnects within {PROMPTLY:?}"
    );
    eprintln!(
        "fan-out reconnected {:?} after the restart",
        restarted.elapsed()
    );
    let mut stream = fanout
        .subscribe(&tenant, "c")
        .await
        .expect("subscribe again");
    fanout
        .publish(&tenant, "c", delta(2))
        .await
        .expect("publish again");
    assert_eq!(
        next_message(&mut stream, "after the outage").await,
        delta(2)
    );
    eventually("the rate limiter answers again", || async {
        limiter.check(&tenant, limit).await == Ok(RateDecision::Allowed)
    })
    .await;
    eprintln!(
        "rate limiter answered {:?} after the restart",
        restarted.elapsed()
    );
}

// --- Connection counts across gateways -------------------------------------------

fn connection_counter(
    url: &str,
    keyspace: &RedisKeyspace,
    gateway_id: &str,
    lease: Duration,
) -> RedisConnectionCounter {
    let config = RedisConnectionCounterConfig {
        lease,
        ..RedisConnectionCounterConfig::new(url, gateway_id).with_keyspace(keyspace.clone())
    };
    RedisConnectionCounter::new(config).expect("connection counter")
}

async fn redis_connection_counter() -> Option<(RedisConnectionCounter, ())> {
    let url = services::redis()?;
    let counter = connection_counter(
        &url,
        &fresh_keyspace(),
        "gateway-1",
        Duration::from_secs(30),
    );
    Some((counter, ()))
}

chatstream_test_support::connection_counter_conformance_tests!(if_available: redis_connection_counter());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_tenants_maximum() {
    let Some(url) = services::redis() else { return };
    let keyspace = fresh_keyspace();
    let lease = Duration::from_secs(30);
    let gateway_1 = connection_counter(&url, &keyspace, "gateway-1", lease);
    let gateway_2 = connection_counter(&url, &keyspace, "gateway-2", lease);
    let tenant = unique("tenant");
    for _ in 0..3 {
        assert!(gateway_1.acquire(&tenant, 5).await.expect("acquire"));
    }
    for _ in 0..2 {
        assert!(gateway_2.acquire(&tenant, 5).await.expect("acquire"));
    }
    assert!(!gateway_1.acquire(&tenant, 5).await.expect("acquire"));
    assert!(!gateway_2.acquire(&tenant, 5).await.expect("acquire"));
    gateway_1.release(&tenant).await.expect("release");
    assert!(
        gateway_2.acquire(&tenant, 5).await.expect("acquire"),
        "a connection closed on gateway 1 frees a slot on gateway 2"
    );
    gateway_2.renew().await.expect("renew");
    assert!(
        !gateway_1.acquire(&tenant, 5).await.expect("acquire"),
        "renewing keeps the counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_gateways_connections_stop_counting_after_its_lease() {
    let Some(url) = services::redis() else { return };
    let keyspace = fresh_keyspace();
    let tenant = unique("tenant");
    let lease = Duration::from_millis(400);
    let crashing = connection_counter(&url, &keyspace, "gateway-crashing", lease);
    let surviving = connection_counter(&url, &keyspace, "gateway-surviving", lease);
    assert!(crashing.acquire(&tenant, 3).await.expect("acquire"));
    assert!(crashing.acquire(&tenant, 3).await.expect("acquire"));
    assert!(surviving.acquire(&tenant, 3).await.expect("acquire"));
    // Several renewals of the survivor's lease pass while the crashed
    // gateway's counts still hold...
    let crashed_at = Instant::now();
    drop(crashing);
    assert!(!surviving.acquire(&tenant, 3).await.expect("acquire"));
    // ...until its lease runs out; the survivor's own connection still counts.
    eventually("the crashed gateway's lease runs out", || async {
        surviving.acquire(&tenant, 3).await.expect("acquire")
    })
    .await;
    let freed_after = crashed_at.elapsed();
    assert!(
        freed_after >= lease / 2,
        "freed after {freed_after:?}, before the {lease:?} lease could run out"
    );
    assert!(surviving.acquire(&tenant, 3).await.expect("acquire"));
    assert!(
        !surviving.acquire(&tenant, 3).await.expect("acquire"),
        "the survivor's 3 connections (renewed meanwhile) still count"
    );
}

/// Recent history in Redis streams in front of a store: the store suite
/// holds unchanged, and resumed reads come from Redis only when Redis
/// provably has every event after the position.
mod recent_history {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use chatstream_core::store::embedded::EmbeddedStore;
    use chatstream_core::store::{
        ClientMessageRecord, ConversationRecord, ProjectionStore, Recorded, StoreError,
    };
    use chatstream_redis::recent::{RecentHistoryConfig, RecentHistoryStore};
    use chatstream_schemas::pb::events::ConversationOpened;
    use chatstream_schemas::pb::events::event::Payload;
    use chatstream_test_support::conformance::{event_in, user_message};
    use tempfile::TempDir;

    use super::*;

    fn open(
        url: &str,
        keyspace: &RedisKeyspace,
        inner: Arc<dyn ProjectionStore>,
        max_entries: usize,
    ) -> RecentHistoryStore {
        let config = RecentHistoryConfig {
            max_entries,
            ..RecentHistoryConfig::new(url).with_keyspace(keyspace.clone())
        };
        RecentHistoryStore::new(inner, config).expect("recent history store")
    }

    async fn recent_history_store() -> Option<(RecentHistoryStore, TempDir)> {
        let url = services::redis()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let inner = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        Some((open(&url, &fresh_keyspace(), inner, 1000), dir))
    }

    chatstream_test_support::store_conformance_tests!(if_available: recent_history_store());

    /// The embedded store, counting the ranged history reads that reach it.
    struct CountingStore {
        inner: EmbeddedStore,
        ranged_reads: AtomicUsize,
        _dir: TempDir,
    }

    impl CountingStore {
        fn open() -> Arc<Self> {
            let dir = tempfile::tempdir().expect("temp dir");
            Arc::new(Self {
                inner: EmbeddedStore::open(dir.path()).expect("open store"),
                ranged_reads: AtomicUsize::new(0),
                _dir: dir,
            })
        }

        fn ranged_reads(&self) -> usize {
            self.ranged_reads.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl ProjectionStore for CountingStore {
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        async fn put_conversation(
            &self,
            record: &ConversationRecord,
        ) -> Result<ConversationRecord, StoreError> {
            self.inner.put_conversation(record).await
        }
        async fn get_conversation(
            &self,
            tenant_id: &str,
            conversation_id: &str,
        ) -> Result<Option<ConversationRecord>, StoreError> {
            self.inner
                .get_conversation(tenant_id, conversation_id)
                .await
        }
        async fn list_conversations(
            &self,
            tenant_id: &str,
            after_id: Option<&str>,
            limit: usize,
        ) -> Result<Vec<ConversationRecord>, StoreError> {
            self.inner
                .list_conversations(tenant_id, after_id, limit)
                .await
        }
        async fn append_history(&self, entry: &HistoryEntry) -> Result<Recorded, StoreError> {
            self.inner.append_history(entry).await
        }
        async fn read_history(
            &self,
            tenant_id: &str,
            conversation_id: &str,
            after_offset: Option<u64>,
            limit: usize,
        ) -> Result<Vec<HistoryEntry>, StoreError> {
            if after_offset.is_some() {
                self.ranged_reads.fetch_add(1, Ordering::SeqCst);
            }
            self.inner
                .read_history(tenant_id, conversation_id, after_offset, limit)
                .await
        }
        async fn claim_client_message(
            &self,
            record: &ClientMessageRecord,
        ) -> Result<ClientMessageRecord, StoreError> {
            self.inner.claim_client_message(record).await
        }
        async fn get_client_message(
            &self,
            tenant_id: &str,
            client_message_id: &str,
        ) -> Result<Option<ClientMessageRecord>, StoreError> {
            self.inner
                .get_client_message(tenant_id, client_message_id)
                .await
        }
        async fn is_processed(&self, scope: &str, event_id: &str) -> Result<bool, StoreError> {
            self.inner.is_processed(scope, event_id).await
        }
        async fn mark_processed(&self, scope: &str, event_id: &str) -> Result<(), StoreError> {
            self.inner.mark_processed(scope, event_id).await
        }
    }

    fn opened(tenant_id: &str, conversation_id: &str) -> chatstream_schemas::Event {
        event_in(
            tenant_id,
            conversation_id,
            Payload::ConversationOpened(ConversationOpened::default()),
        )
    }

    /// A conversation of `messages` events after its opening, at offsets
    /// 0, 2, 4, ... (other conversations hold the odd ones), recorded in
    /// `store`; returns the entries, for replaying.
    async fn fill(
        store: &RecentHistoryStore,
        tenant: &str,
        conversation: &str,
        messages: u64,
    ) -> Vec<HistoryEntry> {
        let mut entries = Vec::new();
        for n in 0..=messages {
            let event = if n == 0 {
                opened(tenant, conversation)
            } else {
                user_message(tenant, conversation, &format!("message {n}"))
            };
            let entry = history_entry(2, n * 2, event);
            store.append_history(&entry).await.expect("append");
            entries.push(entry);
        }
        entries
    }

    fn offsets(entries: &[HistoryEntry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.position.offset).collect()
    }

    #[tokio::test]
    async fn resumed_reads_come_from_redis_and_match_the_store() {
        let Some(url) = services::redis() else { return };
        let inner = CountingStore::open();
        let store = open(&url, &fresh_keyspace(), inner.clone(), 1000);
        let entries = fill(&store, "acme", "c1", 5).await;
        // A replay of the log adds nothing.
        for entry in &entries {
            store.append_history(entry).await.expect("replay");
        }

        let resumed = store
            .read_history("acme", "c1", Some(3), 100)
            .await
            .unwrap();
        assert_eq!(offsets(&resumed), [4, 6, 8, 10]);
        assert_eq!(inner.ranged_reads(), 0, "served from Redis");
        let from_store = inner
            .inner
            .read_history("acme", "c1", Some(3), 100)
            .await
            .unwrap();
        assert_eq!(resumed, from_store, "Redis returns what the store holds");
        let paged = store.read_history("acme", "c1", Some(4), 2).await.unwrap();
        assert_eq!(offsets(&paged), [6, 8], "limit holds");
        let caught_up = store
            .read_history("acme", "c1", Some(10), 100)
            .await
            .unwrap();
        assert!(caught_up.is_empty());
        assert_eq!(inner.ranged_reads(), 0);
        let other_tenant = store
            .read_history("globex", "c1", Some(0), 100)
            .await
            .unwrap();
        assert!(
            other_tenant.is_empty(),
            "another tenant's conversation of the same id is not shared"
        );
    }

    #[tokio::test]
    async fn a_stream_that_lost_events_sends_the_read_to_the_store() {
        let Some(url) = services::redis() else { return };
        let inner = CountingStore::open();
        let keyspace = fresh_keyspace();
        let store = open(&url, &keyspace, inner.clone(), 1000);
        fill(&store, "acme", "c1", 3).await;
        // Redis loses the stream (a restart without persistence), then a new event arrives.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let key = keyspace.recent_history_key("acme", "c1");
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        store
            .append_history(&history_entry(
                2,
                8,
                user_message("acme", "c1", "after the loss"),
            ))
            .await
            .unwrap();

        let resumed = store
            .read_history("acme", "c1", Some(2), 100)
            .await
            .unwrap();
        assert_eq!(offsets(&resumed), [4, 6, 8], "no gap: the store filled in");
        assert_eq!(inner.ranged_reads(), 1, "the read went to the store");
        let recent = store
            .read_history("acme", "c1", Some(8), 100)
            .await
            .unwrap();
        assert!(recent.is_empty());
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let gone = store
            .read_history("acme", "c1", Some(6), 100)
            .await
            .unwrap();
        assert_eq!(
            offsets(&gone),
            [8],
            "a missing stream sends the read to the store"
        );
    }

    #[tokio::test]
    async fn positions_older_than_the_kept_entries_are_read_from_the_store() {
        let Some(url) = services::redis() else { return };
        let inner = CountingStore::open();
        let store = open(&url, &fresh_keyspace(), inner.clone(), 10);
        fill(&store, "acme", "c1", 400).await;

        let recent = store
            .read_history("acme", "c1", Some(790), 100)
            .await
            .unwrap();
        assert_eq!(offsets(&recent), [792, 794, 796, 798, 800]);
        assert_eq!(inner.ranged_reads(), 0, "recent positions come from Redis");
        let old = store.read_history("acme", "c1", Some(2), 3).await.unwrap();
        assert_eq!(
            offsets(&old),
            [4, 6, 8],
            "trimmed positions come from the store"
        );
        assert_eq!(inner.ranged_reads(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_redis_reads_go_to_the_store_and_writes_fail_retryably() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        // Nothing listens on a port just released.
        let port = free_port();
        let store = open(
            &format!("redis://127.0.0.1:{port}"),
            &fresh_keyspace(),
            inner.clone(),
            1000,
        );
        let entry = history_entry(0, 0, opened("acme", "c1"));
        let error = store.append_history(&entry).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        let read = store.read_history("acme", "c1", Some(0), 10).await.unwrap();
        assert!(read.is_empty());
        let all = store.read_history("acme", "c1", None, 10).await.unwrap();
        assert_eq!(
            offsets(&all),
            [0],
            "the store has what the failed call recorded"
        );
    }
}

/// Client message ids reserved in Redis across gateways.
mod send_reservations {
    use chatstream_core::log::LogPosition;
    use chatstream_core::sends::{Reservation, SendReservations};
    use chatstream_core::store::ClientMessageRecord;
    use chatstream_redis::sends::{RedisSendReservations, RedisSendReservationsConfig};

    use super::*;

    fn reservations(url: &str) -> RedisSendReservations {
        let config = RedisSendReservationsConfig::new(url).with_keyspace(fresh_keyspace());
        RedisSendReservations::new(config).expect("reservations")
    }

    fn outcome(tenant_id: &str, client_message_id: &str) -> ClientMessageRecord {
        ClientMessageRecord {
            tenant_id: tenant_id.to_owned(),
            client_message_id: client_message_id.to_owned(),
            conversation_id: "c1".to_owned(),
            event_id: "e1".to_owned(),
            position: LogPosition {
                partition: 3,
                offset: 42,
            },
        }
    }

    #[tokio::test]
    async fn the_first_send_reserves_and_later_ones_learn_its_outcome() {
        let Some(url) = services::redis() else { return };
        let sends = reservations(&url);
        assert_eq!(
            sends.reserve("acme", "m1").await.unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            sends.reserve("acme", "m1").await.unwrap(),
            Reservation::InProgress
        );
        assert_eq!(
            sends.lookup("acme", "m1").await.unwrap(),
            Reservation::InProgress
        );
        assert_eq!(
            sends.reserve("globex", "m1").await.unwrap(),
            Reservation::Reserved,
            "another tenant's id of the same name is its own"
        );
        sends.complete(&outcome("acme", "m1")).await.unwrap();
        let expected = Reservation::Completed(outcome("acme", "m1"));
        assert_eq!(sends.reserve("acme", "m1").await.unwrap(), expected);
        sends.release("acme", "m1").await.unwrap();
        assert_eq!(
            sends.lookup("acme", "m1").await.unwrap(),
            expected,
            "an outcome outlives a release"
        );
    }

    #[tokio::test]
    async fn a_failed_send_releases_its_reservation_for_the_retry() {
        let Some(url) = services::redis() else { return };
        let sends = reservations(&url);
        assert_eq!(
            sends.reserve("acme", "m2").await.unwrap(),
            Reservation::Reserved
        );
        sends.release("acme", "m2").await.unwrap();
        assert_eq!(
            sends.lookup("acme", "m2").await.unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            sends.reserve("acme", "m2").await.unwrap(),
            Reservation::Reserved
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_concurrent_reservations_exactly_one_wins() {
        let Some(url) = services::redis() else { return };
        let sends = reservations(&url);
        let attempts = (0..20).map(|_| {
            let sends = sends.clone();
            tokio::spawn(async move { sends.reserve("acme", "m3").await.unwrap() })
        });
        let mut won = 0;
        for attempt in attempts {
            match attempt.await.unwrap() {
                Reservation::Reserved => won += 1,
                Reservation::InProgress => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(won, 1);
    }
}
