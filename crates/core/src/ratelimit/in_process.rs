//! The in-process rate limiter: each tenant's GCRA arrival time in a map,
//! for `chatstream dev` and single-gateway installs. Tenants whose arrival
//! time has passed hold no state (they are as good as new), so the map is
//! swept of them as it grows.
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Gcra, RateDecision, RateLimit, RateLimitError, RateLimiter};

/// Tenants tracked before the first sweep.
const FIRST_SWEEP_AT: usize = 1024;

#[derive(Default)]
pub struct InProcessRateLimiter {
    state: Mutex<Arrivals>,
}

#[derive(Default)]
struct Arrivals {
    /// Tenant id → theoretical arrival time of its next request.
    next_arrival: HashMap<String, Instant>,
    sweep_at: usize,
}

impl InProcessRateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tenants with state (for tests and metrics).
    pub fn tracked_tenants(&self) -> usize {
        self.lock().next_arrival.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arrivals> {
        // Each update is a single insert; a panicked holder left it whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl RateLimiter for InProcessRateLimiter {
    async fn check(
        &self,
        tenant_id: &str,
        limit: RateLimit,
    ) -> Result<RateDecision, RateLimitError> {
        let gcra = Gcra::new(limit)?;
        // tokio's clock, so tests can pause and advance it.
        let now = Instant::now();
        let mut state = self.lock();
        let ahead = state
            .next_arrival
            .get(tenant_id)
            .map_or_else(Default::default, |arrival| {
                arrival.saturating_duration_since(now)
            });
        let (decision, new_ahead) = gcra.decide(ahead);
        if let Some(new_ahead) = new_ahead {
            match state.next_arrival.get_mut(tenant_id) {
                Some(arrival) => *arrival = now + new_ahead,
                None => {
                    state
                        .next_arrival
                        .insert(tenant_id.to_owned(), now + new_ahead);
                    state.sweep_if_grown(now);
                }
            }
        }
        Ok(decision)
    }
}

impl Arrivals {
    fn sweep_if_grown(&mut self, now: Instant) {
        if self.next_arrival.len() < self.sweep_at.max(FIRST_SWEEP_AT) {
            return;
        }
        self.next_arrival.retain(|_, arrival| *arrival > now);
        // Amortized: the next sweep waits until the map doubles.
        self.sweep_at = self.next_arrival.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 100.0,
        burst: 10,
    };

    #[tokio::test(start_paused = true)]
    async fn admits_exactly_the_rate_over_time() {
        let limiter = InProcessRateLimiter::new();
        let mut allowed = 0;
        // A request every millisecond from 0 to 10 s inclusive.
        for _ in 0..=10_000 {
            if limiter.check("t", LIMIT).await == Ok(RateDecision::Allowed) {
                allowed += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        assert_eq!(allowed, 10 + 100 * 10, "the burst, then 100 per second");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_exactly_when_the_next_request_fits() {
        let limiter = InProcessRateLimiter::new();
        for _ in 0..LIMIT.burst {
            assert_eq!(limiter.check("t", LIMIT).await, Ok(RateDecision::Allowed));
        }
        let Ok(RateDecision::Limited { retry_after }) = limiter.check("t", LIMIT).await else {
            panic!("the burst is used up");
        };
        assert_eq!(retry_after, Duration::from_millis(10));
        tokio::time::advance(retry_after - Duration::from_micros(1)).await;
        assert!(matches!(
            limiter.check("t", LIMIT).await,
            Ok(RateDecision::Limited { .. })
        ));
        tokio::time::advance(Duration::from_micros(1)).await;
        assert_eq!(limiter.check("t", LIMIT).await, Ok(RateDecision::Allowed));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_tenants_are_swept() {
        let limiter = InProcessRateLimiter::new();
        for n in 0..FIRST_SWEEP_AT - 1 {
            limiter.check(&format!("t{n}"), LIMIT).await.expect("check");
        }
        assert_eq!(limiter.tracked_tenants(), FIRST_SWEEP_AT - 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.check("new", LIMIT).await.expect("check");
        assert_eq!(
            limiter.tracked_tenants(),
            1,
            "only the tenant whose arrival time is ahead is kept"
        );
    }
}
