//! Throughput of the analytics processor on the embedded stores: turns of
//! four events (user message, routing decision, usage, answer) handled by
//! 1 and 64 concurrent conversations, as the runner would hand them over.
//!
//! `cargo bench -p chatstream-analytics --bench analytics_throughput`
//! Set `CHATSTREAM_BENCH_TURNS` to change the turn count (default 5000).
mod common;

use common::turn;
use std::sync::Arc;
use std::time::Instant;

use chatstream_analytics::AnalyticsProjector;
use chatstream_core::analytics::embedded::EmbeddedAnalytics;
use chatstream_core::log::LogPosition;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::runner::Processor;
use chatstream_core::store::embedded::EmbeddedStore;

const CONCURRENCY: [usize; 2] = [1, 64];
const TENANTS: usize = 4;

fn main() {
    let turns: usize = std::env::var("CHATSTREAM_BENCH_TURNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(turns));
}

async fn run(turns: usize) {
    for concurrency in CONCURRENCY {
        let dir = tempfile::tempdir().expect("temp dir");
        let analytics = Arc::new(EmbeddedAnalytics::open(dir.path()).expect("open analytics"));
        let log = Arc::new(EmbeddedLog::open(dir.path(), 1).expect("open log"));
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let projector = Arc::new(AnalyticsProjector::new(log, store, analytics));
        let per_task = turns.div_ceil(concurrency);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|task| {
                let projector = projector.clone();
                tokio::spawn(async move {
                    let tenant = format!("tenant-{}", task % TENANTS);
                    let conversation = format!("conversation-{task}");
                    let model = format!("model-{}", conversation.len() % 3);
                    let mut handled = 0usize;
                    for n in 0..per_task {
                        for event in turn(&tenant, &conversation, &model) {
                            let position = LogPosition {
                                partition: 0,
                                offset: n as u64,
                            };
                            projector.handle(&event, position).await.expect("handle");
                            handled += 1;
                        }
                    }
                    handled
                })
            })
            .collect();
        let mut events = 0;
        for task in tasks {
            events += task.await.expect("task");
        }
        let elapsed = started.elapsed();
        println!(
            "analytics, {concurrency:>2} conversations at once: {events} events in {:.2} s = {:.0} events/s",
            elapsed.as_secs_f64(),
            events as f64 / elapsed.as_secs_f64()
        );
    }
}
