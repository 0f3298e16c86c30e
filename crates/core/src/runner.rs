//! Runs a `Processor` over the log with key-ordered concurrency: within a
//! partition, records with different ordering keys (by default, different
//! conversations) are handled side by side, and records with one key one
//! after another in log order. A partition's committed position is its
//! lowest unfinished record, so a crash redelivers rather than loses, and
//! never skips a record still being handled. In-flight work is bounded per
//! process, per partition and per tenant in a partition; a partition
//! holding too many records is paused on the consumer until it drains. A
//! record that cannot be processed (undecodable, or its handler failed for
//! good) goes to the dead-letter sink before it counts as finished. On
//! shutdown or revocation, in-flight records get a deadline to finish.
//! See `docs/processing.md`.
use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_schemas::{Event, codec};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::deadletter::{DeadLetter, DeadLetterReason, DeadLetterSink, LoggedDeadLetters};
use crate::log::{EventLog, LogConsumer, LogError, LogPosition, LogRecord};

mod schedule;

use schedule::{Limits, Outcome, Schedule, Start};

/// A consumer of events; one instance per processor kind, shared by the
/// tasks of every partition.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// The consumer group and metric label, e.g. `router`.
    fn name(&self) -> &'static str;

    /// Handles one event. Must be idempotent: after a crash the same event
    /// may be handled again. Runs concurrently with the handling of events
    /// with other ordering keys, never with an event of the same key.
    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError>;

    /// Which events must be handled one after another, in log order: those
    /// with equal keys. By default an event's conversation (its tenant kept
    /// for fairness), so a partition's conversations are handled side by
    /// side. `OrderingKey::partition()` for every event keeps the whole
    /// partition in order.
    fn ordering_key(&self, event: &Event) -> OrderingKey {
        OrderingKey::of_conversation(event)
    }

    /// Told the partitions this member owns whenever that set changes, before
    /// any record of a newly owned partition is handled, and after the work
    /// in flight on partitions it lost was drained or cancelled. For a
    /// processor that keeps work in flight across records (timers, say): it
    /// resumes what the partition's previous owner left undone and drops
    /// what it no longer owns.
    async fn partitions_assigned(&self, _partitions: &[u32]) {}

    /// Makes durable what handling the finished records wrote, before the
    /// runner commits the log position past them; called before every
    /// commit. Only a processor that writes without waiting for durability
    /// (the projector) needs it. An error skips that commit (the next
    /// round tries again).
    async fn sync(&self) -> Result<(), ProcessError> {
        Ok(())
    }

    /// Every record of `partition` before `next_offset` is finished (handled,
    /// or given up on and dead-lettered): the position the runner commits.
    /// Called as the position moves, from the tasks that finish records, so
    /// calls may arrive out of order: keep the highest.
    fn partition_progressed(&self, _partition: u32, _next_offset: u64) {}
}

/// Records with equal keys are handled one at a time in log order; records
/// with different keys may run side by side. Carries the tenant the record
/// belongs to, for the per-tenant share of a partition's work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderingKey {
    tenant_id: String,
    scope: KeyScope,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyScope {
    Conversation(String),
    /// One sequence for the whole partition.
    Partition,
    /// A record of its own (an undecodable one): nothing waits for it.
    Record(u64),
}

impl OrderingKey {
    /// The events of one conversation, in order.
    pub fn conversation(tenant_id: &str, conversation_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            scope: KeyScope::Conversation(conversation_id.to_owned()),
        }
    }

    /// The conversation `event` belongs to.
    pub fn of_conversation(event: &Event) -> Self {
        Self::conversation(&event.tenant_id, &event.conversation_id)
    }

    /// One key for every record of the partition that returns it: they are
    /// handled one at a time, in log order.
    pub fn partition() -> Self {
        Self {
            tenant_id: String::new(),
            scope: KeyScope::Partition,
        }
    }

    /// A key no other record shares (for a record that cannot be decoded).
    fn record(tenant_id: &str, offset: u64) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            scope: KeyScope::Record(offset),
        }
    }

    /// The tenant whose share of the partition the record counts against.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A backend is briefly unavailable: the runner retries with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Retrying cannot help: the runner dead-letters the event and moves on.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// How the runner polls, bounds, retries and commits. The defaults suit
/// slow LLM turns: many records of a partition in flight at once.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most records taken from the log per poll. A partition may exceed its
    /// buffer bound by at most one poll's records (the runner keeps every
    /// record it was handed).
    pub poll_max: usize,
    pub poll_timeout: Duration,
    /// Records handled at once by this processor in this process, over all
    /// its partitions.
    pub max_in_flight: usize,
    /// Records of one partition handled at once.
    pub max_in_flight_per_partition: usize,
    /// Records of one tenant handled at once within a partition, so a
    /// tenant flooding its partition leaves room for the others there.
    pub max_in_flight_per_tenant: usize,
    /// Records of a partition held by the runner (waiting or in flight): at
    /// this bound the partition is paused on the consumer.
    pub max_buffered_per_partition: usize,
    /// A paused partition resumes once it holds fewer records than this.
    pub resume_below: usize,
    /// How far a partition's newest received record may run ahead of its
    /// committable position (a record stuck retrying holds it back) before
    /// the partition pauses: bounds what a crash redoes.
    pub max_uncommitted_per_partition: u64,
    /// Least time between two commits of the group's positions.
    pub commit_interval: Duration,
    /// How long records in flight get to finish when their partition is
    /// revoked or the runner shuts down; the rest are cancelled (and stay
    /// uncommitted).
    pub drain_timeout: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    /// Attempts for a retryable failure before it is treated as permanent.
    pub max_attempts: u32,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            poll_max: 512,
            poll_timeout: Duration::from_millis(100),
            max_in_flight: 4096,
            max_in_flight_per_partition: 1024,
            max_in_flight_per_tenant: 256,
            max_buffered_per_partition: 4096,
            resume_below: 2048,
            max_uncommitted_per_partition: 65_536,
            commit_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(10),
            retry_initial_backoff: Duration::from_millis(50),
            retry_max_backoff: Duration::from_secs(5),
            max_attempts: 8,
        }
    }
}

impl RunnerConfig {
    fn limits(&self) -> Limits {
        Limits {
            in_flight: self.max_in_flight.max(1),
            in_flight_per_partition: self.max_in_flight_per_partition.max(1),
            in_flight_per_tenant: self.max_in_flight_per_tenant.max(1),
            buffered_per_partition: self.max_buffered_per_partition.max(1),
            resume_below: self
                .resume_below
                .clamp(1, self.max_buffered_per_partition.max(1)),
            uncommitted_per_partition: self.max_uncommitted_per_partition.max(1),
        }
    }
}

pub struct ProcessorRunner<P: Processor> {
    log: Arc<dyn EventLog>,
    processor: Arc<P>,
    config: RunnerConfig,
    dead_letters: Arc<dyn DeadLetterSink>,
}

/// A received record waiting for its turn or in flight.
struct Pending {
    record: LogRecord,
    /// The decoded event, or why it could not be decoded.
    event: Result<Event, String>,
    /// Cancelled when the record's partition is released past its deadline.
    cancel: CancellationToken,
}

/// What the poll loop and the record tasks share. A task that finishes a
/// record starts the next ones itself, so a conversation's next record
/// does not wait for the poll loop.
struct Dispatch<P: Processor> {
    processor: Arc<P>,
    config: RunnerConfig,
    dead_letters: Arc<dyn DeadLetterSink>,
    state: Mutex<DispatchState>,
    /// A record finished or was given up: drains wait on it.
    settled: Notify,
    /// A paused partition drained below its low-water mark.
    resume_due: Notify,
    /// Graceful shutdown: handlers stop retrying.
    shutdown: CancellationToken,
    /// Set while tracing is on: how handling spans name the log.
    tracing: Option<ProcessTracing>,
}

/// What the handling spans of a traced log carry (semantic conventions for
/// messaging, operation `process`, kind consumer).
struct ProcessTracing {
    messaging: crate::trace::Messaging,
    /// `process <destination>`.
    span_name: String,
}

struct DispatchState {
    schedule: Schedule<Pending>,
    /// Per partition, the token that cancels its records in flight.
    cancels: HashMap<u32, CancellationToken>,
    /// Set when the runner stops: nothing new starts.
    stopping: bool,
}

impl<P: Processor> ProcessorRunner<P> {
    pub fn new(log: Arc<dyn EventLog>, processor: Arc<P>, config: RunnerConfig) -> Self {
        Self {
            log,
            processor,
            config,
            dead_letters: Arc::new(LoggedDeadLetters),
        }
    }

    /// Sends records this processor gives up on to `sink` (by default they
    /// are only logged).
    pub fn with_dead_letters(mut self, sink: Arc<dyn DeadLetterSink>) -> Self {
        self.dead_letters = sink;
        self
    }

    /// Consumes until `shutdown` is cancelled, then drains and commits.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), LogError> {
        let name = self.processor.name();
        let mut consumer = self.log.subscribe(name).await?;
        register_metrics(name);
        let dispatch = Arc::new(Dispatch {
            processor: self.processor.clone(),
            config: self.config.clone(),
            dead_letters: self.dead_letters.clone(),
            state: Mutex::new(DispatchState {
                schedule: Schedule::new(self.config.limits()),
                cancels: HashMap::new(),
                stopping: false,
            }),
            settled: Notify::new(),
            resume_due: Notify::new(),
            shutdown: shutdown.clone(),
            tracing: self.log.messaging().map(|messaging| ProcessTracing {
                span_name: format!("process {}", messaging.destination),
                messaging: messaging.clone(),
            }),
        });
        let mut commits = Commits::default();
        let mut last_lag_report = Instant::now();
        let mut reported_assignment = BTreeSet::new();
        let mut owned: Vec<u32> = Vec::new();
        tracing::info!(processor = name, "processor started");

        'polling: loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => break 'polling,
                // Cancelling a poll loses nothing: both consumers advance
                // their position only when they hand records out.
                _ = dispatch.resume_due.notified() => Ok(Vec::new()),
                polled = consumer.poll(self.config.poll_max, self.config.poll_timeout) => polled,
            };
            let records = match polled {
                Ok(records) => records,
                Err(error) => {
                    tracing::warn!(processor = name, %error, "poll failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'polling,
                        _ = tokio::time::sleep(self.config.retry_initial_backoff) => continue 'polling,
                    }
                }
            };
            let assignment = consumer.assignment();
            if assignment != owned {
                // The consumer learns of a revocation during a poll, after
                // the fact: what is in flight there is drained now, and
                // nothing of it is committed any more.
                let revoked: Vec<u32> = owned
                    .iter()
                    .copied()
                    .filter(|partition| !assignment.contains(partition))
                    .collect();
                if !revoked.is_empty() {
                    // A commit made before the revocation was seen lands first.
                    commits.finish(name).await;
                    dispatch.release(&revoked, consumer.as_mut()).await;
                    for partition in &revoked {
                        commits.forget(*partition);
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break 'polling,
                    _ = self.processor.partitions_assigned(&assignment) => owned = assignment,
                }
            }
            dispatch.receive(records, &owned);
            dispatch.apply_backpressure(consumer.as_mut());
            if commits.due(self.config.commit_interval) {
                let positions = dispatch.positions(&owned);
                let synced = self.synced();
                commits
                    .start(consumer.as_mut(), positions, synced, name)
                    .await;
            }
            if last_lag_report.elapsed() >= LAG_REPORT_INTERVAL {
                last_lag_report = Instant::now();
                let assignment = consumer.assignment();
                report_assignment(&assignment, &mut reported_assignment, name);
                // Beside the loop: it may ask the broker.
                tokio::spawn(report_lag(
                    Arc::clone(&self.log),
                    assignment,
                    commits.done.clone(),
                    name,
                ));
            }
        }

        // Drain: nothing new starts; what is in flight gets the deadline;
        // what was waiting is not committed and will be redelivered.
        dispatch.stop().await;
        let positions = dispatch.positions(&owned);
        let synced = self.synced();
        commits
            .commit_now(consumer.as_mut(), positions, synced, name)
            .await;
        consumer.close().await?;
        tracing::info!(processor = name, "processor stopped");
        Ok(())
    }
}

impl<P: Processor> ProcessorRunner<P> {
    /// The processor's `sync`, to run before a commit (it must see every
    /// record the commit's positions cover finished, so it is made after them).
    fn synced(&self) -> Synced {
        let processor = Arc::clone(&self.processor);
        Box::pin(async move { processor.sync().await })
    }
}

impl<P: Processor> Dispatch<P> {
    fn lock(&self) -> MutexGuard<'_, DispatchState> {
        // The state is only changed by short, panic-free sections.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes polled records of owned partitions into the schedule and starts
    /// what may start.
    fn receive(self: &Arc<Self>, records: Vec<LogRecord>, owned: &[u32]) {
        if records.is_empty() {
            return;
        }
        let keyed: Vec<(OrderingKey, LogRecord, Result<Event, String>)> = records
            .into_iter()
            // Handed out just before a revocation the consumer saw in the
            // same poll: the partition's next owner reads them.
            .filter(|record| owned.contains(&record.position.partition))
            .map(|record| match codec::decode(&record.value) {
                Ok(event) => (self.processor.ordering_key(&event), record, Ok(event)),
                Err(error) => {
                    let key = OrderingKey::record(&record.key, record.position.offset);
                    (key, record, Err(error.to_string()))
                }
            })
            .collect();
        let mut state = self.lock();
        for (key, record, event) in keyed {
            let LogPosition { partition, offset } = record.position;
            let cancel = state.cancels.entry(partition).or_default().clone();
            let pending = Pending {
                record,
                event,
                cancel,
            };
            state.schedule.add(partition, offset, key, pending);
        }
        self.start_ready(&mut state);
    }

    /// Spawns a task for every record that may start now.
    fn start_ready(self: &Arc<Self>, state: &mut DispatchState) {
        // Once shutdown is asked for, only what is in flight goes on.
        let stopping = state.stopping || self.shutdown.is_cancelled();
        while !stopping && let Some(start) = state.schedule.next_start() {
            let dispatch = Arc::clone(self);
            tokio::spawn(async move { dispatch.run_record(start).await });
        }
        metrics::gauge!("chatstream_processor_in_flight", "processor" => self.processor.name())
            .set(state.schedule.in_flight() as f64);
    }

    /// Handles one record, then reports it and starts what it let start.
    async fn run_record(self: Arc<Self>, start: Start<Pending>) {
        let Start {
            partition,
            epoch,
            offset,
            item,
        } = start;
        let settled = tokio::select! {
            biased;
            _ = item.cancel.cancelled() => Err(Interrupted),
            settled = self.settle(&item) => settled,
        };
        let outcome = match settled {
            Ok(()) => Outcome::Finished,
            Err(Interrupted) => Outcome::Abandoned,
        };
        let (progressed, resume_due) = {
            let mut state = self.lock();
            let progressed = state.schedule.finish(partition, epoch, offset, outcome);
            self.start_ready(&mut state);
            (progressed, state.schedule.resume_due())
        };
        self.settled.notify_waiters();
        if resume_due {
            self.resume_due.notify_one();
        }
        if let Some(next_offset) = progressed {
            self.processor.partition_progressed(partition, next_offset);
        }
    }

    /// Handles the record, dead-lettering it when it cannot be handled.
    /// `Err` when shutdown interrupted it before it was settled.
    async fn settle(&self, pending: &Pending) -> Result<(), Interrupted> {
        let processor = self.processor.as_ref();
        let started = Instant::now();
        let handled = handle_record(
            processor,
            pending,
            &self.config,
            &self.shutdown,
            self.tracing.as_ref(),
        )
        .await?;
        let outcome = match handled {
            Handled::Done => "processed",
            Handled::GaveUp(_) => "failed",
        };
        metrics::histogram!(crate::metric_catalog::PROCESSOR_HANDLE_SECONDS, "processor" => processor.name(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match handled {
            Handled::Done => Ok(()),
            Handled::GaveUp(letter) => {
                send_dead_letter(
                    self.dead_letters.as_ref(),
                    &letter,
                    &self.config,
                    &self.shutdown,
                )
                .await?;
                metrics::counter!(crate::metric_catalog::PROCESSOR_DEAD_LETTERS, "processor" => processor.name(), "reason" => letter.reason.as_str())
                    .increment(1);
                Ok(())
            }
        }
    }

    /// Pauses partitions that reached a bound and resumes those that
    /// drained, on the consumer.
    fn apply_backpressure(&self, consumer: &mut dyn LogConsumer) {
        let (pause, resume) = {
            let mut state = self.lock();
            (
                state.schedule.take_to_pause(),
                state.schedule.take_to_resume(),
            )
        };
        let name = self.processor.name();
        if !pause.is_empty() {
            tracing::debug!(processor = name, partitions = ?pause, "pausing full partitions");
            metrics::counter!("chatstream_processor_partition_pauses_total", "processor" => name)
                .increment(pause.len() as u64);
            if let Err(error) = consumer.pause(&pause) {
                // Not fatal: the buffer overshoots by the records polled
                // until the next attempt.
                tracing::warn!(processor = name, %error, "cannot pause partitions");
                self.lock().schedule.set_paused(&pause, false);
            }
        }
        if !resume.is_empty() {
            tracing::debug!(processor = name, partitions = ?resume, "resuming drained partitions");
            if let Err(error) = consumer.resume(&resume) {
                tracing::warn!(processor = name, %error, "cannot resume partitions");
                self.lock().schedule.set_paused(&resume, true);
            }
        }
    }

    /// The committable position of every owned partition.
    fn positions(&self, owned: &[u32]) -> Vec<LogPosition> {
        let state = self.lock();
        state
            .schedule
            .positions()
            .into_iter()
            .filter(|(partition, _)| owned.contains(partition))
            .map(|(partition, offset)| LogPosition { partition, offset })
            .collect()
    }

    /// Lets go of revoked partitions: drops their waiting records, gives
    /// those in flight the drain deadline, cancels the rest, and forgets the
    /// partitions so nothing of them is committed any more.
    async fn release(&self, revoked: &[u32], consumer: &mut dyn LogConsumer) {
        let name = self.processor.name();
        let was_paused: Vec<u32> = {
            let mut state = self.lock();
            revoked
                .iter()
                .copied()
                .filter(|&partition| state.schedule.close(partition))
                .collect()
        };
        if !was_paused.is_empty() {
            // Leave no pause behind for a later assignment of the partition.
            if let Err(error) = consumer.resume(&was_paused) {
                tracing::debug!(processor = name, %error, "cannot resume revoked partitions");
            }
        }
        if !self.drain(Some(revoked)).await {
            tracing::warn!(processor = name, partitions = ?revoked,
                "records of revoked partitions did not finish in time; cancelled them");
        }
        let mut state = self.lock();
        for partition in revoked {
            state.schedule.forget(*partition);
            state.cancels.remove(partition);
        }
        tracing::info!(processor = name, partitions = ?revoked, "released revoked partitions");
    }

    /// Stops starting records and drains those in flight (see `drain`).
    async fn stop(&self) {
        {
            let mut state = self.lock();
            state.stopping = true;
            state.schedule.close_all();
        }
        if !self.drain(None).await {
            tracing::warn!(
                processor = self.processor.name(),
                "records in flight did not finish in time; cancelled them"
            );
        }
    }

    /// Waits until the records in flight of `partitions` (`None`: of all)
    /// finished or the drain deadline passed; then cancels those left,
    /// giving them a moment to report. `false` when the deadline passed.
    async fn drain(&self, partitions: Option<&[u32]>) -> bool {
        let in_flight = |state: &DispatchState| match partitions {
            None => state.schedule.in_flight(),
            Some(partitions) => partitions
                .iter()
                .map(|&partition| state.schedule.in_flight_of(partition))
                .sum(),
        };
        let deadline = Instant::now() + self.config.drain_timeout;
        if self.wait_until_drained(&in_flight, deadline).await {
            return true;
        }
        {
            let state = self.lock();
            for (partition, cancel) in &state.cancels {
                if partitions.is_none_or(|partitions| partitions.contains(partition)) {
                    cancel.cancel();
                }
            }
        }
        self.wait_until_drained(&in_flight, Instant::now() + CANCEL_GRACE)
            .await;
        false
    }

    async fn wait_until_drained(
        &self,
        in_flight: &impl Fn(&DispatchState) -> usize,
        deadline: Instant,
    ) -> bool {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if in_flight(&self.lock()) == 0 {
                return true;
            }
            tokio::select! {
                _ = settled => {}
                _ = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

/// How long cancelled records get to report before the runner goes on.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The group's committed positions, and the one commit under way. Commits
/// run beside the poll loop (a commit waits for the log's group commit or a
/// broker round trip, and polling must not), one at a time, so they land
/// in the order they were made.
#[derive(Default)]
struct Commits {
    /// Per partition, the position the last finished commit made.
    done: HashMap<u32, u64>,
    last: Option<Instant>,
    in_flight: Option<CommitInFlight>,
}

/// A processor's `sync`, run before a commit.
type Synced = Pin<Box<dyn Future<Output = Result<(), ProcessError>> + Send>>;

/// A commit task and the positions it makes.
type CommitInFlight = (JoinHandle<Result<(), LogError>>, Vec<LogPosition>);

impl Commits {
    /// Whether a round is due: the interval passed and the previous commit
    /// finished.
    fn due(&self, interval: Duration) -> bool {
        let idle = self
            .in_flight
            .as_ref()
            .is_none_or(|(commit, _)| commit.is_finished());
        idle && self.last.is_none_or(|last| last.elapsed() >= interval)
    }

    fn forget(&mut self, partition: u32) {
        self.done.remove(&partition);
    }

    /// Starts committing the positions that moved, after the previous
    /// commit finished and once `synced` made their records' writes durable.
    async fn start(
        &mut self,
        consumer: &mut dyn LogConsumer,
        positions: Vec<LogPosition>,
        synced: Synced,
        name: &'static str,
    ) {
        self.finish(name).await;
        self.last = Some(Instant::now());
        let pending: Vec<LogPosition> = positions
            .into_iter()
            .filter(|position| self.done.get(&position.partition) != Some(&position.offset))
            .collect();
        if pending.is_empty() {
            return;
        }
        let commit = consumer.commit(&pending);
        let commit = tokio::spawn(async move {
            synced.await.map_err(|error| {
                LogError::Unavailable(format!("the processor's writes are not durable: {error}"))
            })?;
            commit.await
        });
        self.in_flight = Some((commit, pending));
    }

    /// Waits for the commit under way, if any.
    async fn finish(&mut self, name: &'static str) {
        let Some((commit, positions)) = self.in_flight.take() else {
            return;
        };
        match commit.await {
            Ok(Ok(())) => {
                for position in positions {
                    self.done.insert(position.partition, position.offset);
                }
            }
            // Not fatal: the next round commits again; a crash before then only redelivers.
            Ok(Err(error)) => tracing::warn!(processor = name, %error, "commit failed"),
            Err(error) => tracing::warn!(processor = name, %error, "commit task failed"),
        }
    }

    /// Commits `positions` and waits until that is done.
    async fn commit_now(
        &mut self,
        consumer: &mut dyn LogConsumer,
        positions: Vec<LogPosition>,
        synced: Synced,
        name: &'static str,
    ) {
        self.start(consumer, positions, synced, name).await;
        self.finish(name).await;
    }
}

/// Interrupted by shutdown before the record was settled.
struct Interrupted;

/// What became of a record.
enum Handled {
    Done,
    /// Cannot be processed: dead-letter it, then move on.
    GaveUp(Box<DeadLetter>),
}

async fn handle_record<P: Processor>(
    processor: &P,
    pending: &Pending,
    config: &RunnerConfig,
    shutdown: &CancellationToken,
    tracing: Option<&ProcessTracing>,
) -> Result<Handled, Interrupted> {
    let name = processor.name();
    let record = &pending.record;
    metrics::counter!("chatstream_processor_events_received_total", "processor" => name)
        .increment(1);
    let event = match &pending.event {
        Ok(event) => event,
        Err(error) => {
            // Poison: a record no processor can read must not stop the partition.
            tracing::error!(processor = name, partition = record.position.partition,
                offset = record.position.offset, %error, "undecodable record; dead-lettering it");
            metrics::counter!("chatstream_processor_events_failed_total", "processor" => name, "reason" => "undecodable").increment(1);
            let letter = DeadLetter::new(
                name,
                record,
                DeadLetterReason::Undecodable,
                error.clone(),
                0,
            );
            return Ok(Handled::GaveUp(Box::new(letter)));
        }
    };

    // Every log line while handling carries the turn's correlation id.
    let span = tracing::info_span!(
        "event",
        processor = name,
        event_id = %event.id,
        correlation_id = %event.correlation_id,
        tenant_id = %event.tenant_id,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(tracing) = tracing {
        trace_processing(&span, tracing, name, event, record);
    }
    let mut backoff = config.retry_initial_backoff;
    for attempt in 1.. {
        let handled = processor
            .handle(event, record.position)
            .instrument(span.clone())
            .await;
        match handled {
            Ok(()) => {
                metrics::counter!("chatstream_processor_events_processed_total", "processor" => name).increment(1);
                return Ok(Handled::Done);
            }
            Err(ProcessError::Retryable(error)) if attempt < config.max_attempts => {
                tracing::warn!(processor = name, event_id = %event.id, attempt, %error, "handling failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Interrupted),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.retry_max_backoff);
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                tracing::error!(processor = name, event_id = %event.id, partition = record.position.partition,
                    offset = record.position.offset, %error, "giving up on event; dead-lettering it");
                metrics::counter!("chatstream_processor_events_failed_total", "processor" => name, "reason" => "handler").increment(1);
                let letter = DeadLetter::new(
                    name,
                    record,
                    DeadLetterReason::HandlerFailed,
                    error.to_string(),
                    attempt,
                )
                .with_event_id(&event.id);
                return Ok(Handled::GaveUp(Box::new(letter)));
            }
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// Names `span` a messaging `process` span of `event` and makes it a child
/// of the span that appended the event.
fn trace_processing(
    span: &tracing::Span,
    tracing: &ProcessTracing,
    group: &'static str,
    event: &Event,
    record: &LogRecord,
) {
    use crate::trace::set_attribute;
    span.record("otel.name", tracing.span_name.as_str());
    span.record("otel.kind", "consumer");
    crate::trace::continue_trace(span, Some(event.traceparent.as_str()));
    set_attribute(span, "messaging.system", tracing.messaging.system);
    set_attribute(span, "messaging.operation.type", "process");
    set_attribute(span, "messaging.operation.name", "process");
    set_attribute(
        span,
        "messaging.destination.name",
        tracing.messaging.destination.clone(),
    );
    set_attribute(span, "messaging.consumer.group.name", group);
    set_attribute(
        span,
        "messaging.destination.partition.id",
        record.position.partition.to_string(),
    );
    set_attribute(
        span,
        "messaging.kafka.offset",
        record.position.offset as i64,
    );
    set_attribute(span, "messaging.message.id", event.id.clone());
    set_attribute(span, "chatstream.event.type", event.r#type.clone());
}

/// Sends `letter`, retrying with backoff for as long as it takes: moving
/// past the record without it stored would lose it. Only shutdown stops
/// the retries, and then the record stays uncommitted.
async fn send_dead_letter(
    sink: &dyn DeadLetterSink,
    letter: &DeadLetter,
    config: &RunnerConfig,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    let mut backoff = config.retry_initial_backoff;
    for attempt in 1u64.. {
        match sink.send(letter).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                tracing::error!(processor = %letter.processor, partition = letter.position.partition,
                    offset = letter.position.offset, attempt, %error,
                    "cannot store dead letter; the partition waits and retries");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Interrupted),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.retry_max_backoff);
            }
        }
    }
    unreachable!("the attempt counter is unbounded")
}

/// The metrics every processor emits (the shared contract dashboards and
/// alerts rely on; see `metric_catalog`). The counters are registered at
/// zero so they exist before the first event.
pub use crate::metric_catalog::PROCESSOR_METRICS;

fn register_metrics(name: &'static str) {
    metrics::counter!("chatstream_processor_events_received_total", "processor" => name)
        .absolute(0);
    metrics::counter!("chatstream_processor_events_processed_total", "processor" => name)
        .absolute(0);
    metrics::gauge!("chatstream_processor_in_flight", "processor" => name).set(0.0);
    metrics::counter!("chatstream_processor_partition_pauses_total", "processor" => name)
        .absolute(0);
    for reason in ["undecodable", "handler"] {
        metrics::counter!("chatstream_processor_events_failed_total", "processor" => name, "reason" => reason)
            .absolute(0);
    }
    for reason in [
        DeadLetterReason::Undecodable,
        DeadLetterReason::HandlerFailed,
    ] {
        metrics::counter!(crate::metric_catalog::PROCESSOR_DEAD_LETTERS, "processor" => name, "reason" => reason.as_str())
            .absolute(0);
    }
}

/// How often the runner publishes its lag gauge.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes `chatstream_processor_partition_assigned{processor, partition}`:
/// 1 while this replica owns the partition, 0 once it lost it.
fn report_assignment(assignment: &[u32], reported: &mut BTreeSet<u32>, name: &'static str) {
    let owned: BTreeSet<u32> = assignment.iter().copied().collect();
    for &partition in reported.difference(&owned) {
        metrics::gauge!("chatstream_processor_partition_assigned", "processor" => name, "partition" => partition.to_string())
            .set(0.0);
    }
    for &partition in &owned {
        metrics::gauge!("chatstream_processor_partition_assigned", "processor" => name, "partition" => partition.to_string())
            .set(1.0);
    }
    *reported = owned;
}

/// Publishes `chatstream_processor_lag{processor, partition}`: records on
/// the log that the group has not committed yet.
async fn report_lag(
    log: Arc<dyn EventLog>,
    assignment: Vec<u32>,
    committed: HashMap<u32, u64>,
    name: &'static str,
) {
    for partition in assignment {
        let Ok(end) = log.end_offset(partition).await else {
            continue;
        };
        let done = match committed.get(&partition) {
            Some(&offset) => offset,
            None => log
                .committed(name, partition)
                .await
                .ok()
                .flatten()
                .unwrap_or(0),
        };
        metrics::gauge!("chatstream_processor_lag", "processor" => name, "partition" => partition.to_string())
            .set(end.saturating_sub(done) as f64);
    }
}
