//! Runs a `Processor` over the log: records are handled in order within a
//! partition and concurrently across partitions, and a partition's position
//! is committed only after its records were handled, so a crash redelivers
//! rather than loses. A record that cannot be processed (undecodable, or its
//! handler failed for good) goes to the dead-letter sink before the runner
//! moves past it. Stops on a cancellation token, finishing the record in
//! hand and committing before it returns.
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chatstream_schemas::{Event, codec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::deadletter::{DeadLetter, DeadLetterReason, DeadLetterSink, LoggedDeadLetters};
use crate::log::{EventLog, LogConsumer, LogError, LogPosition, LogRecord};

/// A consumer of events; one instance per processor kind, shared by the
/// tasks of every partition.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// The consumer group and metric label, e.g. `router`.
    fn name(&self) -> &'static str;

    /// Handles one event. Must be idempotent: after a crash the same event
    /// may be handled again.
    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError>;

    /// Told the partitions this member owns whenever that set changes, before
    /// any record of a newly owned partition is handled. For a processor that
    /// keeps work in flight across records (timers, say): it resumes what the
    /// partition's previous owner left undone and drops what it no longer owns.
    async fn partitions_assigned(&self, _partitions: &[u32]) {}
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

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Most records taken from the log per poll.
    pub poll_max: usize,
    pub poll_timeout: Duration,
    /// Records buffered per partition; a full buffer pauses polling (backpressure).
    pub partition_queue: usize,
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
            partition_queue: 256,
            retry_initial_backoff: Duration::from_millis(50),
            retry_max_backoff: Duration::from_secs(5),
            max_attempts: 8,
        }
    }
}

pub struct ProcessorRunner<P: Processor> {
    log: Arc<dyn EventLog>,
    processor: Arc<P>,
    config: RunnerConfig,
    dead_letters: Arc<dyn DeadLetterSink>,
}

/// Offset after the last handled record, per partition; shared between the
/// partition workers (which advance it) and the poll loop (which commits it).
type Progress = Arc<Mutex<HashMap<u32, u64>>>;

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
        let progress: Progress = Arc::default();
        let mut committed: HashMap<u32, u64> = HashMap::new();
        let mut workers: HashMap<u32, (mpsc::Sender<LogRecord>, JoinHandle<()>)> = HashMap::new();
        register_metrics(name);
        let mut last_lag_report = tokio::time::Instant::now();
        let mut reported_assignment = BTreeSet::new();
        let mut owned: Vec<u32> = Vec::new();
        tracing::info!(processor = name, "processor started");

        'polling: loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => break 'polling,
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
                tokio::select! {
                    _ = shutdown.cancelled() => break 'polling,
                    _ = self.processor.partitions_assigned(&assignment) => owned = assignment,
                }
            }
            for record in records {
                let partition = record.position.partition;
                let (queue, _) = workers.entry(partition).or_insert_with(|| {
                    self.spawn_partition_worker(partition, progress.clone(), shutdown.clone())
                });
                tokio::select! {
                    _ = shutdown.cancelled() => break 'polling,
                    sent = queue.send(record) => if sent.is_err() { break 'polling },
                }
            }
            commit_progress(consumer.as_mut(), &progress, &mut committed, name).await;
            if last_lag_report.elapsed() >= LAG_REPORT_INTERVAL {
                last_lag_report = tokio::time::Instant::now();
                let assignment = consumer.assignment();
                report_assignment(&assignment, &mut reported_assignment, name);
                report_lag(self.log.as_ref(), assignment, &committed, name).await;
            }
        }

        // Drain: workers finish the record in hand and stop; what is still
        // queued is not committed and will be redelivered.
        for (_, (queue, worker)) in workers.drain() {
            drop(queue);
            let _ = worker.await;
        }
        commit_progress(consumer.as_mut(), &progress, &mut committed, name).await;
        consumer.close().await?;
        tracing::info!(processor = name, "processor stopped");
        Ok(())
    }

    fn spawn_partition_worker(
        &self,
        partition: u32,
        progress: Progress,
        shutdown: CancellationToken,
    ) -> (mpsc::Sender<LogRecord>, JoinHandle<()>) {
        let (queue, mut records) = mpsc::channel::<LogRecord>(self.config.partition_queue);
        let processor = self.processor.clone();
        let dead_letters = self.dead_letters.clone();
        let config = self.config.clone();
        let worker = tokio::spawn(async move {
            while let Some(record) = records.recv().await {
                if shutdown.is_cancelled() {
                    break;
                }
                let offset = record.position.offset;
                let handled = handle_record(processor.as_ref(), &record, &config, &shutdown).await;
                let settled = match handled {
                    Ok(Handled::Done) => Ok(()),
                    Ok(Handled::GaveUp(letter)) => {
                        send_dead_letter(dead_letters.as_ref(), &letter, &config, &shutdown).await
                    }
                    Err(Interrupted) => Err(Interrupted),
                };
                if settled.is_err() {
                    break; // shut down mid-retry: leave the record uncommitted
                }
                progress
                    .lock()
                    .expect("progress lock")
                    .insert(partition, offset + 1);
            }
        });
        (queue, worker)
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
    record: &LogRecord,
    config: &RunnerConfig,
    shutdown: &CancellationToken,
) -> Result<Handled, Interrupted> {
    let name = processor.name();
    metrics::counter!("chatstream_processor_events_received_total", "processor" => name)
        .increment(1);
    let event = match codec::decode(&record.value) {
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
                error.to_string(),
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
    );
    let mut backoff = config.retry_initial_backoff;
    for attempt in 1.. {
        let handled = processor
            .handle(&event, record.position)
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
/// alerts rely on), registered at zero so they exist before the first event.
pub const PROCESSOR_METRICS: [&str; 5] = [
    "chatstream_processor_events_received_total",
    "chatstream_processor_events_processed_total",
    "chatstream_processor_events_failed_total",
    "chatstream_processor_lag",
    "chatstream_processor_partition_assigned",
];

fn register_metrics(name: &'static str) {
    metrics::counter!("chatstream_processor_events_received_total", "processor" => name)
        .absolute(0);
    metrics::counter!("chatstream_processor_events_processed_total", "processor" => name)
        .absolute(0);
    for reason in ["undecodable", "handler"] {
        metrics::counter!("chatstream_processor_events_failed_total", "processor" => name, "reason" => reason)
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
    log: &dyn EventLog,
    assignment: Vec<u32>,
    committed: &HashMap<u32, u64>,
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

async fn commit_progress(
    consumer: &mut dyn LogConsumer,
    progress: &Progress,
    committed: &mut HashMap<u32, u64>,
    name: &'static str,
) {
    let pending: Vec<LogPosition> = progress
        .lock()
        .expect("progress lock")
        .iter()
        .filter(|(partition, offset)| committed.get(partition) != Some(offset))
        .map(|(&partition, &offset)| LogPosition { partition, offset })
        .collect();
    if pending.is_empty() {
        return;
    }
    match consumer.commit(&pending).await {
        Ok(()) => {
            for position in pending {
                committed.insert(position.partition, position.offset);
            }
        }
        // Not fatal: the next round commits again; a crash before then only redelivers.
        Err(error) => tracing::warn!(processor = name, %error, "commit failed"),
    }
}
