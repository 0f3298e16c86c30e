//! Connection counts of one gateway, for `chatstream dev` and
//! single-gateway installs.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::ConnectionCounter;
use crate::ratelimit::RateLimitError;

#[derive(Default)]
pub struct InProcessConnectionCounter {
    /// Tenant id → open connections; tenants with none are removed.
    open: Mutex<HashMap<String, u32>>,
}

impl InProcessConnectionCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open_connections(&self, tenant_id: &str) -> u32 {
        self.lock().get(tenant_id).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // Every update is a single insert or remove: a poisoned map is whole.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ConnectionCounter for InProcessConnectionCounter {
    async fn acquire(&self, tenant_id: &str, max: u32) -> Result<bool, RateLimitError> {
        let mut open = self.lock();
        let count = open.get(tenant_id).copied().unwrap_or(0);
        if count >= max {
            return Ok(false);
        }
        open.insert(tenant_id.to_owned(), count + 1);
        Ok(true)
    }

    async fn release(&self, tenant_id: &str) -> Result<(), RateLimitError> {
        let mut open = self.lock();
        match open.get(tenant_id).copied() {
            Some(count) if count > 1 => {
                open.insert(tenant_id.to_owned(), count - 1);
            }
            Some(_) => {
                open.remove(tenant_id);
            }
            None => {}
        }
        Ok(())
    }
}
