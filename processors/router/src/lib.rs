//! The `router` processor: for each user message it picks a model, streams
//! the reply's tokens to the fan-out as deltas, and appends the durable
//! result (`AssistantMessage`, or `ErrorOccurred`) to the log.

pub mod mock;
pub mod model;
mod processor;

pub use processor::ModelRouter;
