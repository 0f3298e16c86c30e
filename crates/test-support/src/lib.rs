//! Test support for chatstream's crates and end-to-end tests, used only as
//! a dev-dependency: the conformance suites every backend of a seam must
//! pass, and the helpers tests share, one module per job.
//!
//! Always there (light): the conformance suites, the services a test needs
//! and the strict-or-not-run rule, free ports, a Redis of a test's own and
//! the embedded backends. Behind features, for the tests that need them:
//! `platform` (starting the real binary and its clients: WebSocket, gRPC,
//! raw HTTP, turn readers) and `fake-provider` (a scripted model provider).

pub mod conformance;
pub mod embedded;
pub mod ports;
pub mod redis_server;
pub mod services;

#[cfg(feature = "fake-provider")]
pub mod fake_provider;
#[cfg(feature = "platform")]
pub mod grpc;
#[cfg(feature = "platform")]
pub mod http;
#[cfg(feature = "platform")]
pub mod platform;
#[cfg(feature = "platform")]
pub mod turns;
#[cfg(feature = "platform")]
pub mod ws;
