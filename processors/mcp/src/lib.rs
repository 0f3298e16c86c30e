//! The `mcp` processor: runs the tool calls models ask for on the tenant's
//! own MCP servers (stdio child processes or Streamable HTTP endpoints) and
//! appends each result, or an error the model can read, to the log.
//!
//! `pool` keeps one live client per tenant and server, `catalog` exposes the
//! tenant's tools to the router, `call` runs one call with its checks and
//! limits, and `processor` ties a call to its events exactly once.

mod approvals;
pub mod call;
pub mod catalog;
mod connection;
pub mod pool;
mod processor;
mod recovery;

pub use catalog::{ToolCatalog, ToolDescriptor};
/// The processor's limits: the `mcp` section of the platform config.
pub use chatstream_config::McpSettings;
pub use pool::McpClientPool;
pub use processor::McpProcessor;
