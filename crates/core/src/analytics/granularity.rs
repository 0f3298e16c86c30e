//! UTC time buckets: a minute, an hour or a day, each starting at a whole
//! multiple of its length since the Unix epoch (UTC has no leap seconds in
//! Unix time, so a day bucket is exactly midnight to midnight UTC).
use std::fmt;
use std::str::FromStr;

/// The length of a time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    /// Every granularity, finest first: each event counts in one bucket of each.
    pub const ALL: [Granularity; 3] = [Self::Minute, Self::Hour, Self::Day];

    pub fn millis(self) -> i64 {
        match self {
            Self::Minute => 60_000,
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The start of the bucket holding `at_ms` (floor, also before 1970).
    pub fn bucket_start(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.millis()) * self.millis()
    }

    /// How many buckets start in `[from_ms, to_ms)`.
    pub fn buckets_in(self, from_ms: i64, to_ms: i64) -> i64 {
        if to_ms <= from_ms {
            return 0;
        }
        let first = self.bucket_start(from_ms)
            + if self.bucket_start(from_ms) < from_ms {
                self.millis()
            } else {
                0
            };
        if first >= to_ms {
            0
        } else {
            (to_ms - 1 - first) / self.millis() + 1
        }
    }

    /// A stable one-byte code for storage keys.
    pub fn code(self) -> u8 {
        match self {
            Self::Minute => 1,
            Self::Hour => 2,
            Self::Day => 3,
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown bucket `{0}`: expected minute, hour or day")]
pub struct UnknownGranularity(pub String);

impl FromStr for Granularity {
    type Err = UnknownGranularity;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|granularity| granularity.as_str() == text)
            .ok_or_else(|| UnknownGranularity(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIDNIGHT: i64 = 1_764_633_600_000; // 2025-12-02T00:00:00Z

    #[test]
    fn buckets_start_at_whole_utc_minutes_hours_and_days() {
        let at = MIDNIGHT - 1; // 23:59:59.999 the day before
        assert_eq!(Granularity::Minute.bucket_start(at), MIDNIGHT - 60_000);
        assert_eq!(Granularity::Hour.bucket_start(at), MIDNIGHT - 3_600_000);
        assert_eq!(Granularity::Day.bucket_start(at), MIDNIGHT - 86_400_000);
        assert_eq!(Granularity::Day.bucket_start(MIDNIGHT), MIDNIGHT);
        assert_eq!(
            Granularity::Minute.bucket_start(-1),
            -60_000,
            "floor before 1970"
        );
    }

    #[test]
    fn buckets_in_counts_the_starts_inside_the_range() {
        let minute = Granularity::Minute;
        assert_eq!(minute.buckets_in(MIDNIGHT, MIDNIGHT), 0);
        assert_eq!(minute.buckets_in(MIDNIGHT, MIDNIGHT + 1), 1);
        assert_eq!(minute.buckets_in(MIDNIGHT, MIDNIGHT + 60_000), 1);
        assert_eq!(minute.buckets_in(MIDNIGHT, MIDNIGHT + 60_001), 2);
        assert_eq!(minute.buckets_in(MIDNIGHT + 1, MIDNIGHT + 60_000), 0);
        assert_eq!(
            Granularity::Day.buckets_in(MIDNIGHT, MIDNIGHT + 86_400_000 * 7),
            7
        );
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for granularity in Granularity::ALL {
            assert_eq!(granularity.as_str().parse(), Ok(granularity));
        }
        assert_eq!(
            "week".parse::<Granularity>(),
            Err(UnknownGranularity("week".into()))
        );
    }
}
