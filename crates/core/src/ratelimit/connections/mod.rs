//! The connection-count seam: how many connections a tenant has open across
//! the platform, so `max connections` holds however many gateways serve it.
//! A gateway asks before accepting a connection and reports when it closes.
use async_trait::async_trait;

use super::RateLimitError;

pub mod in_process;

#[async_trait]
pub trait ConnectionCounter: Send + Sync + 'static {
    /// Counts one more connection of `tenant_id` if it then has at most
    /// `max`; returns whether it was counted (and must be released).
    async fn acquire(&self, tenant_id: &str, max: u32) -> Result<bool, RateLimitError>;

    /// Uncounts a connection `acquire` counted. Releasing a tenant with no
    /// counted connection does nothing.
    async fn release(&self, tenant_id: &str) -> Result<(), RateLimitError>;
}
