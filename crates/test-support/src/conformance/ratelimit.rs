//! Conformance cases for `RateLimiter`. They run on the real clock (a
//! shared limiter's clock is its server's), with windows short enough to
//! keep the suite fast and tolerances wide enough not to be flaky, yet
//! narrow enough that a limit enforced twice, or not at all, fails.
use std::time::{Duration, Instant};

use super::{successes, unique};
use chatstream_core::ratelimit::{RateDecision, RateLimit, RateLimitError, RateLimiter};

/// So slow to refill that no request in a case sees a refill.
const NO_REFILL: f64 = 0.01;

/// How far the measured rate may be off the configured one.
pub const RATE_TOLERANCE: f64 = 0.05;

async fn check<L: RateLimiter + ?Sized>(
    limiter: &L,
    tenant: &str,
    limit: RateLimit,
) -> RateDecision {
    limiter.check(tenant, limit).await.expect("check")
}

async fn allowed_of<L: RateLimiter + ?Sized>(
    limiter: &L,
    tenant: &str,
    limit: RateLimit,
    attempts: u32,
) -> u32 {
    successes(attempts, async || {
        check(limiter, tenant, limit).await == RateDecision::Allowed
    })
    .await
}

fn retry_after(decision: RateDecision, what: &str) -> Duration {
    match decision {
        RateDecision::Limited { retry_after } => retry_after,
        RateDecision::Allowed => panic!("{what}: expected to be limited, was allowed"),
    }
}

pub async fn allows_up_to_the_burst_then_limits<L: RateLimiter + ?Sized>(limiter: &L) {
    let tenant = unique("tenant");
    let limit = RateLimit {
        per_second: NO_REFILL,
        burst: 5,
    };
    for n in 0..limit.burst {
        assert_eq!(
            check(limiter, &tenant, limit).await,
            RateDecision::Allowed,
            "request {n} is within the burst"
        );
    }
    let wait = retry_after(check(limiter, &tenant, limit).await, "past the burst");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(100),
        "retry_after {wait:?} is at most one emission interval (100 s)"
    );
}

pub async fn retry_after_says_when_the_next_request_is_allowed<L: RateLimiter + ?Sized>(
    limiter: &L,
) {
    let tenant = unique("tenant");
    let limit = RateLimit {
        per_second: 20.0,
        burst: 2,
    };
    assert_eq!(allowed_of(limiter, &tenant, limit, 2).await, 2);
    let first = retry_after(check(limiter, &tenant, limit).await, "past the burst");
    assert!(
        first > Duration::ZERO && first <= Duration::from_millis(50),
        "retry_after {first:?} is within one emission interval (50 ms)"
    );
    // Limited requests consume nothing: asking again does not push the
    // next allowed request further out.
    for _ in 0..10 {
        let again = retry_after(check(limiter, &tenant, limit).await, "asking again");
        assert!(
            again <= first,
            "retry_after grew from {first:?} to {again:?}"
        );
    }
    // A margin for the round trip and a server clock a hair ahead.
    tokio::time::sleep(first + Duration::from_millis(5)).await;
    assert_eq!(
        check(limiter, &tenant, limit).await,
        RateDecision::Allowed,
        "allowed once retry_after has passed"
    );
}

pub async fn tenants_are_independent<L: RateLimiter + ?Sized>(limiter: &L) {
    let tenant = unique("tenant");
    let extended = format!("{tenant}0");
    let prefix = tenant[..tenant.len() - 1].to_owned();
    let other = unique("tenant");
    let limit = RateLimit {
        per_second: NO_REFILL,
        burst: 3,
    };
    assert_eq!(allowed_of(limiter, &tenant, limit, 5).await, 3);
    for neighbour in [&extended, &prefix, &other] {
        assert_eq!(
            allowed_of(limiter, neighbour, limit, 5).await,
            3,
            "tenant {neighbour} has its own full burst after {tenant} used up its own"
        );
    }
}

pub async fn concurrent_checks_never_exceed_the_burst<L: RateLimiter + ?Sized>(limiter: &L) {
    let tenant = unique("tenant");
    let limit = RateLimit {
        per_second: NO_REFILL,
        burst: 10,
    };
    let decisions = futures::future::join_all((0..50).map(|_| limiter.check(&tenant, limit))).await;
    let allowed = decisions
        .into_iter()
        .map(|decision| decision.expect("check"))
        .filter(|decision| *decision == RateDecision::Allowed)
        .count();
    assert_eq!(allowed, 10, "50 concurrent requests, burst 10");
}

pub async fn a_raised_limit_applies_at_once<L: RateLimiter + ?Sized>(limiter: &L) {
    let tenant = unique("tenant");
    let small = RateLimit {
        per_second: NO_REFILL,
        burst: 2,
    };
    let large = RateLimit { burst: 5, ..small };
    assert_eq!(allowed_of(limiter, &tenant, small, 4).await, 2);
    assert_eq!(
        allowed_of(limiter, &tenant, large, 6).await,
        3,
        "the larger burst admits the difference, no more"
    );
}

pub async fn invalid_limits_are_rejected<L: RateLimiter + ?Sized>(limiter: &L) {
    let tenant = unique("tenant");
    for limit in [
        RateLimit {
            per_second: 0.0,
            burst: 1,
        },
        RateLimit {
            per_second: -5.0,
            burst: 1,
        },
        RateLimit {
            per_second: f64::NAN,
            burst: 1,
        },
        RateLimit {
            per_second: 10.0,
            burst: 0,
        },
    ] {
        assert!(
            matches!(
                limiter.check(&tenant, limit).await,
                Err(RateLimitError::InvalidLimit(_))
            ),
            "{limit:?} is rejected"
        );
    }
}

/// The burst for measuring a rate by saturation: at 200/s its tolerance is
/// 100 ms, so a client stalled that long (a loaded CI machine) loses no
/// capacity and the measurement stays exact.
pub const SATURATION_BURST: u32 = 20;

/// Requests `tenant` as fast as the limiter lets it for `window` and
/// returns (allowed, the time they were spread over). Polls every
/// millisecond while limited; the limiter's tolerance keeps the arrival
/// time ahead of now, so polling late loses no capacity.
pub async fn saturate<L: RateLimiter + ?Sized>(
    limiter: &L,
    tenant: &str,
    limit: RateLimit,
    window: Duration,
) -> (u32, Duration) {
    let start = Instant::now();
    let mut allowed = 0;
    while start.elapsed() < window {
        match check(limiter, tenant, limit).await {
            RateDecision::Allowed => allowed += 1,
            RateDecision::Limited { .. } => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    (allowed, start.elapsed())
}

/// What a limit admits over `elapsed` of saturation: the burst at once,
/// then the rate.
pub fn expected_allowed(limit: RateLimit, elapsed: Duration) -> f64 {
    f64::from(limit.burst) + limit.per_second * elapsed.as_secs_f64()
}

/// Asserts `allowed` is within `RATE_TOLERANCE` of what the limit admits.
pub fn assert_rate(allowed: u32, limit: RateLimit, elapsed: Duration, what: &str) {
    let expected = expected_allowed(limit, elapsed);
    let error = (f64::from(allowed) - expected).abs() / expected;
    assert!(
        error <= RATE_TOLERANCE,
        "{what}: {allowed} allowed in {elapsed:?}, expected {expected:.1} \
         ({} + {}/s), off by {:.1}%",
        limit.burst,
        limit.per_second,
        error * 100.0
    );
}

pub async fn rate_converges_to_the_limit<L: RateLimiter + ?Sized>(limiter: &L) {
    let tenant = unique("tenant");
    let limit = RateLimit {
        per_second: 200.0,
        burst: SATURATION_BURST,
    };
    let (allowed, elapsed) = saturate(limiter, &tenant, limit, Duration::from_millis(1500)).await;
    assert_rate(allowed, limit, elapsed, "one client saturating the limit");
}
