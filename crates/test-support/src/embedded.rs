//! The embedded backends a processor's tests run it on (a one-partition
//! log, a store and an in-process fan-out in a temp dir), and reading back
//! what the processor appended.
use std::sync::Arc;

use chatstream_core::fanout::FanOut;
use chatstream_core::fanout::in_process::InProcessFanOut;
use chatstream_core::log::EventLog;
use chatstream_core::log::embedded::EmbeddedLog;
use chatstream_core::store::ProjectionStore;
use chatstream_core::store::embedded::EmbeddedStore;
use chatstream_schemas::{Event, codec};

/// The log, store, fan-out and temp dir of [`EmbeddedBackends`], apart.
pub type EmbeddedParts = (
    Arc<dyn EventLog>,
    Arc<dyn ProjectionStore>,
    Arc<dyn FanOut>,
    tempfile::TempDir,
);

/// Fresh embedded backends; the temp dir lives as long as they do.
pub struct EmbeddedBackends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn ProjectionStore>,
    pub fanout: Arc<dyn FanOut>,
    pub dir: tempfile::TempDir,
}

impl EmbeddedBackends {
    /// A one-partition log, so every event reads back in append order.
    pub fn open() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            log: Arc::new(EmbeddedLog::open(dir.path(), 1).expect("open the embedded log")),
            store: Arc::new(EmbeddedStore::open(dir.path()).expect("open the embedded store")),
            fanout: Arc::new(InProcessFanOut::new()),
            dir,
        }
    }

    /// The log, store, fan-out and the temp dir they live in, for a test
    /// that hands them to a processor one by one.
    pub fn into_parts(self) -> EmbeddedParts {
        (self.log, self.store, self.fanout, self.dir)
    }
}

/// Every event on partition 0 of `log`, in order.
pub async fn events_on(log: &dyn EventLog) -> Vec<Event> {
    let records = log.read(0, 0, 10_000).await.expect("read the log");
    records
        .iter()
        .map(|r| codec::decode(&r.value).expect("an event"))
        .collect()
}

/// The events on partition 0 of `log` that `cause` caused, in order.
pub async fn events_caused_by(log: &dyn EventLog, cause: &str) -> Vec<Event> {
    let mut events = events_on(log).await;
    events.retain(|e| e.causation_id == cause);
    events
}
