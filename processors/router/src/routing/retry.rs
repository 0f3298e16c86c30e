//! How long to wait before trying the same candidate again: exponential
//! backoff with full jitter (so retries from many turns spread out), never
//! shorter than what the provider asked for with `Retry-After`.
use std::time::Duration;

use rand::Rng;

/// A random delay in `[0, min(max, base * 2^retry)]`.
pub fn jittered_backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .checked_mul(1u32 << retry.min(20))
        .unwrap_or(max)
        .min(max);
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    let millis = rand::rng().random_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(millis)
}

/// The wait before retry number `retry` (0 for the first retry).
pub fn retry_delay(
    retry: u32,
    retry_after: Option<Duration>,
    base: Duration,
    max: Duration,
) -> Duration {
    jittered_backoff(retry, base, max).max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_growing_ceiling() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        for retry in 0..30 {
            let ceiling = (base * 2u32.pow(retry.min(10))).min(max);
            for _ in 0..20 {
                assert!(jittered_backoff(retry, base, max) <= ceiling);
            }
        }
        let spread: std::collections::HashSet<_> =
            (0..50).map(|_| jittered_backoff(3, base, max)).collect();
        assert!(spread.len() > 1, "jittered");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let delay = retry_delay(
            0,
            Some(Duration::from_secs(7)),
            Duration::from_millis(10),
            Duration::from_millis(20),
        );
        assert_eq!(delay, Duration::from_secs(7));
    }
}
