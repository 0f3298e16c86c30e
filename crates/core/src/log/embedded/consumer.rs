//! The embedded log's consumer-group member. An embedded group has exactly
//! one member per `subscribe` call, and it is assigned every partition:
//! there is no group coordinator inside one process. Two members of the same
//! group in one process would each receive every record.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use crate::log::{LogConsumer, LogError, LogPosition, LogRecord, PendingCommit};

pub(super) struct EmbeddedConsumer {
    shared: Arc<Shared>,
    group: String,
    /// The next offset to hand out, per partition.
    positions: Vec<u64>,
    /// Committed end offsets; changes after every commit of the writer.
    end_offsets: watch::Receiver<Vec<u64>>,
    /// The partition served first by the next poll, so no partition is
    /// always last in line.
    first_partition: usize,
    /// Partitions `poll` skips (backpressure).
    paused: Vec<bool>,
}

impl EmbeddedConsumer {
    pub(super) fn new(shared: Arc<Shared>, group: String, committed: &[Option<u64>]) -> Self {
        let end_offsets = shared.end_offsets.clone();
        Self {
            shared,
            group,
            positions: committed.iter().map(|offset| offset.unwrap_or(0)).collect(),
            end_offsets,
            first_partition: 0,
            paused: vec![false; committed.len()],
        }
    }

    fn set_paused(&mut self, partitions: &[u32], paused: bool) -> Result<(), LogError> {
        for &partition in partitions {
            let flag =
                self.paused
                    .get_mut(partition as usize)
                    .ok_or(LogError::UnknownPartition {
                        partition,
                        count: self.shared.partitions,
                    })?;
            *flag = paused;
        }
        Ok(())
    }

    /// How many records to take from each partition this poll: `(partition,
    /// from, count)` for partitions that have records, fairly shared.
    fn plan_read(&self, end_offsets: &[u64], max: usize) -> Vec<(u32, u64, usize)> {
        let partitions = self.positions.len();
        let order: Vec<usize> = (0..partitions)
            .map(|i| (self.first_partition + i) % partitions)
            .collect();
        let available: Vec<u64> = order
            .iter()
            .map(|&p| match self.paused[p] {
                true => 0,
                false => end_offsets[p].saturating_sub(self.positions[p]),
            })
            .collect();
        fair_shares(&available, max)
            .into_iter()
            .zip(order)
            .filter(|&(count, _)| count > 0)
            .map(|(count, p)| (p as u32, self.positions[p], count))
            .collect()
    }
}

#[async_trait]
impl LogConsumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Vec<LogRecord>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Mark the current ends as seen before looking at them, so an
            // append committed after this line wakes `changed` below.
            let end_offsets = self.end_offsets.borrow_and_update().clone();
            let plan = self.plan_read(&end_offsets, max);
            if !plan.is_empty() {
                let records = self.shared.read_records(plan).await?;
                for record in &records {
                    let position = &mut self.positions[record.position.partition as usize];
                    *position = (*position).max(record.position.offset + 1);
                }
                self.first_partition = (self.first_partition + 1) % self.positions.len();
                if !records.is_empty() {
                    return Ok(records);
                }
            }
            match tokio::time::timeout_at(deadline, self.end_offsets.changed()).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(Err(_writer_gone)) => return Err(LogError::Closed),
                Ok(Ok(())) => {}
            }
        }
    }

    fn commit(&mut self, next_offsets: &[LogPosition]) -> PendingCommit {
        let shared = Arc::clone(&self.shared);
        let group = self.group.clone();
        let next_offsets = next_offsets.to_vec();
        Box::pin(async move { shared.commit_offsets(&group, &next_offsets).await })
    }

    fn assignment(&self) -> Vec<u32> {
        (0..self.shared.partitions).collect()
    }

    fn pause(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        self.set_paused(partitions, true)
    }

    fn resume(&mut self, partitions: &[u32]) -> Result<(), LogError> {
        self.set_paused(partitions, false)
    }

    async fn close(self: Box<Self>) -> Result<(), LogError> {
        // Nothing to leave: the group has no coordinator and positions live
        // only in what was committed.
        Ok(())
    }
}

/// Splits `max` records among partitions with `available[i]` records each:
/// every partition gets an equal share, and what one cannot use goes to the
/// others, earlier partitions first.
fn fair_shares(available: &[u64], max: usize) -> Vec<usize> {
    let mut shares = vec![0usize; available.len()];
    let mut budget = max;
    loop {
        let hungry: Vec<usize> = (0..available.len())
            .filter(|&i| (shares[i] as u64) < available[i])
            .collect();
        if budget == 0 || hungry.is_empty() {
            return shares;
        }
        let share = (budget / hungry.len()).max(1);
        for i in hungry {
            let room = usize::try_from(available[i] - shares[i] as u64).unwrap_or(usize::MAX);
            let take = share.min(room).min(budget);
            shares[i] += take;
            budget -= take;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fair_shares;

    #[test]
    fn shares_evenly_when_every_partition_has_plenty() {
        assert_eq!(fair_shares(&[100, 100, 100, 100], 8), vec![2, 2, 2, 2]);
    }

    #[test]
    fn gives_what_a_small_partition_cannot_use_to_the_others() {
        assert_eq!(fair_shares(&[1, 100, 0, 100], 9), vec![1, 4, 0, 4]);
    }

    #[test]
    fn hands_out_the_remainder_in_partition_order() {
        assert_eq!(fair_shares(&[10, 10, 10], 4), vec![2, 1, 1]);
    }

    #[test]
    fn never_exceeds_what_is_available_or_the_budget() {
        assert_eq!(fair_shares(&[3, 2], 100), vec![3, 2]);
        assert_eq!(fair_shares(&[0, 0], 10), vec![0, 0]);
        assert_eq!(fair_shares(&[5, 5], 0), vec![0, 0]);
    }
}
