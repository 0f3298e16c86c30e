//! The Kafka event log against the shared log conformance suite, plus what
//! only Kafka can be asked: the record as other Kafka clients see it (key,
//! CloudEvents headers), murmur2 agreement with librdkafka's own
//! partitioner, topic creation, consumer-group sharing and takeover, and
//! the processor runner's dead letters on the dead-letter topic.
//!
//! Uses the broker at `CHATSTREAM_TEST_KAFKA` (default `127.0.0.1:9092`),
//! with a fresh topic per test (the suite asserts exact offsets). When it
//! cannot be reached the tests print "not run: ..." and return, unless
//! `CHATSTREAM_TEST_STRICT=1` (set by `scripts/test.sh`): then they fail.
//!
//! Test topics are named `chatstream-test-*` and kept: deleting a topic while
//! other tests produce crashes tansu 0.6.0's SQLite storage for good (its
//! idempotent-produce check panics with "more or less than one row"), and
//! `scripts/test.sh` throws that broker away after the run anyway. Against a
//! cluster of your own, `CHATSTREAM_TEST_KAFKA_DELETE_TOPICS=1` deletes each
//! test's topic when the test ends.

use std::collections::HashMap;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use chatstream_core::log::{EventLog, LogError, LogPosition, LogRecord, partition_for_key};
use chatstream_core::runner::{ProcessError, Processor, ProcessorRunner, RunnerConfig};
use chatstream_kafka::dead_letters::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_EVENT_ID, DLQ_PROCESSOR, DLQ_REASON, DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION, DLQ_SOURCE_TOPIC,
};
use chatstream_kafka::headers::{
    CE_ID, CE_SOURCE, CE_SPECVERSION, CE_SUBJECT, CE_TIME, CE_TYPE, CONTENT_TYPE, TRACEPARENT,
};
use chatstream_kafka::{
    KafkaDeadLetters, KafkaLog, KafkaLogConfig, TopicCreation, TopicsCreation, create_topic,
    create_topics,
};
use chatstream_schemas::pb::events::event::Payload;
use chatstream_schemas::{Event, codec};
use chatstream_test_support::conformance::log::{poll_at_least, wait_for_assignment};
use chatstream_test_support::conformance::runner::{
    ObservedLog, Turns, draining_within, start, stop,
};
use chatstream_test_support::conformance::{PATIENCE, unique, user_message};
use chatstream_test_support::services;
use futures::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// Partitions of every test topic: enough for keys to spread, few enough
/// that a group settles fast.
const PARTITIONS: u32 = 4;

// --- Subjects ----------------------------------------------------------------

fn config(servers: &str, topic: &str) -> KafkaLogConfig {
    KafkaLogConfig {
        partitions: PARTITIONS,
        client_id: "chatstream-test".to_owned(),
        ..KafkaLogConfig::new(servers, topic)
    }
}

/// Deletes its topic when dropped, if `CHATSTREAM_TEST_KAFKA_DELETE_TOPICS=1`
/// (see the module docs for why not by default). Best effort.
struct TopicGuard {
    config: KafkaLogConfig,
}

impl Drop for TopicGuard {
    fn drop(&mut self) {
        let delete = std::env::var("CHATSTREAM_TEST_KAFKA_DELETE_TOPICS").is_ok_and(|v| v == "1");
        if !delete {
            return;
        }
        let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .create();
        if let Ok(admin) = admin {
            let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
            let _ = futures::executor::block_on(
                admin.delete_topics(&[self.config.topic.as_str()], &options),
            );
        }
    }
}

/// A fresh topic of `PARTITIONS` partitions, created now.
async fn fresh_topic(servers: &str) -> (KafkaLogConfig, TopicGuard) {
    let config = config(servers, &unique("chatstream-test"));
    let creation = create_topic(&config).await.expect("create the test topic");
    assert_eq!(creation, TopicCreation::Created);
    let guard = TopicGuard {
        config: config.clone(),
    };
    (config, guard)
}

async fn kafka_log() -> Option<(KafkaLog, TopicGuard)> {
    let servers = services::kafka()?;
    let (config, guard) = fresh_topic(&servers).await;
    let log = KafkaLog::connect(config)
        .await
        .expect("connect to the test topic");
    Some((log, guard))
}

chatstream_test_support::log_conformance_tests!(if_available: kafka_log());

chatstream_test_support::runner_conformance_tests!(if_available: kafka_log());

// --- The record as other Kafka clients see it -------------------------------

/// A plain librdkafka consumer of `position` that knows nothing of chatstream.
fn raw_consumer(servers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique("raw-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("raw consumer")
}

/// Reads the record at `position` with a raw consumer and hands it to `check`.
fn with_raw_record<T>(
    servers: &str,
    topic: &str,
    position: LogPosition,
    check: impl FnOnce(&BorrowedMessage<'_>) -> T,
) -> T {
    let consumer = raw_consumer(servers);
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            topic,
            position.partition as i32,
            Offset::Offset(position.offset as i64),
        )
        .expect("assignment");
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "record at {position:?} not received within {PATIENCE:?}"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) if message.offset() == position.offset as i64 => {
                return check(&message);
            }
            Some(Err(error)) => panic!("raw consumer: {error}"),
            _ => {}
        }
    }
}

/// A record's headers, values as text.
fn headers_of(message: &impl Message) -> HashMap<String, Option<String>> {
    message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    let value = header
                        .value
                        .map(|value| String::from_utf8_lossy(value).into_owned());
                    (header.key.to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_the_tenant_key_and_cloudevents_headers() {
    let Some((log, guard)) = kafka_log().await else {
        return;
    };
    let tenant = unique("tenant");
    let event = user_message(&tenant, "conversation-42", "hello");
    let position = log.append(&tenant, &event).await.expect("append");

    let servers = log.config().bootstrap_servers.clone();
    let topic = log.config().topic.clone();
    let (key, headers, value) = tokio::task::spawn_blocking(move || {
        with_raw_record(&servers, &topic, position, |message| {
            (
                message.key().map(<[u8]>::to_vec),
                headers_of(message),
                message.payload().map(<[u8]>::to_vec),
            )
        })
    })
    .await
    .expect("raw read");

    assert_eq!(key.as_deref(), Some(tenant.as_bytes()), "key = tenant id");
    assert_eq!(
        value.map(|value| codec::decode(&value).expect("decode")),
        Some(event.clone()),
        "value = the protobuf event"
    );
    let header = |name: &str| headers.get(name).cloned().flatten();
    assert_eq!(header(CE_ID), Some(event.id.clone()));
    assert_eq!(header(CE_TYPE), Some(event.r#type.clone()));
    assert_eq!(header(CE_SOURCE).as_deref(), Some("chatstream"));
    assert_eq!(header(CE_SPECVERSION).as_deref(), Some("1.0"));
    assert_eq!(header(CE_SUBJECT).as_deref(), Some("conversation-42"));
    assert_eq!(header(CONTENT_TYPE).as_deref(), Some(codec::CONTENT_TYPE));
    let time = header(CE_TIME).expect("ce_time");
    let occurred_at = event.occurred_at.expect("the event has a time");
    assert_eq!(time, occurred_at.to_string(), "ce_time = occurred_at");
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
        "ce_time is RFC 3339 in UTC: {time}"
    );
    assert_eq!(
        header(TRACEPARENT),
        None,
        "no trace is active, so no traceparent"
    );
    drop(log);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_appends_carry_only_the_key() {
    let Some((log, guard)) = kafka_log().await else {
        return;
    };
    let tenant = unique("tenant");
    let position = log
        .append_bytes(&tenant, b"not an event".to_vec())
        .await
        .expect("append_bytes");
    let servers = log.config().bootstrap_servers.clone();
    let topic = log.config().topic.clone();
    let (key, headers) = tokio::task::spawn_blocking(move || {
        with_raw_record(&servers, &topic, position, |message| {
            (message.key().map(<[u8]>::to_vec), headers_of(message))
        })
    })
    .await
    .expect("raw read");
    assert_eq!(key.as_deref(), Some(tenant.as_bytes()));
    assert!(headers.is_empty(), "no headers on raw bytes: {headers:?}");
    drop(log);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_agree_with_librdkafkas_murmur2_partitioner() {
    const KEYS: usize = 200;
    let Some((log, guard)) = kafka_log().await else {
        return;
    };
    let keys: Vec<String> = (0..KEYS).map(|n| unique(&format!("tenant{n}"))).collect();

    // A producer that lets librdkafka pick the partition, as a non-chatstream
    // client of the topic would.
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &log.config().bootstrap_servers)
        .set("partitioner", "murmur2_random")
        .create()
        .expect("raw producer");
    let topic = log.config().topic.clone();
    let raw_partitions = join_all(keys.iter().map(|key| {
        let record = FutureRecord::to(&topic).key(key).payload("raw");
        let raw = &raw;
        async move {
            raw.send(record, Duration::from_secs(5))
                .await
                .map(|delivery| delivery.partition as u32)
                .map_err(|(error, _)| error)
                .expect("raw send")
        }
    }))
    .await;
    let events: Vec<_> = keys
        .iter()
        .map(|key| user_message(key, "c", "hi"))
        .collect();
    let appended = join_all(
        keys.iter()
            .zip(&events)
            .map(|(key, event)| log.append(key, event)),
    )
    .await;

    let mut used = std::collections::BTreeSet::new();
    for ((key, raw_partition), appended) in keys.iter().zip(raw_partitions).zip(appended) {
        let position = appended.expect("append");
        let expected = partition_for_key(key, PARTITIONS);
        assert_eq!(
            position.partition, expected,
            "chatstream put {key:?} in the wrong partition"
        );
        assert_eq!(
            raw_partition, expected,
            "librdkafka's murmur2 partitioner disagrees for {key:?}"
        );
        used.insert(expected);
    }
    assert_eq!(
        used.len(),
        PARTITIONS as usize,
        "keys spread over every partition"
    );
    drop(log);
    drop(guard);
}

// --- Topics and connecting -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_topic_is_idempotent_but_keeps_its_partition_count() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let (config, guard) = fresh_topic(&servers).await;
    assert_eq!(
        create_topics(&config).await.expect("create again"),
        TopicsCreation {
            events: TopicCreation::AlreadyExisted,
            dead_letters: TopicCreation::AlreadyExisted,
        },
        "the first create made the dead-letter topic too"
    );
    let other_count = KafkaLogConfig {
        partitions: PARTITIONS * 2,
        ..config.clone()
    };
    let error = create_topic(&other_count)
        .await
        .expect_err("another partition count must be refused");
    assert!(
        error
            .to_string()
            .contains(&format!("has {PARTITIONS} partitions")),
        "the error names the existing count: {error}"
    );
    let error = match KafkaLog::connect(other_count).await {
        Ok(_) => panic!("connect must refuse another partition count"),
        Err(error) => error,
    };
    assert!(
        error
            .to_string()
            .contains(&format!("has {PARTITIONS} partitions")),
        "{error}"
    );
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_missing_topic_says_so() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let config = config(&servers, &unique("chatstream-missing"));
    let error = match KafkaLog::connect(config.clone()).await {
        Ok(_) => panic!("the topic does not exist"),
        Err(error) => error,
    };
    assert!(
        error.to_string().contains("does not exist") && error.to_string().contains(&config.topic),
        "{error}"
    );
}

/// Needs no broker: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_unavailable_and_named() {
    let config = KafkaLogConfig {
        request_timeout: Duration::from_secs(2),
        ..config("127.0.0.1:1", "events")
    };
    let error = match KafkaLog::connect(config).await {
        Ok(_) => panic!("nothing listens on 127.0.0.1:1"),
        Err(error) => error,
    };
    match error {
        LogError::Unavailable(message) => assert!(
            message.contains("127.0.0.1:1"),
            "the error names the bootstrap servers: {message}"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// --- Consumer groups -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_partitions_and_a_leaver_is_taken_over() {
    let Some((log, guard)) = kafka_log().await else {
        return;
    };
    let group = unique("group");
    let mut first = log.subscribe(&group).await.expect("first member");
    wait_for_assignment(first.as_mut(), "alone", |assigned| {
        assigned.len() == PARTITIONS as usize
    })
    .await;

    let mut second = log.subscribe(&group).await.expect("second member");
    let all: Vec<u32> = (0..PARTITIONS).collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (mine, theirs) = loop {
        // Both must poll for the cooperative rebalance to finish.
        let (_, _) = tokio::join!(
            first.poll(100, Duration::from_millis(100)),
            second.poll(100, Duration::from_millis(100))
        );
        let (mine, theirs) = (first.assignment(), second.assignment());
        let mut union: Vec<u32> = mine.iter().chain(&theirs).copied().collect();
        union.sort_unstable();
        if !mine.is_empty() && !theirs.is_empty() && union == all {
            break (mine, theirs);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions not shared within {PATIENCE:?}: {mine:?} / {theirs:?}"
        );
    };
    assert!(
        mine.iter().all(|partition| !theirs.contains(partition)),
        "a partition has one owner: {mine:?} / {theirs:?}"
    );

    let started = Instant::now();
    second.close().await.expect("the second member leaves");
    wait_for_assignment(first.as_mut(), "after the other left", |assigned| {
        assigned.len() == PARTITIONS as usize
    })
    .await;
    eprintln!("takeover after a clean leave took {:?}", started.elapsed());
    first.close().await.expect("close");
    drop(log);
    drop(guard);
}

// --- The runner in a group ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_losing_partitions_drains_them_and_never_commits_them_again() {
    let Some((log, guard)) = kafka_log().await else {
        return;
    };
    // A tenant on each partition, each with a turn that never ends and one
    // waiting behind it in the same conversation.
    let tenants: Vec<String> = (0..PARTITIONS)
        .map(|partition| {
            loop {
                let tenant = unique("tenant");
                if log.partition_for(&tenant) == partition {
                    break tenant;
                }
            }
        })
        .collect();
    for tenant in &tenants {
        for text in ["stuck", "behind"] {
            log.append(tenant, &user_message(tenant, "x", text))
                .await
                .expect("append");
        }
    }
    let group = unique("turns");
    let (observed, probe) = ObservedLog::wrap(Arc::new(log.clone()));
    let turns = Arc::new(Turns::new(&group, &["x"]));
    let config = draining_within(Duration::from_millis(300));
    let runner = start(&observed, &turns, config);
    turns
        .wait_for("a stuck turn on every partition", |t| {
            t.in_flight.load(Ordering::SeqCst) == PARTITIONS as usize
        })
        .await;

    // A second member joins: the group moves partitions to it.
    let mut second = log.subscribe(&group).await.expect("second member");
    let mut received: Vec<LogRecord> = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let taken = loop {
        received.extend(
            second
                .poll(100, Duration::from_millis(100))
                .await
                .expect("poll"),
        );
        let taken = second.assignment();
        let kept = turns.assignments.lock().unwrap().last().cloned();
        if !taken.is_empty()
            && kept.is_some_and(|kept| kept.len() + taken.len() == PARTITIONS as usize)
        {
            break taken;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no rebalance within {PATIENCE:?}: {taken:?}"
        );
    };
    assert!(
        turns.cancelled.load(Ordering::SeqCst) >= taken.len(),
        "the lost partitions' stuck turns got the deadline, then were cancelled"
    );
    // The new owner gets every record the old one did not finish.
    let missing = (2 * taken.len()).saturating_sub(received.len());
    received.extend(
        poll_at_least(missing, async || {
            second
                .poll(100, Duration::from_millis(100))
                .await
                .expect("poll")
        })
        .await,
    );
    let mut redelivered: Vec<(u32, u64)> = received
        .iter()
        .map(|r| (r.position.partition, r.position.offset))
        .collect();
    redelivered.sort_unstable();
    let expected: Vec<(u32, u64)> = taken
        .iter()
        .flat_map(|&partition| [(partition, 0), (partition, 1)])
        .collect();
    assert_eq!(
        redelivered, expected,
        "from the old owner's committed position"
    );
    second.close().await.expect("close");
    stop(runner).await;

    let commits = probe.commits.lock().unwrap().clone();
    for (assigned, positions) in &commits {
        assert!(
            positions.iter().all(|p| assigned.contains(&p.partition)),
            "only partitions owned at the time are committed: {commits:?}"
        );
    }
    for partition in 0..PARTITIONS {
        assert_eq!(
            log.committed(&group, partition)
                .await
                .expect("committed")
                .unwrap_or(0),
            0,
            "nothing past a stuck turn was committed"
        );
    }
    drop(log);
    drop(guard);
}

// --- Dead letters ------------------------------------------------------------------

/// Handles user messages, failing for good on the text "unhandleable".
#[derive(Default)]
struct PickyProcessor {
    handled: Mutex<Vec<String>>,
}

#[async_trait]
impl Processor for PickyProcessor {
    fn name(&self) -> &'static str {
        "picky"
    }

    async fn handle(&self, event: &Event, _position: LogPosition) -> Result<(), ProcessError> {
        let Some(Payload::UserMessageSent(sent)) = &event.payload else {
            return Ok(());
        };
        if sent.text == "unhandleable" {
            return Err(ProcessError::Permanent("cannot handle this one".into()));
        }
        self.handled.lock().unwrap().push(sent.text.clone());
        Ok(())
    }
}

/// Every record on `topic` (all partitions) until `count` arrived, read by
/// a plain rdkafka consumer group member that knows nothing of chatstream.
fn consume_raw(servers: &str, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", unique("dead-letter-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("raw consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    while received.len() < count {
        assert!(
            Instant::now() < deadline,
            "{count} records on {topic} within {PATIENCE:?}; got {}",
            received.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => received.push(message.detach()),
            Some(Err(error)) => panic!("raw consumer of {topic}: {error}"),
            None => {}
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_sends_poison_to_the_dead_letter_topic_and_moves_on() {
    let Some((log, guard)) = kafka_log().await else {
        return;
    };
    let config = log.config().clone();
    let tenant = unique("tenant");
    log.append(&tenant, &user_message(&tenant, "c", "before"))
        .await
        .expect("append");
    let poison = log
        .append_bytes(&tenant, vec![0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("append poison");
    let unhandleable = user_message(&tenant, "c", "unhandleable");
    let failed = log.append(&tenant, &unhandleable).await.expect("append");
    let last = log
        .append(&tenant, &user_message(&tenant, "c", "after"))
        .await
        .expect("append");

    let sink = KafkaDeadLetters::connect(&config)
        .await
        .expect("connect to the dead-letter topic");
    assert_eq!(sink.topic(), config.dead_letter_topic());
    let processor = Arc::new(PickyProcessor::default());
    let shared_log: Arc<dyn EventLog> = Arc::new(log.clone());
    let runner_config = RunnerConfig {
        poll_timeout: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    let runner = ProcessorRunner::new(shared_log, processor.clone(), runner_config)
        .with_dead_letters(Arc::new(sink));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(runner.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while processor.handled.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events after the poison were not processed within {PATIENCE:?}: {:?}",
            processor.handled.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    run.await.expect("runner task").expect("runner");
    assert_eq!(*processor.handled.lock().unwrap(), ["before", "after"]);
    assert_eq!(
        log.committed("picky", last.partition)
            .await
            .expect("committed"),
        Some(last.offset + 1),
        "the partition moved past the poison and committed"
    );

    let servers = config.bootstrap_servers.clone();
    let dead_letter_topic = config.dead_letter_topic();
    let letters = tokio::task::spawn_blocking(move || consume_raw(&servers, &dead_letter_topic, 2))
        .await
        .expect("raw read");
    let mut letters: Vec<_> = letters
        .into_iter()
        .map(|letter| (headers_of(&letter), letter))
        .collect();
    // Same key, so both letters are in one partition, in the order they
    // failed; the poison record has an ordering key of its own, so it may
    // fail before or after the other one: taken in source-offset order.
    letters.sort_by_key(|(headers, _)| {
        headers
            .get(DLQ_SOURCE_OFFSET)
            .cloned()
            .flatten()
            .and_then(|offset| offset.parse::<u64>().ok())
    });
    let (header_maps, letters): (Vec<HashMap<String, Option<String>>>, Vec<_>) =
        letters.into_iter().unzip();
    let header = |index: usize, name: &str| header_maps[index].get(name).cloned().flatten();
    for (index, message) in letters.iter().enumerate() {
        assert_eq!(message.key(), Some(tenant.as_bytes()), "the key is kept");
        assert_eq!(header(index, DLQ_PROCESSOR).as_deref(), Some("picky"));
        assert_eq!(header(index, DLQ_SOURCE_TOPIC), Some(config.topic.clone()));
        assert_eq!(
            header(index, DLQ_SOURCE_PARTITION),
            Some(poison.partition.to_string())
        );
    }
    assert_eq!(letters[0].payload(), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
    assert_eq!(header(0, DLQ_REASON).as_deref(), Some("undecodable"));
    assert_eq!(
        header(0, DLQ_SOURCE_OFFSET),
        Some(poison.offset.to_string())
    );
    assert_eq!(header(0, DLQ_ATTEMPTS).as_deref(), Some("0"));
    assert!(header(0, DLQ_ERROR).is_some_and(|error| !error.is_empty()));
    assert_eq!(header(0, DLQ_EVENT_ID), None);

    assert_eq!(
        letters[1].payload().map(<[u8]>::to_vec),
        Some(codec::encode(&unhandleable)),
        "the original value, byte for byte"
    );
    assert_eq!(header(1, DLQ_REASON).as_deref(), Some("handler_failed"));
    assert_eq!(
        header(1, DLQ_SOURCE_OFFSET),
        Some(failed.offset.to_string())
    );
    assert_eq!(header(1, DLQ_ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(header(1, DLQ_EVENT_ID), Some(unhandleable.id.clone()));
    assert!(
        header(1, DLQ_ERROR).is_some_and(|error| error.contains("cannot handle this one")),
        "{:?}",
        header(1, DLQ_ERROR)
    );
    drop(log);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_sink_needs_its_topic() {
    let Some(servers) = services::kafka() else {
        return;
    };
    let config = KafkaLogConfig {
        dead_letter_topic: Some(unique("chatstream-missing-dlq")),
        ..config(&servers, &unique("chatstream-missing"))
    };
    let error = match KafkaDeadLetters::connect(&config).await {
        Ok(_) => panic!("the dead-letter topic does not exist"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("does not exist") && error.contains("chatstream topics create"),
        "{error}"
    );
}
