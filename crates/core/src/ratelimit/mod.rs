//! The rate-limit seam: may this tenant make another request now? Every
//! implementation runs GCRA (the generic cell rate algorithm): one stored
//! time per tenant, the "theoretical arrival time" of its next request,
//! which gives a smooth rate with bursts of up to `burst` requests.
//!
//! The in-process limiter serves one gateway; the Redis limiter keeps the
//! state in Redis so any number of gateway replicas enforce a tenant's limit
//! once, not once each. `connections` does the same for a tenant's maximum
//! number of open connections.
use std::time::Duration;

use async_trait::async_trait;

pub mod connections;
pub mod in_process;

/// A tenant's allowance: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// What a check decided. A limited request consumes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Try again after `retry_after` (what `Retry-After` tells the client).
    Limited {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    #[error("invalid rate limit: {0}")]
    InvalidLimit(String),
    /// The shared state cannot be reached; whether to let requests through
    /// meanwhile is the caller's policy.
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one request of `tenant_id` against `limit` if it is allowed.
    /// The limit may differ between calls (a tenant's plan changed); the
    /// stored state stays meaningful.
    async fn check(
        &self,
        tenant_id: &str,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError>;
}

/// A limit in the form GCRA uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time one request "costs": 1 / rate.
    pub emission_interval: Duration,
    /// How far ahead of now the arrival time may run: interval × burst.
    pub tolerance: Duration,
}

impl Gcra {
    pub fn new(limit: RateLimit) -> Result<Self, RateLimitError> {
        let invalid = |what: &str| {
            RateLimitError::InvalidLimit(format!(
                "{what} ({} per second, burst {})",
                limit.per_second, limit.burst
            ))
        };
        if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
            return Err(invalid("the rate must be a positive number"));
        }
        if limit.burst == 0 {
            return Err(invalid("the burst must be at least 1"));
        }
        let emission_interval = Duration::try_from_secs_f64(1.0 / limit.per_second)
            .map_err(|_| invalid("the rate is too small"))?;
        let tolerance = emission_interval
            .checked_mul(limit.burst)
            .ok_or_else(|| invalid("the rate is too small for this burst"))?;
        Ok(Self {
            emission_interval,
            tolerance,
        })
    }

    /// Decides one request, given how far the tenant's stored arrival time
    /// runs ahead of now (zero when it is past or there is none). Returns
    /// the decision and, when allowed, how far ahead the new one runs.
    pub fn decide(&self, ahead_of_now: Duration) -> (RateDecision, Option<Duration>) {
        let new_ahead = ahead_of_now + self.emission_interval;
        if new_ahead > self.tolerance {
            let retry_after = new_ahead - self.tolerance;
            (RateDecision::Limited { retry_after }, None)
        } else {
            (RateDecision::Allowed, Some(new_ahead))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn invalid_limits_are_rejected() {
        for bad in [
            limit(0.0, 1),
            limit(-1.0, 1),
            limit(f64::NAN, 1),
            limit(f64::INFINITY, 1),
            limit(1e-300, 1),
            limit(1.0, 0),
        ] {
            assert!(
                matches!(Gcra::new(bad), Err(RateLimitError::InvalidLimit(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn burst_then_one_per_interval() {
        let gcra = Gcra::new(limit(10.0, 3)).expect("valid");
        let interval = Duration::from_millis(100);
        assert_eq!(gcra.emission_interval, interval);
        let mut ahead = Duration::ZERO;
        for _ in 0..3 {
            let (decision, new_ahead) = gcra.decide(ahead);
            assert_eq!(decision, RateDecision::Allowed);
            ahead = new_ahead.expect("stored");
        }
        assert_eq!(
            gcra.decide(ahead),
            (
                RateDecision::Limited {
                    retry_after: interval
                },
                None
            )
        );
        // 30 ms later the arrival time runs 30 ms less ahead.
        assert_eq!(
            gcra.decide(ahead - Duration::from_millis(30)).0,
            RateDecision::Limited {
                retry_after: Duration::from_millis(70)
            }
        );
    }
}
