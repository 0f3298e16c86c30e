//! Throughput and latency of the embedded projection store's durable
//! writes (`append_history`, what the conversation projector does per
//! event) from 1, 8 and 64 concurrent writers: group commit lets
//! concurrent writers share fsyncs.
//!
//! `cargo bench -p chatstream-core --bench embedded_store`
//! Set `CHATSTREAM_BENCH_EVENTS` to change the event count (default 20000).
use std::sync::Arc;
use std::time::{Duration, Instant};

use chatstream_core::log::LogPosition;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_core::store::{HistoryEntry, ProjectionStore};
use chatstream_test_support::conformance::user_message;
use hdrhistogram::Histogram;

const CONCURRENCY: [usize; 3] = [1, 8, 64];
const SEQUENTIAL_EVENTS_CAP: usize = 2_000;

fn main() {
    let events: usize = std::env::var("CHATSTREAM_BENCH_EVENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(events));
}

async fn run(events: usize) {
    for concurrency in CONCURRENCY {
        let count = if concurrency == 1 {
            events.min(SEQUENTIAL_EVENTS_CAP)
        } else {
            events
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let per_task = count.div_ceil(concurrency);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut latency = new_histogram();
                    for n in task * per_task..((task + 1) * per_task).min(count) {
                        let tenant = format!("tenant-{:03}", n % 100);
                        let entry = HistoryEntry {
                            position: LogPosition {
                                partition: (n % 8) as u32,
                                offset: n as u64,
                            },
                            event: user_message(
                                &tenant,
                                &format!("conv-{}", n % 1000),
                                "a question",
                            ),
                        };
                        let written_at = Instant::now();
                        store.append_history(&entry).await.expect("append history");
                        latency
                            .record(written_at.elapsed().as_micros() as u64)
                            .expect("in range");
                    }
                    latency
                })
            })
            .collect();
        let mut latency = new_histogram();
        for task in tasks {
            latency
                .add(task.await.expect("writer task"))
                .expect("merge");
        }
        let elapsed = started.elapsed();
        println!(
            "append_history {concurrency:>2} writers: {count:>6} events in {elapsed:>7.2?} = {:>8.0} events/s; \
             latency p50 {:>8.2?} p99 {:>8.2?}",
            count as f64 / elapsed.as_secs_f64(),
            Duration::from_micros(latency.value_at_quantile(0.50)),
            Duration::from_micros(latency.value_at_quantile(0.99)),
        );
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}
