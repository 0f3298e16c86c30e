//! Samples a server process's resident memory from /proc/PID/status while
//! the run goes on, and reports the most it held.
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SAMPLE_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Default, Serialize)]
pub struct MemoryReport {
    pub pid: u32,
    /// Resident memory when sampling began (before idle connections opened).
    pub rss_at_start_bytes: Option<u64>,
    /// The largest resident memory sampled.
    pub peak_rss_bytes: Option<u64>,
    /// The kernel's own high-water mark (VmHWM) at the end.
    pub vm_hwm_bytes: Option<u64>,
    pub samples: u64,
    pub error: Option<String>,
}

pub struct MemorySampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<MemoryReport>,
}

impl MemorySampler {
    pub fn start(pid: u32) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut report = MemoryReport {
                pid,
                ..MemoryReport::default()
            };
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => sample(&mut report),
                    _ = &mut stopped => break,
                }
            }
            sample(&mut report);
            report
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> MemoryReport {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

fn sample(report: &mut MemoryReport) {
    let path = format!("/proc/{}/status", report.pid);
    match std::fs::read_to_string(&path) {
        Ok(status) => {
            let rss = status_field_bytes(&status, "VmRSS:");
            report.samples += 1;
            report.rss_at_start_bytes = report.rss_at_start_bytes.or(rss);
            report.peak_rss_bytes = report.peak_rss_bytes.max(rss);
            report.vm_hwm_bytes = status_field_bytes(&status, "VmHWM:").or(report.vm_hwm_bytes);
        }
        Err(error) => {
            report
                .error
                .get_or_insert_with(|| format!("cannot read {path}: {error}"));
        }
    }
}

/// A `Name:   1234 kB` line of /proc/PID/status, in bytes.
fn status_field_bytes(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tchatstream\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(
            status_field_bytes(status, "VmRSS:"),
            Some(100 * 1024 * 1024)
        );
        assert_eq!(
            status_field_bytes(status, "VmHWM:"),
            Some(200 * 1024 * 1024)
        );
        assert_eq!(status_field_bytes(status, "VmSwap:"), None);
    }

    #[tokio::test]
    async fn samples_this_process() {
        let sampler = MemorySampler::start(std::process::id());
        let report = sampler.finish().await;
        assert!(report.samples >= 1);
        assert!(report.peak_rss_bytes.unwrap() > 0);
        assert!(report.error.is_none());
    }
}
