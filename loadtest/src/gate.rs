//! SLO gates for deployment pipelines: compare the run's error rate and
//! latency percentiles with the limits given on the command line. A metric
//! that could not be measured fails its gate: a gate that cannot tell must
//! not wave a deployment through.
use anyhow::bail;
use serde::Serialize;

use crate::stats::Metric;
use crate::stats::Summary;

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Thresholds {
    pub metric: Metric,
    pub max_error_rate: Option<f64>,
    pub max_p50_ms: Option<f64>,
    pub max_p99_ms: Option<f64>,
    pub max_p999_ms: Option<f64>,
}

/// One limit that the run did not meet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Breach {
    /// The flag that set the limit, e.g. `--max-p99-ms`.
    pub flag: &'static str,
    /// What was measured, e.g. `ack p99`.
    pub measured_what: String,
    /// `None` when there was nothing to measure.
    pub measured: Option<f64>,
    pub limit: f64,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.flag == "--max-error-rate" {
            ""
        } else {
            " ms"
        };
        match self.measured {
            Some(measured) => write!(
                f,
                "{} {} {measured:.6}{unit} exceeds {} {}{unit}",
                self.flag, self.measured_what, self.flag, self.limit
            ),
            None => write!(
                f,
                "{}: no {} was measured, so the limit {}{unit} cannot be met",
                self.flag, self.measured_what, self.limit
            ),
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(rate) = self.max_error_rate
            && !(0.0..=1.0).contains(&rate)
        {
            bail!("--max-error-rate is a fraction between 0 and 1, got {rate}");
        }
        for (flag, limit) in self.latency_limits() {
            if !(limit.is_finite() && limit >= 0.0) {
                bail!("{flag} must be a number of milliseconds >= 0, got {limit}");
            }
        }
        Ok(())
    }

    pub fn any(&self) -> bool {
        self.max_error_rate.is_some() || self.latency_limits().next().is_some()
    }

    fn latency_limits(&self) -> impl Iterator<Item = (&'static str, f64)> {
        [
            ("--max-p50-ms", self.max_p50_ms),
            ("--max-p99-ms", self.max_p99_ms),
            ("--max-p999-ms", self.max_p999_ms),
        ]
        .into_iter()
        .filter_map(|(flag, limit)| limit.map(|l| (flag, l)))
    }

    /// Every limit the run breached; empty when it passed.
    pub fn evaluate(&self, summary: &Summary) -> Vec<Breach> {
        let mut breaches = Vec::new();
        if let Some(limit) = self.max_error_rate {
            match summary.error_rate {
                Some(rate) if rate <= limit => {}
                measured => breaches.push(Breach {
                    flag: "--max-error-rate",
                    measured_what: "error rate".into(),
                    measured,
                    limit,
                }),
            }
        }
        let latency = summary.latency_ms.get(self.metric);
        for (flag, limit) in self.latency_limits() {
            let (name, measured) = match flag {
                "--max-p50-ms" => ("p50", latency.map(|l| l.p50)),
                "--max-p99-ms" => ("p99", latency.map(|l| l.p99)),
                _ => ("p99.9", latency.map(|l| l.p999)),
            };
            if measured.is_some_and(|m| m <= limit) {
                continue;
            }
            breaches.push(Breach {
                flag,
                measured_what: format!("{} {name}", self.metric.label()),
                measured,
                limit,
            });
        }
        breaches
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::stats::Recorder;

    fn summary_with_ack_latencies(millis: &[u64], failures: u64) -> Summary {
        let start = Instant::now();
        let mut recorder = Recorder::new(start);
        for &m in millis {
            recorder.attempted();
            recorder.record(Metric::Ack, start, start + Duration::from_millis(m));
        }
        for _ in 0..failures {
            recorder.attempted();
            recorder.message_failed(start, "timeout:ack");
        }
        recorder.summary()
    }

    fn thresholds() -> Thresholds {
        Thresholds {
            metric: Metric::Ack,
            max_error_rate: None,
            max_p50_ms: None,
            max_p99_ms: None,
            max_p999_ms: None,
        }
    }

    #[test]
    fn passes_within_limits() {
        let summary = summary_with_ack_latencies(&[1, 2, 3], 0);
        let gate = Thresholds {
            max_error_rate: Some(0.0),
            max_p50_ms: Some(5.0),
            max_p99_ms: Some(5.0),
            max_p999_ms: Some(5.0),
            ..thresholds()
        };
        assert_eq!(gate.evaluate(&summary), vec![]);
    }

    #[test]
    fn names_each_breached_limit_with_measured_and_limit() {
        let summary = summary_with_ack_latencies(&[1, 2, 30], 1);
        let gate = Thresholds {
            max_error_rate: Some(0.1),
            max_p50_ms: Some(100.0),
            max_p99_ms: Some(10.0),
            ..thresholds()
        };
        let breaches = gate.evaluate(&summary);
        assert_eq!(breaches.len(), 2, "{breaches:?}");
        assert_eq!(breaches[0].flag, "--max-error-rate");
        assert_eq!(breaches[0].measured, Some(0.25));
        assert_eq!(breaches[1].flag, "--max-p99-ms");
        let text = breaches[1].to_string();
        assert!(text.contains("ack p99 30.0"), "{text}");
        assert!(text.contains("exceeds --max-p99-ms 10 ms"), "{text}");
    }

    #[test]
    fn a_metric_with_no_samples_fails_its_gate() {
        let summary = summary_with_ack_latencies(&[1], 0);
        let gate = Thresholds {
            metric: Metric::Ttft,
            max_p99_ms: Some(1000.0),
            ..thresholds()
        };
        let breaches = gate.evaluate(&summary);
        assert_eq!(breaches.len(), 1);
        assert_eq!(breaches[0].measured, None);
        assert!(breaches[0].to_string().contains("no ttft p99 was measured"));
    }

    #[test]
    fn limits_are_checked() {
        let bad = Thresholds {
            max_error_rate: Some(2.0),
            ..thresholds()
        };
        assert!(bad.validate().is_err());
        let bad = Thresholds {
            max_p99_ms: Some(-1.0),
            ..thresholds()
        };
        assert!(bad.validate().is_err());
    }
}
