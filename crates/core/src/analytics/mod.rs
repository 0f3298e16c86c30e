//! The analytics seam: per tenant and per UTC time bucket (minute, hour,
//! day), the counters and latency histograms the analytics processor adds
//! each event to, once per event id, and that queries read back and merge.
//! The embedded implementation is `embedded.rs`; the ScyllaDB one lives in
//! `chatstream-scylla`; both pass `chatstream-test-support`'s analytics
//! conformance suite.
use async_trait::async_trait;

use crate::store::StoreError;

pub mod bucket;
pub mod embedded;
pub mod granularity;
pub mod query;
pub mod summary;

pub use bucket::{BucketState, Observation, Series};
pub use granularity::Granularity;

/// Most buckets one `read_buckets` may span: a day of minutes, two months
/// of hours, four years of days. Wider reads are refused; callers pick a
/// coarser granularity.
pub const MAX_BUCKETS_PER_READ: i64 = 1500;

/// One stored bucket of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub granularity: Granularity,
    /// Unix milliseconds (UTC) of its first moment.
    pub start_ms: i64,
    pub state: BucketState,
}

/// Whether `apply` changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The observation was added to its buckets.
    Added,
    /// An observation with this event id was added before: nothing changed.
    AlreadyApplied,
}

#[async_trait]
pub trait AnalyticsStore: Send + Sync + 'static {
    /// Cheap check that the store can serve requests (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Adds `observation` to the tenant's minute, hour and day buckets of
    /// its moment, exactly once per (tenant, event id): when this event id
    /// was applied for the tenant before, nothing changes. A failure leaves
    /// either all three buckets and the event's mark changed or none (so a
    /// retry neither loses nor doubles it). May be called concurrently for
    /// different events of one tenant; no update is lost, and since counts
    /// add and histograms merge, the stored buckets are the same, byte for
    /// byte, whatever order the events came in.
    async fn apply(
        &self,
        tenant_id: &str,
        event_id: &str,
        observation: &Observation,
    ) -> Result<Applied, StoreError>;

    /// The tenant's buckets of `granularity` that start in
    /// `[from_ms, to_ms)`, oldest first; buckets nothing was added to are
    /// left out. A range holding more than `MAX_BUCKETS_PER_READ` bucket
    /// starts is refused (`StoreError::Storage`).
    async fn read_buckets(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bucket>, StoreError>;

    /// Keeps a value the processor needs when a later event of the same
    /// turn arrives (when a user message was sent, when a tool call was
    /// requested). Each key is only ever written with the value of the one
    /// event it names, so writing it again changes nothing.
    async fn note(&self, tenant_id: &str, key: &str, value: i64) -> Result<(), StoreError>;

    /// The value `note` kept under this tenant's `key`, if any.
    async fn noted(&self, tenant_id: &str, key: &str) -> Result<Option<i64>, StoreError>;

    /// Makes every `apply` and `note` that returned durable. A backend may
    /// return from those before they are (readers see them at once); the
    /// processor syncs before its log position passes the events, so a
    /// crash only redoes them. Backends whose writes are durable when they
    /// return need not override it.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Refuses a read wider than `MAX_BUCKETS_PER_READ` buckets.
pub fn check_read_span(
    granularity: Granularity,
    from_ms: i64,
    to_ms: i64,
) -> Result<(), StoreError> {
    let buckets = granularity.buckets_in(from_ms, to_ms);
    if buckets > MAX_BUCKETS_PER_READ {
        return Err(StoreError::Storage(format!(
            "{buckets} {granularity} buckets requested; at most {MAX_BUCKETS_PER_READ} per read: \
             choose a shorter range or a coarser bucket"
        )));
    }
    Ok(())
}
