//! Every setting of the platform, in one place: the platform config
//! (defaults, then `chatstream.yaml`, then environment variables), the
//! model providers and routing, the mcp processor's limits, and the tenant
//! registry, with one `Config::validate` over all of them that runs at load.
//! The backend crates turn their sections into client settings.

pub mod error;
pub mod mcp;
pub mod models;
mod platform;
pub mod processing;
pub mod table;
pub mod tenants;

pub use error::{BadValue, ConfigError, Invalid, TenantsError};
pub use mcp::McpSettings;
pub use platform::*;
