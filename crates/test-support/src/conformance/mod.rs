//! Conformance suites for the backend seams. Every implementation of
//! `EventLog`, `ProjectionStore`, `AnalyticsStore`, `FanOut`, `RateLimiter` and
//! `ConnectionCounter` (embedded, Kafka, ScyllaDB, Redis) must pass the same
//! cases, so code above the seams can rely on the semantics the trait docs
//! promise, whichever backend runs. The processor runner has a suite too
//! (`runner`), run over each event log.
//!
//! Each case is a public async function that takes the subject and panics
//! with a message saying what was expected. The macros expand to one
//! `#[tokio::test]` per case, so a test run lists every case by name:
//!
//! ```ignore
//! chatstream_test_support::log_conformance_tests!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     (EmbeddedLog::open(dir.path(), 4).unwrap(), dir)
//! });
//! ```
//!
//! (`tests/embedded_conformance.rs` runs every suite this way.)
//!
//! For a backend that needs a server, `if_available:` before the factory
//! makes it yield `Option<(subject, guard)>`: `None` (the server cannot be
//! reached; the factory prints a "not run" notice, or panics when the run
//! must be strict) ends the case without running it:
//!
//! ```ignore
//! chatstream_test_support::fanout_conformance_tests!(if_available: redis_fanout());
//! ```
//!
//! The factory is an expression, evaluated once per case, whose value is a
//! future resolving to `(subject, guard)`: a fresh, isolated instance and
//! whatever must outlive it (a temp dir; `()` when there is nothing). The
//! subject is dropped before the guard. Cases also use unique tenant and group
//! names, so a backend that is hard to make fully fresh only needs a fresh
//! topic, keyspace or key prefix per case. The expansion is wrapped in a
//! module named after the seam (`event_log_conformance`, ...) that sees the
//! invoking module's names.
use std::time::Duration;

use chatstream_core::log::LogPosition;
use chatstream_core::store::HistoryEntry;
use chatstream_schemas::Event;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::UserMessageSent;
use chatstream_schemas::pb::events::event::Payload;

pub mod analytics;
pub mod connections;
pub mod fanout;
pub mod log;
pub mod ratelimit;
pub mod runner;
pub mod store;

/// How long a case waits for something that should happen promptly before
/// it fails. Generous, because a distributed backend may rebalance first.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A name no other case (or run) uses, e.g. `acme-3f2a...`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// How many of `attempts` calls of `try_once`, one after another, succeeded.
pub(crate) async fn successes(attempts: u32, mut try_once: impl AsyncFnMut() -> bool) -> u32 {
    let mut succeeded = 0;
    for _ in 0..attempts {
        if try_once().await {
            succeeded += 1;
        }
    }
    succeeded
}

/// A complete `UserMessageSent` event, as the gateway would append it.
pub fn user_message(tenant_id: &str, conversation_id: &str, text: &str) -> Event {
    event_in(
        tenant_id,
        conversation_id,
        Payload::UserMessageSent(Box::new(UserMessageSent {
            client_message_id: new_event_id(),
            text: text.to_owned(),
            sent_by_key_id: "key-conformance".to_owned(),
            ..Default::default()
        })),
    )
}

/// An event of a conversation with a fresh id and no cause.
pub fn event_in(tenant_id: &str, conversation_id: &str, payload: Payload) -> Event {
    new_event(
        new_event_id(),
        EventContext {
            tenant_id,
            conversation_id,
            causation_id: "",
            correlation_id: "",
        },
        payload,
    )
}

/// `event` as recorded at `offset` of log partition `partition`.
pub fn history_entry(partition: u32, offset: u64, event: Event) -> HistoryEntry {
    HistoryEntry {
        position: LogPosition { partition, offset },
        event,
    }
}

/// Expands to one test per case of a suite; used by the per-seam macros.
/// `$mode` is `always` (the factory yields the subject) or `if_available`
/// (it yields an `Option`; `None` skips the case).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($mode:ident, $module:ident, $suite:ident, $factory:expr, [$($case:ident),+ $(,)?]) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_cases!($mode, $suite, $factory, [$($case),+]);
        }
    };
}

/// The tests of `__conformance_tests`, without the module around them.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($mode:ident, $suite:ident, $factory:expr, [$($case:ident),+ $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (subject, guard) = $crate::__conformance_subject!($mode, $factory);
                $crate::conformance::$suite::$case(&subject).await;
                drop(subject);
                drop(guard);
            }
        )+
    };
}

/// One test per case that cannot run against this subject: each calls
/// `$not_run(case, what_it_needs)`, which says so (and may fail the run).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_not_run {
    ($not_run:expr, [$($case:ident => $needs:expr),+ $(,)?]) => {
        $(
            #[test]
            fn $case() {
                $not_run(stringify!($case), $needs);
            }
        )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_subject {
    (always, $factory:expr) => {
        $factory.await
    };
    (if_available, $factory:expr) => {
        match $factory.await {
            Some(subject_and_guard) => subject_and_guard,
            None => return,
        }
    };
}

/// One `#[tokio::test]` per event-log case (see the module docs for the factory).
#[macro_export]
macro_rules! log_conformance_tests {
    (if_available: $factory:expr) => {
        $crate::log_conformance_tests!(@with if_available, $factory);
    };
    (@with $mode:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $mode,
            event_log_conformance,
            log,
            $factory,
            [
                appends_get_increasing_offsets_in_the_key_partition,
                partitions_match_kafka_murmur2,
                read_returns_records_from_an_offset_in_order,
                read_returns_at_most_max_records,
                read_at_or_past_the_end_is_empty,
                end_offset_is_the_next_offset,
                unknown_partitions_are_rejected,
                append_bytes_are_read_back_unchanged,
                concurrent_appends_get_distinct_positions,
                append_all_appends_in_order_in_the_key_partition,
                new_group_starts_at_the_earliest_offset,
                poll_times_out_empty_when_nothing_arrives,
                poll_wakes_up_on_append,
                poll_returns_at_most_max_records,
                committed_group_resumes_without_redelivery,
                commit_in_the_middle_of_a_batch_resumes_there,
                groups_are_independent,
                a_paused_partition_hands_out_nothing_until_resumed,
                ping_answers,
            ]
        );
    };
    ($factory:expr) => {
        $crate::log_conformance_tests!(@with always, $factory);
    };
}

/// One `#[tokio::test]` per processor-runner case (see the module docs for
/// the factory; the subject is an event log that is `Clone`).
#[macro_export]
macro_rules! runner_conformance_tests {
    (if_available: $factory:expr) => {
        $crate::runner_conformance_tests!(@with if_available, $factory);
    };
    (@with $mode:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $mode,
            runner_conformance,
            runner,
            $factory,
            [
                conversations_run_side_by_side_each_in_log_order,
                a_flooding_tenant_leaves_room_for_another_on_its_partition,
                a_partition_holding_too_many_records_is_paused_until_it_drains,
                shutdown_drains_in_flight_turns_and_commits_what_finished,
            ]
        );
    };
    ($factory:expr) => {
        $crate::runner_conformance_tests!(@with always, $factory);
    };
}

/// One `#[tokio::test]` per projection-store case (see the module docs for the factory).
///
/// A CQL server that lacks range reads on clustering columns (the
/// in-memory CQL test server) runs the other cases with
/// `store_conformance_tests!(if_available: factory, lacking_range_reads: not_run)`:
/// each case that needs them becomes a test calling
/// `not_run(case_name, what_it_needs)` instead, which reports it as not run.
#[macro_export]
macro_rules! store_conformance_tests {
    (if_available: $factory:expr, lacking_range_reads: $not_run:expr) => {
        $crate::store_conformance_tests!(@module if_available, $factory, (not_run $not_run));
    };
    (if_available: $factory:expr) => {
        $crate::store_conformance_tests!(@module if_available, $factory, (run));
    };
    (@module $mode:ident, $factory:expr, $range_reads:tt) => {
        mod projection_store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $crate::__conformance_cases!(
                $mode,
                store,
                $factory,
                [
                    ping_answers,
                    first_conversation_record_wins,
                    conversations_are_isolated_between_tenants,
                    history_round_trips_events,
                    history_is_isolated_between_tenants_and_conversations,
                    replayed_event_is_a_duplicate_at_the_same_position,
                    reproduced_event_is_a_duplicate_of_the_first_position,
                    event_ids_are_deduplicated_per_tenant,
                    first_client_message_claim_wins,
                    client_messages_are_isolated_between_tenants,
                    processed_marks_are_per_scope_and_event,
                ]
            );
            $crate::store_conformance_tests!(@range_reads $mode, $factory, $range_reads);
        }
    };
    // The cases that read "after" a clustering key (both lists name them).
    (@range_reads $mode:ident, $factory:expr, (run)) => {
        $crate::__conformance_cases!(
            $mode,
            store,
            $factory,
            [
                conversations_are_listed_in_id_order_and_paged,
                tenant_ids_that_prefix_each_other_do_not_leak,
                history_is_ordered_by_offset_and_pages_after_an_offset,
            ]
        );
    };
    (@range_reads $mode:ident, $factory:expr, (not_run $not_run:expr)) => {
        $crate::__conformance_not_run!(
            $not_run,
            [
                conversations_are_listed_in_id_order_and_paged =>
                    "range reads on a clustering column (conversation_id > ?)",
                tenant_ids_that_prefix_each_other_do_not_leak =>
                    "range reads on a clustering column (conversation_id > ?)",
                history_is_ordered_by_offset_and_pages_after_an_offset =>
                    "range reads on a clustering column (log_offset > ?)",
            ]
        );
    };
    ($factory:expr) => {
        $crate::store_conformance_tests!(@module always, $factory, (run));
    };
}

/// One `#[tokio::test]` per fan-out case (see the module docs for the factory).
/// The lag case publishes `fanout::LAG_PROBE_MESSAGES` messages at once, so
/// the subject's per-subscriber buffer must be smaller than that.
#[macro_export]
macro_rules! fanout_conformance_tests {
    (if_available: $factory:expr) => {
        $crate::fanout_conformance_tests!(@with if_available, $factory);
    };
    (@with $mode:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $mode,
            fanout_conformance,
            fanout,
            $factory,
            [
                publish_without_subscribers_is_ok,
                subscriber_gets_messages_published_after_subscribing_in_order,
                every_subscriber_gets_every_message,
                committed_entries_are_delivered,
                other_conversations_and_tenants_do_not_leak,
                lagging_subscriber_is_told_how_many_it_missed,
                resubscribing_after_leaving_works,
            ]
        );
    };
    ($factory:expr) => {
        $crate::fanout_conformance_tests!(@with always, $factory);
    };
}

/// One `#[tokio::test]` per rate-limiter case (see the module docs for the
/// factory). The cases run on the real clock, a few seconds in all.
#[macro_export]
macro_rules! ratelimit_conformance_tests {
    (if_available: $factory:expr) => {
        $crate::ratelimit_conformance_tests!(@with if_available, $factory);
    };
    (@with $mode:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $mode,
            rate_limiter_conformance,
            ratelimit,
            $factory,
            [
                allows_up_to_the_burst_then_limits,
                retry_after_says_when_the_next_request_is_allowed,
                tenants_are_independent,
                concurrent_checks_never_exceed_the_burst,
                a_raised_limit_applies_at_once,
                invalid_limits_are_rejected,
                rate_converges_to_the_limit,
            ]
        );
    };
    ($factory:expr) => {
        $crate::ratelimit_conformance_tests!(@with always, $factory);
    };
}

/// One `#[tokio::test]` per connection-counter case (see the module docs
/// for the factory).
#[macro_export]
macro_rules! connection_counter_conformance_tests {
    (if_available: $factory:expr) => {
        $crate::connection_counter_conformance_tests!(@with if_available, $factory);
    };
    (@with $mode:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $mode,
            connection_counter_conformance,
            connections,
            $factory,
            [
                counts_up_to_the_maximum,
                a_release_frees_a_slot,
                tenants_are_independent,
                concurrent_acquires_never_exceed_the_maximum,
                releasing_more_than_acquired_does_nothing,
            ]
        );
    };
    ($factory:expr) => {
        $crate::connection_counter_conformance_tests!(@with always, $factory);
    };
}

/// One `#[tokio::test]` per analytics-store case (see the module docs for the factory).
#[macro_export]
macro_rules! analytics_conformance_tests {
    (if_available: $factory:expr) => {
        $crate::analytics_conformance_tests!(@with if_available, $factory);
    };
    (@with $mode:ident, $factory:expr) => {
        $crate::__conformance_tests!(
            $mode,
            analytics_store_conformance,
            analytics,
            $factory,
            [
                ping_answers,
                an_observation_lands_in_its_minute_hour_and_day_buckets,
                applying_an_event_twice_changes_nothing,
                event_ids_are_marked_per_tenant,
                concurrent_applies_to_one_bucket_lose_nothing,
                the_same_events_in_another_order_store_the_same_bytes,
                buckets_are_read_in_range_oldest_first,
                tenants_never_read_each_others_figures,
                notes_round_trip,
                a_read_wider_than_the_limit_is_refused,
            ]
        );
    };
    ($factory:expr) => {
        $crate::analytics_conformance_tests!(@with always, $factory);
    };
}
