//! Whether the gateway takes a request or a connection now: requests are
//! refused while live delivery is down and counted against the tenant's
//! rate limit; connections are counted against the tenant's maximum
//! (`connections`).
use chatstream_config::tenants::Principal;
use chatstream_core::ratelimit::{RateDecision, RateLimit};

use super::ChatCore;
use crate::error::ChatError;

pub mod connections;
pub mod refusals;

use refusals::RefusalReason;

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
                self.refusals
                    .count(&who.tenant.id, RefusalReason::RateLimited);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use chatstream_config::tenants::TenantLimits;
    use chatstream_core::fanout::FanOut;
    use chatstream_core::ratelimit::RateLimiter;
    use chatstream_core::ratelimit::in_process::InProcessRateLimiter;
    use chatstream_core::store::{ConversationRecord, ProjectionStore};

    use crate::chat::testing::{
        Backends, LIMITS, UnreachableFanOut, UnreachableRateLimiter, message, principal,
        principal_with_limits,
    };
    use crate::chat::{ChatCore, ChatLimits};
    use crate::command::ToolCallDecision;
    use crate::error::ChatError;

    fn core_with(
        backends: &Backends,
        fanout: Arc<dyn FanOut>,
        rate_limiter: Arc<dyn RateLimiter>,
        limits: ChatLimits,
    ) -> ChatCore {
        ChatCore::new(
            backends.log.clone(),
            backends.store.clone(),
            fanout,
            rate_limiter,
            limits,
        )
    }

    async fn record_conversation(backends: &Backends, tenant_id: &str, conversation_id: &str) {
        let record = ConversationRecord {
            tenant_id: tenant_id.into(),
            conversation_id: conversation_id.into(),
            title: String::new(),
            created_at_ms: 0,
            opened_by_key_id: String::new(),
        };
        backends.store.put_conversation(&record).await.unwrap();
    }

    fn decision(conversation_id: &str) -> ToolCallDecision {
        ToolCallDecision {
            request_id: None,
            conversation_id: conversation_id.into(),
            tool_call_event_id: "call-event".into(),
            approved: false,
            reason: String::new(),
        }
    }

    /// Open, send and tool decision, each once; the errors they got.
    async fn every_appending_request(core: &ChatCore, who_id: &str) -> Vec<Result<(), ChatError>> {
        let who = principal_with_limits(
            who_id,
            TenantLimits {
                requests_per_second: Some(1.0),
                burst: Some(1),
                ..Default::default()
            },
        );
        vec![
            core.open_conversation(&who, "").await.map(drop),
            core.send_message(&who, message(Some("c"), None, "hi"))
                .await
                .map(drop),
            core.decide_tool_call(&who, decision("c")).await.map(drop),
        ]
    }

    #[tokio::test(start_paused = true)]
    async fn requests_over_the_tenants_rate_are_refused_until_time_passes() {
        let backends = Backends::new();
        let core = backends.core();
        record_conversation(&backends, "acme", "c").await;

        let results = every_appending_request(&core, "acme").await;

        assert!(results[0].is_ok());
        for result in &results[1..] {
            match result {
                Err(ChatError::RateLimited { retry_after }) => {
                    assert!(
                        *retry_after > Duration::ZERO && *retry_after <= Duration::from_secs(1)
                    );
                }
                other => panic!("expected rate_limited, got {other:?}"),
            }
        }
        assert_eq!(backends.events().await.len(), 1, "only the open");
        assert_eq!(
            core.refusals()
                .counted("acme", super::refusals::RefusalReason::RateLimited),
            2,
            "both refusals are counted, to be reported on the log"
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        core.send_message(
            &principal_with_limits(
                "acme",
                TenantLimits {
                    requests_per_second: Some(1.0),
                    burst: Some(1),
                    ..Default::default()
                },
            ),
            message(Some("c"), None, "hi"),
        )
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_platform_rate_applies_to_tenants_without_one_of_their_own() {
        let backends = Backends::new();
        let limits = ChatLimits {
            requests_per_second: Some(1.0),
            burst: Some(2),
            ..LIMITS
        };
        let core = core_with(
            &backends,
            backends.fanout.clone(),
            Arc::new(InProcessRateLimiter::new()),
            limits,
        );
        let plain = principal("acme");
        let generous = principal_with_limits(
            "globex",
            TenantLimits {
                requests_per_second: Some(100.0),
                burst: Some(100),
                ..Default::default()
            },
        );

        for _ in 0..2 {
            core.open_conversation(&plain, "").await.unwrap();
        }
        let refused = core.open_conversation(&plain, "").await.unwrap_err();
        assert_eq!(refused.code(), "rate_limited");
        for _ in 0..3 {
            core.open_conversation(&generous, "").await.unwrap();
        }
    }

    #[tokio::test]
    async fn requests_are_refused_retryably_while_live_delivery_is_down() {
        let backends = Backends::new();
        let core = core_with(
            &backends,
            Arc::new(UnreachableFanOut),
            Arc::new(InProcessRateLimiter::new()),
            LIMITS,
        );
        record_conversation(&backends, "acme", "c").await;

        for result in every_appending_request(&core, "acme").await {
            assert_eq!(result, Err(ChatError::Unavailable("live delivery".into())));
        }
        assert!(backends.events().await.is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_rate_limiter_refuses_retryably_only_tenants_with_a_limit() {
        let backends = Backends::new();
        let core = core_with(
            &backends,
            backends.fanout.clone(),
            Arc::new(UnreachableRateLimiter),
            LIMITS,
        );
        record_conversation(&backends, "acme", "c").await;

        for result in every_appending_request(&core, "acme").await {
            assert_eq!(result, Err(ChatError::Unavailable("rate limiter".into())));
        }
        assert!(backends.events().await.is_empty());
        // No limit: the limiter is not asked.
        core.open_conversation(&principal("unlimited"), "")
            .await
            .unwrap();
    }
}
