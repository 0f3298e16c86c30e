//! One analytics query, whichever edge asks (the HTTP API, the command
//! line): its parameters checked once, with the errors a caller can act on,
//! and its answer computed from the tenant's stored buckets.
use std::collections::BTreeMap;

use serde::Serialize;

use super::summary::{self, GroupBy, LatencyRow, UsageRow};
use super::{AnalyticsStore, Granularity, check_read_span};
use crate::store::StoreError;

/// The range a query covers when it names none: the last day.
pub const DEFAULT_RANGE_MS: i64 = 86_400_000;

/// A parameter the caller got wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{parameter}`: {message}")]
pub struct InvalidParameter {
    pub parameter: &'static str,
    pub message: String,
}

fn invalid(parameter: &'static str, message: impl Into<String>) -> InvalidParameter {
    InvalidParameter {
        parameter,
        message: message.into(),
    }
}

/// The raw parameters, as an edge received them.
#[derive(Debug, Clone, Default)]
pub struct QueryParameters<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub bucket: Option<&'a str>,
    pub group_by: Option<&'a str>,
}

/// A checked query of one tenant's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsQuery {
    pub tenant_id: String,
    /// The start of the bucket holding the requested `from`.
    pub from_ms: i64,
    /// Exclusive.
    pub to_ms: i64,
    pub granularity: Granularity,
    pub group_by: GroupBy,
}

/// Unix milliseconds of an RFC 3339 time (`2026-12-01T23:58:00Z`) or of a
/// plain number of Unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let timestamp: prost_types::Timestamp = text.parse().map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor Unix milliseconds")
    })?;
    Ok(timestamp.seconds * 1000 + i64::from(timestamp.nanos) / 1_000_000)
}

/// RFC 3339 (UTC) of Unix milliseconds.
pub fn format_time(ms: i64) -> String {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
    .to_string()
}

impl AnalyticsQuery {
    /// Checks the parameters: `to` defaults to `now_ms`, `from` to a day
    /// before `to`, the bucket to `hour`; `from` is widened to the start of
    /// its bucket, and the range may hold at most `MAX_BUCKETS_PER_READ`
    /// buckets.
    pub fn parse(
        tenant_id: &str,
        parameters: &QueryParameters<'_>,
        now_ms: i64,
    ) -> Result<Self, InvalidParameter> {
        let granularity = match parameters.bucket {
            None | Some("") => Granularity::Hour,
            Some(text) => {
                text.parse()
                    .map_err(|error: super::granularity::UnknownGranularity| {
                        invalid("bucket", error.to_string())
                    })?
            }
        };
        let group_by = match parameters.group_by {
            None => GroupBy::None,
            Some(text) => text
                .parse()
                .map_err(|error: summary::UnknownGroupBy| invalid("group_by", error.to_string()))?,
        };
        let to_ms = match parameters.to {
            None | Some("") => now_ms,
            Some(text) => parse_time(text).map_err(|message| invalid("to", message))?,
        };
        let from_ms = match parameters.from {
            None | Some("") => to_ms.saturating_sub(DEFAULT_RANGE_MS),
            Some(text) => parse_time(text).map_err(|message| invalid("from", message))?,
        };
        if from_ms >= to_ms {
            return Err(invalid(
                "from",
                format!(
                    "`from` ({}) must be before `to` ({})",
                    format_time(from_ms),
                    format_time(to_ms)
                ),
            ));
        }
        let from_ms = granularity.bucket_start(from_ms);
        check_read_span(granularity, from_ms, to_ms).map_err(|error| {
            let message = match error {
                StoreError::Storage(message) => message,
                other => other.to_string(),
            };
            invalid("bucket", message)
        })?;
        Ok(Self {
            tenant_id: tenant_id.to_owned(),
            from_ms,
            to_ms,
            granularity,
            group_by,
        })
    }

    async fn buckets(&self, store: &dyn AnalyticsStore) -> Result<Vec<super::Bucket>, StoreError> {
        store
            .read_buckets(&self.tenant_id, self.granularity, self.from_ms, self.to_ms)
            .await
    }

    fn header(&self) -> AnswerHeader {
        AnswerHeader {
            tenant_id: self.tenant_id.clone(),
            from: format_time(self.from_ms),
            to: format_time(self.to_ms),
            bucket: self.granularity.as_str(),
            group_by: self.group_by.as_str(),
        }
    }

    /// Counters per bucket and group, and their totals over the range.
    pub async fn usage(&self, store: &dyn AnalyticsStore) -> Result<UsageAnswer, StoreError> {
        let rows = summary::usage(&self.buckets(store).await?, self.group_by);
        let mut totals: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for row in &rows {
            let group = totals.entry(row.group.clone()).or_default();
            for (metric, value) in &row.counters {
                let total = group.entry(metric.clone()).or_default();
                *total = total.saturating_add(*value);
            }
        }
        Ok(UsageAnswer {
            header: self.header(),
            rows: rows.into_iter().map(UsageRowAnswer::from).collect(),
            totals: totals
                .into_iter()
                .map(|(group, counters)| GroupTotals { group, counters })
                .collect(),
        })
    }

    /// Latency percentiles per metric and group over the whole range.
    pub async fn latency(&self, store: &dyn AnalyticsStore) -> Result<LatencyAnswer, StoreError> {
        Ok(LatencyAnswer {
            header: self.header(),
            latencies: summary::latency(&self.buckets(store).await?, self.group_by),
        })
    }
}

/// What every answer repeats of its query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerHeader {
    pub tenant_id: String,
    /// The start of the first bucket covered (RFC 3339).
    pub from: String,
    /// Exclusive (RFC 3339).
    pub to: String,
    pub bucket: &'static str,
    pub group_by: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageAnswer {
    #[serde(flatten)]
    pub header: AnswerHeader,
    /// Per bucket (oldest first) and group; buckets with nothing are left out.
    pub rows: Vec<UsageRowAnswer>,
    /// Per group over the whole range.
    pub totals: Vec<GroupTotals>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRowAnswer {
    pub bucket_start: String,
    /// The model, provider or `server/tool`; empty for figures that have
    /// none (and for every row when not grouped).
    pub group: String,
    pub counters: BTreeMap<String, u64>,
}

impl From<UsageRow> for UsageRowAnswer {
    fn from(row: UsageRow) -> Self {
        Self {
            bucket_start: format_time(row.bucket_start_ms),
            group: row.group,
            counters: row.counters,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupTotals {
    pub group: String,
    pub counters: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyAnswer {
    #[serde(flatten)]
    pub header: AnswerHeader,
    pub latencies: Vec<LatencyRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_169_600_000; // 2026-12-02T00:00:00Z

    fn parse(parameters: QueryParameters<'_>) -> Result<AnalyticsQuery, InvalidParameter> {
        AnalyticsQuery::parse("acme", &parameters, NOW)
    }

    #[test]
    fn defaults_are_the_last_day_by_hour_ungrouped() {
        let query = parse(QueryParameters::default()).expect("valid");
        assert_eq!(
            query,
            AnalyticsQuery {
                tenant_id: "acme".into(),
                from_ms: NOW - DEFAULT_RANGE_MS,
                to_ms: NOW,
                granularity: Granularity::Hour,
                group_by: GroupBy::None,
            }
        );
    }

    #[test]
    fn times_are_rfc3339_or_unix_milliseconds_and_from_widens_to_its_bucket() {
        let query = parse(QueryParameters {
            from: Some("2026-12-01T10:30:00Z"),
            to: Some(&NOW.to_string()),
            bucket: Some("hour"),
            group_by: Some("model"),
        })
        .expect("valid");
        assert_eq!(format_time(query.from_ms), "2026-12-01T10:00:00Z");
        assert_eq!(query.to_ms, NOW);
        assert_eq!(query.group_by, GroupBy::Model);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let bad = |parameters| parse(parameters).expect_err("invalid").parameter;
        assert_eq!(
            bad(QueryParameters {
                from: Some("yesterday"),
                ..Default::default()
            }),
            "from"
        );
        assert_eq!(
            bad(QueryParameters {
                to: Some("2026-13-01T00:00:00Z"),
                ..Default::default()
            }),
            "to"
        );
        assert_eq!(
            bad(QueryParameters {
                bucket: Some("week"),
                ..Default::default()
            }),
            "bucket"
        );
        assert_eq!(
            bad(QueryParameters {
                group_by: Some("colour"),
                ..Default::default()
            }),
            "group_by"
        );
        assert_eq!(
            bad(QueryParameters {
                from: Some(&NOW.to_string()),
                to: Some(&(NOW - 1).to_string()),
                ..Default::default()
            }),
            "from",
            "from after to"
        );
        let too_wide = parse(QueryParameters {
            from: Some("2026-11-01T00:00:00Z"),
            bucket: Some("minute"),
            ..Default::default()
        })
        .expect_err("a month of minutes");
        assert_eq!(too_wide.parameter, "bucket");
        assert!(too_wide.message.contains("coarser"), "{}", too_wide.message);
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(format_time(NOW), "2026-12-02T00:00:00Z");
        assert_eq!(parse_time("2026-12-02T00:00:00Z"), Ok(NOW));
        assert_eq!(parse_time("2026-12-02T01:00:00+01:00"), Ok(NOW));
    }
}
