//! Answers to analytics queries from stored buckets: counters per bucket
//! and group, and latency percentiles over a whole range, from histograms
//! merged across its buckets (exact to the histograms' precision, whatever
//! the range).
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Bucket;
use super::bucket::{BucketState, Series, latency_histogram};

/// The quantiles every latency answer reports.
pub const QUANTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)];

/// Which label splits an answer into groups; `None` keeps one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    #[default]
    None,
    Model,
    Provider,
    /// `server/tool`.
    Tool,
}

impl GroupBy {
    /// The group a series falls in: `""` when the series has no such label
    /// (a figure that belongs to no model, such as conversations opened).
    pub fn group_of(self, series: &Series) -> String {
        match self {
            Self::None => String::new(),
            Self::Model => series.label("model").unwrap_or_default().to_owned(),
            Self::Provider => series.label("provider").unwrap_or_default().to_owned(),
            Self::Tool => match (series.label("server"), series.label("tool")) {
                (Some(server), Some(tool)) => format!("{server}/{tool}"),
                _ => String::new(),
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Model => "model",
            Self::Provider => "provider",
            Self::Tool => "tool",
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown group_by `{0}`: expected model, provider or tool")]
pub struct UnknownGroupBy(pub String);

impl FromStr for GroupBy {
    type Err = UnknownGroupBy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" | "" => Ok(Self::None),
            "model" => Ok(Self::Model),
            "provider" => Ok(Self::Provider),
            "tool" => Ok(Self::Tool),
            other => Err(UnknownGroupBy(other.to_owned())),
        }
    }
}

/// Counters of one bucket and group, by metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub bucket_start_ms: i64,
    pub group: String,
    pub counters: BTreeMap<String, u64>,
}

/// Counters per bucket and group, oldest bucket first, groups in order.
pub fn usage(buckets: &[Bucket], group_by: GroupBy) -> Vec<UsageRow> {
    let mut rows: BTreeMap<(i64, String), BTreeMap<String, u64>> = BTreeMap::new();
    for bucket in buckets {
        for (series, value) in bucket.state.counters() {
            let counters = rows
                .entry((bucket.start_ms, group_by.group_of(series)))
                .or_default();
            let counter = counters.entry(series.metric.clone()).or_default();
            *counter = counter.saturating_add(*value);
        }
    }
    rows.into_iter()
        .map(|((bucket_start_ms, group), counters)| UsageRow {
            bucket_start_ms,
            group,
            counters,
        })
        .collect()
}

/// Percentiles of one latency metric and group over the whole range. As
/// HdrHistogram reports them, each value is the upper end of the histogram
/// bucket holding it (within 0.1% of what was recorded: 3,400 ms may show
/// as 3,401).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyRow {
    pub metric: String,
    pub group: String,
    pub count: u64,
    /// Milliseconds at each of `QUANTILES`, by name (`p50`, ...).
    pub percentiles_ms: BTreeMap<String, u64>,
    pub max_ms: u64,
}

/// Every latency metric and group, its histograms merged over all buckets.
pub fn latency(buckets: &[Bucket], group_by: GroupBy) -> Vec<LatencyRow> {
    let mut merged: BTreeMap<(String, String), Histogram<u64>> = BTreeMap::new();
    for bucket in buckets {
        for (series, histogram) in bucket.state.latencies() {
            merged
                .entry((series.metric.clone(), group_by.group_of(series)))
                .or_insert_with(latency_histogram)
                .add(histogram)
                .expect("latency histograms share their bounds");
        }
    }
    merged
        .into_iter()
        .map(|((metric, group), histogram)| LatencyRow {
            metric,
            group,
            count: histogram.len(),
            percentiles_ms: QUANTILES
                .iter()
                .map(|(name, quantile)| {
                    ((*name).to_owned(), histogram.value_at_quantile(*quantile))
                })
                .collect(),
            max_ms: histogram.max(),
        })
        .collect()
}

/// All of `buckets` in one state (e.g. a day's minutes).
pub fn merged(buckets: &[Bucket]) -> BucketState {
    let mut state = BucketState::default();
    for bucket in buckets {
        state.merge(&bucket.state);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Granularity;
    use crate::analytics::bucket::Observation;

    fn bucket(start_ms: i64, observations: &[Observation]) -> Bucket {
        let mut state = BucketState::default();
        observations.iter().for_each(|o| state.observe(o));
        Bucket {
            granularity: Granularity::Minute,
            start_ms,
            state,
        }
    }

    fn answer(model: &str, tokens: u64, latency_ms: u64) -> Observation {
        let mut observation = Observation::at(0);
        observation.count(Series::new("answers", [("model", model)]), 1);
        observation.count(
            Series::new("tokens_out", [("provider", "p"), ("model", model)]),
            tokens,
        );
        observation.count(Series::new("conversations_opened", []), 1);
        observation.latency(
            Series::new("answer_duration_ms", [("model", model)]),
            latency_ms,
        );
        observation
    }

    #[test]
    fn usage_sums_per_bucket_and_group() {
        let buckets = [
            bucket(
                0,
                &[answer("a", 10, 1), answer("b", 5, 1), answer("a", 1, 1)],
            ),
            bucket(60_000, &[answer("b", 2, 1)]),
        ];
        let rows = usage(&buckets, GroupBy::Model);
        let find = |start, group: &str| {
            rows.iter()
                .find(|row| row.bucket_start_ms == start && row.group == group)
                .unwrap_or_else(|| panic!("no row {start} {group}: {rows:?}"))
                .counters
                .clone()
        };
        assert_eq!(find(0, "a")["tokens_out"], 11);
        assert_eq!(find(0, "a")["answers"], 2);
        assert_eq!(find(0, "b")["tokens_out"], 5);
        assert_eq!(find(60_000, "b")["tokens_out"], 2);
        assert_eq!(
            find(0, "")["conversations_opened"],
            3,
            "no model label: group \"\""
        );
        assert_eq!(find(60_000, "")["conversations_opened"], 1);
        assert_eq!(
            rows.len(),
            5,
            "(0|60000) x (a|b|\"\") but no a at 60000: {rows:?}"
        );

        let ungrouped = usage(&buckets, GroupBy::None);
        assert_eq!(ungrouped.len(), 2);
        assert_eq!(ungrouped[0].counters["tokens_out"], 16);
    }

    #[test]
    fn percentiles_merge_histograms_across_buckets_exactly() {
        // 1..=1000 ms spread over ten buckets: the merged percentiles are
        // those of the whole set, within the histogram's 0.1%.
        let buckets: Vec<Bucket> = (0..10)
            .map(|b| {
                let observations: Vec<Observation> =
                    (1..=100).map(|i| answer("a", 0, b * 100 + i)).collect();
                bucket(b as i64 * 60_000, &observations)
            })
            .collect();
        let rows = latency(&buckets, GroupBy::None);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (row.metric.as_str(), row.count),
            ("answer_duration_ms", 1000)
        );
        for (name, expected) in [("p50", 500), ("p90", 900), ("p99", 990), ("p99_9", 999)] {
            let got = row.percentiles_ms[name];
            assert!(
                got.abs_diff(expected) <= expected / 1000 + 1,
                "{name}: {got} vs {expected}"
            );
        }
        assert_eq!(row.max_ms, 1000);
    }

    #[test]
    fn group_by_names_parse_and_tools_group_by_server_and_tool() {
        assert_eq!("tool".parse(), Ok(GroupBy::Tool));
        assert!("team".parse::<GroupBy>().is_err());
        let call = Series::new("tool_calls", [("server", "files"), ("tool", "read")]);
        assert_eq!(GroupBy::Tool.group_of(&call), "files/read");
        assert_eq!(GroupBy::Model.group_of(&call), "");
    }
}
