//! The gateway's analytics API, over HTTP (`http.rs`) and gRPC
//! (`grpc.rs`): the figures of the caller's tenant (from its API key; no
//! parameter names a tenant), checked and answered by
//! `chatstream_core::analytics::query`, so both edges give the same answers.
use std::time::{SystemTime, UNIX_EPOCH};

pub mod grpc;
pub mod http;

pub use http::routes;

/// Now, in Unix milliseconds: the default end of a query's range.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
