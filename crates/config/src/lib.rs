//! Every setting of the platform, in one place: the platform config
//! (defaults, then `chatstream.yaml`, then environment variables), the
//! model providers and routing, the mcp processor's limits, and the tenant
//! registry. The backend crates turn their sections into client settings.

pub mod mcp;
pub mod models;
mod platform;
pub mod tenants;

pub use platform::*;
