//! The runtime every chatstream component shares: the three backend seams
//! (event log, projection store, fan-out) with their embedded implementations,
//! the processor runner, the conversation projection, config and tenants.
//!
//! `conformance` holds the test suites every implementation of a seam must
//! pass; the Kafka, ScyllaDB and Redis implementations run the same suites.

pub mod config;
pub mod conformance;
pub mod fanout;
pub mod log;
pub mod projector;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis_keyspace;
pub mod runner;
pub mod store;
pub mod tenants;
