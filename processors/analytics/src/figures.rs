//! The figures analytics projects: metric names and the labels each
//! carries. Counters add up; latencies are HdrHistograms in milliseconds.

/// Conversations opened.
pub const CONVERSATIONS_OPENED: &str = "conversations_opened";
/// User messages (a retried copy of a send counts once).
pub const USER_MESSAGES: &str = "user_messages";
/// Assistant answers, by `model`.
pub const ANSWERS: &str = "answers";
/// Turns that ended in an error event, by `code` (e.g. `model_error`).
pub const ERRORS: &str = "errors";
/// Turns refused because the tenant's monthly token budget was used up.
pub const BUDGET_REFUSALS: &str = "budget_refusals";
/// Requests the gateway refused before appending them, by `reason`
/// (`rate_limited`, `too_many_connections`).
pub const REQUEST_REFUSALS: &str = "request_refusals";
/// Prompt tokens, by `provider` and `model` (every attempt of a turn).
pub const TOKENS_IN: &str = "tokens_in";
/// Completion tokens, by `provider` and `model`.
pub const TOKENS_OUT: &str = "tokens_out";
/// Cost in USD millionths, by `provider` and `model`, from the price table.
pub const COST_MICROS: &str = "cost_micros";
/// Model attempts (first tries, retries and fallbacks), by `provider` and `model`.
pub const MODEL_ATTEMPTS: &str = "model_attempts";
/// Attempts that fell back to another candidate, by the `provider` and `model` fallen back to.
pub const MODEL_FALLBACKS: &str = "model_fallbacks";
/// Attempts that retried the same candidate, by `provider` and `model`.
pub const MODEL_RETRIES: &str = "model_retries";
/// Failed attempts, by `provider`, `model` and `code` (e.g. `rate_limited`).
pub const MODEL_ATTEMPT_FAILURES: &str = "model_attempt_failures";
/// Tool calls completed (successfully or not), by `server` and `tool`.
pub const TOOL_CALLS: &str = "tool_calls";
/// Tool calls that failed, by `server`, `tool` and `code` (the error kind).
pub const TOOL_ERRORS: &str = "tool_errors";

/// From the user message to its answer, by `model` (log time to log time:
/// what the user waited, queueing included).
pub const ANSWER_DURATION_MS: &str = "answer_duration_ms";
/// From the router starting a turn step to its first token going out, by
/// `provider` and `model` (the usage event's `time_to_first_token_ms`; only
/// steps that streamed a token, with configured providers).
pub const TIME_TO_FIRST_TOKEN_MS: &str = "time_to_first_token_ms";
/// From a tool call's request to its result, by `server` and `tool`.
pub const TOOL_CALL_DURATION_MS: &str = "tool_call_duration_ms";

/// The error code of a turn refused for its budget.
pub const BUDGET_EXCEEDED_CODE: &str = "budget_exceeded";
