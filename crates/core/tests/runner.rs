//! The processor runner over the embedded log: per-conversation order with
//! conversations of a partition side by side, commits that never pass an
//! unfinished record, backpressure, fairness between tenants, shutdown and
//! revocation drains, poison records (dead-lettered, never lost) and
//! retries.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_core::deadletter::embedded::EmbeddedDeadLetters;
use chatstream_core::deadletter::{DeadLetter, DeadLetterError, DeadLetterReason, DeadLetterSink};
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{ProcessError, Processor, ProcessorRunner, RunnerConfig};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;
use chatstream_test_support::conformance::runner::{
    ObservedLog, Turns, draining_within, start, stop,
};
use chatstream_test_support::conformance::user_message;
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
    /// Calls of `sync`, and whether it fails.
    syncs: AtomicU32,
    refuse_sync: AtomicBool,
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

    async fn sync(&self) -> Result<(), ProcessError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        match self.refuse_sync.load(Ordering::SeqCst) {
            true => Err(ProcessError::Retryable("disk unavailable".into())),
            false => Ok(()),
        }
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

/// A processor that writes without waiting for durability syncs before
/// each commit; while it cannot, nothing is committed past its records.
#[tokio::test]
async fn positions_are_committed_only_after_the_processor_synced_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
    for seq in 0..5 {
        log.append("acme", &user_message("acme", "c", &seq.to_string()))
            .await
            .unwrap();
    }
    let recorder = Arc::new(Recorder {
        refuse_sync: AtomicBool::new(true),
        ..Recorder::default()
    });
    let config = RunnerConfig {
        commit_interval: Duration::from_millis(5),
        ..fast_config()
    };
    let runner = ProcessorRunner::new(log.clone(), recorder.clone(), config);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(runner.run(shutdown.clone()));
    recorder.wait_for(5).await;
    tokio::time::timeout(WAIT, async {
        while recorder.syncs.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the runner keeps trying to sync");
    assert_eq!(
        log.committed("recorder", 0).await.unwrap(),
        None,
        "nothing committed while the processor's writes are not durable"
    );

    recorder.refuse_sync.store(false, Ordering::SeqCst);
    tokio::time::timeout(WAIT, async {
        while log.committed("recorder", 0).await.unwrap() != Some(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("committed once synced");
    shutdown.cancel();
    run.await.unwrap().unwrap();
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
    let (log, _dir) = one_partition_log();
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
    runner_stopped(run, "runner stops").await;
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
    let texts = recorder.texts();
    assert_eq!(texts, ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn poison_records_and_permanent_failures_do_not_stop_the_partition() {
    let (log, _dir) = one_partition_log();
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
    let texts = recorder.texts();
    assert_eq!(texts, ["before", "after"]);
    assert_eq!(
        log.committed("recorder", 0).await.unwrap(),
        Some(4),
        "the partition moved past both"
    );
}

#[tokio::test]
async fn retryable_failures_are_retried_until_they_succeed() {
    let (log, _dir) = one_partition_log();
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
    let (log, dir) = one_partition_log();
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
    let (log, _dir) = one_partition_log();
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
    runner_stopped(run, "runner stops while the sink is down").await;
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

chatstream_test_support::runner_conformance_tests!(async {
    let dir = tempfile::tempdir().unwrap();
    (EmbeddedLog::open(dir.path(), 4).unwrap(), dir)
});

#[tokio::test]
async fn a_revoked_partition_is_drained_dropped_and_never_committed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (log, probe) = ObservedLog::wrap(Arc::new(EmbeddedLog::open(dir.path(), 2).unwrap()));
    let (kept, lost) = ("acme", tenant_on_another_partition(log.as_ref(), "acme"));
    let lost_partition = log.partition_for(&lost);
    let kept_partition = log.partition_for(kept);
    // The lost partition: a stuck turn, then one waiting behind it.
    for text in ["x1", "x2"] {
        log.append(&lost, &user_message(&lost, "x", text))
            .await
            .unwrap();
    }
    log.append(kept, &user_message(kept, "y", "y1"))
        .await
        .unwrap();
    let turns = Arc::new(Turns::new("turns", &[lost.as_str()]));
    let config = draining_within(Duration::from_millis(200));
    let runner = start(&log, &turns, config);
    turns
        .wait_for("the kept turn done and the stuck one started", |t| {
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
    log.append(kept, &user_message(kept, "y", "y2"))
        .await
        .unwrap();
    turns
        .wait_for("the next kept turn", |t| t.finished_count() == 2)
        .await;
    stop(runner).await;

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
    for (assigned, positions) in &commits {
        assert!(
            positions.iter().all(|p| assigned.contains(&p.partition)),
            "only partitions owned at the time are committed: {commits:?}"
        );
    }
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

/// A tenant whose partition of `log` is not `tenant`'s.
fn tenant_on_another_partition(log: &dyn EventLog, tenant: &str) -> String {
    (0..)
        .map(|n| format!("tenant-{n}"))
        .find(|other| log.partition_for(other) != log.partition_for(tenant))
        .expect("some tenant lands elsewhere")
}

/// Waits for a runner task to stop, cleanly, within `WAIT`.
async fn runner_stopped(
    run: tokio::task::JoinHandle<Result<(), chatstream_core::log::LogError>>,
    what: &str,
) {
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("{what}"))
        .expect("the runner task")
        .expect("the runner stops without an error");
}

/// A fresh one-partition embedded log, and the temp dir it lives in.
fn one_partition_log() -> (Arc<dyn EventLog>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap()), dir)
}
