//! The Redis backends: the hot state every gateway and processor replica
//! shares. The fan-out (pub/sub between replicas), the recent-history cache
//! in front of the projection store, and the gateway's admission state (tenant
//! rate limits, connection counts, send reservations). Each implements a
//! seam of `chatstream-core`, and passes the same conformance suite as the
//! in-process implementation.

pub mod connections;
pub mod fanout;
pub mod keyspace;
pub mod ratelimit;
pub mod recent;
pub mod sends;
