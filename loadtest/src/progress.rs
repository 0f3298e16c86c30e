//! The progress line on stderr, once a second while the run goes on.
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::driver::RunContext;

pub struct ProgressLine {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ProgressLine {
    pub fn start(ctx: Arc<RunContext>) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await; // the first tick is immediate
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => break,
                }
                let progress = ctx
                    .stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .progress(Instant::now());
                let p99 = progress
                    .recent_ack_p99_ms
                    .map_or("-".to_owned(), |p| format!("{p:.3} ms"));
                // One line per second (not redrawn in place) so logs of CI runs stay readable.
                let mut err = std::io::stderr().lock();
                let _ = writeln!(
                    err,
                    "[{:>6.1}s] sent {:>9}  acked {:>9}  errors {:>6}  ack p99 (last 1s) {p99}",
                    progress.elapsed.as_secs_f64(),
                    progress.sent,
                    progress.acked,
                    progress.failed,
                );
            }
        });
        Self { stop, task }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
