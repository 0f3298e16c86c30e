//! Latency histograms (HdrHistogram, microseconds), per-second timelines,
//! counters and errors by kind, and the summary computed from them at the
//! end of a run.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The three latencies the tool measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Send → ack (the message is durable).
    Ack,
    /// Send → first token delta of the reply.
    Ttft,
    /// Send → committed assistant message.
    Completion,
}

impl Metric {
    pub fn label(self) -> &'static str {
        match self {
            Metric::Ack => "ack",
            Metric::Ttft => "ttft",
            Metric::Completion => "completion",
        }
    }
}

/// Up to an hour, three significant digits: a microsecond stays visible
/// next to a stall of many seconds.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// The per-second histograms only feed the plot; two digits keep a long
/// run's timeline small.
const TIMELINE_DIGITS: u8 = 2;

fn histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_MICROS, digits).expect("valid histogram bounds")
}

/// One second of the run, by the messages' scheduled send time.
struct Second {
    latencies: [Histogram<u64>; 3],
    acked: u64,
    failed: u64,
}

/// Everything measured so far. One per run, shared by the connections.
pub struct Recorder {
    started: Instant,
    latencies: [Histogram<u64>; 3],
    timeline: Vec<Second>,
    /// Acks since the progress line last looked.
    recent_acks: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    attempted: u64,
    sent: u64,
    acked: u64,
    replied: u64,
    failed: u64,
    last_ack: Option<Instant>,
    last_reply: Option<Instant>,
}

/// Counters for the progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    /// p99 of the acks since the previous call, in milliseconds.
    pub recent_ack_p99_ms: Option<f64>,
}

fn index(metric: Metric) -> usize {
    match metric {
        Metric::Ack => 0,
        Metric::Ttft => 1,
        Metric::Completion => 2,
    }
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            latencies: [histogram(3), histogram(3), histogram(3)],
            timeline: Vec::new(),
            recent_acks: histogram(3),
            errors: BTreeMap::new(),
            attempted: 0,
            sent: 0,
            acked: 0,
            replied: 0,
            failed: 0,
            last_ack: None,
            last_reply: None,
        }
    }

    /// Starts the clock again: connection setup is not part of the run.
    pub fn restart_clock(&mut self, at: Instant) {
        self.started = at;
    }

    fn second(&mut self, scheduled: Instant) -> &mut Second {
        let second = scheduled.saturating_duration_since(self.started).as_secs() as usize;
        while self.timeline.len() <= second {
            self.timeline.push(Second {
                latencies: [
                    histogram(TIMELINE_DIGITS),
                    histogram(TIMELINE_DIGITS),
                    histogram(TIMELINE_DIGITS),
                ],
                acked: 0,
                failed: 0,
            });
        }
        &mut self.timeline[second]
    }

    /// A message's time came but it could not be sent.
    pub fn attempted(&mut self) {
        self.attempted += 1;
    }

    /// A message went out (and so was attempted too).
    pub fn sent(&mut self) {
        self.attempted += 1;
        self.sent += 1;
    }

    /// `scheduled` is when the message was due: the latency includes any
    /// time it waited for its turn.
    pub fn record(&mut self, metric: Metric, scheduled: Instant, at: Instant) {
        let value = micros(at.saturating_duration_since(scheduled));
        self.latencies[index(metric)].saturating_record(value);
        let second = self.second(scheduled);
        second.latencies[index(metric)].saturating_record(value);
        match metric {
            Metric::Ack => {
                second.acked += 1;
                self.acked += 1;
                self.recent_acks.saturating_record(value);
                self.last_ack = Some(at);
            }
            Metric::Completion => {
                self.replied += 1;
                self.last_reply = Some(at);
            }
            Metric::Ttft => {}
        }
    }

    /// A message failed for good (each message is counted at most once).
    pub fn message_failed(&mut self, scheduled: Instant, kind: &str) {
        self.failed += 1;
        self.second(scheduled).failed += 1;
        self.connection_error(kind);
    }

    /// An error that is not one message's failure, e.g. a failed reconnect.
    pub fn connection_error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    pub fn progress(&mut self, now: Instant) -> Progress {
        let recent = (!self.recent_acks.is_empty())
            .then(|| self.recent_acks.value_at_quantile(0.99) as f64 / 1000.0);
        self.recent_acks.reset();
        Progress {
            elapsed: now.saturating_duration_since(self.started),
            sent: self.sent,
            acked: self.acked,
            failed: self.failed,
            recent_ack_p99_ms: recent,
        }
    }

    pub fn summary(&self) -> Summary {
        let window = |last: Option<Instant>| {
            last.map(|at| at.saturating_duration_since(self.started).as_secs_f64())
                .filter(|s| *s > 0.0)
        };
        let per_second = |count: u64, last: Option<Instant>| {
            window(last).map_or(0.0, |seconds| count as f64 / seconds)
        };
        let latency = |metric| LatencySummary::of(&self.latencies[index(metric)]);
        Summary {
            attempted: self.attempted,
            sent: self.sent,
            acked: self.acked,
            replied: self.replied,
            failed: self.failed,
            error_rate: if self.attempted == 0 {
                None
            } else {
                Some(self.failed as f64 / self.attempted as f64)
            },
            errors_by_kind: self.errors.clone(),
            throughput: Throughput {
                acked_per_s: per_second(self.acked, self.last_ack),
                replied_per_s: per_second(self.replied, self.last_reply),
                measured_over_s: window(self.last_ack).unwrap_or(0.0),
            },
            latency_ms: Latencies {
                ack: latency(Metric::Ack),
                ttft: latency(Metric::Ttft),
                completion: latency(Metric::Completion),
            },
            timeline: self
                .timeline
                .iter()
                .enumerate()
                .map(|(second, s)| SecondSummary::of(second as u64, s))
                .collect(),
            percentile_distribution: Distributions {
                ack: distribution(&self.latencies[0]),
                ttft: distribution(&self.latencies[1]),
                completion: distribution(&self.latencies[2]),
            },
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Messages whose send time came.
    pub attempted: u64,
    pub sent: u64,
    pub acked: u64,
    /// Messages whose committed assistant reply arrived.
    pub replied: u64,
    /// Messages that failed at any step (error frame, timeout, lost
    /// connection, error event instead of a reply).
    pub failed: u64,
    /// failed / attempted; `None` when nothing was attempted.
    pub error_rate: Option<f64>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub throughput: Throughput,
    pub latency_ms: Latencies,
    pub timeline: Vec<SecondSummary>,
    pub percentile_distribution: Distributions,
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub acked_per_s: f64,
    pub replied_per_s: f64,
    /// From the start of the run to the last ack.
    pub measured_over_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latencies {
    pub ack: Option<LatencySummary>,
    pub ttft: Option<LatencySummary>,
    pub completion: Option<LatencySummary>,
}

impl Latencies {
    pub fn get(&self, metric: Metric) -> Option<&LatencySummary> {
        match metric {
            Metric::Ack => self.ack.as_ref(),
            Metric::Ttft => self.ttft.as_ref(),
            Metric::Completion => self.completion.as_ref(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl LatencySummary {
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        Some(Self {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            p9999: ms(histogram.value_at_quantile(0.9999)),
            max: ms(histogram.max()),
        })
    }
}

/// Latency percentiles of the messages scheduled in one second.
#[derive(Clone, Debug, Serialize)]
pub struct SecondSummary {
    pub second: u64,
    pub acked: u64,
    pub failed: u64,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub completion_p50_ms: Option<f64>,
    pub completion_p99_ms: Option<f64>,
}

impl SecondSummary {
    fn of(second: u64, s: &Second) -> Self {
        let at = |metric: Metric, q: f64| {
            let h = &s.latencies[index(metric)];
            (!h.is_empty()).then(|| ms(h.value_at_quantile(q)))
        };
        Self {
            second,
            acked: s.acked,
            failed: s.failed,
            ack_p50_ms: at(Metric::Ack, 0.5),
            ack_p99_ms: at(Metric::Ack, 0.99),
            ttft_p50_ms: at(Metric::Ttft, 0.5),
            ttft_p99_ms: at(Metric::Ttft, 0.99),
            completion_p50_ms: at(Metric::Completion, 0.5),
            completion_p99_ms: at(Metric::Completion, 0.99),
        }
    }

    pub fn p50_ms(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Ack => self.ack_p50_ms,
            Metric::Ttft => self.ttft_p50_ms,
            Metric::Completion => self.completion_p50_ms,
        }
    }

    pub fn p99_ms(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Ack => self.ack_p99_ms,
            Metric::Ttft => self.ttft_p99_ms,
            Metric::Completion => self.completion_p99_ms,
        }
    }
}

/// (percentile, latency in ms) points, for the percentile plot.
#[derive(Clone, Debug, Serialize)]
pub struct Distributions {
    pub ack: Vec<PercentilePoint>,
    pub ttft: Vec<PercentilePoint>,
    pub completion: Vec<PercentilePoint>,
}

impl Distributions {
    pub fn get(&self, metric: Metric) -> &[PercentilePoint] {
        match metric {
            Metric::Ack => &self.ack,
            Metric::Ttft => &self.ttft,
            Metric::Completion => &self.completion,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct PercentilePoint {
    pub percentile: f64,
    pub ms: f64,
}

fn distribution(histogram: &Histogram<u64>) -> Vec<PercentilePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    // Five steps per halving of the remaining tail: dense where the plot's
    // log scale spreads the tail out.
    let mut points: Vec<PercentilePoint> = histogram
        .iter_quantiles(5)
        .map(|v| PercentilePoint {
            percentile: v.quantile_iterated_to() * 100.0,
            ms: ms(histogram.highest_equivalent(v.value_iterated_to())),
        })
        .filter(|p| p.percentile < 100.0)
        .collect();
    points.push(PercentilePoint {
        percentile: 100.0,
        ms: ms(histogram.max()),
    });
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_scheduled_time() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        // Due at 0, sent late, acked at 50 ms: the wait is part of the latency.
        recorder.sent();
        recorder.record(Metric::Ack, start, start + Duration::from_millis(50));
        let summary = recorder.summary();
        let ack = summary.latency_ms.ack.unwrap();
        assert!((ack.p50 - 50.0).abs() < 0.1, "{ack:?}");
        assert_eq!(summary.acked, 1);
        assert!(summary.latency_ms.ttft.is_none());
    }

    #[test]
    fn percentiles_errors_and_throughput() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        for i in 1..=1000u64 {
            recorder.sent();
            let scheduled = start + Duration::from_millis(i);
            recorder.record(
                Metric::Ack,
                scheduled,
                scheduled + Duration::from_micros(i * 10),
            );
        }
        recorder.attempted();
        recorder.message_failed(start, "timeout:ack");
        let summary = recorder.summary();
        let ack = summary.latency_ms.ack.as_ref().unwrap();
        assert!((ack.p50 - 5.0).abs() < 0.05, "{ack:?}");
        assert!((ack.p99 - 9.9).abs() < 0.05, "{ack:?}");
        assert!((ack.max - 10.0).abs() < 0.05, "{ack:?}");
        assert_eq!(summary.errors_by_kind["timeout:ack"], 1);
        assert!((summary.error_rate.unwrap() - 1.0 / 1001.0).abs() < 1e-12);
        // 1000 acks over ~1.01 s.
        assert!((summary.throughput.acked_per_s - 990.0).abs() < 10.0);
        assert_eq!(summary.timeline.len(), 2);
        assert_eq!(summary.timeline[0].acked, 999);
        let distribution = &summary.percentile_distribution.ack;
        assert!(distribution.windows(2).all(|w| w[0].ms <= w[1].ms));
        assert_eq!(distribution.last().unwrap().percentile, 100.0);
    }

    #[test]
    fn progress_reports_recent_acks_only() {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        recorder.record(Metric::Ack, start, start + Duration::from_millis(2));
        let first = recorder.progress(start + Duration::from_secs(1));
        assert!(first.recent_ack_p99_ms.unwrap() > 1.9);
        let second = recorder.progress(start + Duration::from_secs(2));
        assert_eq!(second.recent_ack_p99_ms, None);
        assert_eq!(second.acked, 1);
    }
}
