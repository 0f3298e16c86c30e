//! What each event adds to the analytics projection: a pure function of the
//! event and of what earlier events of its turn left (`Recalled`), so the
//! same events always give the same figures. Durations are measured between
//! two events' `occurred_at`; the earlier moment is kept as a note
//! (`note_of`) until the later event needs it (`needs_of`).
use chatstream_core::analytics::{Observation, Series};
use chatstream_schemas::Event;
use chatstream_schemas::pb::events::TokenUsage;
use chatstream_schemas::pb::events::event::Payload;

use crate::figures::*;

/// A value an event leaves for later events of its turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub key: String,
    pub value: i64,
}

/// The notes an event needs from earlier events of its turn.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// When the user message this answers was sent.
    pub sent_at: Option<String>,
    /// Whether the turn step's usage was recorded by a usage event.
    pub usage_recorded: Option<String>,
    /// When the tool call this completes was requested.
    pub requested_at: Option<String>,
}

/// What the notes named by `Needs` held.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recalled {
    pub sent_at_ms: Option<i64>,
    pub usage_recorded: bool,
    pub requested_at_ms: Option<i64>,
}

fn sent_key(user_message_id: &str) -> String {
    format!("sent/{user_message_id}")
}

fn usage_key(step_cause_id: &str) -> String {
    format!("usage/{step_cause_id}")
}

fn requested_key(tool_request_id: &str) -> String {
    format!("requested/{tool_request_id}")
}

/// Unix milliseconds of the event's `occurred_at` (0 when missing).
pub fn occurred_at_ms(event: &Event) -> i64 {
    event
        .occurred_at
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or_default()
}

/// The user message a turn's event belongs to: its correlation id (the
/// user message's id on every event of the turn), else its cause.
fn turn_of(event: &Event) -> &str {
    if event.correlation_id.is_empty() {
        &event.causation_id
    } else {
        &event.correlation_id
    }
}

pub fn note_of(event: &Event) -> Option<Note> {
    let at = occurred_at_ms(event);
    let (key, value) = match event.payload.as_ref()? {
        Payload::UserMessageSent(_) => (sent_key(&event.id), at),
        Payload::ToolCallRequested(_) => (requested_key(&event.id), at),
        // The usage event and the answer of a step share their cause.
        Payload::ModelUsageRecorded(_) => (usage_key(&event.causation_id), 1),
        _ => return None,
    };
    Some(Note { key, value })
}

pub fn needs_of(event: &Event) -> Needs {
    match &event.payload {
        Some(Payload::AssistantMessage(_)) => Needs {
            sent_at: Some(sent_key(turn_of(event))),
            usage_recorded: Some(usage_key(&event.causation_id)),
            requested_at: None,
        },
        Some(Payload::ToolCallCompleted(_)) => Needs {
            requested_at: Some(requested_key(&event.causation_id)),
            ..Needs::default()
        },
        _ => Needs::default(),
    }
}

fn provider_model<'a>(provider: &'a str, model: &'a str) -> [(&'a str, &'a str); 2] {
    [("provider", provider), ("model", model)]
}

fn count_tokens(observation: &mut Observation, provider: &str, model: &str, usage: &TokenUsage) {
    let labels = provider_model(provider, model);
    observation.count(
        Series::new(TOKENS_IN, labels),
        u64::from(usage.prompt_tokens),
    );
    observation.count(
        Series::new(TOKENS_OUT, labels),
        u64::from(usage.completion_tokens),
    );
}

/// The event's contribution; empty for events that add nothing.
pub fn observe(event: &Event, recalled: &Recalled) -> Observation {
    let at = occurred_at_ms(event);
    let mut observation = Observation::at(at);
    let Some(payload) = &event.payload else {
        return observation;
    };
    match payload {
        Payload::ConversationOpened(_) => {
            observation.count(Series::new(CONVERSATIONS_OPENED, []), 1);
        }
        Payload::UserMessageSent(_) => {
            observation.count(Series::new(USER_MESSAGES, []), 1);
        }
        Payload::AssistantMessage(answer) => {
            let model = answer.model.as_str();
            observation.count(Series::new(ANSWERS, [("model", model)]), 1);
            // Without a usage event (the built-in mock records none) the
            // answer's own usage is all there is; the provider is unknown.
            if !recalled.usage_recorded
                && let Some(usage) = &answer.usage
            {
                count_tokens(&mut observation, "", model, usage);
            }
            if let Some(sent_at) = recalled.sent_at_ms
                && at >= sent_at
            {
                observation.latency(
                    Series::new(ANSWER_DURATION_MS, [("model", model)]),
                    (at - sent_at) as u64,
                );
            }
        }
        Payload::ErrorOccurred(error) => {
            observation.count(Series::new(ERRORS, [("code", error.code.as_str())]), 1);
            if error.code == BUDGET_EXCEEDED_CODE {
                observation.count(Series::new(BUDGET_REFUSALS, []), 1);
            }
        }
        Payload::ModelRoutingDecided(decided) => {
            let labels = provider_model(&decided.provider, &decided.model);
            observation.count(Series::new(MODEL_ATTEMPTS, labels), 1);
            match decided.reason.as_str() {
                "fallback" => observation.count(Series::new(MODEL_FALLBACKS, labels), 1),
                "retry" => observation.count(Series::new(MODEL_RETRIES, labels), 1),
                _ => {}
            }
        }
        Payload::ModelAttemptFailed(failed) => {
            observation.count(
                Series::new(
                    MODEL_ATTEMPT_FAILURES,
                    [
                        ("provider", failed.provider.as_str()),
                        ("model", failed.model.as_str()),
                        ("code", failed.error_code.as_str()),
                    ],
                ),
                1,
            );
        }
        Payload::ModelUsageRecorded(recorded) => {
            if let Some(usage) = &recorded.usage {
                count_tokens(&mut observation, &recorded.provider, &recorded.model, usage);
            }
            let labels = provider_model(&recorded.provider, &recorded.model);
            observation.count(Series::new(COST_MICROS, labels), recorded.cost_micros);
            // 0: no token streamed in this step (a tool call, an early failure).
            if recorded.time_to_first_token_ms > 0 {
                observation.latency(
                    Series::new(TIME_TO_FIRST_TOKEN_MS, labels),
                    recorded.time_to_first_token_ms,
                );
            }
        }
        Payload::ToolCallCompleted(done) => {
            let (server, tool) = done
                .request
                .as_ref()
                .map(|request| (request.server.as_str(), request.tool.as_str()))
                .unwrap_or_default();
            let labels = [("server", server), ("tool", tool)];
            observation.count(Series::new(TOOL_CALLS, labels), 1);
            if done.is_error {
                observation.count(
                    Series::new(
                        TOOL_ERRORS,
                        [
                            ("server", server),
                            ("tool", tool),
                            ("code", done.error_kind.as_str()),
                        ],
                    ),
                    1,
                );
            }
            if let Some(requested_at) = recalled.requested_at_ms
                && at >= requested_at
            {
                observation.latency(
                    Series::new(TOOL_CALL_DURATION_MS, labels),
                    (at - requested_at) as u64,
                );
            }
        }
        Payload::RequestsRefused(refused) => {
            observation.count(
                Series::new(REQUEST_REFUSALS, [("reason", refused.reason.as_str())]),
                refused.count,
            );
        }
        Payload::ToolCallRequested(_)
        | Payload::ToolCallApprovalRequested(_)
        | Payload::ToolCallApprovalDecided(_) => {}
    }
    observation
}

#[cfg(test)]
mod tests {
    use chatstream_schemas::pb::events::{
        AssistantMessage, ErrorOccurred, ModelRoutingDecided, ModelUsageRecorded, RequestsRefused,
        ToolCallCompleted, ToolCallRequested,
    };

    use super::*;

    fn event(id: &str, at_ms: i64, causation: &str, correlation: &str, payload: Payload) -> Event {
        Event {
            id: id.into(),
            tenant_id: "acme".into(),
            conversation_id: "c".into(),
            occurred_at: Some(prost_types_timestamp(at_ms)),
            causation_id: causation.into(),
            correlation_id: correlation.into(),
            payload: Some(payload),
            ..Event::default()
        }
    }

    fn prost_types_timestamp(at_ms: i64) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: at_ms.div_euclid(1000),
            nanos: (at_ms.rem_euclid(1000) * 1_000_000) as i32,
        }
    }

    /// A count as (metric, sorted labels, value).
    type Count = (String, Vec<(String, String)>, u64);

    fn counts(observation: &Observation) -> Vec<Count> {
        observation
            .counts
            .iter()
            .map(|(series, value)| {
                (
                    series.metric.clone(),
                    series.labels.clone().into_iter().collect(),
                    *value,
                )
            })
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        labels
    }

    fn answer(model: &str) -> Payload {
        Payload::AssistantMessage(AssistantMessage {
            text: "hi".into(),
            model: model.into(),
            usage: Some(TokenUsage {
                prompt_tokens: 4,
                completion_tokens: 2,
                total_tokens: 6,
            }),
            finish_reason: "stop".into(),
        })
    }

    #[test]
    fn a_user_message_counts_and_notes_when_it_was_sent() {
        let sent = event(
            "u1",
            5_000,
            "",
            "u1",
            Payload::UserMessageSent(Box::default()),
        );
        assert_eq!(
            counts(&observe(&sent, &Recalled::default())),
            [(USER_MESSAGES.into(), vec![], 1)]
        );
        assert_eq!(
            note_of(&sent),
            Some(Note {
                key: "sent/u1".into(),
                value: 5_000
            })
        );
    }

    #[test]
    fn an_answer_measures_from_its_user_message_and_counts_its_own_tokens_only_without_a_usage_event()
     {
        let reply = event("a1", 6_250, "u1", "u1", answer("mock"));
        assert_eq!(
            needs_of(&reply),
            Needs {
                sent_at: Some("sent/u1".into()),
                usage_recorded: Some("usage/u1".into()),
                requested_at: None,
            }
        );
        let without_usage = observe(
            &reply,
            &Recalled {
                sent_at_ms: Some(5_000),
                ..Recalled::default()
            },
        );
        let model = labels(&[("model", "mock")]);
        let provider_model = labels(&[("provider", ""), ("model", "mock")]);
        assert_eq!(
            counts(&without_usage),
            [
                (ANSWERS.into(), model.clone(), 1),
                (TOKENS_IN.into(), provider_model.clone(), 4),
                (TOKENS_OUT.into(), provider_model, 2),
            ]
        );
        assert_eq!(without_usage.latencies_ms.len(), 1);
        assert_eq!(without_usage.latencies_ms[0].1, 1_250);

        let with_usage = observe(
            &reply,
            &Recalled {
                usage_recorded: true,
                ..Recalled::default()
            },
        );
        assert_eq!(counts(&with_usage), [(ANSWERS.into(), model, 1)]);
        assert!(
            with_usage.latencies_ms.is_empty(),
            "no sent time: no duration"
        );
    }

    #[test]
    fn usage_counts_tokens_and_cost_and_times_the_first_token_per_provider_and_model() {
        let usage = |time_to_first_token_ms| {
            event(
                "x",
                1,
                "u1",
                "u1",
                Payload::ModelUsageRecorded(Box::new(ModelUsageRecorded {
                    model: "gpt".into(),
                    provider: "openai".into(),
                    usage: Some(TokenUsage {
                        prompt_tokens: 10,
                        completion_tokens: 3,
                        total_tokens: 13,
                    }),
                    cost_micros: 77,
                    time_to_first_token_ms,
                    ..ModelUsageRecorded::default()
                })),
            )
        };
        let pm = labels(&[("provider", "openai"), ("model", "gpt")]);
        let streamed = observe(&usage(230), &Recalled::default());
        assert_eq!(
            counts(&streamed),
            [
                (TOKENS_IN.into(), pm.clone(), 10),
                (TOKENS_OUT.into(), pm.clone(), 3),
                (COST_MICROS.into(), pm, 77),
            ]
        );
        assert_eq!(
            streamed.latencies_ms,
            [(
                Series::new(
                    TIME_TO_FIRST_TOKEN_MS,
                    [("provider", "openai"), ("model", "gpt")]
                ),
                230
            )]
        );
        assert!(
            observe(&usage(0), &Recalled::default())
                .latencies_ms
                .is_empty(),
            "no token streamed: no time to first token"
        );
        assert_eq!(note_of(&usage(0)).map(|n| n.key), Some("usage/u1".into()));
    }

    #[test]
    fn fallbacks_retries_and_budget_refusals_are_counted() {
        let decided = |reason: &str| {
            event(
                "d",
                1,
                "u1",
                "u1",
                Payload::ModelRoutingDecided(Box::new(ModelRoutingDecided {
                    attempt: 2,
                    model: "m".into(),
                    provider: "p".into(),
                    reason: reason.into(),
                    ..ModelRoutingDecided::default()
                })),
            )
        };
        let metrics = |e: &Event| -> Vec<String> {
            observe(e, &Recalled::default())
                .counts
                .into_iter()
                .map(|(s, _)| s.metric)
                .collect()
        };
        assert_eq!(metrics(&decided("primary")), [MODEL_ATTEMPTS]);
        assert_eq!(
            metrics(&decided("fallback")),
            [MODEL_ATTEMPTS, MODEL_FALLBACKS]
        );
        assert_eq!(metrics(&decided("retry")), [MODEL_ATTEMPTS, MODEL_RETRIES]);
        let refused = event(
            "e",
            1,
            "u1",
            "u1",
            Payload::ErrorOccurred(ErrorOccurred {
                code: BUDGET_EXCEEDED_CODE.into(),
                ..ErrorOccurred::default()
            }),
        );
        assert_eq!(metrics(&refused), [ERRORS, BUDGET_REFUSALS]);
    }

    #[test]
    fn refused_requests_count_as_many_as_the_gateway_tallied() {
        let refused = event(
            "r",
            1,
            "",
            "r",
            Payload::RequestsRefused(RequestsRefused {
                reason: "rate_limited".into(),
                count: 7,
                first_refused_at_ms: 0,
                last_refused_at_ms: 1,
            }),
        );
        let observation = observe(&refused, &Recalled::default());
        assert_eq!(
            observation.counts,
            [(
                Series::new(REQUEST_REFUSALS, [("reason", "rate_limited")]),
                7
            )]
        );
    }

    #[test]
    fn a_failed_tool_call_counts_as_call_and_error_and_is_timed_from_its_request() {
        let request = ToolCallRequested {
            server: "files".into(),
            tool: "read".into(),
            ..ToolCallRequested::default()
        };
        let requested = event(
            "t1",
            1_000,
            "u1",
            "u1",
            Payload::ToolCallRequested(Box::new(request.clone())),
        );
        assert_eq!(
            note_of(&requested).map(|n| n.key),
            Some("requested/t1".into())
        );
        assert!(observe(&requested, &Recalled::default()).is_empty());
        let completed = event(
            "t2",
            1_400,
            "t1",
            "u1",
            Payload::ToolCallCompleted(Box::new(ToolCallCompleted {
                request: Some(request),
                is_error: true,
                error_kind: "timeout".into(),
                ..ToolCallCompleted::default()
            })),
        );
        assert_eq!(
            needs_of(&completed).requested_at,
            Some("requested/t1".into())
        );
        let observation = observe(
            &completed,
            &Recalled {
                requested_at_ms: Some(1_000),
                ..Recalled::default()
            },
        );
        assert_eq!(
            counts(&observation),
            [
                (
                    TOOL_CALLS.into(),
                    labels(&[("server", "files"), ("tool", "read")]),
                    1
                ),
                (
                    TOOL_ERRORS.into(),
                    labels(&[("server", "files"), ("tool", "read"), ("code", "timeout")]),
                    1
                ),
            ]
        );
        assert_eq!(observation.latencies_ms[0].1, 400);
    }
}
