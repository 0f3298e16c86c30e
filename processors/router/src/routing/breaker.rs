//! A circuit breaker per provider endpoint: after `failure_threshold`
//! failures in a row it opens and refuses calls for `open_for`, then lets
//! one trial call through (half-open); the trial's outcome closes or
//! reopens it. Keeps the router from waiting on an endpoint that is down.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

/// Leave to make one call. Dropping it without an outcome (the turn was
/// cancelled) frees the half-open trial slot for the next caller.
#[derive(Debug)]
pub struct BreakerPermit {
    breaker: Arc<CircuitBreaker>,
    settled: bool,
}

impl CircuitBreaker {
    pub fn new(failure_threshold: u32, open_for: Duration) -> Arc<Self> {
        Arc::new(Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// A permit for one call, or `None` while the breaker is open (or its
    /// half-open trial is already running).
    pub fn try_acquire(self: &Arc<Self>) -> Option<BreakerPermit> {
        let mut state = self.lock();
        let allowed = match *state {
            State::Closed { .. } => true,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen {
                    trial_in_flight: true,
                };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen {
                ref mut trial_in_flight,
            } => !std::mem::replace(trial_in_flight, true),
        };
        allowed.then(|| BreakerPermit {
            breaker: self.clone(),
            settled: false,
        })
    }

    fn succeeded(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    fn failed(&self) {
        let mut state = self.lock();
        let open = match *state {
            State::Closed { ref mut failures } => {
                *failures += 1;
                *failures >= self.failure_threshold
            }
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open {
                until: Instant::now() + self.open_for,
            };
        }
    }
}

impl BreakerPermit {
    /// The endpoint answered (even with a client error: it is up).
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.succeeded();
    }

    /// The endpoint failed in a way that says it is unhealthy.
    pub fn failure(mut self) {
        self.settled = true;
        self.breaker.failed();
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.settled {
            let mut state = self.breaker.lock();
            if let State::HalfOpen { trial_in_flight } = &mut *state {
                *trial_in_flight = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_recovers_through_one_trial() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(30));
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_none());

        tokio::time::advance(Duration::from_secs(30)).await;
        let trial = breaker.try_acquire().expect("one trial after the pause");
        assert!(breaker.try_acquire().is_none(), "only one trial at a time");
        trial.failure();
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "a failed trial reopens"
        );

        tokio::time::advance(Duration::from_secs(30)).await;
        breaker.try_acquire().unwrap().success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_frees_the_slot() {
        let breaker = CircuitBreaker::new(1, Duration::from_secs(1));
        breaker.try_acquire().unwrap().failure();
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(breaker.try_acquire().unwrap());
        assert!(breaker.try_acquire().is_some());
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(1));
        breaker.try_acquire().unwrap().failure();
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
