//! The per-tenant maximum of open connections (WebSocket and gRPC
//! `Converse` streams), counted across every gateway replica when the
//! counter is shared (Redis).
use std::sync::Arc;

use chatstream_config::tenants::Principal;
use chatstream_core::ratelimit::connections::ConnectionCounter;

use super::refusals::{RefusalReason, Refusals};
use crate::error::ChatError;

#[derive(Clone)]
pub struct ConnectionLimits {
    counter: Arc<dyn ConnectionCounter>,
    /// For tenants that set no maximum of their own; unlimited when `None`.
    default_max: Option<u32>,
    /// Where refused connections are counted, to be reported on the log.
    refusals: Arc<Refusals>,
}

/// A counted connection; uncounted when dropped.
pub struct ConnectionSlot {
    counter: Arc<dyn ConnectionCounter>,
    tenant_id: String,
}

impl ConnectionLimits {
    pub fn new(
        counter: Arc<dyn ConnectionCounter>,
        default_max: Option<u32>,
        refusals: Arc<Refusals>,
    ) -> Self {
        Self {
            counter,
            default_max,
            refusals,
        }
    }

    /// Counts a new connection of the caller's tenant, or refuses it: over
    /// the maximum, or (retryably) when the shared count cannot be reached,
    /// since an uncounted connection would let the maximum drift.
    pub async fn admit(&self, who: &Principal) -> Result<Option<ConnectionSlot>, ChatError> {
        let Some(max) = who.tenant.limits.max_connections.or(self.default_max) else {
            return Ok(None);
        };
        match self.counter.acquire(&who.tenant.id, max).await {
            Ok(true) => Ok(Some(ConnectionSlot {
                counter: self.counter.clone(),
                tenant_id: who.tenant.id.clone(),
            })),
            Ok(false) => {
                self.refusals
                    .count(&who.tenant.id, RefusalReason::TooManyConnections);
                metrics::counter!("chatstream_gateway_connections_refused_total", "tenant" => who.tenant.id.clone())
                    .increment(1);
                let refused = ChatError::TooManyConnections(max);
                refused.count_refusal();
                Err(refused)
            }
            Err(error) => {
                tracing::warn!(%error, "connection counter error");
                let refused = ChatError::Unavailable("connection counter".into());
                refused.count_refusal();
                Err(refused)
            }
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let counter = self.counter.clone();
        let tenant_id = std::mem::take(&mut self.tenant_id);
        // A release that fails is corrected by the counter (leases renewed
        // from this gateway's own count).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = counter.release(&tenant_id).await {
                    tracing::warn!(%error, "cannot release a connection");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chatstream_config::tenants::TenantLimits;
    use chatstream_core::ratelimit::connections::in_process::InProcessConnectionCounter;

    use super::ConnectionLimits;
    use crate::chat::admission::refusals::{RefusalReason, Refusals};
    use crate::chat::testing::{principal, principal_with_limits};
    use crate::error::ChatError;

    #[tokio::test]
    async fn connections_over_the_tenants_maximum_are_refused_until_one_closes() {
        let counter = Arc::new(InProcessConnectionCounter::new());
        let refusals = Arc::new(Refusals::default());
        let limits = ConnectionLimits::new(counter.clone(), Some(1), refusals.clone());
        let acme = principal("acme");

        let first = limits.admit(&acme).await.unwrap();
        assert!(first.is_some());
        assert_eq!(
            limits.admit(&acme).await.err(),
            Some(ChatError::TooManyConnections(1))
        );
        assert_eq!(
            refusals.counted("acme", RefusalReason::TooManyConnections),
            1
        );
        // Counted per tenant.
        assert!(limits.admit(&principal("globex")).await.unwrap().is_some());

        drop(first);
        // The slot is released by a task of its own.
        while counter.open_connections("acme") > 0 {
            tokio::task::yield_now().await;
        }
        assert!(limits.admit(&acme).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_tenants_own_maximum_overrides_the_default_and_none_is_unlimited() {
        let counter = Arc::new(InProcessConnectionCounter::new());
        let roomy = principal_with_limits(
            "roomy",
            TenantLimits {
                max_connections: Some(2),
                ..Default::default()
            },
        );
        let limited = ConnectionLimits::new(counter.clone(), Some(1), Arc::default());
        let _slots = [
            limited.admit(&roomy).await.unwrap(),
            limited.admit(&roomy).await.unwrap(),
        ];
        assert_eq!(counter.open_connections("roomy"), 2);

        let unlimited = ConnectionLimits::new(counter.clone(), None, Arc::default());
        assert!(unlimited.admit(&principal("acme")).await.unwrap().is_none());
        assert_eq!(counter.open_connections("acme"), 0);
    }
}
