//! One turn: try the plan's candidates in order (retrying each with backoff,
//! skipping open circuits), bound every attempt by the time-to-first-token
//! and stall timeouts and the whole turn by its deadline, and add up what
//! every attempt cost. Fallback is possible only until the first token has
//! gone out to clients; after that a failure ends the turn.
use std::time::Duration;

use async_trait::async_trait;
use chatstream_config::models::RoutingPolicyConfig;
use chatstream_core::runner::ProcessError;
use chatstream_schemas::pb::events::{
    AssistantMessage, ErrorOccurred, ModelAttemptFailed, ModelRoutingDecided, TokenUsage,
    event::Payload,
};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::model::{ChatMessage, CompletionRequest, ModelChunk, ModelError, ToolCallChunk, Usage};
use crate::providers::CatalogEntry;
use crate::routing::Routing;
use crate::routing::policy::{plan, plan_requested};
use crate::routing::retry::retry_delay;
use crate::tools::OfferedTools;
use crate::{genai_metrics, genai_trace};

/// Where a turn reports what happens while it runs.
#[async_trait]
pub trait TurnObserver: Send + Sync {
    /// Appends a routing event durably; an error aborts the turn (and the
    /// runner retries the message, or dead-letters it, as the error says).
    async fn record(&self, payload: Payload) -> Result<(), ProcessError>;
    /// Streams one token to clients.
    async fn delta(&self, index: u32, text: &str);
}

pub struct TurnRequest {
    /// The user message's event id: the key of the turn.
    pub event_id: String,
    pub tenant_id: String,
    pub conversation_id: String,
    pub messages: Vec<ChatMessage>,
    /// The tenant's tools the model may call this step.
    pub tools: OfferedTools,
    /// The catalog model the client asked for, if it asked.
    pub requested_model: Option<String>,
    /// Tokens left in the tenant's monthly budget, when it has one.
    pub budget_remaining: Option<u64>,
}

/// What a turn cost, every attempt included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TurnUsage {
    pub model: String,
    pub provider: String,
    pub usage: Usage,
    pub cost_micros: u64,
    pub partial: bool,
    pub estimated: bool,
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    /// `AssistantMessage` or `ErrorOccurred`.
    pub answer: Payload,
    /// `None` when no model was called.
    pub usage: Option<TurnUsage>,
}

struct AttemptError {
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    retryable: bool,
    /// Counts against the endpoint's circuit breaker.
    endpoint_fault: bool,
}

impl From<ModelError> for AttemptError {
    fn from(error: ModelError) -> Self {
        let retryable = error.is_retryable();
        let message = match &error {
            ModelError::Failed(message) => message.clone(),
            other => other.to_string(),
        };
        Self {
            code: error.code(),
            retry_after: error.retry_after(),
            retryable,
            endpoint_fault: retryable,
            message,
        }
    }
}

enum Attempt {
    Finished {
        text: String,
        /// The model asked for this tool instead of (or after) replying.
        tool_call: Option<ToolCallChunk>,
        usage: Usage,
        finish_reason: String,
        estimated: bool,
    },
    Failed {
        error: AttemptError,
        streamed: u32,
        usage: Option<Usage>,
        estimated: bool,
    },
}

/// Rough prompt size for providers that report none: ~4 bytes a token.
fn estimate_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
    bytes.div_ceil(4) as u32
}

/// Runs one call, streaming its tokens through `observer`; one GenAI
/// operation on the metrics.
async fn attempt(
    entry: &CatalogEntry,
    request: CompletionRequest,
    policy: &RoutingPolicyConfig,
    deadline: Instant,
    observer: &dyn TurnObserver,
) -> Attempt {
    let started = Instant::now();
    let span = genai_trace::chat_span(entry);
    let attempted = stream_attempt(entry, request, policy, deadline, observer)
        .instrument(span.clone())
        .await;
    let error = match &attempted {
        Attempt::Finished { .. } => None,
        Attempt::Failed { error, .. } => Some(error.code),
    };
    genai_metrics::record_operation(entry, started.elapsed(), error);
    if !span.is_disabled() {
        match &attempted {
            Attempt::Finished {
                usage,
                finish_reason,
                ..
            } => genai_trace::record_finished(&span, entry, *usage, finish_reason),
            Attempt::Failed { error, usage, .. } => {
                genai_trace::record_failed(&span, error.code, *usage)
            }
        }
    }
    attempted
}

async fn stream_attempt(
    entry: &CatalogEntry,
    request: CompletionRequest,
    policy: &RoutingPolicyConfig,
    deadline: Instant,
    observer: &dyn TurnObserver,
) -> Attempt {
    let started = Instant::now();
    let prompt_estimate = estimate_prompt_tokens(&request.messages);
    let mut chunks = entry.model.stream(request);
    let (mut text, mut streamed, mut reported) = (String::new(), 0u32, None::<Usage>);
    let mut tool_call = None;
    // Usage up to a failure: what the provider reported, else an estimate.
    let partial_usage = |reported: Option<Usage>, streamed: u32| -> (Option<Usage>, bool) {
        match (reported, streamed) {
            (None, 0) => (None, false),
            (None, n) => (
                Some(Usage {
                    prompt_tokens: prompt_estimate,
                    completion_tokens: n,
                }),
                true,
            ),
            (Some(usage), n) => (
                Some(Usage {
                    completion_tokens: usage.completion_tokens.max(n),
                    ..usage
                }),
                n > usage.completion_tokens,
            ),
        }
    };
    loop {
        let phase_end = if streamed == 0 {
            started + Duration::from_millis(policy.first_token_timeout_ms)
        } else {
            Instant::now() + Duration::from_millis(policy.stall_timeout_ms)
        };
        let (until, timeout_code, limit_ms) = if deadline <= phase_end {
            (deadline, "deadline_exceeded", policy.deadline_ms)
        } else if streamed == 0 {
            (
                phase_end,
                "first_token_timeout",
                policy.first_token_timeout_ms,
            )
        } else {
            (phase_end, "stall", policy.stall_timeout_ms)
        };
        let next = tokio::time::timeout_at(until, chunks.next()).await;
        let error = match next {
            Ok(Some(Ok(ModelChunk::Token(token)))) => {
                if streamed == 0 {
                    genai_metrics::record_first_chunk(entry, started.elapsed());
                }
                observer.delta(streamed, &token).await;
                streamed += 1;
                text.push_str(&token);
                continue;
            }
            Ok(Some(Ok(ModelChunk::Usage(usage)))) => {
                reported = Some(usage);
                continue;
            }
            Ok(Some(Ok(ModelChunk::ToolCall(call)))) => {
                // One call per step: the turn continues when its result arrives.
                tool_call.get_or_insert(call);
                continue;
            }
            Ok(Some(Ok(ModelChunk::Done {
                usage,
                finish_reason,
            }))) => {
                // Servers that ignore `include_usage` report zeros.
                let silent = usage == Usage::default() && streamed > 0;
                let usage = if silent {
                    reported.unwrap_or(Usage {
                        prompt_tokens: prompt_estimate,
                        completion_tokens: streamed,
                    })
                } else {
                    usage
                };
                return Attempt::Finished {
                    text,
                    tool_call,
                    usage,
                    finish_reason,
                    estimated: silent && reported.is_none(),
                };
            }
            Ok(Some(Err(error))) => AttemptError::from(error),
            Ok(None) => AttemptError::from(ModelError::Interrupted(
                "the model ended its stream without finishing".into(),
            )),
            Err(_elapsed) => {
                let deadline_hit = timeout_code == "deadline_exceeded";
                AttemptError {
                    code: timeout_code,
                    message: match timeout_code {
                        "deadline_exceeded" => format!("the turn's {limit_ms} ms deadline passed"),
                        "stall" => format!("the stream stalled: no token for {limit_ms} ms"),
                        _ => format!("no first token within {limit_ms} ms"),
                    },
                    retry_after: None,
                    retryable: !deadline_hit,
                    endpoint_fault: !deadline_hit,
                }
            }
        };
        let (usage, estimated) = partial_usage(reported, streamed);
        return Attempt::Failed {
            error,
            streamed,
            usage,
            estimated,
        };
    }
}

fn error_answer(code: &str, message: String, retryable: bool) -> Payload {
    Payload::ErrorOccurred(ErrorOccurred {
        code: code.into(),
        message,
        source: crate::ModelRouter::NAME.into(),
        retryable,
    })
}

/// Plays a turn out; `Err` only when a routing event could not be recorded.
pub async fn run_turn(
    routing: &Routing,
    request: &TurnRequest,
    observer: &dyn TurnObserver,
) -> Result<TurnOutcome, ProcessError> {
    let no_call = |answer| TurnOutcome {
        answer,
        usage: None,
    };
    let Some(policy) = routing.policy_for(&request.tenant_id) else {
        return Ok(no_call(error_answer(
            "no_routing_policy",
            "no routing policy applies to this tenant".into(),
            false,
        )));
    };
    if request.budget_remaining == Some(0) {
        return Ok(no_call(error_answer(
            "budget_exceeded",
            "the tenant's monthly token budget is used up".into(),
            false,
        )));
    }
    let planned = match &request.requested_model {
        Some(model) => plan_requested(policy, model),
        None => plan(policy, &request.event_id),
    };
    let candidates = match planned {
        Ok(candidates) => candidates,
        Err(error) => {
            return Ok(no_call(error_answer(
                "model_not_allowed",
                error.to_string(),
                false,
            )));
        }
    };
    let max_tokens = match request.budget_remaining {
        Some(left) => policy
            .max_tokens
            .min(u32::try_from(left).unwrap_or(u32::MAX)),
        None => policy.max_tokens,
    };
    let deadline = Instant::now() + Duration::from_millis(policy.deadline_ms);
    let backoff = (
        Duration::from_millis(policy.backoff_ms),
        Duration::from_millis(policy.max_backoff_ms),
    );

    let mut total = TurnUsage::default();
    let mut skipped_open = Vec::new();
    let mut last_failure: Option<AttemptError> = None;
    let last_candidate = candidates.len() - 1;
    'candidates: for (position, candidate) in candidates.iter().enumerate() {
        let Some(entry) = routing.entry(&candidate.model) else {
            continue;
        };
        let Some(breaker) = routing.breaker(&entry.provider) else {
            continue;
        };
        for retry in 0..=policy.retries {
            let Some(permit) = breaker.try_acquire() else {
                skipped_open.push(entry.provider.clone());
                continue 'candidates;
            };
            total.attempts += 1;
            total.model = entry.id.clone();
            total.provider = entry.provider.clone();
            let reason = if retry > 0 {
                "retry"
            } else if total.attempts > 1 {
                "fallback"
            } else {
                candidate.reason
            };
            let decided = observer.record(Payload::ModelRoutingDecided(Box::new(
                ModelRoutingDecided {
                    attempt: total.attempts,
                    model: entry.id.clone(),
                    provider: entry.provider.clone(),
                    reason: reason.into(),
                    max_tokens,
                    skipped_open_circuits: std::mem::take(&mut skipped_open),
                },
            )));
            let call = CompletionRequest {
                tenant_id: request.tenant_id.clone(),
                conversation_id: request.conversation_id.clone(),
                model: entry.provider_model.clone(),
                messages: request.messages.clone(),
                max_tokens: Some(max_tokens),
                tools: request.tools.specs().to_vec(),
            };
            // The decision is on its way to the log (polled first, so it is
            // queued before anything this attempt leads to) while the model
            // is called: the first token does not wait for its commit. It is
            // durable before the attempt's outcome is recorded.
            let (decided, attempted) =
                tokio::join!(decided, attempt(entry, call, policy, deadline, observer));
            decided?;
            match attempted {
                Attempt::Finished {
                    tool_call: Some(call),
                    usage,
                    estimated,
                    ..
                } => {
                    permit.success();
                    count_attempt(entry, "ok");
                    add_usage(&mut total, entry, usage, estimated);
                    return Ok(TurnOutcome {
                        answer: request.tools.request_for(call),
                        usage: Some(total),
                    });
                }
                Attempt::Finished {
                    text,
                    tool_call: None,
                    usage,
                    finish_reason,
                    estimated,
                } => {
                    permit.success();
                    count_attempt(entry, "ok");
                    add_usage(&mut total, entry, usage, estimated);
                    let answer = Payload::AssistantMessage(AssistantMessage {
                        text,
                        model: entry.id.clone(),
                        usage: Some(TokenUsage {
                            prompt_tokens: usage.prompt_tokens,
                            completion_tokens: usage.completion_tokens,
                            total_tokens: usage.prompt_tokens + usage.completion_tokens,
                        }),
                        finish_reason,
                    });
                    return Ok(TurnOutcome {
                        answer,
                        usage: Some(total),
                    });
                }
                Attempt::Failed {
                    error,
                    streamed,
                    usage,
                    estimated,
                } => {
                    if error.endpoint_fault {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                    count_attempt(entry, error.code);
                    if let Some(usage) = usage {
                        add_usage(&mut total, entry, usage, estimated);
                    }
                    let can_go_on = error.retryable && streamed == 0;
                    let retry_here = can_go_on && retry < policy.retries;
                    let will_retry = can_go_on && (retry_here || position < last_candidate);
                    observer
                        .record(Payload::ModelAttemptFailed(Box::new(ModelAttemptFailed {
                            attempt: total.attempts,
                            model: entry.id.clone(),
                            provider: entry.provider.clone(),
                            error_code: error.code.into(),
                            message: error.message.clone(),
                            retry_after_ms: error.retry_after.map_or(0, |d| d.as_millis() as u64),
                            tokens_streamed: streamed,
                            will_retry,
                        })))
                        .await?;
                    if streamed > 0 {
                        total.partial = true;
                        let message = format!(
                            "the reply broke off after {streamed} tokens: {}",
                            error.message
                        );
                        return Ok(TurnOutcome {
                            answer: error_answer("model_stream_interrupted", message, true),
                            usage: Some(total),
                        });
                    }
                    if !can_go_on {
                        let answer = error_answer(
                            if error.code == "deadline_exceeded" {
                                "deadline_exceeded"
                            } else {
                                "model_error"
                            },
                            error.message,
                            error.code == "deadline_exceeded",
                        );
                        return Ok(TurnOutcome {
                            answer,
                            usage: Some(total),
                        });
                    }
                    let delay = retry_delay(retry, error.retry_after, backoff.0, backoff.1);
                    // A provider asking for a long pause, or a pause that
                    // would eat the deadline, sends us to the next candidate.
                    let too_long = error.retry_after.is_some_and(|wait| wait > backoff.1)
                        || Instant::now() + delay >= deadline;
                    last_failure = Some(error);
                    if !retry_here || too_long {
                        continue 'candidates;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    let answer = match last_failure {
        Some(error) => error_answer(
            "model_unavailable",
            format!(
                "every model candidate failed; the last with {}: {}",
                error.code, error.message
            ),
            true,
        ),
        None => error_answer(
            "circuit_open",
            format!(
                "every candidate's provider is failing and paused: {}",
                skipped_open.join(", ")
            ),
            true,
        ),
    };
    let usage = (total.attempts > 0).then_some(total);
    Ok(TurnOutcome { answer, usage })
}

fn add_usage(total: &mut TurnUsage, entry: &CatalogEntry, usage: Usage, estimated: bool) {
    genai_metrics::record_tokens(entry, usage);
    total.usage.prompt_tokens += usage.prompt_tokens;
    total.usage.completion_tokens += usage.completion_tokens;
    total.cost_micros += entry.price.cost_micros(usage);
    total.estimated |= estimated;
}

/// Attempts by provider and outcome (`ok` or the error code), for alerts
/// on a failing endpoint before its breaker opens.
fn count_attempt(entry: &CatalogEntry, outcome: &'static str) {
    metrics::counter!(
        "chatstream_router_attempts_total",
        "provider" => entry.provider.clone(),
        "model" => entry.id.clone(),
        "outcome" => outcome
    )
    .increment(1);
}
