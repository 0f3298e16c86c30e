//! The runner's scheduling core, pure and synchronous: which received
//! record may start now, and where each partition may commit. Records with
//! one ordering key start in log order, one at a time; records with
//! different keys run side by side within the in-flight bounds (per
//! process, per partition, per tenant in a partition). A partition's
//! committable position is its lowest unfinished record.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::OrderingKey;

/// The bounds the schedule keeps (see `RunnerConfig` for what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub in_flight: usize,
    pub in_flight_per_partition: usize,
    pub in_flight_per_tenant: usize,
    pub buffered_per_partition: usize,
    pub resume_below: usize,
    pub uncommitted_per_partition: u64,
}

/// A record the schedule lets start.
#[derive(Debug)]
pub(crate) struct Start<T> {
    pub partition: u32,
    /// Which incarnation of the partition's tracker the record belongs to: a
    /// partition revoked and assigned again starts a new one.
    pub epoch: u64,
    pub offset: u64,
    pub item: T,
}

/// How a started record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handled (or given up on and dead-lettered): the position may pass it.
    Finished,
    /// Stopped before it was settled (shutdown, revocation): it stays
    /// unfinished and holds the position back.
    Abandoned,
}

/// What `add` did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    Buffered,
    /// At or before a record already received (a redelivery): dropped.
    Duplicate,
    /// The partition is being released or the runner stops: dropped.
    Refused,
}

pub(crate) struct Schedule<T> {
    limits: Limits,
    partitions: BTreeMap<u32, PartitionSchedule<T>>,
    in_flight: usize,
    next_epoch: u64,
    /// The partition looked at first by the next start, so every partition
    /// gets its turn at the process-wide slots.
    cursor: u32,
}

struct PartitionSchedule<T> {
    epoch: u64,
    /// The offset after the newest record received; `None` before the first.
    head: Option<u64>,
    /// Received and not finished: waiting, in flight or abandoned.
    unfinished: BTreeSet<u64>,
    /// Keys with a record in flight or waiting.
    keys: HashMap<OrderingKey, KeyQueue<T>>,
    /// Tenants with a record in flight or ready.
    tenants: HashMap<String, TenantShare>,
    /// Tenants under their bound with a ready record, by the offset of the
    /// oldest one: the next start is the first of these.
    eligible: BTreeMap<u64, String>,
    /// In flight: offset to key.
    running: HashMap<u64, OrderingKey>,
    waiting: usize,
    paused: bool,
    /// Released (revoked, or the runner stops): nothing starts any more.
    closed: bool,
}

struct KeyQueue<T> {
    busy: bool,
    waiting: VecDeque<(u64, T)>,
}

#[derive(Default)]
struct TenantShare {
    in_flight: usize,
    /// The tenant's keys that are idle with a waiting record, by the offset
    /// of that record.
    ready: BTreeMap<u64, OrderingKey>,
    /// Where the tenant sits in `eligible`, if it does.
    eligible_at: Option<u64>,
}

impl<T> Schedule<T> {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            partitions: BTreeMap::new(),
            in_flight: 0,
            next_epoch: 0,
            cursor: 0,
        }
    }

    /// Takes a record received from the log. Records of a partition must
    /// come in log order; one at or before a record already received is a
    /// redelivery and is dropped.
    pub(crate) fn add(&mut self, partition: u32, offset: u64, key: OrderingKey, item: T) -> Added {
        let limits = self.limits;
        let next_epoch = &mut self.next_epoch;
        let schedule = self.partitions.entry(partition).or_insert_with(|| {
            *next_epoch += 1;
            PartitionSchedule::new(*next_epoch)
        });
        schedule.add(offset, key, item, &limits)
    }

    /// The next record to start, if any may start now. Partitions take turns.
    pub(crate) fn next_start(&mut self) -> Option<Start<T>> {
        if self.in_flight >= self.limits.in_flight {
            return None;
        }
        let limits = self.limits;
        let partition = self
            .partitions
            .range(self.cursor..)
            .chain(self.partitions.range(..self.cursor))
            .find(|(_, schedule)| schedule.can_start(&limits))
            .map(|(&partition, _)| partition)?;
        let schedule = self
            .partitions
            .get_mut(&partition)
            .expect("the partition was just found");
        let (offset, item) = schedule.start(&limits);
        let epoch = schedule.epoch;
        self.in_flight += 1;
        self.cursor = partition.wrapping_add(1);
        Some(Start {
            partition,
            epoch,
            offset,
            item,
        })
    }

    /// Reports how a started record ended. Returns the partition's new
    /// committable position when it moved.
    pub(crate) fn finish(
        &mut self,
        partition: u32,
        epoch: u64,
        offset: u64,
        outcome: Outcome,
    ) -> Option<u64> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let limits = self.limits;
        let schedule = self
            .partitions
            .get_mut(&partition)
            .filter(|schedule| schedule.epoch == epoch)?;
        let before = schedule.committable();
        schedule.finish(offset, outcome, &limits);
        let after = schedule.committable();
        (after != before).then_some(after).flatten()
    }

    /// Where `partition` may commit: its lowest unfinished record, or the
    /// offset after the newest one when all are finished.
    #[cfg(test)]
    pub(crate) fn committable(&self, partition: u32) -> Option<u64> {
        self.partitions.get(&partition)?.committable()
    }

    /// Every tracked partition's committable position.
    pub(crate) fn positions(&self) -> Vec<(u32, u64)> {
        self.partitions
            .iter()
            .filter_map(|(&partition, schedule)| Some((partition, schedule.committable()?)))
            .collect()
    }

    /// Records in flight, in the whole schedule.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records of `partition` in flight.
    pub(crate) fn in_flight_of(&self, partition: u32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |schedule| schedule.running.len())
    }

    /// Records of `partition` held: waiting or in flight.
    #[cfg(test)]
    pub(crate) fn held(&self, partition: u32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |schedule| schedule.held())
    }

    /// Partitions that reached a bound (records held, or how far the newest
    /// record is past the committable position) and were not paused yet;
    /// they count as paused from now on.
    pub(crate) fn take_to_pause(&mut self) -> Vec<u32> {
        let limits = self.limits;
        let mut pause = Vec::new();
        for (&partition, schedule) in &mut self.partitions {
            if !schedule.paused && !schedule.closed && schedule.over_bound(&limits) {
                schedule.paused = true;
                pause.push(partition);
            }
        }
        pause
    }

    /// Paused partitions that drained below their low-water mark; they
    /// count as resumed from now on.
    pub(crate) fn take_to_resume(&mut self) -> Vec<u32> {
        let limits = self.limits;
        let mut resume = Vec::new();
        for (&partition, schedule) in &mut self.partitions {
            if schedule.paused && schedule.may_resume(&limits) {
                schedule.paused = false;
                resume.push(partition);
            }
        }
        resume
    }

    /// Whether some paused partition may be resumed.
    pub(crate) fn resume_due(&self) -> bool {
        let limits = self.limits;
        self.partitions
            .values()
            .any(|schedule| schedule.paused && schedule.may_resume(&limits))
    }

    /// Records what the consumer was told after all (a pause or resume
    /// that failed is tried again).
    pub(crate) fn set_paused(&mut self, partitions: &[u32], paused: bool) {
        for partition in partitions {
            if let Some(schedule) = self.partitions.get_mut(partition) {
                schedule.paused = paused;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_paused(&self, partition: u32) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|schedule| schedule.paused)
    }

    /// Stops starting records of `partition` and drops those waiting (they
    /// stay unfinished). Records in flight still report. Returns whether
    /// the partition was paused.
    pub(crate) fn close(&mut self, partition: u32) -> bool {
        let Some(schedule) = self.partitions.get_mut(&partition) else {
            return false;
        };
        schedule.close();
        std::mem::replace(&mut schedule.paused, false)
    }

    /// `close` for every partition: the runner stops.
    pub(crate) fn close_all(&mut self) {
        for schedule in self.partitions.values_mut() {
            schedule.close();
            schedule.paused = false;
        }
    }

    /// Forgets `partition` altogether: nothing of it is committed any more.
    /// A record of it still in flight only frees its process-wide slot when
    /// it reports.
    pub(crate) fn forget(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }
}

impl<T> PartitionSchedule<T> {
    fn new(epoch: u64) -> Self {
        Self {
            epoch,
            head: None,
            unfinished: BTreeSet::new(),
            keys: HashMap::new(),
            tenants: HashMap::new(),
            eligible: BTreeMap::new(),
            running: HashMap::new(),
            waiting: 0,
            paused: false,
            closed: false,
        }
    }

    fn add(&mut self, offset: u64, key: OrderingKey, item: T, limits: &Limits) -> Added {
        if self.closed {
            return Added::Refused;
        }
        if self.head.is_some_and(|head| offset < head) {
            return Added::Duplicate;
        }
        self.head = Some(offset + 1);
        self.unfinished.insert(offset);
        self.waiting += 1;
        let queue = self.keys.entry(key.clone()).or_insert_with(|| KeyQueue {
            busy: false,
            waiting: VecDeque::new(),
        });
        let becomes_ready = !queue.busy && queue.waiting.is_empty();
        queue.waiting.push_back((offset, item));
        if becomes_ready {
            let tenant = key.tenant_id().to_owned();
            self.tenants
                .entry(tenant.clone())
                .or_default()
                .ready
                .insert(offset, key);
            self.refresh(&tenant, limits);
        }
        Added::Buffered
    }

    fn can_start(&self, limits: &Limits) -> bool {
        !self.closed
            && self.running.len() < limits.in_flight_per_partition
            && !self.eligible.is_empty()
    }

    /// Starts the oldest ready record of a tenant under its bound.
    fn start(&mut self, limits: &Limits) -> (u64, T) {
        let (&offset, tenant) = self
            .eligible
            .first_key_value()
            .expect("can_start checked a tenant is eligible");
        let tenant = tenant.clone();
        let share = self
            .tenants
            .get_mut(&tenant)
            .expect("an eligible tenant has a share");
        let key = share
            .ready
            .remove(&offset)
            .expect("a tenant is eligible at its oldest ready record");
        share.in_flight += 1;
        let queue = self.keys.get_mut(&key).expect("a ready key has a queue");
        let (started, item) = queue
            .waiting
            .pop_front()
            .expect("a ready key has a waiting record");
        debug_assert_eq!(started, offset);
        queue.busy = true;
        self.running.insert(offset, key);
        self.waiting -= 1;
        self.refresh(&tenant, limits);
        (offset, item)
    }

    fn finish(&mut self, offset: u64, outcome: Outcome, limits: &Limits) {
        let Some(key) = self.running.remove(&offset) else {
            return;
        };
        if outcome == Outcome::Finished {
            self.unfinished.remove(&offset);
        }
        let tenant = key.tenant_id().to_owned();
        let share = self.tenants.entry(tenant.clone()).or_default();
        share.in_flight = share.in_flight.saturating_sub(1);
        let next = match self.keys.get_mut(&key) {
            Some(queue) => {
                queue.busy = false;
                queue.waiting.front().map(|&(next, _)| next)
            }
            None => None,
        };
        match next {
            Some(next) => {
                share.ready.insert(next, key);
            }
            None => {
                self.keys.remove(&key);
            }
        }
        self.refresh(&tenant, limits);
    }

    /// Puts `tenant` where it belongs in `eligible` after its share changed.
    fn refresh(&mut self, tenant: &str, limits: &Limits) {
        let Some(share) = self.tenants.get_mut(tenant) else {
            return;
        };
        if let Some(at) = share.eligible_at.take() {
            self.eligible.remove(&at);
        }
        if share.in_flight < limits.in_flight_per_tenant
            && let Some((&oldest, _)) = share.ready.first_key_value()
        {
            self.eligible.insert(oldest, tenant.to_owned());
            share.eligible_at = Some(oldest);
        }
        if share.in_flight == 0 && share.ready.is_empty() {
            self.tenants.remove(tenant);
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.eligible.clear();
        for share in self.tenants.values_mut() {
            share.ready.clear();
            share.eligible_at = None;
        }
        self.tenants.retain(|_, share| share.in_flight > 0);
        self.keys.retain(|_, queue| {
            queue.waiting.clear();
            queue.busy
        });
        self.waiting = 0;
    }

    fn committable(&self) -> Option<u64> {
        self.unfinished.first().copied().or(self.head)
    }

    fn held(&self) -> usize {
        self.waiting + self.running.len()
    }

    /// How far the newest record is past the committable position.
    fn uncommitted(&self) -> u64 {
        match (self.head, self.committable()) {
            (Some(head), Some(committable)) => head - committable,
            _ => 0,
        }
    }

    fn over_bound(&self, limits: &Limits) -> bool {
        self.held() >= limits.buffered_per_partition
            || self.uncommitted() >= limits.uncommitted_per_partition
    }

    fn may_resume(&self, limits: &Limits) -> bool {
        self.closed
            || (self.held() < limits.resume_below
                && self.uncommitted() < limits.uncommitted_per_partition)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const ROOMY: Limits = Limits {
        in_flight: 100,
        in_flight_per_partition: 100,
        in_flight_per_tenant: 100,
        buffered_per_partition: 100,
        resume_below: 50,
        uncommitted_per_partition: 1000,
    };

    fn key(tenant: &str, conversation: &str) -> OrderingKey {
        OrderingKey::conversation(tenant, conversation)
    }

    /// Adds records `(tenant, conversation)` to partition 0 from offset 0.
    fn schedule_of(limits: Limits, records: &[(&str, &str)]) -> Schedule<()> {
        let mut schedule = Schedule::new(limits);
        for (offset, (tenant, conversation)) in records.iter().enumerate() {
            let added = schedule.add(0, offset as u64, key(tenant, conversation), ());
            assert_eq!(added, Added::Buffered);
        }
        schedule
    }

    /// Offsets of everything that may start now.
    fn start_all(schedule: &mut Schedule<()>) -> Vec<u64> {
        std::iter::from_fn(|| schedule.next_start().map(|start| start.offset)).collect()
    }

    fn done(schedule: &mut Schedule<()>, offset: u64) -> Option<u64> {
        schedule.finish(0, 1, offset, Outcome::Finished)
    }

    #[test]
    fn records_of_one_key_start_in_order_one_at_a_time() {
        let mut schedule = schedule_of(ROOMY, &[("t", "a"), ("t", "a"), ("t", "a")]);
        assert_eq!(start_all(&mut schedule), [0]);
        done(&mut schedule, 0);
        assert_eq!(start_all(&mut schedule), [1]);
        done(&mut schedule, 1);
        assert_eq!(start_all(&mut schedule), [2]);
    }

    #[test]
    fn records_of_different_keys_run_side_by_side() {
        let mut schedule = schedule_of(ROOMY, &[("t", "a"), ("t", "b"), ("t", "a"), ("u", "a")]);
        assert_eq!(start_all(&mut schedule), [0, 1, 3]);
        assert_eq!(schedule.in_flight(), 3);
        done(&mut schedule, 0);
        assert_eq!(start_all(&mut schedule), [2]);
    }

    #[test]
    fn the_committable_position_is_the_lowest_unfinished_record() {
        let mut schedule = schedule_of(ROOMY, &[("t", "a"), ("t", "b"), ("t", "c")]);
        assert_eq!(schedule.committable(0), Some(0));
        start_all(&mut schedule);
        assert_eq!(done(&mut schedule, 2), None, "0 still runs");
        assert_eq!(done(&mut schedule, 1), None);
        assert_eq!(schedule.committable(0), Some(0));
        assert_eq!(done(&mut schedule, 0), Some(3), "all done: past the newest");
        assert_eq!(schedule.positions(), [(0, 3)]);
        assert_eq!(schedule.committable(1), None, "nothing received there");
    }

    #[test]
    fn an_abandoned_record_holds_the_position_but_frees_its_key() {
        let mut schedule = schedule_of(ROOMY, &[("t", "a"), ("t", "a"), ("t", "b")]);
        assert_eq!(start_all(&mut schedule), [0, 2]);
        schedule.finish(0, 1, 0, Outcome::Abandoned);
        assert_eq!(start_all(&mut schedule), [1]);
        done(&mut schedule, 1);
        done(&mut schedule, 2);
        assert_eq!(schedule.committable(0), Some(0));
        assert_eq!(schedule.in_flight(), 0);
    }

    #[test]
    fn the_bounds_per_partition_and_per_process_hold() {
        let limits = Limits {
            in_flight: 3,
            in_flight_per_partition: 2,
            ..ROOMY
        };
        let mut schedule = Schedule::new(limits);
        for offset in 0..4 {
            schedule.add(0, offset, key("t", &format!("p0-{offset}")), ());
            schedule.add(1, offset, key("t", &format!("p1-{offset}")), ());
        }
        let started: Vec<(u32, u64)> =
            std::iter::from_fn(|| schedule.next_start().map(|s| (s.partition, s.offset))).collect();
        assert_eq!(started, [(0, 0), (1, 0), (0, 1)], "partitions take turns");
        assert_eq!(schedule.in_flight(), 3);
        assert_eq!(schedule.in_flight_of(0), 2);
        schedule.finish(1, 2, 0, Outcome::Finished);
        let next = schedule.next_start().expect("a slot came free");
        assert_eq!((next.partition, next.offset), (1, 1), "partition 0 is full");
    }

    #[test]
    fn a_flooding_tenant_cannot_take_another_tenants_turn() {
        let limits = Limits {
            in_flight_per_partition: 6,
            in_flight_per_tenant: 4,
            ..ROOMY
        };
        let mut records: Vec<(String, String)> = (0..50)
            .map(|n| ("flood".to_owned(), format!("c{n}")))
            .collect();
        records.push(("quiet".into(), "c".into()));
        let records: Vec<(&str, &str)> = records
            .iter()
            .map(|(t, c)| (t.as_str(), c.as_str()))
            .collect();
        let mut schedule = schedule_of(limits, &records);
        assert_eq!(
            start_all(&mut schedule),
            [0, 1, 2, 3, 50],
            "the flood gets its share; the other tenant starts at once"
        );
        // The flood's waiting records start in log order as its turns end.
        done(&mut schedule, 2);
        done(&mut schedule, 0);
        assert_eq!(start_all(&mut schedule), [4, 5]);
    }

    #[test]
    fn a_full_partition_pauses_and_resumes_below_the_low_water_mark() {
        let limits = Limits {
            buffered_per_partition: 4,
            resume_below: 2,
            ..ROOMY
        };
        let mut schedule = Schedule::new(limits);
        for offset in 0..3 {
            schedule.add(0, offset, key("t", "a"), ());
        }
        assert!(schedule.take_to_pause().is_empty());
        schedule.add(0, 3, key("t", "a"), ());
        assert_eq!(schedule.take_to_pause(), [0]);
        assert!(schedule.take_to_pause().is_empty(), "paused once");
        assert!(schedule.is_paused(0));
        for offset in 0..2 {
            assert_eq!(start_all(&mut schedule), [offset]);
            assert!(!schedule.resume_due());
            done(&mut schedule, offset);
        }
        assert_eq!(schedule.held(0), 2);
        assert!(!schedule.resume_due(), "not below the mark yet");
        start_all(&mut schedule);
        done(&mut schedule, 2);
        assert!(schedule.resume_due());
        assert_eq!(schedule.take_to_resume(), [0]);
        assert!(!schedule.is_paused(0));
    }

    #[test]
    fn a_partition_pauses_when_its_newest_record_runs_far_ahead_of_the_position() {
        let limits = Limits {
            uncommitted_per_partition: 5,
            ..ROOMY
        };
        let records: Vec<String> = (0..5).map(|n| format!("c{n}")).collect();
        let records: Vec<(&str, &str)> = records.iter().map(|c| ("t", c.as_str())).collect();
        let mut schedule = schedule_of(limits, &records);
        start_all(&mut schedule);
        for offset in 1..5 {
            done(&mut schedule, offset);
        }
        assert_eq!(schedule.held(0), 1, "only the stuck record is held...");
        assert_eq!(schedule.take_to_pause(), [0], "...but a crash would redo 5");
        done(&mut schedule, 0);
        assert_eq!(schedule.take_to_resume(), [0]);
    }

    #[test]
    fn redeliveries_are_dropped() {
        let mut schedule = schedule_of(ROOMY, &[("t", "a"), ("t", "b")]);
        assert_eq!(schedule.add(0, 1, key("t", "b"), ()), Added::Duplicate);
        assert_eq!(schedule.add(0, 0, key("t", "a"), ()), Added::Duplicate);
        assert_eq!(
            schedule.add(0, 5, key("t", "a"), ()),
            Added::Buffered,
            "gaps are fine"
        );
        assert_eq!(start_all(&mut schedule), [0, 1]);
    }

    #[test]
    fn a_closed_partition_starts_nothing_and_a_forgotten_one_commits_nothing() {
        let mut schedule = schedule_of(ROOMY, &[("t", "a"), ("t", "a"), ("t", "b")]);
        assert_eq!(start_all(&mut schedule), [0, 2]);
        schedule.close(0);
        assert_eq!(schedule.add(0, 3, key("t", "c"), ()), Added::Refused);
        done(&mut schedule, 0);
        assert!(start_all(&mut schedule).is_empty(), "1 was dropped");
        assert_eq!(schedule.committable(0), Some(1), "and holds the position");
        assert_eq!(schedule.in_flight_of(0), 1);
        schedule.forget(0);
        assert!(schedule.positions().is_empty());

        // Assigned again: a new tracker; the old record's report only frees its slot.
        assert_eq!(schedule.add(0, 1, key("t", "a"), ()), Added::Buffered);
        let restarted = schedule.next_start().unwrap();
        assert_eq!((restarted.epoch, restarted.offset), (2, 1));
        assert_eq!(schedule.finish(0, 1, 2, Outcome::Finished), None);
        assert_eq!(schedule.in_flight(), 1);
        assert_eq!(schedule.committable(0), Some(1));
        assert_eq!(schedule.finish(0, 2, 1, Outcome::Finished), Some(2));
    }

    // --- Randomized: the invariants under random arrivals and completion orders.

    /// What the test knows of one partition, independently of the schedule.
    #[derive(Default)]
    struct Model {
        /// The log: (tenant, conversation) of each offset still to be polled.
        log: VecDeque<(u64, OrderingKey)>,
        head: Option<u64>,
        /// Received and not finished.
        unfinished: BTreeSet<u64>,
        /// Per key: offsets waiting, in log order.
        waiting: HashMap<OrderingKey, VecDeque<u64>>,
        busy: HashSet<OrderingKey>,
        /// Per key, the last offset started.
        last_started: HashMap<OrderingKey, u64>,
        tenant_in_flight: HashMap<String, usize>,
        in_flight: usize,
        paused: bool,
    }

    impl Model {
        /// Ready records: the head of each idle key's queue.
        fn ready(&self) -> Vec<(u64, &OrderingKey)> {
            self.waiting
                .iter()
                .filter(|(key, queue)| !self.busy.contains(*key) && !queue.is_empty())
                .map(|(key, queue)| (queue[0], key))
                .collect()
        }

        fn held(&self) -> usize {
            self.in_flight + self.waiting.values().map(VecDeque::len).sum::<usize>()
        }
    }

    fn random_limits(rng: &mut StdRng) -> Limits {
        let buffered = rng.random_range(2..12);
        Limits {
            in_flight: rng.random_range(1..10),
            in_flight_per_partition: rng.random_range(1..7),
            in_flight_per_tenant: rng.random_range(1..5),
            buffered_per_partition: buffered,
            resume_below: rng.random_range(1..=buffered),
            uncommitted_per_partition: rng.random_range(3..30),
        }
    }

    fn random_log(rng: &mut StdRng, records: usize) -> VecDeque<(u64, OrderingKey)> {
        let mut offset = 0;
        (0..records)
            .map(|_| {
                // Kafka logs may have gaps (transaction markers, compaction).
                offset += if rng.random_bool(0.1) { 2 } else { 1 };
                let tenant = format!("t{}", rng.random_range(0..3));
                let key = if rng.random_bool(0.1) {
                    OrderingKey::partition()
                } else {
                    key(&tenant, &format!("c{}", rng.random_range(0..4)))
                };
                (offset, key)
            })
            .collect()
    }

    const MAX_POLL: usize = 3;

    #[test]
    fn random_completion_orders_keep_every_invariant() {
        for seed in 0..200 {
            run_random_schedule(seed);
        }
    }

    fn run_random_schedule(seed: u64) {
        let rng = &mut StdRng::seed_from_u64(seed);
        let limits = random_limits(rng);
        let partitions = rng.random_range(1..4u32);
        let mut models: BTreeMap<u32, Model> = (0..partitions)
            .map(|p| {
                let records = rng.random_range(0..60);
                let model = Model {
                    log: random_log(rng, records),
                    ..Model::default()
                };
                (p, model)
            })
            .collect();
        let mut schedule: Schedule<(u32, u64)> = Schedule::new(limits);
        // In flight: (partition, epoch, offset).
        let mut running: Vec<(u32, u64, u64)> = Vec::new();
        let context = |step: usize| format!("seed {seed}, step {step}, {limits:?}");

        for step in 0.. {
            assert!(step < 100_000, "{}: no progress", context(step));
            let everything_done = running.is_empty()
                && models
                    .values()
                    .all(|m| m.log.is_empty() && m.unfinished.is_empty());
            if everything_done {
                break;
            }
            match rng.random_range(0..3) {
                // A poll: a few records of an unpaused partition.
                0 => {
                    let partition = rng.random_range(0..partitions);
                    let model = models.get_mut(&partition).unwrap();
                    if model.paused {
                        continue;
                    }
                    for _ in 0..rng.random_range(1..=MAX_POLL) {
                        let Some((offset, key)) = model.log.pop_front() else {
                            break;
                        };
                        let added =
                            schedule.add(partition, offset, key.clone(), (partition, offset));
                        assert_eq!(added, Added::Buffered, "{}", context(step));
                        model.head = Some(offset + 1);
                        model.unfinished.insert(offset);
                        model.waiting.entry(key).or_default().push_back(offset);
                    }
                    for paused in schedule.take_to_pause() {
                        models.get_mut(&paused).unwrap().paused = true;
                    }
                    for resumed in schedule.take_to_resume() {
                        models.get_mut(&resumed).unwrap().paused = false;
                    }
                }
                // Start whatever may start.
                1 => {
                    while let Some(start) = schedule.next_start() {
                        assert_eq!(start.item, (start.partition, start.offset));
                        let model = models.get_mut(&start.partition).unwrap();
                        check_start(model, start.offset, &limits, &context(step));
                        running.push((start.partition, start.epoch, start.offset));
                    }
                    assert!(
                        running.len() >= limits.in_flight || !work_left(&models, &limits),
                        "{}: a record could start but did not",
                        context(step)
                    );
                }
                // A random record in flight finishes.
                _ => {
                    if running.is_empty() {
                        continue;
                    }
                    let (partition, epoch, offset) =
                        running.swap_remove(rng.random_range(0..running.len()));
                    schedule.finish(partition, epoch, offset, Outcome::Finished);
                    let model = models.get_mut(&partition).unwrap();
                    let key = model
                        .last_started
                        .iter()
                        .find(|&(_, &last)| last == offset)
                        .map(|(key, _)| key.clone())
                        .expect("a running record was started");
                    model.busy.remove(&key);
                    *model.tenant_in_flight.get_mut(key.tenant_id()).unwrap() -= 1;
                    model.in_flight -= 1;
                    model.unfinished.remove(&offset);
                    for resumed in schedule.take_to_resume() {
                        models.get_mut(&resumed).unwrap().paused = false;
                    }
                }
            }
            check_positions(&schedule, &models, &limits, &context(step));
            assert_eq!(schedule.in_flight(), running.len());
            assert!(running.len() <= limits.in_flight, "{}", context(step));
        }
        for (&partition, model) in &models {
            assert_eq!(schedule.committable(partition), model.head, "seed {seed}");
        }
    }

    /// The started record was the oldest ready one its tenant had, no
    /// older ready record of another tenant was passed over unless that
    /// tenant was at its bound, and no bound is exceeded.
    fn check_start(model: &mut Model, offset: u64, limits: &Limits, context: &str) {
        let (_, key) = *model
            .ready()
            .iter()
            .find(|(ready, _)| *ready == offset)
            .unwrap_or_else(|| panic!("{context}: {offset} started but was not ready"));
        let key = key.clone();
        for (older, other) in model.ready() {
            if older < offset {
                let at_bound = model
                    .tenant_in_flight
                    .get(other.tenant_id())
                    .is_some_and(|&n| n >= limits.in_flight_per_tenant);
                assert!(
                    at_bound && other.tenant_id() != key.tenant_id(),
                    "{context}: {offset} started before the older ready {older}"
                );
            }
        }
        if let Some(&last) = model.last_started.get(&key) {
            assert!(last < offset, "{context}: {key:?} reordered");
        }
        assert!(
            model.busy.insert(key.clone()),
            "{context}: {key:?} overlaps"
        );
        model.waiting.get_mut(&key).unwrap().pop_front();
        model.last_started.insert(key.clone(), offset);
        let tenant = model
            .tenant_in_flight
            .entry(key.tenant_id().to_owned())
            .or_default();
        *tenant += 1;
        assert!(
            *tenant <= limits.in_flight_per_tenant,
            "{context}: tenant bound"
        );
        model.in_flight += 1;
        assert!(
            model.in_flight <= limits.in_flight_per_partition,
            "{context}: partition bound"
        );
    }

    /// Whether the model has a record that may start within the bounds.
    fn work_left(models: &BTreeMap<u32, Model>, limits: &Limits) -> bool {
        models.values().any(|model| {
            model.in_flight < limits.in_flight_per_partition
                && model.ready().iter().any(|(_, key)| {
                    model
                        .tenant_in_flight
                        .get(key.tenant_id())
                        .is_none_or(|&n| n < limits.in_flight_per_tenant)
                })
        })
    }

    fn check_positions(
        schedule: &Schedule<(u32, u64)>,
        models: &BTreeMap<u32, Model>,
        limits: &Limits,
        context: &str,
    ) {
        for (&partition, model) in models {
            let committable = schedule.committable(partition);
            let expected = model.unfinished.first().copied().or(model.head);
            assert_eq!(committable, expected, "{context}: position of {partition}");
            if let (Some(position), Some(&lowest)) = (committable, model.unfinished.first()) {
                assert!(position <= lowest, "{context}: passed an unfinished record");
            }
            assert_eq!(schedule.held(partition), model.held(), "{context}");
            // A poll after the last pause check may add one batch.
            assert!(
                model.held() < limits.buffered_per_partition + MAX_POLL,
                "{context}: buffer bound of {partition}"
            );
            let uncommitted = model.head.unwrap_or(0) - expected.unwrap_or(0);
            assert!(
                uncommitted < limits.uncommitted_per_partition + 2 * MAX_POLL as u64,
                "{context}: uncommitted bound of {partition}"
            );
        }
    }
}
