//! The ScyllaDB analytics store: the distributed implementation of
//! `AnalyticsStore`, in the projection store's keyspace and session.
//!
//! Every row's partition key starts with the tenant id, and every read names
//! a whole partition key: a bucket is read by (tenant, granularity, start),
//! one point read per bucket of the range (bounded by
//! `MAX_BUCKETS_PER_READ`, run a few at a time), so no read can reach
//! another tenant's rows and no range predicate is needed.
//!
//! Idempotency: `apply` reads the event's mark; when it is absent, it reads
//! the three buckets, adds the observation, and writes the three buckets
//! and the mark in one LOGGED batch, which the cluster applies entirely or
//! not at all (the batchlog replays a half-written one). So after a crash a
//! redelivered event finds either its mark (and is skipped) or none of its
//! writes (and is applied once).
//!
//! Lost updates: a bucket is read, changed and written back, so two
//! writers of one bucket at once could lose one's update. Inside a process,
//! a tenant's applies take turns (a lock per tenant stripe). Across
//! processes, a tenant's events are on one log partition, owned by one
//! member at a time; only while a revoked partition drains
//! (`docs/processing.md`) can two members apply events of one tenant, and
//! then an update can be lost. A conditional write cannot close that gap:
//! conditional statements cannot span the batch's partitions.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use chatstream_core::analytics::{
    AnalyticsStore, Applied, Bucket, BucketState, Granularity, Observation, check_read_span,
};
use chatstream_core::store::StoreError;
use futures::{StreamExt, TryStreamExt};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use tokio::sync::Mutex;

use super::ScyllaStore;
use super::error;
use super::schema::{ANALYTICS_APPLIED, ANALYTICS_BUCKETS, ANALYTICS_NOTES};

/// Lock stripes for the per-tenant turns of `apply`.
const STRIPES: usize = 64;
/// Bucket reads of one `read_buckets` in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// Analytics in the projection store's keyspace. Cloning is cheap and
/// shares the session, the statements and the locks.
#[derive(Clone)]
pub struct ScyllaAnalytics {
    store: ScyllaStore,
    statements: Arc<AnalyticsStatements>,
    stripes: Arc<Vec<Mutex<()>>>,
}

struct AnalyticsStatements {
    select_bucket: PreparedStatement,
    select_applied: PreparedStatement,
    select_note: PreparedStatement,
    upsert_note: PreparedStatement,
    /// Three bucket upserts and the event's mark.
    apply: Batch,
}

impl ScyllaAnalytics {
    /// Prepares the analytics statements on `store`'s session. The tables
    /// must exist (`ScyllaStore::apply_schema` creates them).
    pub async fn new(store: &ScyllaStore) -> Result<Self, StoreError> {
        let ks = &store.config.keyspace;
        let session = &store.session;
        let prepare = |name: &'static str, text: String| async move {
            let mut statement = session
                .prepare(text)
                .await
                .map_err(|failure| error::prepare(name, failure))?;
            statement.set_is_idempotent(true);
            Ok::<_, StoreError>(statement)
        };
        let upsert_bucket = prepare(
            "upsert analytics bucket",
            format!(
                "INSERT INTO {ks}.{ANALYTICS_BUCKETS} \
                 (tenant_id, granularity, bucket_start_ms, state) VALUES (?, ?, ?, ?)"
            ),
        )
        .await?;
        let insert_applied = prepare(
            "mark analytics event",
            format!(
                "INSERT INTO {ks}.{ANALYTICS_APPLIED} (tenant_id, event_id, applied) \
                 VALUES (?, ?, ?)"
            ),
        )
        .await?;
        let mut apply = Batch::new(BatchType::Logged);
        for _ in Granularity::ALL {
            apply.append_statement(upsert_bucket.clone());
        }
        apply.append_statement(insert_applied);
        // Retried only with the same values, under the tenant's lock.
        apply.set_is_idempotent(true);
        let statements = AnalyticsStatements {
            select_bucket: prepare(
                "read analytics bucket",
                format!(
                    "SELECT state FROM {ks}.{ANALYTICS_BUCKETS} \
                     WHERE tenant_id = ? AND granularity = ? AND bucket_start_ms = ?"
                ),
            )
            .await?,
            select_applied: prepare(
                "read analytics mark",
                format!(
                    "SELECT applied FROM {ks}.{ANALYTICS_APPLIED} \
                     WHERE tenant_id = ? AND event_id = ?"
                ),
            )
            .await?,
            select_note: prepare(
                "read analytics note",
                format!(
                    "SELECT value FROM {ks}.{ANALYTICS_NOTES} WHERE tenant_id = ? AND note_key = ?"
                ),
            )
            .await?,
            upsert_note: prepare(
                "write analytics note",
                format!(
                    "INSERT INTO {ks}.{ANALYTICS_NOTES} (tenant_id, note_key, value) \
                     VALUES (?, ?, ?)"
                ),
            )
            .await?,
            apply,
        };
        Ok(Self {
            store: store.clone(),
            statements: Arc::new(statements),
            stripes: Arc::new((0..STRIPES).map(|_| Mutex::new(())).collect()),
        })
    }

    fn stripe(&self, tenant_id: &str) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        tenant_id.hash(&mut hasher);
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    async fn is_applied(&self, tenant_id: &str, event_id: &str) -> Result<bool, StoreError> {
        let row: Option<(bool,)> = self
            .store
            .select_one(
                "read analytics mark",
                &self.statements.select_applied,
                (tenant_id, event_id),
            )
            .await?;
        Ok(row.is_some())
    }

    async fn read_bucket(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        start_ms: i64,
    ) -> Result<Option<BucketState>, StoreError> {
        let row: Option<(Vec<u8>,)> = self
            .store
            .select_one(
                "read analytics bucket",
                &self.statements.select_bucket,
                (tenant_id, granularity.as_str(), start_ms),
            )
            .await?;
        row.map(|(bytes,)| {
            BucketState::decode(&bytes).map_err(|error| StoreError::Corrupt(error.to_string()))
        })
        .transpose()
    }
}

#[async_trait]
impl AnalyticsStore for ScyllaAnalytics {
    async fn ping(&self) -> Result<(), StoreError> {
        chatstream_core::store::ProjectionStore::ping(&self.store).await
    }

    async fn apply(
        &self,
        tenant_id: &str,
        event_id: &str,
        observation: &Observation,
    ) -> Result<Applied, StoreError> {
        if self.is_applied(tenant_id, event_id).await? {
            return Ok(Applied::AlreadyApplied);
        }
        let _turn = self.stripe(tenant_id).lock().await;
        // Checked again in turn: a copy of this event may have just applied.
        if self.is_applied(tenant_id, event_id).await? {
            return Ok(Applied::AlreadyApplied);
        }
        let mut encoded = Vec::with_capacity(Granularity::ALL.len());
        for granularity in Granularity::ALL {
            let start = granularity.bucket_start(observation.at_ms);
            let mut state = self
                .read_bucket(tenant_id, granularity, start)
                .await?
                .unwrap_or_default();
            state.observe(observation);
            encoded.push((granularity.as_str(), start, state.encode()));
        }
        let [minute, hour, day] = [&encoded[0], &encoded[1], &encoded[2]];
        self.store
            .session
            .batch(
                &self.statements.apply,
                (
                    (tenant_id, minute.0, minute.1, &minute.2),
                    (tenant_id, hour.0, hour.1, &hour.2),
                    (tenant_id, day.0, day.1, &day.2),
                    (tenant_id, event_id, true),
                ),
            )
            .await
            .map_err(|failure| error::execution("apply analytics event", failure))?;
        Ok(Applied::Added)
    }

    async fn read_buckets(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        check_read_span(granularity, from_ms, to_ms)?;
        let count = granularity.buckets_in(from_ms, to_ms);
        if count == 0 {
            return Ok(Vec::new());
        }
        let first = granularity.bucket_start(from_ms);
        let first = if first < from_ms {
            first + granularity.millis()
        } else {
            first
        };
        let starts = (0..count).map(|n| first + n * granularity.millis());
        let found: Vec<Option<Bucket>> = futures::stream::iter(starts)
            .map(|start_ms| async move {
                let state = self.read_bucket(tenant_id, granularity, start_ms).await?;
                Ok::<_, StoreError>(state.map(|state| Bucket {
                    granularity,
                    start_ms,
                    state,
                }))
            })
            .buffered(READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn note(&self, tenant_id: &str, key: &str, value: i64) -> Result<(), StoreError> {
        self.store
            .execute(
                "write analytics note",
                &self.statements.upsert_note,
                (tenant_id, key, value),
            )
            .await
            .map(drop)
    }

    async fn noted(&self, tenant_id: &str, key: &str) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64,)> = self
            .store
            .select_one(
                "read analytics note",
                &self.statements.select_note,
                (tenant_id, key),
            )
            .await?;
        Ok(row.map(|(value,)| value))
    }
}
