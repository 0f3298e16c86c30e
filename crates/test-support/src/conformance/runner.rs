//! Conformance cases for the processor runner over an `EventLog`: the same
//! guarantees on every log. Conversations of a partition run side by side,
//! each in log order; a tenant flooding its partition leaves room for the
//! others; a partition holding too many records is paused on the consumer
//! and loses nothing across the pause; shutdown drains what is in flight
//! within the deadline and commits the lowest unfinished record.
//!
//! Also the test doubles runner tests share: `Turns`, a processor that
//! behaves like slow model turns, and `ObservedLog`, a log whose consumer
//! reports what the runner asks of it.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::event::Payload;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{PATIENCE, unique, user_message};
use chatstream_core::log::{
    EventLog, LogConsumer, LogError, LogPosition, LogRecord, PendingCommit,
};
use chatstream_core::runner::{ProcessError, Processor, ProcessorRunner, RunnerConfig};

/// Handles user messages like model turns: a turn of a gated tenant or
/// conversation waits until the gate opens. Records how many ran at once,
/// whether two turns of a conversation ever overlapped, and the order
/// turns started and finished in.
#[derive(Default)]
pub struct Turns {
    /// The consumer group.
    pub name: &'static str,
    pub in_flight: AtomicUsize,
    pub most_in_flight: AtomicUsize,
    /// Open the gate once this many turns run at once (0: not by count).
    pub open_at: usize,
    /// Tenants and conversations whose turns wait for `gate`.
    pub gated: Vec<String>,
    pub gate: Gate,
    busy: Mutex<HashSet<String>>,
    pub overlapped: AtomicBool,
    /// (tenant, conversation, text) in the order the turns started.
    pub started: Mutex<Vec<(String, String, String)>>,
    /// Same, in the order they finished.
    pub finished: Mutex<Vec<(String, String, String)>>,
    /// Turns dropped before they finished (cancelled).
    pub cancelled: AtomicUsize,
    done: Notify,
    pub assignments: Mutex<Vec<Vec<u32>>>,
    /// `partition_progressed` reports: (partition, next offset).
    pub progressed: Mutex<Vec<(u32, u64)>>,
}

/// A gate turns wait at until it opens.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    opened: Notify,
}

impl Gate {
    pub fn open(&self) {
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
        self.name
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
        if self.gated.contains(&event.tenant_id) || self.gated.contains(&event.conversation_id) {
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
    /// Turns of the consumer group `group` whose turns of `gated` tenants
    /// or conversations wait for the gate.
    pub fn new(group: &str, gated: &[&str]) -> Self {
        Self {
            // One per test case and group: leaking is fine.
            name: Box::leak(group.to_owned().into_boxed_str()),
            gated: gated.iter().map(|t| (*t).to_owned()).collect(),
            ..Self::default()
        }
    }

    pub fn finished_count(&self) -> usize {
        self.finished.lock().unwrap().len()
    }

    /// Waits until `done` holds; fails after `PATIENCE`.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.done.notified();
                if done(self) {
                    return;
                }
                // Also look now and then: not every change notifies.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} within {PATIENCE:?}"));
    }

    /// Each conversation's texts, in the order its turns started.
    pub fn per_conversation(&self) -> HashMap<(String, String), Vec<String>> {
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

/// Polls often, commits often, retries fast: for tests.
pub fn eager_config() -> RunnerConfig {
    RunnerConfig {
        poll_timeout: Duration::from_millis(10),
        commit_interval: Duration::from_millis(5),
        retry_initial_backoff: Duration::from_millis(1),
        retry_max_backoff: Duration::from_millis(5),
        ..RunnerConfig::default()
    }
}

/// `eager_config`, with `drain` for turns in flight at a revocation or stop.
pub fn draining_within(drain: Duration) -> RunnerConfig {
    RunnerConfig {
        drain_timeout: drain,
        ..eager_config()
    }
}

/// Starts a runner of `turns` over `log`; cancel the token to stop it.
pub fn start<P: Processor>(
    log: &Arc<dyn EventLog>,
    processor: &Arc<P>,
    config: RunnerConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), LogError>>,
) {
    let shutdown = CancellationToken::new();
    let runner = ProcessorRunner::new(log.clone(), processor.clone(), config);
    let run = tokio::spawn(runner.run(shutdown.clone()));
    (shutdown, run)
}

/// Stops a runner started by `start`, within `PATIENCE`.
pub async fn stop(
    (shutdown, run): (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), LogError>>,
    ),
) {
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("the runner stops")
        .expect("runner task")
        .expect("runner");
}

/// Whether `group` committed every record of every partition.
pub async fn committed_everything(log: &dyn EventLog, group: &str) -> bool {
    for partition in 0..log.partition_count() {
        let end = log.end_offset(partition).await.expect("end offset");
        let committed = log
            .committed(group, partition)
            .await
            .expect("committed")
            .unwrap_or(0);
        if committed != end {
            return false;
        }
    }
    true
}

/// Waits until `group` committed everything.
pub async fn wait_until_committed(log: &dyn EventLog, group: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !committed_everything(log, group).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group} did not commit everything within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shared<L: EventLog + Clone>(log: &L) -> Arc<dyn EventLog> {
    Arc::new(log.clone())
}

pub async fn conversations_run_side_by_side_each_in_log_order<L: EventLog + Clone>(log: &L) {
    const CONVERSATIONS: usize = 20;
    const MESSAGES: usize = 5;
    let log = shared(log);
    let tenant = unique("acme");
    for seq in 0..MESSAGES {
        for conversation in 0..CONVERSATIONS {
            let message = user_message(&tenant, &format!("c{conversation}"), &seq.to_string());
            log.append(&tenant, &message).await.expect("append");
        }
    }
    // The turns wait until all 20 conversations run at once: with one turn
    // at a time per partition this never happens.
    let turns = Arc::new(Turns {
        open_at: CONVERSATIONS,
        ..Turns::new(&unique("turns"), &[&tenant])
    });
    let runner = start(&log, &turns, eager_config());
    turns
        .wait_for("every turn", |t| {
            t.finished_count() == CONVERSATIONS * MESSAGES
        })
        .await;
    wait_until_committed(log.as_ref(), turns.name).await;
    stop(runner).await;

    assert_eq!(turns.most_in_flight.load(Ordering::SeqCst), CONVERSATIONS);
    assert!(
        !turns.overlapped.load(Ordering::SeqCst),
        "a conversation's turns never overlap"
    );
    let expected: Vec<String> = (0..MESSAGES).map(|n| n.to_string()).collect();
    for (conversation, texts) in turns.per_conversation() {
        assert_eq!(texts, expected, "{conversation:?} in log order, once each");
    }
    let partition = log.partition_for(&tenant);
    let end = log.end_offset(partition).await.expect("end offset");
    let progressed = turns.progressed.lock().unwrap().clone();
    assert!(
        progressed.contains(&(partition, end)),
        "the processor heard the partition's position move: {progressed:?}"
    );
}

pub async fn a_flooding_tenant_leaves_room_for_another_on_its_partition<L: EventLog + Clone>(
    log: &L,
) {
    let log = shared(log);
    let flood = unique("flood");
    let partition = log.partition_for(&flood);
    let quiet = loop {
        let quiet = unique("quiet");
        if log.partition_for(&quiet) == partition {
            break quiet;
        }
    };
    for n in 0..200 {
        let message = user_message(&flood, &format!("c{n}"), "more");
        log.append(&flood, &message).await.expect("append");
    }
    let message = user_message(&quiet, "c", "hello");
    log.append(&quiet, &message).await.expect("append");
    // The flood's turns never end until the gate opens.
    let turns = Arc::new(Turns::new(&unique("turns"), &[&flood]));
    let config = RunnerConfig {
        max_in_flight_per_tenant: 8,
        ..eager_config()
    };
    let runner = start(&log, &turns, config);
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
        .filter(|(tenant, _, _)| *tenant == flood)
        .map(|(_, conversation, _)| conversation.clone())
        .collect();
    let oldest: HashSet<String> = (0..8).map(|n| format!("c{n}")).collect();
    assert_eq!(started, oldest, "the flood's oldest turns started first");
    turns.gate.open();
    turns
        .wait_for("every turn", |t| t.finished_count() == 201)
        .await;
    wait_until_committed(log.as_ref(), turns.name).await;
    stop(runner).await;
}

pub async fn a_partition_holding_too_many_records_is_paused_until_it_drains<L: EventLog + Clone>(
    log: &L,
) {
    const TURNS: usize = 60;
    let (log, probe) = ObservedLog::wrap(shared(log));
    let tenant = unique("acme");
    let partition = log.partition_for(&tenant);
    for n in 0..TURNS {
        let message = user_message(&tenant, &format!("c{}", n % 40), &n.to_string());
        log.append(&tenant, &message).await.expect("append");
    }
    let turns = Arc::new(Turns::new(&unique("turns"), &[&tenant]));
    let config = RunnerConfig {
        poll_max: 3,
        max_in_flight_per_partition: 4,
        max_buffered_per_partition: 10,
        resume_below: 5,
        ..eager_config()
    };
    let runner = start(&log, &turns, config);
    turns
        .wait_for("the partition paused", |_| {
            !probe.pauses.lock().unwrap().is_empty()
        })
        .await;
    // Polls go on while paused, and hand out nothing of it.
    let (held, polls) = (
        probe.handed_out(partition),
        probe.polls.load(Ordering::SeqCst),
    );
    turns
        .wait_for("more polls", |_| {
            probe.polls.load(Ordering::SeqCst) > polls + 3
        })
        .await;
    assert_eq!(
        probe.handed_out(partition),
        held,
        "nothing handed out while paused"
    );
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
    wait_until_committed(log.as_ref(), turns.name).await;
    stop(runner).await;
    assert!(
        !probe.resumes.lock().unwrap().is_empty(),
        "resumed once drained"
    );
    assert_eq!(
        probe.handed_out(partition),
        TURNS,
        "every record handed out once, none lost or repeated across pauses"
    );
    let mut texts: Vec<usize> = turns
        .finished
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, text)| text.parse().expect("a number"))
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, (0..TURNS).collect::<Vec<_>>());
    for ((_, conversation), texts) in turns.per_conversation() {
        let numbers: Vec<usize> = texts.iter().map(|t| t.parse().expect("a number")).collect();
        assert!(
            numbers.is_sorted(),
            "{conversation} in log order: {numbers:?}"
        );
    }
}

pub async fn shutdown_drains_in_flight_turns_and_commits_what_finished<L: EventLog + Clone>(
    log: &L,
) {
    let log = shared(log);
    let tenant = unique("acme");
    let partition = log.partition_for(&tenant);
    let first = log.end_offset(partition).await.expect("end offset");
    // a1 and c1, c2 finish; b1 (a stuck turn) does not.
    for (conversation, text) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("c", "c2")] {
        let message = user_message(&tenant, conversation, text);
        log.append(&tenant, &message).await.expect("append");
    }
    let group = unique("turns");
    let turns = Arc::new(Turns::new(&group, &["b"]));
    let config = draining_within(Duration::from_millis(200));
    let runner = start(&log, &turns, config);
    turns
        .wait_for("the other turns", |t| t.finished_count() == 3)
        .await;
    stop(runner).await;
    assert_eq!(
        turns.cancelled.load(Ordering::SeqCst),
        1,
        "the stuck turn got the deadline, then was cancelled"
    );
    assert_eq!(
        log.committed(&group, partition).await.expect("committed"),
        Some(first + 1),
        "committed up to the unfinished turn, not past it"
    );

    // The next run redelivers from there: the stuck turn and those after
    // it (finished before: a processor skips them by its processed marks).
    let again = Arc::new(Turns::new(&group, &[]));
    let runner = start(&log, &again, eager_config());
    again
        .wait_for("the redelivered turns", |t| t.finished_count() == 3)
        .await;
    wait_until_committed(log.as_ref(), &group).await;
    stop(runner).await;
    let mut redelivered: Vec<String> = again
        .finished
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, text)| text.clone())
        .collect();
    redelivered.sort();
    assert_eq!(redelivered, ["b1", "c1", "c2"]);
}

/// A log whose consumers report to a `Probe` what the runner asks of them,
/// and whose assignment a test may narrow (applied at the next poll, as a
/// Kafka rebalance is).
pub struct ObservedLog {
    log: Arc<dyn EventLog>,
    probe: Arc<Probe>,
}

#[derive(Default)]
pub struct Probe {
    pub polls: AtomicUsize,
    /// Records handed out per partition.
    handed_out: Mutex<HashMap<u32, usize>>,
    pub pauses: Mutex<Vec<Vec<u32>>>,
    pub resumes: Mutex<Vec<Vec<u32>>>,
    /// The next assignment, taken at the start of the next poll.
    pub next_assignment: Mutex<Option<Vec<u32>>>,
    /// The narrowed assignment, when narrowed.
    assignment: Mutex<Option<Vec<u32>>>,
    /// Every commit, with the consumer's assignment when it was asked for.
    pub commits: Mutex<Vec<(Vec<u32>, Vec<LogPosition>)>>,
}

impl Probe {
    pub fn handed_out(&self, partition: u32) -> usize {
        self.handed_out
            .lock()
            .unwrap()
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }
}

impl ObservedLog {
    pub fn wrap(log: Arc<dyn EventLog>) -> (Arc<dyn EventLog>, Arc<Probe>) {
        let probe = Arc::new(Probe::default());
        let observed = Self {
            log,
            probe: probe.clone(),
        };
        (Arc::new(observed), probe)
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

    fn commit(&mut self, next_offsets: &[LogPosition]) -> PendingCommit {
        let assigned = self.assignment();
        self.probe
            .commits
            .lock()
            .unwrap()
            .push((assigned, next_offsets.to_vec()));
        self.inner.commit(next_offsets)
    }

    fn assignment(&self) -> Vec<u32> {
        let inner = self.inner.assignment();
        match &*self.probe.assignment.lock().unwrap() {
            Some(narrowed) => inner.into_iter().filter(|p| narrowed.contains(p)).collect(),
            None => inner,
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
