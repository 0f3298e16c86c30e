//! Throughput of the analytics processor as it runs in production: the
//! runner consuming a log that already holds every event (a replay, or a
//! processor catching up after downtime), on the embedded log and, when
//! `CHATSTREAM_BENCH_KAFKA` names a Kafka-protocol broker, on Kafka. The
//! projection is the embedded analytics store in both cases, so the two
//! numbers differ by the log only.
//!
//! `cargo bench -p chatstream-analytics --bench analytics_log_throughput`
//! `CHATSTREAM_BENCH_TURNS` (default 10000) turns of four events, spread
//! over `CHATSTREAM_BENCH_TENANTS` (default 8) tenants of 16 conversations.
mod common;

use common::turn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatstream_analytics::AnalyticsProjector;
use chatstream_core::analytics::embedded::EmbeddedAnalytics;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::log::{EventLog, LogPosition};
use chatstream_core::runner::{
    OrderingKey, ProcessError, Processor, ProcessorRunner, RunnerConfig,
};
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_kafka::{KafkaLog, KafkaLogConfig, create_topics};
use chatstream_schemas::Event;
use chatstream_schemas::ids::new_event_id;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const CONVERSATIONS_PER_TENANT: usize = 16;
const PARTITIONS: u32 = 8;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The analytics processor, counting what it handled, in a consumer group
/// of its own (so a broker's earlier runs do not matter).
struct Counted {
    inner: AnalyticsProjector,
    group: &'static str,
    handled: AtomicU64,
    expected: u64,
    done: Notify,
}

#[async_trait]
impl Processor for Counted {
    fn name(&self) -> &'static str {
        self.group
    }

    async fn handle(&self, event: &Event, position: LogPosition) -> Result<(), ProcessError> {
        self.inner.handle(event, position).await?;
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == self.expected {
            self.done.notify_one();
        }
        Ok(())
    }

    fn ordering_key(&self, event: &Event) -> OrderingKey {
        self.inner.ordering_key(event)
    }

    async fn sync(&self) -> Result<(), ProcessError> {
        self.inner.sync().await
    }
}

/// Appends `turns` turns, conversation by conversation, one `append_all`
/// per turn and many turns at once; returns the events appended.
async fn fill(log: Arc<dyn EventLog>, turns: usize, tenants: usize) -> u64 {
    let conversations = tenants * CONVERSATIONS_PER_TENANT;
    let writers: Vec<_> = (0..conversations)
        .map(|c| {
            let log = log.clone();
            tokio::spawn(async move {
                let tenant = format!("tenant-{}", c % tenants);
                let conversation = format!("conversation-{c}");
                let model = format!("model-{}", c % 3);
                let mut appended = 0u64;
                for _ in (c..turns).step_by(conversations) {
                    let events = turn(&tenant, &conversation, &model);
                    log.append_all(&tenant, &events).await.expect("append");
                    appended += events.len() as u64;
                }
                appended
            })
        })
        .collect();
    let mut appended = 0;
    for writer in writers {
        appended += writer.await.expect("writer");
    }
    appended
}

/// Runs the analytics processor over `log` until it handled `events`;
/// returns how long that took.
async fn consume(log: Arc<dyn EventLog>, events: u64, group: &'static str) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let analytics = Arc::new(EmbeddedAnalytics::open(dir.path()).expect("open analytics"));
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
    let processor = Arc::new(Counted {
        inner: AnalyticsProjector::new(log.clone(), store, analytics),
        group,
        handled: AtomicU64::new(0),
        expected: events,
        done: Notify::new(),
    });
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let runner = tokio::spawn(
        ProcessorRunner::new(log, processor.clone(), RunnerConfig::default()).run(shutdown.clone()),
    );
    tokio::time::timeout(Duration::from_secs(600), processor.done.notified())
        .await
        .expect("the processor handled every event within 10 minutes");
    let elapsed = started.elapsed();
    shutdown.cancel();
    runner.await.expect("runner task").expect("runner");
    elapsed
}

fn report(log: &str, events: u64, elapsed: Duration) {
    println!(
        "analytics on the {log}: {events} events in {:.2} s = {:.0} events/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
}

async fn on_embedded_log(turns: usize, tenants: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir.path(), PARTITIONS).expect("open log"));
    let events = fill(log.clone(), turns, tenants).await;
    let elapsed = consume(log, events, "analytics-bench").await;
    report("embedded log", events, elapsed);
}

async fn on_kafka(bootstrap: &str, turns: usize, tenants: usize) {
    let run = new_event_id();
    let mut config = KafkaLogConfig::new(bootstrap, format!("chatstream-bench-{run}"));
    config.partitions = PARTITIONS;
    create_topics(&config).await.expect("create the topics");
    let log: Arc<dyn EventLog> = Arc::new(KafkaLog::connect(config).await.expect("connect"));
    let filling = Instant::now();
    let events = fill(log.clone(), turns, tenants).await;
    println!(
        "  (filled the topic in {:.2} s)",
        filling.elapsed().as_secs_f64()
    );
    let group: &'static str = format!("analytics-bench-{run}").leak();
    let elapsed = consume(log, events, group).await;
    report("Kafka log", events, elapsed);
}

fn main() {
    let turns = setting("CHATSTREAM_BENCH_TURNS", 10_000);
    let tenants = setting("CHATSTREAM_BENCH_TENANTS", 8).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        on_embedded_log(turns, tenants).await;
        match std::env::var("CHATSTREAM_BENCH_KAFKA") {
            Ok(bootstrap) if !bootstrap.is_empty() => on_kafka(&bootstrap, turns, tenants).await,
            _ => println!(
                "analytics on the Kafka log: not run (set CHATSTREAM_BENCH_KAFKA=host:port)"
            ),
        }
    });
}
