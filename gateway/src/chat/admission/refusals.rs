//! Refused requests as facts on the log. Refusals are tallied in memory per
//! tenant and reason and reported as one `RequestsRefused` event per window,
//! so analytics and audit can count them, while a client hammering a limit
//! costs the log one event a second, not one per refused request.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chatstream_core::log::EventLog;
use chatstream_schemas::event::{EventContext, new_event};
use chatstream_schemas::ids::new_event_id;
use chatstream_schemas::pb::events::RequestsRefused;
use chatstream_schemas::pb::events::event::Payload;
use tokio_util::sync::CancellationToken;

use super::super::now_ms;

/// How often the tallies are appended: a gateway that crashes loses at most
/// this much of them.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a request was refused before anything was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Over the tenant's requests per second.
    RateLimited,
    /// Over the tenant's maximum of open connections.
    TooManyConnections,
}

impl RefusalReason {
    /// The `reason` of the `RequestsRefused` event.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::TooManyConnections => "too_many_connections",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    count: u64,
    first_ms: i64,
    last_ms: i64,
}

/// Reports whose append failed, kept for the next report; the oldest are
/// dropped beyond this (a long log outage must not grow memory unbounded).
const MAX_UNSENT_REPORTS: usize = 10_000;

/// Refusals counted since the last report, per tenant and reason.
#[derive(Debug, Default)]
pub struct Refusals {
    tallies: Mutex<HashMap<(String, RefusalReason), Tally>>,
    /// Reports whose append failed, retried as they are: the same event id,
    /// so a report that was appended after all is counted once.
    unsent: Mutex<VecDeque<chatstream_schemas::Event>>,
}

impl Refusals {
    pub fn count(&self, tenant_id: &str, reason: RefusalReason) {
        let now = now_ms();
        let mut tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        tallies
            .entry((tenant_id.to_owned(), reason))
            .and_modify(|tally| {
                tally.count += 1;
                tally.last_ms = tally.last_ms.max(now);
            })
            .or_insert(Tally {
                count: 1,
                first_ms: now,
                last_ms: now,
            });
    }

    /// Refusals of `tenant_id` for `reason` counted and not yet reported.
    #[cfg(test)]
    pub fn counted(&self, tenant_id: &str, reason: RefusalReason) -> u64 {
        let tallies = self.tallies.lock().unwrap_or_else(PoisonError::into_inner);
        tallies
            .get(&(tenant_id.to_owned(), reason))
            .map_or(0, |tally| tally.count)
    }

    /// Appends one event per tenant and reason counted since the last
    /// report, after the reports that could not be appended before.
    pub async fn report(&self, log: &dyn EventLog) {
        let tallies =
            std::mem::take(&mut *self.tallies.lock().unwrap_or_else(PoisonError::into_inner));
        let mut reports =
            std::mem::take(&mut *self.unsent.lock().unwrap_or_else(PoisonError::into_inner));
        reports.extend(
            tallies
                .into_iter()
                .map(|((tenant_id, reason), tally)| refusal_event(&tenant_id, reason, tally)),
        );
        while let Some(event) = reports.pop_front() {
            if let Err(error) = log.append(&event.tenant_id, &event).await {
                tracing::warn!(%error, "could not report refused requests; retrying with the next report");
                // The log is down: the rest waits too, rather than each
                // report waiting out its own timeout.
                reports.push_front(event);
                break;
            }
        }
        self.keep_unsent(reports);
    }

    fn keep_unsent(&self, failed: VecDeque<chatstream_schemas::Event>) {
        let mut unsent = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
        unsent.extend(failed);
        let excess = unsent.len().saturating_sub(MAX_UNSENT_REPORTS);
        if excess > 0 {
            unsent.drain(..excess);
            tracing::warn!(
                dropped = excess,
                "the log has been unavailable for long: dropped the oldest reports of refused requests"
            );
        }
    }

    /// Reports every `REPORT_INTERVAL` until `shutdown`, then once more so a
    /// clean stop loses nothing.
    pub async fn report_until(
        self: Arc<Self>,
        log: Arc<dyn EventLog>,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(REPORT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => self.report(log.as_ref()).await,
            }
        }
        self.report(log.as_ref()).await;
    }
}

fn refusal_event(
    tenant_id: &str,
    reason: RefusalReason,
    tally: Tally,
) -> chatstream_schemas::Event {
    let id = new_event_id();
    new_event(
        id.clone(),
        EventContext {
            tenant_id,
            conversation_id: "",
            causation_id: "",
            correlation_id: &id,
        },
        Payload::RequestsRefused(RequestsRefused {
            reason: reason.as_str().to_owned(),
            count: tally.count,
            first_refused_at_ms: tally.first_ms,
            last_refused_at_ms: tally.last_ms,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::testing::{Backends, ScriptedLog};

    fn refusals_of(events: &[chatstream_schemas::Event]) -> Vec<(String, String, u64)> {
        let mut found: Vec<_> = events
            .iter()
            .filter_map(|event| match &event.payload {
                Some(Payload::RequestsRefused(refused)) => Some((
                    event.tenant_id.clone(),
                    refused.reason.clone(),
                    refused.count,
                )),
                _ => None,
            })
            .collect();
        found.sort();
        found
    }

    #[tokio::test]
    async fn one_event_per_tenant_and_reason_carries_the_count() {
        let backends = Backends::new();
        let refusals = Refusals::default();
        for _ in 0..5 {
            refusals.count("acme", RefusalReason::RateLimited);
        }
        refusals.count("acme", RefusalReason::TooManyConnections);
        refusals.count("globex", RefusalReason::RateLimited);

        refusals.report(backends.log.as_ref()).await;
        let events = backends.events().await;

        assert_eq!(
            refusals_of(&events),
            [
                ("acme".into(), "rate_limited".into(), 5),
                ("acme".into(), "too_many_connections".into(), 1),
                ("globex".into(), "rate_limited".into(), 1),
            ]
        );
        let event = events.iter().find(|e| e.tenant_id == "acme").unwrap();
        assert_eq!(event.conversation_id, "", "a tenant-level fact");
        assert_eq!(event.r#type, "chatstream.requests.refused.v1");
    }

    #[tokio::test]
    async fn a_report_with_nothing_counted_appends_nothing_and_counts_restart() {
        let backends = Backends::new();
        let refusals = Refusals::default();
        refusals.count("acme", RefusalReason::RateLimited);
        refusals.report(backends.log.as_ref()).await;
        refusals.report(backends.log.as_ref()).await;
        refusals.count("acme", RefusalReason::RateLimited);
        refusals.report(backends.log.as_ref()).await;

        assert_eq!(
            refusals_of(&backends.events().await),
            [
                ("acme".into(), "rate_limited".into(), 1),
                ("acme".into(), "rate_limited".into(), 1),
            ]
        );
    }

    #[tokio::test]
    async fn a_report_that_failed_is_appended_with_the_next_one_under_its_own_id() {
        let backends = Backends::new();
        let log = ScriptedLog::new(backends.log.clone(), []);
        let refusals = Refusals::default();
        refusals.count("acme", RefusalReason::RateLimited);
        refusals.count("acme", RefusalReason::RateLimited);
        log.set_down(true);
        refusals.report(log.as_ref()).await;
        refusals.report(log.as_ref()).await;
        refusals.count("acme", RefusalReason::RateLimited);
        log.set_down(false);
        refusals.report(log.as_ref()).await;
        refusals.report(log.as_ref()).await;

        let events = backends.events().await;
        assert_eq!(
            refusals_of(&events),
            [
                ("acme".into(), "rate_limited".into(), 1),
                ("acme".into(), "rate_limited".into(), 2),
            ],
            "the failed report once, then the newer tally"
        );
        assert_ne!(events[0].id, events[1].id);
    }

    #[tokio::test]
    async fn stopping_reports_what_was_counted() {
        let backends = Backends::new();
        let refusals = Arc::new(Refusals::default());
        let shutdown = CancellationToken::new();
        let reporting = tokio::spawn(
            refusals
                .clone()
                .report_until(backends.log.clone(), shutdown.clone()),
        );
        // Let the first (immediate) tick pass with nothing counted.
        tokio::task::yield_now().await;
        refusals.count("acme", RefusalReason::RateLimited);
        shutdown.cancel();
        reporting.await.unwrap();

        assert_eq!(
            refusals_of(&backends.events().await),
            [("acme".into(), "rate_limited".into(), 1)]
        );
    }
}
