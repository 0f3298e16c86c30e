//! What the router needs to offer a tenant's tools to a model; the seam
//! lives in chatstream-core (`crates/core/src/tools.rs`), so the router
//! does not depend on this crate.
pub use chatstream_core::tools::{ToolCatalog, ToolDescriptor};
