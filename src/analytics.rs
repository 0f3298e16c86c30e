//! `chatstream analytics usage|latency`: one tenant's figures, read
//! straight from the analytics store the config names (for operators; the
//! HTTP API serves tenants with their own keys). The same query and answers
//! as `GET /api/v2/analytics/...`; a readable table, or the API's JSON with
//! `--json`.
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chatstream_core::analytics::query::{
    AnalyticsQuery, LatencyAnswer, QueryParameters, UsageAnswer,
};
use clap::{Args, Subcommand};

use crate::{ConfigFile, backends};

#[derive(Args, Debug)]
pub struct AnalyticsArgs {
    #[command(subcommand)]
    command: AnalyticsCommand,
}

#[derive(Subcommand, Debug)]
enum AnalyticsCommand {
    /// Counters per bucket and group, with totals.
    Usage(QueryArgs),
    /// Latency percentiles (p50, p90, p99, p99.9) over the whole range.
    Latency(QueryArgs),
}

#[derive(Args, Debug)]
struct QueryArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// The tenant whose figures to read.
    #[arg(long)]
    tenant: String,
    /// Start: RFC 3339 (2026-12-01T00:00:00Z) or Unix milliseconds
    /// (default: a day before `--to`).
    #[arg(long)]
    from: Option<String>,
    /// End, exclusive (default: now).
    #[arg(long)]
    to: Option<String>,
    /// `minute`, `hour` (default) or `day`.
    #[arg(long)]
    bucket: Option<String>,
    /// `model`, `provider` or `tool`.
    #[arg(long)]
    group_by: Option<String>,
    /// Directory of the embedded store (default: the config's data dir).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: AnalyticsArgs) -> anyhow::Result<()> {
    let (query_args, latency) = match &args.command {
        AnalyticsCommand::Usage(query_args) => (query_args, false),
        AnalyticsCommand::Latency(query_args) => (query_args, true),
    };
    let config = query_args.config.load(|config| {
        if let Some(dir) = &query_args.data_dir {
            config.data_dir = dir.clone();
        }
    })?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let query = AnalyticsQuery::parse(
        &query_args.tenant,
        &QueryParameters {
            from: query_args.from.as_deref(),
            to: query_args.to.as_deref(),
            bucket: query_args.bucket.as_deref(),
            group_by: query_args.group_by.as_deref(),
        },
        now_ms,
    )
    .map_err(|invalid| {
        anyhow::anyhow!(
            "--{}: {}",
            invalid.parameter.replace('_', "-"),
            invalid.message
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let output = runtime.block_on(async {
        let store = backends::open_analytics(&config, &config.data_dir).await?;
        anyhow::Ok(if latency {
            let answer = query.latency(store.as_ref()).await?;
            if query_args.json {
                serde_json::to_string_pretty(&answer)?
            } else {
                latency_table(&answer)
            }
        } else {
            let answer = query.usage(store.as_ref()).await?;
            if query_args.json {
                serde_json::to_string_pretty(&answer)?
            } else {
                usage_table(&answer)
            }
        })
    })?;
    println!("{output}");
    Ok(())
}

/// Columns padded to their widest cell; numbers right-aligned.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| {
                if !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit()) {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut lines = vec![line(headers.to_vec())];
    lines.extend(
        rows.iter()
            .map(|row| line(row.iter().map(String::as_str).collect())),
    );
    lines.join("\n")
}

fn title(kind: &str, header: &chatstream_core::analytics::query::AnswerHeader) -> String {
    let grouped = match header.group_by {
        "none" => String::new(),
        group_by => format!(", by {group_by}"),
    };
    format!(
        "{kind} of tenant {}, {} to {}, per {}{grouped}",
        header.tenant_id, header.from, header.to, header.bucket
    )
}

/// A group's name in a table: `-` for figures without one.
fn group_cell(group: &str) -> String {
    if group.is_empty() {
        "-".to_owned()
    } else {
        group.to_owned()
    }
}

fn usage_table(answer: &UsageAnswer) -> String {
    let grouped = answer.header.group_by != "none";
    let mut headers = vec!["bucket"];
    if grouped {
        headers.push(answer.header.group_by);
    }
    headers.extend(["metric", "value"]);
    let mut rows = Vec::new();
    for row in &answer.rows {
        for (metric, value) in &row.counters {
            let mut cells = vec![row.bucket_start.clone()];
            if grouped {
                cells.push(group_cell(&row.group));
            }
            cells.extend([metric.clone(), value.to_string()]);
            rows.push(cells);
        }
    }
    for totals in &answer.totals {
        for (metric, value) in &totals.counters {
            let mut cells = vec!["total".to_owned()];
            if grouped {
                cells.push(group_cell(&totals.group));
            }
            cells.extend([metric.clone(), value.to_string()]);
            rows.push(cells);
        }
    }
    if rows.is_empty() {
        return format!("{}\n(nothing recorded)", title("Usage", &answer.header));
    }
    format!(
        "{}\n{}",
        title("Usage", &answer.header),
        table(&headers, &rows)
    )
}

fn latency_table(answer: &LatencyAnswer) -> String {
    if answer.latencies.is_empty() {
        return format!("{}\n(nothing recorded)", title("Latency", &answer.header));
    }
    let headers = [
        "metric", "group", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
    ];
    let rows: Vec<Vec<String>> = answer
        .latencies
        .iter()
        .map(|row| {
            let percentile = |name: &str| {
                row.percentiles_ms
                    .get(name)
                    .map_or_else(String::new, u64::to_string)
            };
            vec![
                row.metric.clone(),
                group_cell(&row.group),
                row.count.to_string(),
                percentile("p50"),
                percentile("p90"),
                percentile("p99"),
                percentile("p99_9"),
                row.max_ms.to_string(),
            ]
        })
        .collect();
    format!(
        "{}\n{}",
        title("Latency", &answer.header),
        table(&headers, &rows)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chatstream_core::analytics::query::{AnswerHeader, GroupTotals, UsageRowAnswer};
    use chatstream_core::analytics::summary::LatencyRow;

    use super::*;

    fn header(group_by: &'static str) -> AnswerHeader {
        AnswerHeader {
            tenant_id: "acme".into(),
            from: "2026-12-01T00:00:00Z".into(),
            to: "2026-12-02T00:00:00Z".into(),
            bucket: "day",
            group_by,
        }
    }

    #[test]
    fn usage_is_a_row_per_bucket_group_and_metric_then_totals() {
        let counters = BTreeMap::from([("tokens_in".to_owned(), 1200), ("answers".to_owned(), 3)]);
        let answer = UsageAnswer {
            header: header("model"),
            rows: vec![UsageRowAnswer {
                bucket_start: "2026-12-01T00:00:00Z".into(),
                group: "gpt-4o-mini".into(),
                counters: counters.clone(),
            }],
            totals: vec![GroupTotals {
                group: "gpt-4o-mini".into(),
                counters,
            }],
        };
        assert_eq!(
            usage_table(&answer),
            "Usage of tenant acme, 2026-12-01T00:00:00Z to 2026-12-02T00:00:00Z, per day, by model\n\
             bucket                model        metric     value\n\
             2026-12-01T00:00:00Z  gpt-4o-mini  answers        3\n\
             2026-12-01T00:00:00Z  gpt-4o-mini  tokens_in   1200\n\
             total                 gpt-4o-mini  answers        3\n\
             total                 gpt-4o-mini  tokens_in   1200"
        );
    }

    #[test]
    fn latency_is_a_row_per_metric_and_group() {
        let answer = LatencyAnswer {
            header: header("none"),
            latencies: vec![LatencyRow {
                metric: "answer_duration_ms".into(),
                group: String::new(),
                count: 2,
                percentiles_ms: BTreeMap::from([
                    ("p50".to_owned(), 250),
                    ("p90".to_owned(), 900),
                    ("p99".to_owned(), 900),
                    ("p99_9".to_owned(), 900),
                ]),
                max_ms: 900,
            }],
        };
        let table = latency_table(&answer);
        assert!(
            table.ends_with(
                "metric              group  count  p50 ms  p90 ms  p99 ms  p99.9 ms  max ms\n\
             answer_duration_ms  -          2     250     900     900       900     900"
            ),
            "{table}"
        );
    }

    #[test]
    fn an_empty_answer_says_so() {
        let answer = UsageAnswer {
            header: header("none"),
            rows: Vec::new(),
            totals: Vec::new(),
        };
        assert!(usage_table(&answer).ends_with("(nothing recorded)"));
    }
}
