//! The event log seam: an append-only, partitioned log where a key (the
//! tenant id) always maps to the same partition, with consumer groups that
//! commit their positions. Kafka semantics, so the Kafka implementation is a
//! thin mapping.
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use chatstream_schemas::Event;

mod claims;
pub mod embedded;
mod partitioner;
pub mod traced;

pub use claims::{ClaimedAppend, ClaimingLog, SendClaim};
pub use partitioner::{murmur2, partition_for_key};

/// Where a record sits: its partition and its offset in that partition.
/// Offsets start at 0 and grow by one per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPosition {
    pub partition: u32,
    pub offset: u64,
}

/// A record as read back from the log. `value` is the encoded event
/// (see `chatstream_schemas::codec`); it is not decoded here so that a
/// malformed record reaches the runner, which treats it as poison.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub position: LogPosition,
    pub key: String,
    pub value: Vec<u8>,
    /// Append time, unix milliseconds.
    pub timestamp_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("partition {partition} does not exist (the log has {count})")]
    UnknownPartition { partition: u32, count: u32 },
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event log storage error: {0}")]
    Storage(String),
    #[error("event log is closed")]
    Closed,
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    fn partition_count(&self) -> u32;

    /// The partition that holds every record appended with `key`
    /// (murmur2, like Kafka's default partitioner).
    fn partition_for(&self, key: &str) -> u32 {
        partition_for_key(key, self.partition_count())
    }

    /// Appends `event` under `key` and returns its position once it is
    /// durable (fsync'd locally, or acked by all in-sync replicas).
    async fn append(&self, key: &str, event: &Event) -> Result<LogPosition, LogError>;

    /// Appends `events` under `key`, in order, and returns their positions
    /// once every one is durable. A log that can commits them together
    /// (the embedded log: one commit; this default: one append after another).
    async fn append_all(&self, key: &str, events: &[Event]) -> Result<Vec<LogPosition>, LogError> {
        let mut positions = Vec::with_capacity(events.len());
        for event in events {
            positions.push(self.append(key, event).await?);
        }
        Ok(positions)
    }

    /// This log's own deduplication of sends, when it has one (see `claims`).
    fn claiming(&self) -> Option<&dyn ClaimingLog> {
        None
    }

    /// Appends raw bytes as they are, without encoding or validation.
    /// For tools and for tests of poison-record handling.
    async fn append_bytes(&self, key: &str, value: Vec<u8>) -> Result<LogPosition, LogError>;

    /// Up to `max` records of `partition` starting at offset `from`, in
    /// order; empty when there is nothing at or after `from`. Never waits.
    async fn read(&self, partition: u32, from: u64, max: usize)
    -> Result<Vec<LogRecord>, LogError>;

    /// The offset the next record appended to `partition` will get.
    async fn end_offset(&self, partition: u32) -> Result<u64, LogError>;

    /// Joins consumer group `group`. A new group starts at the earliest offset;
    /// an existing one resumes after its committed offsets.
    async fn subscribe(&self, group: &str) -> Result<Box<dyn LogConsumer>, LogError>;

    /// The offset `group` resumes from in `partition` (the one after the last
    /// committed record), or `None` when it never committed there.
    async fn committed(&self, group: &str, partition: u32) -> Result<Option<u64>, LogError>;

    /// Cheap check that the log can serve requests (for readiness).
    async fn ping(&self) -> Result<(), LogError>;

    /// What traces call this log (its messaging system and destination),
    /// when its appends are traced (see `traced::TracedLog`): the runner
    /// then continues each record's trace.
    fn messaging(&self) -> Option<&crate::trace::Messaging> {
        None
    }
}

/// A commit of a group's position under way (see `LogConsumer::commit`).
pub type PendingCommit = Pin<Box<dyn Future<Output = Result<(), LogError>> + Send + 'static>>;

/// A member of a consumer group. Records come in log order within each
/// partition; nothing is committed until `commit` is called.
#[async_trait]
pub trait LogConsumer: Send {
    /// Waits up to `timeout` for records after this consumer's position and
    /// returns at most `max` of them (possibly from several partitions),
    /// advancing the position past them. Empty on timeout.
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<LogRecord>, LogError>;

    /// Commits the group's position: for each entry, the group resumes at
    /// `offset` in `partition` (pass the offset after the last handled record).
    /// Entries for partitions not assigned to this member (any more) are
    /// left out: a member never commits a partition another one may own.
    /// The commit is done when the returned future completes; it borrows
    /// nothing of the consumer, so polling can go on meanwhile.
    fn commit(&mut self, next_offsets: &[LogPosition]) -> PendingCommit;

    /// Partitions currently assigned to this member.
    fn assignment(&self) -> Vec<u32>;

    /// Stops handing out records of `partitions` until they are resumed
    /// (backpressure). Records handed out before stay handed out; the
    /// position of a paused partition stays after them, so `resume` goes on
    /// with the next record. Pausing a paused or unassigned partition is a
    /// no-op.
    fn pause(&mut self, partitions: &[u32]) -> Result<(), LogError>;

    /// Hands out records of paused `partitions` again, from where they
    /// stopped. Resuming a partition that is not paused is a no-op.
    fn resume(&mut self, partitions: &[u32]) -> Result<(), LogError>;

    /// Leaves the group.
    async fn close(self: Box<Self>) -> Result<(), LogError>;
}
