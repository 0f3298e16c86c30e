//! How processors work through the log: how many records each handles at
//! once (per process, per partition, per tenant within a partition) and how
//! many a partition may hold before it is paused. Model turns are slow I/O,
//! so the defaults keep thousands in flight; the tenant bound keeps one
//! tenant from taking a partition's share from the others.
use serde::{Deserialize, Serialize};

use crate::error::{Invalid, check_range};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingConfig {
    /// Records one processor handles at once in one process, over all its
    /// partitions (`CHATSTREAM_MAX_IN_FLIGHT`).
    pub max_in_flight: u32,
    /// Records of one partition handled at once
    /// (`CHATSTREAM_MAX_IN_FLIGHT_PER_PARTITION`).
    pub max_in_flight_per_partition: u32,
    /// Records of one tenant handled at once within a partition; the
    /// tenant's other records wait their turn, in log order
    /// (`CHATSTREAM_MAX_IN_FLIGHT_PER_TENANT`).
    pub max_in_flight_per_tenant: u32,
    /// Records a partition may hold (waiting or in flight) before it is
    /// paused (`CHATSTREAM_MAX_BUFFERED_PER_PARTITION`).
    pub max_buffered_per_partition: u32,
    /// How long records in flight get to finish when their partition is
    /// revoked or the process stops; the rest are redelivered.
    pub drain_timeout_ms: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4096,
            max_in_flight_per_partition: 1024,
            max_in_flight_per_tenant: 256,
            max_buffered_per_partition: 4096,
            drain_timeout_ms: 10_000,
        }
    }
}

/// Far more than one process can run, and well inside `usize` everywhere.
const MOST_RECORDS: u64 = 1 << 20;

impl ProcessingConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (setting, value) in [
            ("processing.max_in_flight", self.max_in_flight),
            (
                "processing.max_in_flight_per_partition",
                self.max_in_flight_per_partition,
            ),
            (
                "processing.max_in_flight_per_tenant",
                self.max_in_flight_per_tenant,
            ),
            (
                "processing.max_buffered_per_partition",
                self.max_buffered_per_partition,
            ),
        ] {
            check_range(setting, value.into(), 1, MOST_RECORDS)?;
        }
        check_range(
            "processing.drain_timeout_ms",
            self.drain_timeout_ms,
            0,
            3_600_000,
        )
    }

    pub fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bounds_are_refused_by_name() {
        let mut config = ProcessingConfig {
            max_in_flight_per_tenant: 0,
            ..Default::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert!(
            error.contains("processing.max_in_flight_per_tenant"),
            "{error}"
        );
        config.max_in_flight_per_tenant = 8;
        assert!(config.validate().is_ok());
    }
}
