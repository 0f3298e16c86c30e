//! Throughput and latency of the embedded event log on this machine's disk:
//! durable appends from 1, 64 and 256 concurrent appenders (group commit
//! makes the concurrent ones share fsyncs), then a sequential read of
//! every partition.
//!
//! `cargo bench -p chatstream-core --bench embedded_log`
//! Set `CHATSTREAM_BENCH_EVENTS` to change the event count (default 100000).
use std::time::{Duration, Instant};

use chatstream_core::log::EventLog;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_schemas::{Event, codec};
use chatstream_test_support::conformance::user_message;
use hdrhistogram::Histogram;

const PARTITIONS: u32 = 8;
const TENANTS: usize = 100;
const CONCURRENCY: [usize; 3] = [1, 64, 256];
/// A single appender waits for one fsync per event; cap its run so the
/// bench finishes in reasonable time.
const SEQUENTIAL_EVENTS_CAP: usize = 2_000;
const READ_BATCH: usize = 1_000;

fn main() {
    let events: usize = std::env::var("CHATSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(events));
}

async fn run(events: usize) {
    let sample = realistic_event(0);
    println!(
        "embedded log: {PARTITIONS} partitions, {TENANTS} tenants, UserMessageSent of {} bytes encoded",
        codec::encode(&sample).len()
    );
    let mut last_dir = None;
    for concurrency in CONCURRENCY {
        let count = if concurrency == 1 {
            events.min(SEQUENTIAL_EVENTS_CAP)
        } else {
            events
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let log = EmbeddedLog::open(dir.path(), PARTITIONS).expect("open log");
        let result = append_concurrently(&log, concurrency, count).await;
        println!(
            "append  {concurrency:>3} appenders: {count:>7} events in {:>7.2?} = {:>9.0} events/s; \
             latency p50 {:>8.2?} p99 {:>8.2?} max {:>8.2?}",
            result.elapsed,
            count as f64 / result.elapsed.as_secs_f64(),
            micros(result.latency.value_at_quantile(0.50)),
            micros(result.latency.value_at_quantile(0.99)),
            micros(result.latency.max()),
        );
        last_dir = Some((dir, log));
    }
    if let Some((_dir, log)) = last_dir {
        read_everything(&log).await;
    }
}

struct AppendResult {
    elapsed: Duration,
    /// Append latency in microseconds.
    latency: Histogram<u64>,
}

async fn append_concurrently(log: &EmbeddedLog, concurrency: usize, count: usize) -> AppendResult {
    let per_task = count.div_ceil(concurrency);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let log = log.clone();
            let events: Vec<Event> = (task * per_task..((task + 1) * per_task).min(count))
                .map(realistic_event)
                .collect();
            tokio::spawn(async move {
                let mut latency = new_histogram();
                for event in events {
                    let appended_at = Instant::now();
                    log.append(&event.tenant_id, &event).await.expect("append");
                    latency
                        .record(appended_at.elapsed().as_micros() as u64)
                        .expect("latency in range");
                }
                latency
            })
        })
        .collect();
    let mut latency = new_histogram();
    for task in tasks {
        latency
            .add(task.await.expect("appender task"))
            .expect("merge histograms");
    }
    AppendResult {
        elapsed: started.elapsed(),
        latency,
    }
}

async fn read_everything(log: &EmbeddedLog) {
    let started = Instant::now();
    let (mut records, mut bytes) = (0usize, 0usize);
    for partition in 0..log.partition_count() {
        let mut from = 0;
        loop {
            let batch = log.read(partition, from, READ_BATCH).await.expect("read");
            let Some(last) = batch.last() else { break };
            from = last.position.offset + 1;
            records += batch.len();
            bytes += batch.iter().map(|record| record.value.len()).sum::<usize>();
        }
    }
    let elapsed = started.elapsed();
    println!(
        "read    sequential, batches of {READ_BATCH}: {records} events ({:.1} MiB) in {elapsed:.2?} = {:.0} events/s",
        bytes as f64 / (1024.0 * 1024.0),
        records as f64 / elapsed.as_secs_f64(),
    );
}

/// A user message as a chat client sends it; about 200 bytes encoded
/// (two UUIDs, ids, a timestamp and a short question).
fn realistic_event(n: usize) -> Event {
    let tenant = format!("tenant-{:03}", n % TENANTS);
    let conversation = format!("conv-{}", n % 1_000);
    let text = format!("Message {n}: summarise yesterday's incident report.");
    user_message(&tenant, &conversation, &text)
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn micros(value: u64) -> Duration {
    Duration::from_micros(value)
}
