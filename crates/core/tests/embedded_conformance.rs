//! The embedded backends against the shared conformance suites, plus what
//! only an embedded backend can be asked: that its data survives a reopen
//! of the same directory.
use chatstream_core::analytics::embedded::EmbeddedAnalytics;
use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::{EventLog, LogError, LogPosition};
use chatstream_core::ratelimit::connections::in_process::InProcessConnectionCounter;
use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_core::store::{
    ClientMessageRecord, ConversationRecord, HistoryEntry, ProjectionStore, Recorded,
};
use chatstream_test_support::conformance::{unique, user_message};
use tempfile::TempDir;

const PARTITIONS: u32 = 4;

fn open_log() -> (EmbeddedLog, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = EmbeddedLog::open(dir.path(), PARTITIONS).expect("open log");
    (log, dir)
}

fn open_store() -> (EmbeddedStore, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    (store, dir)
}

chatstream_test_support::log_conformance_tests!(async { open_log() });
chatstream_test_support::store_conformance_tests!(async { open_store() });
chatstream_test_support::analytics_conformance_tests!(async {
    let dir = tempfile::tempdir().expect("temp dir");
    (
        EmbeddedAnalytics::open(dir.path()).expect("open analytics"),
        dir,
    )
});
chatstream_test_support::fanout_conformance_tests!(async { (InProcessFanOut::new(), ()) });
chatstream_test_support::ratelimit_conformance_tests!(async { (InProcessRateLimiter::new(), ()) });
chatstream_test_support::connection_counter_conformance_tests!(async {
    (InProcessConnectionCounter::new(), ())
});

#[tokio::test]
async fn log_records_and_committed_offsets_survive_a_reopen() {
    let (log, dir) = open_log();
    let key = unique("tenant");
    let event = user_message(&key, "c", "durable");
    let position = log.append(&key, &event).await.expect("append");
    let raw = log
        .append_bytes(&key, vec![0xde, 0xad])
        .await
        .expect("append_bytes");
    let mut consumer = log.subscribe("group").await.expect("subscribe");
    consumer
        .commit(&[LogPosition {
            partition: position.partition,
            offset: 1,
        }])
        .await
        .expect("commit");
    drop(consumer);
    drop(log);

    let log = EmbeddedLog::open(dir.path(), PARTITIONS).expect("reopen");
    assert_eq!(
        log.end_offset(position.partition)
            .await
            .expect("end_offset"),
        raw.offset + 1
    );
    let records = log.read(position.partition, 0, 10).await.expect("read");
    assert_eq!(records.len(), 2);
    assert_eq!(
        chatstream_schemas::codec::decode(&records[0].value).expect("decode"),
        event
    );
    assert_eq!(records[1].value, vec![0xde, 0xad]);
    assert_eq!(
        log.committed("group", position.partition)
            .await
            .expect("committed"),
        Some(1)
    );

    let next = log.append(&key, &event).await.expect("append after reopen");
    assert_eq!(
        next,
        LogPosition {
            partition: position.partition,
            offset: raw.offset + 1
        },
        "offsets continue"
    );
}

/// The newest records are served from memory (see `embedded/recent.rs`):
/// a reader far behind them, or after a reopen, gets the same records from
/// the file, in order and whole.
#[tokio::test]
async fn readers_behind_the_records_kept_in_memory_read_the_same_records_from_the_file() {
    const RECORDS: u64 = 2_500;
    let (log, dir) = open_log();
    let key = unique("tenant");
    let partition = log.partition_for(&key);
    for offset in 0..RECORDS {
        log.append_bytes(&key, offset.to_be_bytes().to_vec())
            .await
            .expect("append");
    }
    let read_all = |log: EmbeddedLog| async move {
        let mut consumer = log.subscribe("late").await.expect("subscribe");
        let mut polled = Vec::new();
        while polled.len() < RECORDS as usize {
            let records = consumer
                .poll(700, std::time::Duration::from_secs(5))
                .await
                .expect("poll");
            assert!(!records.is_empty(), "records stop at {}", polled.len());
            polled.extend(records);
        }
        let mut read = Vec::new();
        for from in [0, 1_000, RECORDS - 3] {
            read.push(log.read(partition, from, 5).await.expect("read"));
        }
        (polled, read)
    };
    let check = |(polled, read): (Vec<chatstream_core::log::LogRecord>, Vec<Vec<_>>)| {
        for (expected, record) in (0..RECORDS).zip(&polled) {
            assert_eq!(
                record.position,
                LogPosition {
                    partition,
                    offset: expected
                }
            );
            assert_eq!(record.value, expected.to_be_bytes(), "offset {expected}");
            assert_eq!(record.key, key);
        }
        let offsets: Vec<Vec<u64>> = read
            .iter()
            .map(|records: &Vec<chatstream_core::log::LogRecord>| {
                records.iter().map(|r| r.position.offset).collect()
            })
            .collect();
        assert_eq!(
            offsets,
            vec![
                (0..5).collect::<Vec<_>>(),
                (1_000..1_005).collect(),
                (RECORDS - 3..RECORDS).collect()
            ]
        );
    };

    check(read_all(log.clone()).await);
    drop(log);
    let reopened = EmbeddedLog::open(dir.path(), PARTITIONS).expect("reopen");
    check(read_all(reopened).await);
}

/// The projector writes history unsynced: readers see it at once, it is
/// deduplicated as a synced write is, and it is there after `sync` and a
/// reopen. (A clean close keeps unsynced commits too, so this cannot show
/// what `sync` adds over a crash; nothing in-process can.)
#[tokio::test]
async fn unsynced_history_is_read_at_once_and_kept_once_synced() {
    let (store, dir) = open_store();
    let tenant = unique("tenant");
    let entry = |offset: u64, text: &str| HistoryEntry {
        position: LogPosition {
            partition: 0,
            offset,
        },
        event: user_message(&tenant, "c", text),
    };
    let first = entry(0, "one");
    assert_eq!(
        store.append_history_unsynced(&first).await.unwrap(),
        Recorded::Inserted
    );
    assert_eq!(
        store.read_history(&tenant, "c", None, 10).await.unwrap(),
        vec![first.clone()]
    );
    assert_eq!(
        store.append_history_unsynced(&first).await.unwrap(),
        Recorded::Duplicate {
            existing: first.position
        },
        "deduplicated by event id as a synced write is"
    );
    let second = entry(1, "two");
    store.append_history_unsynced(&second).await.unwrap();
    store.sync().await.unwrap();
    drop(store);

    let reopened = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.read_history(&tenant, "c", None, 10).await.unwrap(),
        vec![first, second]
    );
}

/// The analytics store commits without an fsync: what it applied and
/// noted, and the event's mark, are there after `sync` and a reopen. (As
/// above, a clean close alone would keep them; a crash is not simulated.)
#[tokio::test]
async fn synced_analytics_figures_and_notes_survive_a_reopen() {
    use chatstream_core::analytics::{AnalyticsStore, Applied, Granularity, Observation, Series};
    let dir = tempfile::tempdir().expect("temp dir");
    let analytics = EmbeddedAnalytics::open(dir.path()).expect("open analytics");
    let tenant = unique("tenant");
    let at_ms = 1_796_169_570_000;
    let mut observation = Observation::at(at_ms);
    observation.count(Series::new("tokens_in", [("model", "m")]), 7);
    assert_eq!(
        analytics.apply(&tenant, "e1", &observation).await.unwrap(),
        Applied::Added
    );
    analytics.note(&tenant, "sent:e1", 42).await.unwrap();
    analytics.sync().await.unwrap();
    drop(analytics);

    let reopened = EmbeddedAnalytics::open(dir.path()).expect("reopen analytics");
    let minute = Granularity::ALL[0];
    let start = minute.bucket_start(at_ms);
    let buckets = reopened
        .read_buckets(&tenant, minute, start, start + 60_000)
        .await
        .unwrap();
    let tokens: u64 = buckets
        .iter()
        .flat_map(|bucket| bucket.state.counters())
        .filter(|(series, _)| series.metric == "tokens_in")
        .map(|(_, value)| value)
        .sum();
    assert_eq!(tokens, 7);
    assert_eq!(reopened.noted(&tenant, "sent:e1").await.unwrap(), Some(42));
    assert_eq!(
        reopened.apply(&tenant, "e1", &observation).await.unwrap(),
        Applied::AlreadyApplied,
        "the event's mark was kept with its figures"
    );
}

#[tokio::test]
async fn reopening_the_log_with_another_partition_count_fails() {
    let (log, dir) = open_log();
    drop(log);
    let error = match EmbeddedLog::open(dir.path(), PARTITIONS * 2) {
        Ok(_) => panic!(
            "a log created with {PARTITIONS} partitions must not open with {}",
            PARTITIONS * 2
        ),
        Err(error) => error,
    };
    let message = error.to_string();
    assert!(matches!(error, LogError::Unavailable(_)), "got {error:?}");
    assert!(
        message.contains(&format!("{PARTITIONS} partitions"))
            && message.contains(&(PARTITIONS * 2).to_string()),
        "the error names both counts: {message}"
    );
    EmbeddedLog::open(dir.path(), PARTITIONS).expect("the original count still opens");
}

#[tokio::test]
async fn a_log_needs_a_partition() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        EmbeddedLog::open(dir.path(), 0),
        Err(LogError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_open_log_cannot_be_opened_twice() {
    let (_log, dir) = open_log();
    let second = EmbeddedLog::open(dir.path(), PARTITIONS);
    assert!(
        matches!(second, Err(LogError::Unavailable(ref message)) if message.contains("already open")),
        "{:?}",
        second.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_serves_every_partition_fairly() {
    let (log, _dir) = open_log();
    // One busy tenant per partition; a small poll must not favour any.
    let mut keys = Vec::new();
    for partition in 0..PARTITIONS {
        let key = (0..)
            .map(|n| format!("tenant-{n}"))
            .find(|key| log.partition_for(key) == partition && !keys.contains(key));
        keys.push(key.expect("a key for every partition"));
    }
    for key in &keys {
        for n in 0..50 {
            log.append(key, &user_message(key, "c", &n.to_string()))
                .await
                .expect("append");
        }
    }
    let mut consumer = log.subscribe("fair").await.expect("subscribe");
    assert_eq!(
        consumer.assignment(),
        (0..PARTITIONS).collect::<Vec<_>>(),
        "one member gets every partition"
    );
    let records = consumer
        .poll(8, std::time::Duration::from_secs(5))
        .await
        .expect("poll");
    let mut per_partition = vec![0; PARTITIONS as usize];
    for record in &records {
        per_partition[record.position.partition as usize] += 1;
    }
    assert_eq!(
        per_partition,
        vec![2; PARTITIONS as usize],
        "8 records shared by 4 partitions"
    );
}

#[tokio::test]
async fn store_projections_survive_a_reopen() {
    let (store, dir) = open_store();
    let tenant = unique("tenant");
    let conversation = ConversationRecord {
        tenant_id: tenant.clone(),
        conversation_id: "c".into(),
        title: "kept".into(),
        created_at_ms: 42,
        opened_by_key_id: "key".into(),
    };
    let entry = HistoryEntry {
        position: LogPosition {
            partition: 1,
            offset: 5,
        },
        event: user_message(&tenant, "c", "hi"),
    };
    let claim = ClientMessageRecord {
        tenant_id: tenant.clone(),
        client_message_id: "m".into(),
        conversation_id: "c".into(),
        event_id: entry.event.id.clone(),
        position: entry.position,
    };
    store.put_conversation(&conversation).await.expect("put");
    store.append_history(&entry).await.expect("append_history");
    store.claim_client_message(&claim).await.expect("claim");
    store
        .mark_processed("router", &entry.event.id)
        .await
        .expect("mark");
    drop(store);

    let store = EmbeddedStore::open(dir.path()).expect("reopen");
    assert_eq!(
        store.get_conversation(&tenant, "c").await.expect("get"),
        Some(conversation)
    );
    assert_eq!(
        store
            .read_history(&tenant, "c", None, 10)
            .await
            .expect("read"),
        vec![entry.clone()]
    );
    assert_eq!(
        store.append_history(&entry).await.expect("append again"),
        Recorded::Duplicate {
            existing: entry.position
        }
    );
    assert_eq!(
        store.get_client_message(&tenant, "m").await.expect("get"),
        Some(claim)
    );
    assert!(
        store
            .is_processed("router", &entry.event.id)
            .await
            .expect("is_processed")
    );
}

#[tokio::test]
async fn store_rejects_an_event_without_a_tenant() {
    let (store, _dir) = open_store();
    let mut entry = HistoryEntry {
        position: LogPosition {
            partition: 0,
            offset: 0,
        },
        event: user_message("t", "c", "hi"),
    };
    entry.event.tenant_id.clear();
    assert!(
        store.append_history(&entry).await.is_err(),
        "an event without a tenant cannot be filed anywhere"
    );
}
