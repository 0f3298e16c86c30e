//! When each message is due. The open-loop schedule is fixed before the run
//! starts and never waits for the server: that is what keeps a slow server
//! from slowing the offered load down and hiding its own latency.
use std::time::Duration;

/// The open-loop arrival schedule: `rate` messages per second over all
/// connections, reached by a linear climb from zero over `ramp_up`.
#[derive(Clone, Copy, Debug)]
pub struct ArrivalSchedule {
    rate: f64,
    ramp_up_secs: f64,
}

impl ArrivalSchedule {
    pub fn new(rate: f64, ramp_up: Duration) -> Self {
        Self {
            rate,
            ramp_up_secs: ramp_up.as_secs_f64(),
        }
    }

    /// When message `n` (0-based, counted over all connections) is due,
    /// measured from the start of the run.
    pub fn due(&self, n: u64) -> Duration {
        let n = n as f64;
        // Messages sent during the climb: the area under the ramp.
        let ramp_messages = self.rate * self.ramp_up_secs / 2.0;
        let seconds = if n < ramp_messages {
            // n = rate * t^2 / (2 * ramp), solved for t.
            (2.0 * n * self.ramp_up_secs / self.rate).sqrt()
        } else {
            self.ramp_up_secs + (n - ramp_messages) / self.rate
        };
        Duration::from_secs_f64(seconds)
    }
}

/// Closed loop: when connection `index` of `connections` starts sending, so
/// that they come in evenly over the ramp-up instead of all at once.
pub fn closed_loop_start(index: u32, connections: u32, ramp_up: Duration) -> Duration {
    ramp_up.mul_f64(f64::from(index) / f64::from(connections.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_spaces_messages_evenly() {
        let schedule = ArrivalSchedule::new(1000.0, Duration::ZERO);
        assert_eq!(schedule.due(0), Duration::ZERO);
        assert_eq!(schedule.due(1), Duration::from_millis(1));
        assert_eq!(schedule.due(2500), Duration::from_millis(2500));
    }

    #[test]
    fn ramp_up_climbs_linearly_then_holds_the_rate() {
        // 100/s reached after 10 s: 500 messages during the climb.
        let schedule = ArrivalSchedule::new(100.0, Duration::from_secs(10));
        assert_eq!(schedule.due(500), Duration::from_secs(10));
        assert_eq!(schedule.due(600), Duration::from_secs(11));
        // A quarter of the climb's messages fall in its first half.
        let halfway = schedule.due(125).as_secs_f64();
        assert!((halfway - 5.0).abs() < 1e-9, "{halfway}");
        // Arrival gaps shrink while the rate climbs.
        let early_gap = schedule.due(11) - schedule.due(10);
        let late_gap = schedule.due(401) - schedule.due(400);
        assert!(early_gap > late_gap);
    }

    #[test]
    fn closed_loop_connections_start_evenly_over_the_ramp() {
        assert_eq!(
            closed_loop_start(0, 4, Duration::from_secs(8)),
            Duration::ZERO
        );
        assert_eq!(
            closed_loop_start(2, 4, Duration::from_secs(8)),
            Duration::from_secs(4)
        );
    }
}
