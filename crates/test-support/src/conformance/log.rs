//! Conformance cases for `EventLog` and `LogConsumer`.
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatstream_schemas::{Event, codec};
use futures::future::join_all;
use tokio::time::Instant;

use super::{PATIENCE, unique, user_message};
use chatstream_core::log::{
    EventLog, LogConsumer, LogError, LogPosition, LogRecord, partition_for_key,
};

/// Appends `count` events under `key`, one after the other.
async fn append_events<L: EventLog + ?Sized>(
    log: &L,
    key: &str,
    count: usize,
) -> Vec<(LogPosition, Event)> {
    let mut appended = Vec::with_capacity(count);
    for n in 0..count {
        let event = user_message(key, "conversation", &format!("message {n}"));
        let position = log.append(key, &event).await.expect("append");
        appended.push((position, event));
    }
    appended
}

/// Calls `poll` until it has returned at least `count` records in all,
/// within `PATIENCE`; the records in the order they came.
pub async fn poll_at_least(
    count: usize,
    mut poll: impl AsyncFnMut() -> Vec<LogRecord>,
) -> Vec<LogRecord> {
    let deadline = Instant::now() + PATIENCE;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "{count} records within {PATIENCE:?}, got {}",
            records.len()
        );
        records.extend(poll().await);
    }
    records
}

fn event_id(record: &LogRecord) -> String {
    codec::decode(&record.value)
        .map(|event| event.id)
        .unwrap_or_else(|error| {
            panic!(
                "record at {:?} does not decode as an event: {error}",
                record.position
            )
        })
}

/// Polls until `count` records with one of `keys` arrived; returns them in
/// the order they were received.
async fn receive(consumer: &mut dyn LogConsumer, keys: &[&str], count: usize) -> Vec<LogRecord> {
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    while received.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "expected {count} records for {keys:?} within {PATIENCE:?}, got {}",
            received.len()
        );
        let records = consumer.poll(100, left).await.expect("poll");
        received.extend(
            records
                .into_iter()
                .filter(|record| keys.contains(&record.key.as_str())),
        );
    }
    assert_eq!(
        received.len(),
        count,
        "received more records for {keys:?} than were appended"
    );
    received
}

/// Asserts that no record with one of `keys` arrives within a short wait.
async fn assert_nothing_more(consumer: &mut dyn LogConsumer, keys: &[&str]) {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let records = consumer.poll(100, left).await.expect("poll");
        let unexpected: Vec<_> = records
            .iter()
            .filter(|record| keys.contains(&record.key.as_str()))
            .collect();
        assert!(unexpected.is_empty(), "redelivered records: {unexpected:?}");
    }
}

/// The offsets to commit after handling `records`: one past the last record
/// of each partition.
fn next_offsets(records: &[LogRecord]) -> Vec<LogPosition> {
    let mut next = BTreeMap::new();
    for record in records {
        let offset = next.entry(record.position.partition).or_insert(0);
        *offset = (*offset).max(record.position.offset + 1);
    }
    next.into_iter()
        .map(|(partition, offset)| LogPosition { partition, offset })
        .collect()
}

fn ids(appended: &[(LogPosition, Event)]) -> Vec<String> {
    appended.iter().map(|(_, event)| event.id.clone()).collect()
}

pub async fn appends_get_increasing_offsets_in_the_key_partition<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let appended = append_events(log, &key, 5).await;
    let partition = log.partition_for(&key);
    for (position, _) in &appended {
        assert_eq!(
            position.partition, partition,
            "every record of {key} belongs in partition {partition}"
        );
    }
    for pair in appended.windows(2) {
        assert!(
            pair[1].0.offset > pair[0].0.offset,
            "offsets must grow: {:?} then {:?}",
            pair[0].0,
            pair[1].0
        );
    }
}

pub async fn partitions_match_kafka_murmur2<L: EventLog + ?Sized>(log: &L) {
    assert!(
        log.partition_count() > 0,
        "a log has at least one partition"
    );
    for n in 0..16 {
        let key = unique(&format!("tenant{n}"));
        let expected = partition_for_key(&key, log.partition_count());
        assert_eq!(
            log.partition_for(&key),
            expected,
            "partition_for({key:?}) must be Kafka's murmur2 partition"
        );
        let position = log
            .append(&key, &user_message(&key, "c", "hi"))
            .await
            .expect("append");
        assert_eq!(
            position.partition, expected,
            "append under {key:?} must land in its murmur2 partition"
        );
    }
}

pub async fn read_returns_records_from_an_offset_in_order<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let before_ms = unix_millis();
    let appended = append_events(log, &key, 5).await;
    let after_ms = unix_millis();
    let (from, _) = appended[2];

    let records = log
        .read(from.partition, from.offset, 100)
        .await
        .expect("read");
    assert_eq!(
        records.first().map(|record| record.position),
        Some(from),
        "read starts at the requested offset"
    );
    let ours: Vec<&LogRecord> = records.iter().filter(|record| record.key == key).collect();
    assert_eq!(
        ours.len(),
        3,
        "records at and after offset {} of {key}",
        from.offset
    );
    for (record, (position, event)) in ours.iter().zip(&appended[2..]) {
        assert_eq!(record.position, *position);
        assert_eq!(
            codec::decode(&record.value).expect("decode"),
            *event,
            "value must be the encoded event"
        );
        // Clocks of a broker may differ a little from ours.
        let slack = 60_000;
        assert!(
            (before_ms - slack..=after_ms + slack).contains(&record.timestamp_ms),
            "timestamp {} is not the append time (between {before_ms} and {after_ms})",
            record.timestamp_ms
        );
    }
}

pub async fn read_returns_at_most_max_records<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let appended = append_events(log, &key, 5).await;
    let (first, _) = appended[0];
    let records = log
        .read(first.partition, first.offset, 2)
        .await
        .expect("read");
    let positions: Vec<LogPosition> = records.iter().map(|record| record.position).collect();
    assert_eq!(
        positions,
        vec![appended[0].0, appended[1].0],
        "read(max = 2) returns the first two records"
    );
    assert!(
        log.read(first.partition, first.offset, 0)
            .await
            .expect("read")
            .is_empty(),
        "max = 0 reads nothing"
    );
}

pub async fn read_at_or_past_the_end_is_empty<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let (position, _) = append_events(log, &key, 1).await[0];
    let end = log
        .end_offset(position.partition)
        .await
        .expect("end_offset");
    assert!(
        log.read(position.partition, end, 10)
            .await
            .expect("read at end")
            .is_empty()
    );
    assert!(
        log.read(position.partition, end + 1000, 10)
            .await
            .expect("read past end")
            .is_empty()
    );
}

pub async fn end_offset_is_the_next_offset<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    for _ in 0..3 {
        let (position, _) = append_events(log, &key, 1).await[0];
        let end = log
            .end_offset(position.partition)
            .await
            .expect("end_offset");
        assert_eq!(
            end,
            position.offset + 1,
            "end_offset after appending at {position:?}"
        );
    }
}

pub async fn unknown_partitions_are_rejected<L: EventLog + ?Sized>(log: &L) {
    let count = log.partition_count();
    let unknown = |result: Result<(), LogError>, what: &str| match result {
        Err(LogError::UnknownPartition {
            partition,
            count: reported,
        }) => {
            assert_eq!(
                (partition, reported),
                (count, count),
                "{what}: error names the partition and the count"
            );
        }
        other => panic!(
            "{what} of partition {count} (of {count}) must fail with UnknownPartition, got {other:?}"
        ),
    };
    unknown(log.read(count, 0, 10).await.map(drop), "read");
    unknown(log.end_offset(count).await.map(drop), "end_offset");
    unknown(
        log.committed(&unique("group"), count).await.map(drop),
        "committed",
    );
    let mut consumer = log.subscribe(&unique("group")).await.expect("subscribe");
    unknown(
        consumer
            .commit(&[LogPosition {
                partition: count,
                offset: 1,
            }])
            .await,
        "commit",
    );
    consumer.close().await.expect("close");
}

pub async fn append_bytes_are_read_back_unchanged<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    for value in [vec![0xff, 0x00, 0xfe, 0x80, 0x01], Vec::new()] {
        let position = log
            .append_bytes(&key, value.clone())
            .await
            .expect("append_bytes");
        assert_eq!(position.partition, log.partition_for(&key));
        let records = log
            .read(position.partition, position.offset, 1)
            .await
            .expect("read");
        assert_eq!(records.len(), 1, "the raw record at {position:?}");
        assert_eq!(
            (records[0].key.as_str(), &records[0].value),
            (key.as_str(), &value),
            "bytes come back as-is"
        );
    }
}

pub async fn concurrent_appends_get_distinct_positions<L: EventLog + ?Sized>(log: &L) {
    const KEYS: usize = 8;
    const PER_KEY: usize = 25;
    let keys: Vec<String> = (0..KEYS).map(|n| unique(&format!("tenant{n}"))).collect();
    // Every key appends sequentially; the keys run concurrently.
    let appended: Vec<Vec<(LogPosition, Event)>> =
        join_all(keys.iter().map(|key| append_events(log, key, PER_KEY))).await;

    let mut seen = HashSet::new();
    for (key, appended) in keys.iter().zip(&appended) {
        for pair in appended.windows(2) {
            assert!(
                pair[1].0.offset > pair[0].0.offset,
                "sequential appends of {key} must keep their order"
            );
        }
        for (position, _) in appended {
            assert!(
                seen.insert(*position),
                "two appends were given the same position {position:?}"
            );
        }
    }
    for appended in appended.iter().flatten() {
        let (position, event) = appended;
        let records = log
            .read(position.partition, position.offset, 1)
            .await
            .expect("read");
        let id = records.first().map(event_id);
        assert_eq!(
            id.as_deref(),
            Some(event.id.as_str()),
            "the record at {position:?} is the event appended there"
        );
    }
}

pub async fn append_all_appends_in_order_in_the_key_partition<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let events: Vec<Event> = (0..3)
        .map(|n| user_message(&key, "c", &format!("part {n}")))
        .collect();

    let positions = log.append_all(&key, &events).await.expect("append_all");

    assert_eq!(positions.len(), events.len(), "one position per event");
    for pair in positions.windows(2) {
        assert!(
            pair[1].offset > pair[0].offset,
            "events keep their order: {positions:?}"
        );
    }
    for (position, event) in positions.iter().zip(&events) {
        assert_eq!(position.partition, log.partition_for(&key));
        let records = log
            .read(position.partition, position.offset, 1)
            .await
            .expect("read");
        assert_eq!(
            records.first().map(event_id).as_deref(),
            Some(event.id.as_str()),
            "the record at {position:?} is the event appended there"
        );
    }
    assert_eq!(
        log.append_all(&key, &[]).await.expect("append nothing"),
        Vec::new()
    );
}

pub async fn new_group_starts_at_the_earliest_offset<L: EventLog + ?Sized>(log: &L) {
    let keys = [unique("tenant-a"), unique("tenant-b"), unique("tenant-c")];
    let mut appended = Vec::new();
    for key in &keys {
        appended.extend(append_events(log, key, 1).await);
    }
    let mut consumer = log.subscribe(&unique("group")).await.expect("subscribe");
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let received = receive(consumer.as_mut(), &key_refs, appended.len()).await;

    let mut got: Vec<String> = received.iter().map(event_id).collect();
    let mut want = ids(&appended);
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "a new group receives what was appended before it subscribed"
    );
    let assignment = consumer.assignment();
    for record in &received {
        assert!(
            assignment.contains(&record.position.partition),
            "records come from assigned partitions"
        );
    }
    consumer.close().await.expect("close");
}

pub async fn poll_times_out_empty_when_nothing_arrives<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    append_events(log, &key, 1).await;
    let mut consumer = log.subscribe(&unique("group")).await.expect("subscribe");
    receive(consumer.as_mut(), &[&key], 1).await;

    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let records = consumer.poll(10, timeout).await.expect("poll");
    assert!(
        records.is_empty(),
        "nothing was appended, yet poll returned {records:?}"
    );
    assert!(
        started.elapsed() < timeout + Duration::from_secs(5),
        "poll must return soon after its timeout"
    );
    consumer.close().await.expect("close");
}

pub async fn poll_wakes_up_on_append<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    // Receiving a first record proves the member has joined and is caught up.
    append_events(log, &key, 1).await;
    let mut consumer = log.subscribe(&unique("group")).await.expect("subscribe");
    receive(consumer.as_mut(), &[&key], 1).await;

    let started = Instant::now();
    let (records, appended) = tokio::join!(consumer.poll(10, PATIENCE), async {
        // Give the poll time to start waiting; the append must wake it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        append_events(log, &key, 1).await
    });
    let records = records.expect("poll");
    assert!(
        started.elapsed() < PATIENCE,
        "poll did not wake up on append; it waited out its timeout"
    );
    let got: Vec<String> = records
        .iter()
        .filter(|record| record.key == key)
        .map(event_id)
        .collect();
    assert_eq!(got, ids(&appended), "the woken poll returns the new record");
    consumer.close().await.expect("close");
}

pub async fn poll_returns_at_most_max_records<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let appended = append_events(log, &key, 5).await;
    let mut consumer = log.subscribe(&unique("group")).await.expect("subscribe");
    let deadline = Instant::now() + PATIENCE;
    let mut received = Vec::new();
    while received.len() < appended.len() && Instant::now() < deadline {
        let records = consumer
            .poll(2, Duration::from_secs(1))
            .await
            .expect("poll");
        assert!(
            records.len() <= 2,
            "poll(max = 2) returned {} records",
            records.len()
        );
        received.extend(
            records
                .into_iter()
                .filter(|record| record.key == key)
                .map(|record| event_id(&record)),
        );
    }
    assert_eq!(
        received,
        ids(&appended),
        "small polls still deliver every record, in order"
    );
    consumer.close().await.expect("close");
}

pub async fn committed_group_resumes_without_redelivery<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let group = unique("group");
    let first = append_events(log, &key, 4).await;
    let partition = log.partition_for(&key);
    assert_eq!(
        log.committed(&group, partition).await.expect("committed"),
        None,
        "a new group has no offsets"
    );

    let mut consumer = log.subscribe(&group).await.expect("subscribe");
    let handled = receive(consumer.as_mut(), &[&key], first.len()).await;
    consumer
        .commit(&next_offsets(&handled))
        .await
        .expect("commit");
    consumer.close().await.expect("close");
    let resume_at = first[3].0.offset + 1;
    assert_eq!(
        log.committed(&group, partition).await.expect("committed"),
        Some(resume_at)
    );

    let second = append_events(log, &key, 2).await;
    let mut consumer = log.subscribe(&group).await.expect("resubscribe");
    let received = receive(consumer.as_mut(), &[&key], second.len()).await;
    let got: Vec<String> = received.iter().map(event_id).collect();
    assert_eq!(
        got,
        ids(&second),
        "the group resumes after its committed offset, in order"
    );
    assert_nothing_more(consumer.as_mut(), &[&key]).await;
    consumer.close().await.expect("close");
}

pub async fn commit_in_the_middle_of_a_batch_resumes_there<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let group = unique("group");
    let appended = append_events(log, &key, 5).await;

    let mut consumer = log.subscribe(&group).await.expect("subscribe");
    let batch = receive(consumer.as_mut(), &[&key], appended.len()).await;
    // Only the first two were handled before a crash.
    consumer
        .commit(&next_offsets(&batch[..2]))
        .await
        .expect("commit");
    consumer.close().await.expect("close");

    let mut consumer = log.subscribe(&group).await.expect("resubscribe");
    let received = receive(consumer.as_mut(), &[&key], 3).await;
    let got: Vec<String> = received.iter().map(event_id).collect();
    assert_eq!(
        got,
        ids(&appended[2..]),
        "the group resumes at the committed offset"
    );
    assert_nothing_more(consumer.as_mut(), &[&key]).await;
    consumer.close().await.expect("close");
}

pub async fn groups_are_independent<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let (first_group, second_group) = (unique("group-a"), unique("group-b"));
    let appended = append_events(log, &key, 3).await;
    let partition = log.partition_for(&key);

    let mut consumer = log.subscribe(&first_group).await.expect("subscribe");
    let handled = receive(consumer.as_mut(), &[&key], appended.len()).await;
    consumer
        .commit(&next_offsets(&handled))
        .await
        .expect("commit");
    consumer.close().await.expect("close");

    assert_eq!(
        log.committed(&second_group, partition)
            .await
            .expect("committed"),
        None
    );
    let mut consumer = log.subscribe(&second_group).await.expect("subscribe");
    let received = receive(consumer.as_mut(), &[&key], appended.len()).await;
    let got: Vec<String> = received.iter().map(event_id).collect();
    assert_eq!(
        got,
        ids(&appended),
        "another group's commit does not move this group"
    );
    consumer.close().await.expect("close");
}

pub async fn a_paused_partition_hands_out_nothing_until_resumed<L: EventLog + ?Sized>(log: &L) {
    let key = unique("tenant");
    let partition = log.partition_for(&key);
    // A tenant on another partition, when there is one: it keeps flowing.
    let other = (log.partition_count() > 1).then(|| {
        loop {
            let other = unique("other-tenant");
            if log.partition_for(&other) != partition {
                break other;
            }
        }
    });
    let first = append_events(log, &key, 5).await;
    let mut consumer = log.subscribe(&unique("group")).await.expect("subscribe");
    // Two handed out; a consumer may have fetched the others already.
    let mut handed_out = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while handed_out.len() < 2 {
        assert!(Instant::now() < deadline, "two records within {PATIENCE:?}");
        let records = consumer
            .poll(2 - handed_out.len(), Duration::from_millis(200))
            .await
            .expect("poll");
        handed_out.extend(records.into_iter().filter(|r| r.key == key));
    }
    consumer.pause(&[partition]).expect("pause");
    consumer
        .pause(&[partition])
        .expect("pausing twice is a no-op");
    let second = append_events(log, &key, 2).await;
    if let Some(other) = &other {
        let theirs = append_events(log, other, 2).await;
        let received = receive(consumer.as_mut(), &[other], 2).await;
        assert_eq!(
            received.iter().map(event_id).collect::<Vec<_>>(),
            ids(&theirs),
            "other partitions keep flowing"
        );
    }
    assert_nothing_more(consumer.as_mut(), &[&key]).await;

    consumer.resume(&[partition]).expect("resume");
    consumer
        .resume(&[partition])
        .expect("resuming twice is a no-op");
    let rest = receive(consumer.as_mut(), &[&key], 5).await;
    let expected: Vec<String> = ids(&first[2..]).into_iter().chain(ids(&second)).collect();
    assert_eq!(
        handed_out.iter().map(event_id).collect::<Vec<_>>(),
        ids(&first[..2])
    );
    assert_eq!(
        rest.iter().map(event_id).collect::<Vec<_>>(),
        expected,
        "after a resume the partition goes on after the records handed out, none lost or repeated"
    );
    assert_nothing_more(consumer.as_mut(), &[&key]).await;
    consumer.close().await.expect("close");
}

pub async fn ping_answers<L: EventLog + ?Sized>(log: &L) {
    log.ping().await.expect("ping");
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Polls `member` until its assignment satisfies `settled` (rebalances
/// happen while a member polls); fails after [`PATIENCE`], naming `what`.
pub async fn wait_for_assignment(
    member: &mut dyn LogConsumer,
    what: &str,
    settled: impl Fn(&[u32]) -> bool,
) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let assignment = member.assignment();
        if settled(&assignment) {
            return assignment;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: assignment {assignment:?} did not settle within {PATIENCE:?}"
        );
        // Rebalances happen while a member polls.
        member
            .poll(100, Duration::from_millis(100))
            .await
            .expect("poll");
    }
}
