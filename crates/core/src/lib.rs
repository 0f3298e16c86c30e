//! The core every chatstream component shares: the backend seams (event
//! log, projection store, analytics store, fan-out, dead letters, and the gateway's hot
//! state: rate limits, connection counts, send reservations) with their
//! embedded and in-process implementations, the tools seam, and the
//! processor runner. The distributed backends live in crates of their own
//! (`chatstream-kafka`, `chatstream-scylla`, `chatstream-redis`); the
//! conformance suites every implementation passes live in
//! `chatstream-test-support`.

pub mod analytics;
pub mod deadletter;
pub mod fanout;
pub mod log;
pub mod metric_catalog;
pub mod ratelimit;
pub mod runner;
pub mod sends;
pub mod store;
pub mod tools;
pub mod trace;
