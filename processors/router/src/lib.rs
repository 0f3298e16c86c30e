//! The `router` processor: for each user message it picks a model for the
//! tenant (policy, fallback, circuit breakers, budgets), streams the
//! reply's tokens to the fan-out as deltas, and appends the durable result
//! (`AssistantMessage`, or `ErrorOccurred`) with the routing and usage
//! events that explain it.

pub mod accounting;
pub mod context;
pub mod genai_metrics;
pub mod genai_trace;
pub mod mock;
pub mod model;
mod processor;
pub mod providers;
pub mod routing;
mod setup;
pub mod tools;

pub use processor::{ModelRouter, ROUTING_EVENT_FIRST_INDEX, USAGE_EVENT_INDEX};
pub use setup::router_from_config;
