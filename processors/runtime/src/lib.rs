//! The runtime every chatstream component shares: the backend seams (event
//! log, projection store, fan-out, rate limits and connection counts, dead
//! letters) with their embedded / in-process implementations and the
//! distributed ones (Kafka, Redis) behind features, the processor runner,
//! the conversation projection, config and tenants.
//!
//! `conformance` holds the test suites every implementation of a seam must
//! pass; each backend runs the same suites.

pub mod config;
pub mod conformance;
pub mod deadletter;
pub mod fanout;
pub mod log;
pub mod mcp_config;
pub mod model_config;
pub mod projector;
pub mod ratelimit;
#[cfg(feature = "redis")]
pub mod redis_keyspace;
pub mod runner;
pub mod sends;
pub mod store;
pub mod tenants;
pub mod tools;
