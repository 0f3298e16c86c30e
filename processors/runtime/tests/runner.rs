//! The processor runner over the embedded log: per-conversation order with
//! conversations of a partition side by side, commits that never pass an
//! unfinished record, backpressure, fairness between tenants, shutdown and
//! revocation drains, poison records (dead-lettered, never lost) and
//! retries.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_runtime::conformance::user_message;
use chatstream_runtime::deadletter::embedded::EmbeddedDeadLetters;
use chatstream_runtime::deadletter::{
    DeadLetter, DeadLetterError, DeadLetterReason, DeadLetterSink,
};
use chatstream_runtime::log::embedded::EmbeddedLog;
use chatstream_runtime::log::{EventLog, LogConsumer, LogError, LogPosition, LogRecord};
use chatstream_runtime::runner::{ProcessError, Processor, ProcessorRunner, RunnerConfig};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// Records what it handled; optionally slow, optionally failing.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<(String, String)>>,
    attempts: AtomicU32,
    /// Fail this many attempts per event before succeeding.
    fail_first: u32,
    permanent_failure_text: Option<String>,
    /// When set, every handle waits for `release` after signalling `started`.
    gate: Option<(Arc<Notify>, Arc<Notify>)>,
    done: Notify,
    /// Every set of partitions the runner said this member owns.
    assignments: Mutex<Vec<Vec<u32>>>,
    /// Events handled before the runner named any partition.
    handled_unassigned: AtomicU32,
}

#[async_trait]
impl Processor for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn handle(&self, event: &Event, _position: LogPosition) -> Result<(), ProcessError> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.assignments.lock().unwrap().is_empty() {
            self.handled_unassigned.fetch_add(1, Ordering::SeqCst);
        }
        let Some(Payload::UserMessageSent(sent)) = &event.payload else {
            return Ok(());
        };
        if self.permanent_failure_text.as_deref() == Some(sent.text.as_str()) {
            return Err(ProcessError::Permanent("cannot handle this one".into()));
        }
        if attempt <= self.fail_first {
            return Err(ProcessError::Retryable("backend blinked".into()));
        }
        if let Some((started, release)) = &self.gate {
            started.notify_one();
            release.notified().await;
        }
        self.handled
            .lock()
            .unwrap()
            .push((event.tenant_id.clone(), sent.text.clone()));
        self.done.notify_waiters();
        Ok(())
    }

    async fn partitions_assigned(&self, partitions: &[u32]) {
        self.assignments.lock().unwrap().push(partitions.to_vec());
    }
}

impl Recorder {
    fn texts(&self) -> Vec<String> {
        let handled = self.handled.lock().unwrap();
        handled.iter().map(|(_, text)| text.clone()).collect()
    }

    async fn wait_for(&self, count: usize) {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.done.notified();
                if self.handled.lock().unwrap().len() >= count {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{count} events handled in time"));
    }
}

/// Runs `recorder` over `log` until it has handled `count` events, then
/// shuts the runner down gracefully.
async fn run_until_handled(log: &Arc<dyn EventLog>, recorder: &Arc<Recorder>, count: usize) {
    let runner = ProcessorRunner::new(log.clone(), recorder.clone(), fast_config());
    run_runner_until_handled(runner, recorder, count).await;
}

async fn run_runner_until_handled(
    runner: ProcessorRunner<Recorder>,
    recorder: &Arc<Recorder>,
    count: usize,
) {
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(runner.run(shutdown.clone()));
    recorder.wait_for(count).await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

fn fast_config() -> RunnerConfig {
    RunnerConfig {
        poll_timeout: Duration::from_millis(10),
        retry_initial_backoff: Duration::from_millis(1),
        retry_max_backoff: Duration::from_millis(5),
        ..RunnerConfig::default()
    }
}

async fn committed_everything(log: &dyn EventLog, group: &str) -> bool {
    for partition in 0..log.partition_count() {
        let end = log.end_offset(partition).await.unwrap();
        let committed = log.committed(group, partition).await.unwrap().unwrap_or(0);
        if committed != end {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn keeps_per_tenant_order_and_commits_after_handling() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 4).unwrap());
    let tenants: Vec<String> = (0..12).map(|i| format!("tenant-{i}")).collect();
    for seq in 0..20 {
        for tenant in &tenants {
            log.append(tenant, &user_message(tenant, "c", &seq.to_string()))
                .await
                .unwrap();
        }
    }
    let recorder = Arc::new(Recorder::default());
    run_until_handled(&log, &recorder, 240).await;

    let handled = recorder.handled.lock().unwrap().clone();
    let mut per_tenant: HashMap<&str, Vec<u32>> = HashMap::new();
    for (tenant, text) in &handled {
        per_tenant
            .entry(tenant)
            .or_default()
            .push(text.parse().unwrap());
    }
    for tenant in &tenants {
        assert_eq!(
            per_tenant[tenant.as_str()],
            (0..20).collect::<Vec<_>>(),
            "{tenant} in order, once each"
        );
    }
    assert!(
        committed_everything(log.as_ref(), "recorder").await,
        "everything handled is committed at shutdown"
    );
}

#[tokio::test]
async fn the_processor_hears_its_partitions_before_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 3).unwrap());
    for tenant in ["acme", "globex", "initech"] {
        log.append(tenant, &user_message(tenant, "c", "hi"))
            .await
            .unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    run_until_handled(&log, &recorder, 3).await;
    assert_eq!(*recorder.assignments.lock().unwrap(), [vec![0, 1, 2]]);
    assert_eq!(recorder.handled_unassigned.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn shutdown_finishes_the_record_in_hand_and_the_next_run_resumes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    for seq in 0..5 {
        log.append("acme", &user_message("acme", "c", &seq.to_string()))
            .await
            .unwrap();
    }
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = Arc::new(Recorder {
        gate: Some((started.clone(), release.clone())),
        ..Recorder::default()
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), slow.clone(), fast_config()).run(shutdown.clone()),
    );

    // The first record is in hand; shut down, then let it finish.
    tokio::time::timeout(WAIT, started.notified())
        .await
        .expect("handling started");
    shutdown.cancel();
    release.notify_one();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("runner stops")
        .unwrap()
        .unwrap();
    assert_eq!(
        slow.handled.lock().unwrap().len(),
        1,
        "only the record in hand was handled"
    );
    assert_eq!(
        log.committed("recorder", 0).await.unwrap(),
        Some(1),
        "and committed"
    );

    // A new run handles the rest, and not the first one again.
    let recorder = Arc::new(Recorder::default());
    run_until_handled(&log, &recorder, 4).await;
    let texts: Vec<String> = recorder
        .handled
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(texts, ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn poison_records_and_permanent_failures_do_not_stop_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    log.append("acme", &user_message("acme", "c", "before"))
        .await
        .unwrap();
    log.append_bytes("acme", vec![0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    log.append("acme", &user_message("acme", "c", "unhandleable"))
        .await
        .unwrap();
    log.append("acme", &user_message("acme", "c", "after"))
        .await
        .unwrap();

    let recorder = Arc::new(Recorder {
        permanent_failure_text: Some("unhandleable".into()),
        ..Recorder::default()
    });
    run_until_handled(&log, &recorder, 2).await;
    let texts: Vec<String> = recorder
        .handled
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t)| t.clone())
        .collect();
    assert_eq!(texts, ["before", "after"]);
    assert_eq!(
        log.committed("recorder", 0).await.unwrap(),
        Some(4),
        "the partition moved past both"
    );
}

#[tokio::test]
async fn retryable_failures_are_retried_until_they_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    log.append("acme", &user_message("acme", "c", "flaky"))
        .await
        .unwrap();
    let recorder = Arc::new(Recorder {
        fail_first: 3,
        ..Recorder::default()
    });
    run_until_handled(&log, &recorder, 1).await;
    assert_eq!(
        recorder.attempts.load(Ordering::SeqCst),
        4,
        "three failures, then success"
    );
    assert_eq!(recorder.handled.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn poison_records_and_permanent_failures_land_in_the_dead_letter_sink() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    let dead_letters = EmbeddedDeadLetters::open(dir.path()).unwrap();
    log.append("acme", &user_message("acme", "c", "before"))
        .await
        .unwrap();
    let poison = log
        .append_bytes("acme", vec![0xde, 0xad, 0xbe, 0xef])
        .await
        .unwrap();
    let unhandleable = user_message("acme", "c", "unhandleable");
    let failed = log.append("acme", &unhandleable).await.unwrap();
    log.append("acme", &user_message("acme", "c", "after"))
        .await
        .unwrap();

    let recorder = Arc::new(Recorder {
        permanent_failure_text: Some("unhandleable".into()),
        ..Recorder::default()
    });
    let runner = ProcessorRunner::new(log.clone(), recorder.clone(), fast_config())
        .with_dead_letters(Arc::new(dead_letters.clone()));
    run_runner_until_handled(runner, &recorder, 2).await;

    assert_eq!(recorder.texts(), ["before", "after"]);
    assert_eq!(
        log.committed("recorder", 0).await.unwrap(),
        Some(4),
        "the partition moved past both"
    );
    let letters = dead_letters.list("recorder").await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");

    let undecodable = &letters[0];
    assert_eq!(undecodable.position, poison);
    assert_eq!(undecodable.reason, DeadLetterReason::Undecodable);
    assert_eq!(undecodable.key, "acme");
    assert_eq!(
        undecodable.value,
        [0xde, 0xad, 0xbe, 0xef],
        "original bytes kept"
    );
    assert_eq!(undecodable.event_id, None);
    assert_eq!(undecodable.attempts, 0);
    assert!(!undecodable.error.is_empty(), "the decode error is kept");

    let handler_failed = &letters[1];
    assert_eq!(handler_failed.position, failed);
    assert_eq!(handler_failed.reason, DeadLetterReason::HandlerFailed);
    assert_eq!(
        handler_failed.event_id.as_deref(),
        Some(unhandleable.id.as_str())
    );
    assert_eq!(
        handler_failed.attempts, 1,
        "permanent failures are not retried"
    );
    assert!(
        handler_failed.error.contains("cannot handle this one"),
        "{}",
        handler_failed.error
    );
    assert_eq!(
        handler_failed.value,
        chatstream_schemas::codec::encode(&unhandleable)
    );
    assert!(handler_failed.failed_at_ms > 0);
}

/// Refuses every dead letter until `healthy` is set; counts the refusals.
#[derive(Default)]
struct BrokenSink {
    healthy: std::sync::atomic::AtomicBool,
    refused: AtomicU32,
    stored: Mutex<Vec<DeadLetter>>,
}

#[async_trait]
impl DeadLetterSink for BrokenSink {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        if !self.healthy.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(DeadLetterError::Unavailable("sink is down".into()));
        }
        self.stored.lock().unwrap().push(letter.clone());
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_dead_letter_sink_holds_the_partition_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    let poison = log.append_bytes("acme", vec![0xff]).await.unwrap();
    log.append("acme", &user_message("acme", "c", "after"))
        .await
        .unwrap();

    let sink = Arc::new(BrokenSink::default());
    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let runner = ProcessorRunner::new(log.clone(), recorder.clone(), fast_config())
        .with_dead_letters(sink.clone());
    let run = tokio::spawn(runner.run(shutdown.clone()));
    tokio::time::timeout(WAIT, async {
        while sink.refused.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the runner keeps retrying the sink");
    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("runner stops while the sink is down")
        .unwrap()
        .unwrap();
    assert_eq!(
        log.committed("recorder", 0).await.unwrap().unwrap_or(0),
        poison.offset,
        "not committed past the poison record while it was not stored"
    );

    // The sink recovers: the next run stores the record and moves on.
    sink.healthy.store(true, Ordering::SeqCst);
    let recorder = Arc::new(Recorder::default());
    let runner = ProcessorRunner::new(log.clone(), recorder.clone(), fast_config())
        .with_dead_letters(sink.clone());
    run_runner_until_handled(runner, &recorder, 1).await;
    let stored = sink.stored.lock().unwrap().clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].position, poison);
    assert_eq!(stored[0].value, [0xff]);
    // The poison record has a key of its own: the record after it may have
    // been handled in the first run already; then it is redelivered (and a
    // processor's idempotence makes the second time a no-op).
    assert_eq!(recorder.texts(), ["after"]);
    assert_eq!(log.committed("recorder", 0).await.unwrap(), Some(2));
}

// --- Key-ordered concurrency ---------------------------------------------------

/// Handles user messages like model turns: a turn of a gated tenant waits
/// until its gate opens. Records how many ran at once, per conversation
/// whether two ever overlapped, and the order each conversation's turns
/// ran in.
#[derive(Default)]
struct Turns {
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Open the gate once this many turns run at once (0: never by count).
    open_at: usize,
    /// Tenants whose turns wait for `gate`.
    gated: Vec<String>,
    gate: Gate,
    busy: Mutex<HashSet<String>>,
    overlapped: AtomicBool,
    /// (tenant, conversation, text) in the order the turns started.
    started: Mutex<Vec<(String, String, String)>>,
    /// Same, in the order they finished.
    finished: Mutex<Vec<(String, String, String)>>,
    /// Turns dropped before they finished (cancelled).
    cancelled: AtomicUsize,
    done: Notify,
    assignments: Mutex<Vec<Vec<u32>>>,
    /// `partition_progressed` reports: (partition, next offset).
    progressed: Mutex<Vec<(u32, u64)>>,
}

/// A gate turns wait at until it opens.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    async fn pass(&self) {
        loop {
            let opened = self.opened.notified();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// Counts a turn as cancelled when dropped unfinished.
struct TurnGuard<'a>(&'a Turns, bool);

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Processor for Turns {
    fn name(&self) -> &'static str {
        "turns"
    }

    async fn handle(&self, event: &Event, _position: LogPosition) -> Result<(), ProcessError> {
        let Some(Payload::UserMessageSent(sent)) = &event.payload else {
            return Ok(());
        };
        let turn = (
            event.tenant_id.clone(),
            event.conversation_id.clone(),
            sent.text.clone(),
        );
        let conversation = format!("{}/{}", event.tenant_id, event.conversation_id);
        if !self.busy.lock().unwrap().insert(conversation.clone()) {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        self.started.lock().unwrap().push(turn.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut guard = TurnGuard(self, false);
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        if self.open_at > 0 && now >= self.open_at {
            self.gate.open();
        }
        if self.gated.contains(&event.tenant_id) {
            self.gate.pass().await;
        }
        // Let other turns interleave.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.busy.lock().unwrap().remove(&conversation);
        guard.1 = true;
        drop(guard);
        self.finished.lock().unwrap().push(turn);
        self.done.notify_waiters();
        Ok(())
    }

    async fn partitions_assigned(&self, partitions: &[u32]) {
        self.assignments.lock().unwrap().push(partitions.to_vec());
    }

    fn partition_progressed(&self, partition: u32, next_offset: u64) {
        self.progressed
            .lock()
            .unwrap()
            .push((partition, next_offset));
    }
}

impl Turns {
    fn gated(tenants: &[&str]) -> Self {
        Self {
            gated: tenants.iter().map(|t| (*t).to_owned()).collect(),
            ..Self::default()
        }
    }

    fn finished_count(&self) -> usize {
        self.finished.lock().unwrap().len()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.done.notified();
                if done(self) {
                    return;
                }
                // Also wake now and then: not every change notifies.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} in time"));
    }

    /// Each conversation's texts, in the order its turns started.
    fn per_conversation(&self) -> HashMap<(String, String), Vec<String>> {
        let mut order: HashMap<(String, String), Vec<String>> = HashMap::new();
        for (tenant, conversation, text) in self.started.lock().unwrap().iter() {
            order
                .entry((tenant.clone(), conversation.clone()))
                .or_default()
                .push(text.clone());
        }
        order
    }
}

#[tokio::test]
async fn conversations_of_one_partition_run_side_by_side_each_in_log_order() {
    const CONVERSATIONS: usize = 20;
    const MESSAGES: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    for seq in 0..MESSAGES {
        for conversation in 0..CONVERSATIONS {
            let conversation = format!("c{conversation}");
            log.append(
                "acme",
                &user_message("acme", &conversation, &seq.to_string()),
            )
            .await
            .unwrap();
        }
    }
    // The acme turns wait until all 20 conversations run at once: with one
    // turn at a time per partition this would never happen.
    let turns = Arc::new(Turns {
        open_at: CONVERSATIONS,
        ..Turns::gated(&["acme"])
    });
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), turns.clone(), fast_config()).run(shutdown.clone()),
    );
    turns
        .wait_for("every turn", |t| {
            t.finished_count() == CONVERSATIONS * MESSAGES
        })
        .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();

    assert_eq!(turns.most_in_flight.load(Ordering::SeqCst), CONVERSATIONS);
    assert!(
        !turns.overlapped.load(Ordering::SeqCst),
        "a conversation's turns never overlap"
    );
    let expected: Vec<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    for (conversation, texts) in turns.per_conversation() {
        assert_eq!(texts, expected, "{conversation:?} in log order, once each");
    }
    assert!(committed_everything(log.as_ref(), "turns").await);
    let progressed = turns.progressed.lock().unwrap().clone();
    assert!(
        progressed.contains(&(0, (CONVERSATIONS * MESSAGES) as u64)),
        "the processor heard the partition's position move: {progressed:?}"
    );
}

#[tokio::test]
async fn a_flooding_tenant_leaves_room_for_another_on_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    for n in 0..200 {
        log.append("flood", &user_message("flood", &format!("c{n}"), "more"))
            .await
            .unwrap();
    }
    log.append("quiet", &user_message("quiet", "c", "hello"))
        .await
        .unwrap();
    // The flood's turns never end until the gate opens.
    let turns = Arc::new(Turns::gated(&["flood"]));
    let config = RunnerConfig {
        max_in_flight_per_tenant: 8,
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), turns.clone(), config).run(shutdown.clone()),
    );
    turns
        .wait_for("the quiet tenant's turn", |t| t.finished_count() == 1)
        .await;
    assert_eq!(
        turns.finished.lock().unwrap()[0].2,
        "hello",
        "answered behind 200 waiting turns of another tenant"
    );
    assert_eq!(
        turns.in_flight.load(Ordering::SeqCst),
        8,
        "the flood has its share of the partition, no more"
    );
    let started: HashSet<String> = turns
        .started
        .lock()
        .unwrap()
        .iter()
        .filter(|(tenant, _, _)| tenant == "flood")
        .map(|(_, conversation, _)| conversation.clone())
        .collect();
    let first: HashSet<String> = (0..8).map(|n| format!("c{n}")).collect();
    assert_eq!(started, first, "the flood's oldest turns started first");
    turns.gate.open();
    turns
        .wait_for("every turn", |t| t.finished_count() == 201)
        .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(committed_everything(log.as_ref(), "turns").await);
}

/// An embedded log whose consumer reports what the runner asks of it and
/// whose assignment a test can change (applied at the next poll, as Kafka
/// applies a rebalance).
struct ObservedLog {
    log: EmbeddedLog,
    probe: Arc<Probe>,
}

#[derive(Default)]
struct Probe {
    polls: AtomicUsize,
    /// Records handed out per partition.
    handed_out: Mutex<HashMap<u32, usize>>,
    pauses: Mutex<Vec<Vec<u32>>>,
    resumes: Mutex<Vec<Vec<u32>>>,
    /// The next assignment, taken at the start of the next poll.
    next_assignment: Mutex<Option<Vec<u32>>>,
    /// The assignment, when not every partition.
    assignment: Mutex<Option<Vec<u32>>>,
    /// Every commit, with whether it came after the assignment changed.
    commits: Mutex<Vec<(bool, Vec<LogPosition>)>>,
}

impl Probe {
    fn handed_out(&self, partition: u32) -> usize {
        self.handed_out
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }
}

struct ObservedConsumer {
    inner: Box<dyn LogConsumer>,
    probe: Arc<Probe>,
}

#[async_trait]
impl EventLog for ObservedLog {
    fn partition_count(&self) -> u32 {
        self.log.partition_count()
    }

    async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, LogError> {
        self.log.append(key, event).await
    }

    async fn append_bytes(&self, key: &str, value: Vec<u8>) -> Result<LogPosition, LogError> {
        self.log.append_bytes(key, value).await
    }

    async fn read(
        &self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.log.read(partition, from, max).await
    }

    async fn end_offset(&self, partition: u32) -> Result<u64, LogError> {
        self.log.end_offset(partition).await
    }

    async fn subscribe(&self, group: &str) -> Result<Box<dyn LogConsumer>, LogError> {
        Ok(Box::new(ObservedConsumer {
            inner: self.log.subscribe(group).await?,
            probe: self.probe.clone(),
        }))
    }

    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError> {
        self.log.committed(group, partition).await
    }

    async fn ping(&self) -> Result<(), LogError> {
        self.log.ping().await
    }
}

#[async_trait]
impl LogConsumer for ObservedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<LogRecord>, LogError> {
        if let Some(next) = self.probe.next_assignment.lock().unwrap().take() {
            *self.probe.assignment.lock().unwrap() = Some(next);
        }
        self.probe.polls.fetch_add(1, Ordering::SeqCst);
        let records = self.inner.poll(max, timeout).await?;
        let assigned = self.assignment();
        let records: Vec<LogRecord> = records
            .into_iter()
            .filter(|record| assigned.contains(&record.position.partition))
            .collect();
        let mut handed_out = self.probe.handed_out.lock().unwrap();
        for record in &records {
            *handed_out.entry(record.position.partition).or_default() += 1;
        }
        Ok(records)
    }

    async fn commit(&mut self, next_offsets: &[LogPosition]) -> Result<(), LogError> {
        let changed = self.probe.assignment.lock().unwrap().is_some();
        self.probe
            .commits
            .lock()
            .unwrap()
            .push((changed, next_offsets.to_vec()));
        self.inner.commit(next_offsets).await
    }

    fn assignment(&self) -> Vec<u32> {
        match &*self.probe.assignment.lock().unwrap() {
            Some(assignment) => assignment.clone(),
            None => self.inner.assignment(),
        }
    }

    fn pause(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        self.probe.pauses.lock().unwrap().push(partitions.to_vec());
        self.inner.pause(partitions)
    }

    fn resume(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        self.probe.resumes.lock().unwrap().push(partitions.to_vec());
        self.inner.resume(partitions)
    }

    async fn close(self: Box<Self>) -> Result<(), LogError> {
        self.inner.close().await
    }
}

fn observed_log(dir: &std::path::Path, partitions: u32) -> (Arc<dyn EventLog>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let log = ObservedLog {
        log: EmbeddedLog::open(dir, partitions).unwrap(),
        probe: probe.clone(),
    };
    (Arc::new(log), probe)
}

#[tokio::test]
async fn a_partition_holding_too_many_records_is_paused_until_it_drains() {
    const TURNS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let (log, probe) = observed_log(dir.path(), 1);
    for n in 0..TURNS {
        log.append("acme", &user_message("acme", &format!("c{n}"), "hi"))
            .await
            .unwrap();
    }
    let turns = Arc::new(Turns::gated(&["acme"]));
    let config = RunnerConfig {
        poll_max: 3,
        max_in_flight_per_partition: 4,
        max_buffered_per_partition: 10,
        resume_below: 5,
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), turns.clone(), config).run(shutdown.clone()),
    );
    turns
        .wait_for("the partition paused", |_| {
            !probe.pauses.lock().unwrap().is_empty()
        })
        .await;
    // Polls go on while paused, and hand out nothing more.
    let (held, polls) = (probe.handed_out(0), probe.polls.load(Ordering::SeqCst));
    turns
        .wait_for("more polls", |_| {
            probe.polls.load(Ordering::SeqCst) > polls + 3
        })
        .await;
    assert_eq!(probe.handed_out(0), held, "nothing handed out while paused");
    assert!(
        (10..10 + 3).contains(&held),
        "held {held}: the bound, overshot by at most one poll"
    );
    assert_eq!(
        turns.in_flight.load(Ordering::SeqCst),
        4,
        "the partition's in-flight bound"
    );

    turns.gate.open();
    turns
        .wait_for("every turn", |t| t.finished_count() == TURNS)
        .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    assert!(
        !probe.resumes.lock().unwrap().is_empty(),
        "resumed once drained"
    );
    assert_eq!(probe.handed_out(0), TURNS, "every record handed out once");
    assert!(committed_everything(log.as_ref(), "turns").await);
}

#[tokio::test]
async fn shutdown_drains_in_flight_turns_within_the_deadline_and_commits_what_finished() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    // 0 and 2 finish; 1 (a stuck turn) does not; 3 waits behind 2.
    log.append("fast", &user_message("fast", "a", "a1"))
        .await
        .unwrap();
    log.append("stuck", &user_message("stuck", "b", "b1"))
        .await
        .unwrap();
    log.append("fast", &user_message("fast", "c", "c1"))
        .await
        .unwrap();
    log.append("fast", &user_message("fast", "c", "c2"))
        .await
        .unwrap();
    let turns = Arc::new(Turns::gated(&["stuck"]));
    let config = RunnerConfig {
        drain_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), turns.clone(), config).run(shutdown.clone()),
    );
    turns
        .wait_for("the fast turns", |t| t.finished_count() == 3)
        .await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the runner stops after the deadline")
        .unwrap()
        .unwrap();
    assert_eq!(
        turns.cancelled.load(Ordering::SeqCst),
        1,
        "the stuck turn was cancelled"
    );
    assert_eq!(
        log.committed("turns", 0).await.unwrap(),
        Some(1),
        "committed up to the unfinished turn, not past it"
    );

    // The next run redelivers from there: the stuck turn and the one after
    // it (finished before, so a processor skips it by its processed mark).
    let again = Arc::new(Turns::default());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), again.clone(), fast_config()).run(shutdown.clone()),
    );
    again
        .wait_for("the redelivered turns", |t| t.finished_count() == 3)
        .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();
    let mut redelivered: Vec<String> = again
        .finished
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, text)| text.clone())
        .collect();
    redelivered.sort();
    assert_eq!(redelivered, ["b1", "c1", "c2"]);
    assert!(committed_everything(log.as_ref(), "turns").await);
}

#[tokio::test]
async fn a_revoked_partition_is_drained_dropped_and_never_committed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (log, probe) = observed_log(dir.path(), 2);
    let (kept, lost) = tenants_on_two_partitions(log.as_ref());
    let lost_partition = log.partition_for(&lost);
    let kept_partition = log.partition_for(&kept);
    // The lost partition: a stuck turn, then one waiting behind it.
    log.append(&lost, &user_message(&lost, "x", "x1"))
        .await
        .unwrap();
    log.append(&lost, &user_message(&lost, "x", "x2"))
        .await
        .unwrap();
    log.append(&kept, &user_message(&kept, "y", "y1"))
        .await
        .unwrap();
    let turns = Arc::new(Turns::gated(&[lost.as_str()]));
    let config = RunnerConfig {
        drain_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(
        ProcessorRunner::new(log.clone(), turns.clone(), config).run(shutdown.clone()),
    );
    turns
        .wait_for("the kept turn and the stuck one started", |t| {
            t.finished_count() == 1 && t.in_flight.load(Ordering::SeqCst) == 1
        })
        .await;

    *probe.next_assignment.lock().unwrap() = Some(vec![kept_partition]);
    turns
        .wait_for("the runner saw the revocation", |t| {
            t.assignments.lock().unwrap().last() == Some(&vec![kept_partition])
        })
        .await;
    assert_eq!(
        turns.cancelled.load(Ordering::SeqCst),
        1,
        "the stuck turn got the drain deadline, then was cancelled"
    );
    // The kept partition goes on and is committed.
    log.append(&kept, &user_message(&kept, "y", "y2"))
        .await
        .unwrap();
    turns
        .wait_for("the next kept turn", |t| t.finished_count() == 2)
        .await;
    shutdown.cancel();
    run.await.unwrap().unwrap();

    let texts: Vec<String> = turns
        .started
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.2.clone())
        .collect();
    assert!(
        !texts.contains(&"x2".to_owned()),
        "the waiting turn was dropped: {texts:?}"
    );
    let commits = probe.commits.lock().unwrap().clone();
    assert!(
        commits
            .iter()
            .filter(|(after, _)| *after)
            .all(|(_, positions)| positions.iter().all(|p| p.partition != lost_partition)),
        "nothing of the revoked partition committed after it was revoked: {commits:?}"
    );
    assert_eq!(
        log.committed("turns", lost_partition)
            .await
            .unwrap()
            .unwrap_or(0),
        0
    );
    assert_eq!(
        log.committed("turns", kept_partition).await.unwrap(),
        Some(2)
    );
}

/// Two tenants on different partitions of `log`.
fn tenants_on_two_partitions(log: &dyn EventLog) -> (String, String) {
    let first = "acme".to_owned();
    let second = (0..)
        .map(|n| format!("tenant-{n}"))
        .find(|tenant| log.partition_for(tenant) != log.partition_for(&first))
        .expect("some tenant lands elsewhere");
    (first, second)
}
