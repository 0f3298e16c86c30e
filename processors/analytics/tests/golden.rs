//! Golden tests of the analytics projection: an event stream from
//! `tests/golden/<case>.jsonl` (one `{"position", "event"}` per line, the
//! events in their JSON mapping) is fed through the processor twice, as
//! after a crash before the commit, and the projection (every bucket, the
//! usage and latency summaries computed from them, and the analytics API's
//! answers, as served) must equal `<case>.expected.json`. Set `UPDATE_GOLDEN=1` to rewrite the expected
//! files after a deliberate change, then review the diff.
//!
//! The replay tests build fresh projections from the same events (once, and
//! with the conversations in another order, as the runner may interleave
//! them; and on the ScyllaDB store, against the CQL server at
//! `CHATSTREAM_TEST_CQL`) and compare the stored bytes of every bucket with
//! the first.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chatstream_analytics::AnalyticsProjector;
use chatstream_core::analytics::embedded::EmbeddedAnalytics;
use chatstream_core::analytics::query::{AnalyticsQuery, QueryParameters};
use chatstream_core::analytics::summary::{self, GroupBy};
use chatstream_core::analytics::{AnalyticsStore, Bucket, Granularity, Series};
use chatstream_core::log::LogPosition;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::runner::Processor;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_schemas::Event;
use chatstream_schemas::ws::EventJson;
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;

const DAY_MS: i64 = 86_400_000;

#[derive(Deserialize)]
struct InputRecord {
    position: u64,
    event: EventJson,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read_case(case: &str) -> Vec<(LogPosition, Event)> {
    let path = golden_dir().join(format!("{case}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let record: InputRecord = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{}: {error}: {line}", path.display()));
            let position = LogPosition {
                partition: 0,
                offset: record.position,
            };
            (position, record.event.to_event().expect("a valid event"))
        })
        .collect()
}

/// A projection of its own: the processor over fresh stores.
struct Projection {
    analytics: Arc<dyn AnalyticsStore>,
    projector: AnalyticsProjector,
    _dir: TempDir,
}

impl Projection {
    /// On a fresh embedded analytics store.
    fn fresh() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let analytics = Arc::new(EmbeddedAnalytics::open(dir.path()).expect("open analytics"));
        Self::on(analytics, dir)
    }

    /// On `analytics`, with the log and projection store in `dir`.
    fn on(analytics: Arc<dyn AnalyticsStore>, dir: TempDir) -> Self {
        // The events are handed over directly: the log holds no claims, so
        // the store's claim decides which copy of a retried send counts.
        let log = Arc::new(EmbeddedLog::open(dir.path(), 1).expect("open log"));
        let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
        let projector = AnalyticsProjector::new(log, store, analytics.clone());
        Self {
            analytics,
            projector,
            _dir: dir,
        }
    }

    async fn feed(&self, records: &[(LogPosition, Event)]) {
        for (position, event) in records {
            self.projector
                .handle(event, *position)
                .await
                .unwrap_or_else(|error| panic!("handle {}: {error}", event.id));
        }
    }

    /// Every stored bucket of every tenant in `records`, by tenant and
    /// granularity, over the days the events fall on.
    async fn buckets(
        &self,
        records: &[(LogPosition, Event)],
    ) -> BTreeMap<(String, Granularity), Vec<Bucket>> {
        let tenants: Vec<String> = records
            .iter()
            .map(|(_, event)| event.tenant_id.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let times = records
            .iter()
            .map(|(_, event)| chatstream_analytics::observe::occurred_at_ms(event));
        let first_day = Granularity::Day.bucket_start(times.clone().min().expect("events"));
        let last_day = Granularity::Day.bucket_start(times.max().expect("events"));
        let mut all = BTreeMap::new();
        for tenant in tenants {
            for granularity in Granularity::ALL {
                let mut found = Vec::new();
                // A day at a time: within the read limit for minutes too.
                let mut day = first_day;
                while day <= last_day {
                    found.extend(
                        self.analytics
                            .read_buckets(&tenant, granularity, day, day + DAY_MS)
                            .await
                            .expect("read buckets"),
                    );
                    day += DAY_MS;
                }
                all.insert((tenant.clone(), granularity), found);
            }
        }
        all
    }
}

/// `metric{label=value,...}`, labels sorted.
fn series_name(series: &Series) -> String {
    if series.labels.is_empty() {
        return series.metric.clone();
    }
    let labels: Vec<String> = series
        .labels
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    format!("{}{{{}}}", series.metric, labels.join(","))
}

/// RFC 3339 UTC of Unix milliseconds (whole seconds are enough here).
fn utc(ms: i64) -> String {
    let (days, seconds) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS) / 1000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn render_bucket(bucket: &Bucket) -> Value {
    let counters: BTreeMap<String, u64> = bucket
        .state
        .counters()
        .iter()
        .map(|(series, value)| (series_name(series), *value))
        .collect();
    let latencies: BTreeMap<String, Value> = bucket
        .state
        .latencies()
        .iter()
        .map(|(series, histogram)| {
            (
                series_name(series),
                json!({ "count": histogram.len(), "max_ms": histogram.max() }),
            )
        })
        .collect();
    json!({ "start": utc(bucket.start_ms), "counters": counters, "latencies_ms": latencies })
}

fn render(buckets: &BTreeMap<(String, Granularity), Vec<Bucket>>) -> Value {
    let mut tenants = serde_json::Map::new();
    for ((tenant, granularity), found) in buckets {
        let entry = tenants.entry(tenant.clone()).or_insert_with(|| json!({}));
        entry[granularity.as_str()] = found.iter().map(render_bucket).collect();
        if *granularity == Granularity::Day {
            entry["usage_by_model_per_day"] = json!(
                summary::usage(found, GroupBy::Model)
                    .into_iter()
                    .map(|row| json!({
                        "start": utc(row.bucket_start_ms),
                        "model": row.group,
                        "counters": row.counters,
                    }))
                    .collect::<Vec<_>>()
            );
            entry["usage_by_provider"] = json!(
                summary::usage(
                    &[Bucket {
                        granularity: Granularity::Day,
                        start_ms: 0,
                        state: summary::merged(found),
                    }],
                    GroupBy::Provider
                )
                .into_iter()
                .map(|row| json!({ "provider": row.group, "counters": row.counters }))
                .collect::<Vec<_>>()
            );
            entry["usage_by_tool"] = json!(
                summary::usage(
                    &[Bucket {
                        granularity: Granularity::Day,
                        start_ms: 0,
                        state: summary::merged(found),
                    }],
                    GroupBy::Tool
                )
                .into_iter()
                .filter(|row| !row.group.is_empty())
                .map(|row| json!({ "tool": row.group, "counters": row.counters }))
                .collect::<Vec<_>>()
            );
            entry["latency"] = json!(summary::latency(found, GroupBy::None));
        }
    }
    Value::Object(tenants)
}

async fn check_case(case: &str) {
    let records = read_case(case);
    let projection = Projection::fresh();
    // Twice: everything is redelivered, as after a crash before a commit.
    projection.feed(&records).await;
    projection.feed(&records).await;
    let buckets = projection.buckets(&records).await;

    // Percentiles over the whole range are the same from minutes as from days.
    for ((tenant, granularity), found) in &buckets {
        if *granularity == Granularity::Minute {
            assert_eq!(
                summary::latency(found, GroupBy::None),
                summary::latency(&buckets[&(tenant.clone(), Granularity::Day)], GroupBy::None),
                "{tenant}: minutes and days disagree"
            );
        }
    }

    let mut rendered = render(&buckets);
    // What the API answers for each tenant over the whole case, by hour
    // and model, exactly as it serves it.
    let times = records
        .iter()
        .map(|(_, event)| chatstream_analytics::observe::occurred_at_ms(event));
    let from = Granularity::Day.bucket_start(times.clone().min().expect("events"));
    let to = Granularity::Day.bucket_start(times.max().expect("events")) + DAY_MS;
    let (from, to) = (from.to_string(), to.to_string());
    for (tenant, entry) in rendered.as_object_mut().expect("tenants") {
        let query = AnalyticsQuery::parse(
            tenant,
            &QueryParameters {
                from: Some(&from),
                to: Some(&to),
                bucket: Some("hour"),
                group_by: Some("model"),
            },
            0,
        )
        .expect("a valid query");
        let analytics = projection.analytics.as_ref();
        entry["api_usage_by_hour_and_model"] =
            serde_json::to_value(query.usage(analytics).await.expect("usage")).expect("json");
        entry["api_latency_by_model"] =
            serde_json::to_value(query.latency(analytics).await.expect("latency")).expect("json");
    }
    let actual = serde_json::to_string_pretty(&rendered).expect("render") + "\n";
    let expected_path = golden_dir().join(format!("{case}.expected.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &actual).expect("write the expected file");
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "projection of {case} differs from {} (UPDATE_GOLDEN=1 rewrites it)",
        expected_path.display()
    );
}

/// The stored bytes of every bucket.
fn stored_bytes(
    buckets: &BTreeMap<(String, Granularity), Vec<Bucket>>,
) -> BTreeMap<(String, Granularity, i64), Vec<u8>> {
    buckets
        .iter()
        .flat_map(|((tenant, granularity), found)| {
            found.iter().map(move |bucket| {
                (
                    (tenant.clone(), *granularity, bucket.start_ms),
                    bucket.state.encode(),
                )
            })
        })
        .collect()
}

/// The same records, conversations in reverse order of first appearance,
/// each conversation's records still in log order (as the runner may
/// interleave conversations).
fn conversations_reversed(records: &[(LogPosition, Event)]) -> Vec<(LogPosition, Event)> {
    let mut order: Vec<(String, String)> = Vec::new();
    for (_, event) in records {
        let key = (event.tenant_id.clone(), event.conversation_id.clone());
        if !order.contains(&key) {
            order.push(key);
        }
    }
    order
        .iter()
        .rev()
        .flat_map(|(tenant, conversation)| {
            records
                .iter()
                .filter(move |(_, event)| {
                    &event.tenant_id == tenant && &event.conversation_id == conversation
                })
                .cloned()
        })
        .collect()
}

#[tokio::test]
async fn two_tenants_across_midnight() {
    check_case("two_tenants_across_midnight").await;
}

#[tokio::test]
async fn a_fresh_replay_stores_the_same_bytes() {
    let records = read_case("two_tenants_across_midnight");
    let first = Projection::fresh();
    first.feed(&records).await;
    first.feed(&records).await;
    let first_bytes = stored_bytes(&first.buckets(&records).await);
    assert!(first_bytes.len() > 10, "the case fills many buckets");

    let replay = Projection::fresh();
    replay.feed(&records).await;
    assert_eq!(
        stored_bytes(&replay.buckets(&records).await),
        first_bytes,
        "a fresh projection from the same log"
    );

    let reordered = Projection::fresh();
    reordered.feed(&conversations_reversed(&records)).await;
    assert_eq!(
        stored_bytes(&reordered.buckets(&records).await),
        first_bytes,
        "conversations handled in another order"
    );
}

/// A fresh keyspace on the CQL test server, with its settings (no
/// lightweight transactions, no schema agreement: see the scylla crate's
/// conformance tests).
async fn scylla_analytics(address: &str) -> Arc<dyn AnalyticsStore> {
    use chatstream_scylla::{ScyllaAnalytics, ScyllaStore, ScyllaStoreConfig};
    let config = ScyllaStoreConfig {
        await_schema_agreement: false,
        lightweight_transactions: false,
        page_size: 7,
        ..ScyllaStoreConfig::new(
            address.split(',').map(str::trim),
            chatstream_test_support::conformance::unique("cstest").replace('-', "_"),
        )
    };
    ScyllaStore::apply_schema(&config)
        .await
        .expect("apply the schema");
    let store = ScyllaStore::connect(config).await.expect("connect");
    Arc::new(
        ScyllaAnalytics::new(&store)
            .await
            .expect("prepare analytics"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scylla_store_holds_the_same_bytes_as_the_embedded_one() {
    let Some(address) = chatstream_test_support::services::cql() else {
        return;
    };
    let records = read_case("two_tenants_across_midnight");
    let embedded = Projection::fresh();
    embedded.feed(&records).await;
    let expected = stored_bytes(&embedded.buckets(&records).await);

    let scylla = Projection::on(
        scylla_analytics(&address).await,
        tempfile::tempdir().expect("temp dir"),
    );
    // Twice, as after a crash before the commit; and conversations reordered.
    scylla.feed(&records).await;
    scylla.feed(&conversations_reversed(&records)).await;
    assert_eq!(
        stored_bytes(&scylla.buckets(&records).await),
        expected,
        "the ScyllaDB store's buckets differ from the embedded store's"
    );
}
