//! Whether the gateway takes a request or a connection now: requests are
//! refused while live delivery is down and counted against the tenant's
//! rate limit; connections are counted against the tenant's maximum
//! (`connections`).
use chatstream_config::tenants::Principal;
use chatstream_core::ratelimit::{RateDecision, RateLimit};

use super::ChatCore;
use crate::error::ChatError;

pub mod connections;

impl ChatCore {
    /// Admits a request that appends (open, send, tool decision), or
    /// refuses it before anything is appended.
    pub(super) async fn admit_request(&self, who: &Principal) -> Result<(), ChatError> {
        self.refuse_while_live_delivery_down().await?;
        self.count_against_rate_limit(who).await
    }

    /// Refused (retryably) while live delivery is down, since the answer
    /// to the request could not reach anyone.
    async fn refuse_while_live_delivery_down(&self) -> Result<(), ChatError> {
        if let Err(error) = self.fanout.ping().await {
            tracing::warn!(%error, "refusing a request while live delivery is down");
            return Err(ChatError::Unavailable("live delivery".into()));
        }
        Ok(())
    }

    /// Counts the request against the tenant's rate limit, if it has one.
    async fn count_against_rate_limit(&self, who: &Principal) -> Result<(), ChatError> {
        let Some(limit) = self.rate_limit_of(who) else {
            return Ok(());
        };
        match self.rate_limiter.check(&who.tenant.id, limit).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after }) => {
                metrics::counter!("chatstream_gateway_rate_limited_total", "tenant" => who.tenant.id.clone())
                    .increment(1);
                Err(ChatError::RateLimited { retry_after })
            }
            Err(error) => {
                tracing::warn!(%error, "rate limiter error");
                Err(ChatError::Unavailable("rate limiter".into()))
            }
        }
    }

    /// The tenant's own limit, else the platform's; `None` is unlimited.
    fn rate_limit_of(&self, who: &Principal) -> Option<RateLimit> {
        let tenant = &who.tenant.limits;
        let per_second = tenant
            .requests_per_second
            .or(self.limits.requests_per_second)?;
        let burst = tenant
            .burst
            .or(self.limits.burst)
            .unwrap_or_else(|| per_second.ceil().max(1.0) as u32);
        Some(RateLimit { per_second, burst })
    }
}
