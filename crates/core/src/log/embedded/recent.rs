//! The newest records of each partition, kept in memory as the writer
//! commits them. Every processor reads the log at its tail, woken by each
//! commit: serving those reads from here spares each of them a read
//! transaction and a hop to the blocking pool per commit. Older records
//! (a consumer catching up, a replay) are read from the file.
use std::collections::VecDeque;

use crate::log::LogRecord;

/// Records kept per partition: many commits' worth at any rate the writer
/// sustains, and a few MiB in all.
pub(super) const PER_PARTITION: usize = 1024;

pub(super) struct RecentRecords {
    /// Per partition, records of consecutive offsets, oldest first.
    partitions: Vec<VecDeque<LogRecord>>,
    per_partition: usize,
}

impl RecentRecords {
    pub(super) fn new(partitions: u32, per_partition: usize) -> Self {
        Self {
            partitions: (0..partitions).map(|_| VecDeque::new()).collect(),
            per_partition: per_partition.max(1),
        }
    }

    /// Keeps a record just committed. Records of a partition arrive in
    /// offset order; one that does not follow the newest kept (it cannot
    /// happen with one writer) starts the window afresh.
    pub(super) fn push(&mut self, record: LogRecord) {
        let Some(window) = self.partitions.get_mut(record.position.partition as usize) else {
            return;
        };
        if window
            .back()
            .is_some_and(|newest| newest.position.offset + 1 != record.position.offset)
        {
            window.clear();
        }
        if window.len() == self.per_partition {
            window.pop_front();
        }
        window.push_back(record);
    }

    /// The records of each `(partition, from, count)` request, in request
    /// order, or `None` unless the window holds every one of them.
    pub(super) fn read(&self, requests: &[(u32, u64, usize)]) -> Option<Vec<LogRecord>> {
        let mut out = Vec::with_capacity(requests.iter().map(|&(_, _, count)| count).sum());
        for &(partition, from, count) in requests {
            let window = self.partitions.get(partition as usize)?;
            let oldest = window.front()?.position.offset;
            let skip = usize::try_from(from.checked_sub(oldest)?).ok()?;
            if skip + count > window.len() {
                return None;
            }
            out.extend(window.range(skip..skip + count).cloned());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogPosition;

    fn record(partition: u32, offset: u64) -> LogRecord {
        LogRecord {
            position: LogPosition { partition, offset },
            key: "acme".into(),
            value: offset.to_be_bytes().to_vec(),
            timestamp_ms: 0,
        }
    }

    fn offsets(records: &[LogRecord]) -> Vec<(u32, u64)> {
        records
            .iter()
            .map(|r| (r.position.partition, r.position.offset))
            .collect()
    }

    #[test]
    fn serves_what_the_window_holds_in_request_order() {
        let mut recent = RecentRecords::new(2, 8);
        for offset in 0..4 {
            recent.push(record(0, offset));
            recent.push(record(1, offset + 10));
        }

        let read = recent.read(&[(1, 11, 2), (0, 2, 2)]).expect("held");

        assert_eq!(offsets(&read), vec![(1, 11), (1, 12), (0, 2), (0, 3)]);
        assert_eq!(read[0].value, 11u64.to_be_bytes());
    }

    #[test]
    fn refuses_a_request_reaching_past_either_end() {
        let mut recent = RecentRecords::new(1, 3);
        for offset in 0..5 {
            recent.push(record(0, offset));
        }
        // Holds 2..=4 now.
        assert!(recent.read(&[(0, 1, 1)]).is_none(), "evicted");
        assert!(recent.read(&[(0, 3, 3)]).is_none(), "not written yet");
        assert!(
            recent.read(&[(0, 2, 1), (0, 1, 1)]).is_none(),
            "one request missing"
        );
        assert_eq!(offsets(&recent.read(&[(0, 2, 3)]).unwrap()).len(), 3);
    }

    #[test]
    fn an_empty_or_unknown_partition_is_read_from_the_file() {
        let recent = RecentRecords::new(1, 3);
        assert!(recent.read(&[(0, 0, 1)]).is_none());
        assert!(recent.read(&[(5, 0, 1)]).is_none());
    }

    #[test]
    fn a_gap_in_offsets_restarts_the_window() {
        let mut recent = RecentRecords::new(1, 8);
        recent.push(record(0, 0));
        recent.push(record(0, 1));
        recent.push(record(0, 5));

        assert!(recent.read(&[(0, 0, 1)]).is_none());
        assert_eq!(offsets(&recent.read(&[(0, 5, 1)]).unwrap()), vec![(0, 5)]);
    }
}
