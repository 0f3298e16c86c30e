//! The built-in `mock` model: a deterministic reply streamed token by token
//! with a configurable delay, so the whole flow runs without a provider.
//! A message starting with `/mock error` makes it fail, for testing the
//! error path end to end. Tests and load tests can script it further:
//! a queue of replies (text, errors, streams that break or stall) and the
//! delay before the first token.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use crate::model::{ChatModel, CompletionRequest, ModelChunk, ModelError, Role, Usage};

/// Messages starting with this make the mock model fail with the rest as the error.
pub const FAIL_COMMAND: &str = "/mock error";
/// `/mock tool <server>.<tool> <json-args>` makes the mock ask for that tool.
pub const TOOL_COMMAND: &str = "/mock tool";

/// One scripted answer of the mock, used by the next call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MockReply {
    /// Stream this text, then finish.
    Text(String),
    /// Fail before any token.
    Fail(ModelError),
    /// Stream this text, then fail: a stream cut off partway.
    FailAfter { text: String, error: ModelError },
    /// Stream this text, then go silent forever: a stalled stream.
    StallAfter(String),
    /// Ask for a tool call instead of replying.
    ToolCall(crate::model::ToolCallChunk),
}

#[derive(Debug, Clone)]
pub struct MockModel {
    /// Pause between tokens: 1 / the token rate.
    pub token_delay: Duration,
    /// Pause before the first token, like a provider's time to first token.
    pub first_token_delay: Duration,
    name: String,
    script: Arc<Mutex<VecDeque<MockReply>>>,
}

impl MockModel {
    pub fn new(token_delay: Duration) -> Self {
        Self {
            token_delay,
            first_token_delay: Duration::ZERO,
            name: "mock".into(),
            script: Arc::default(),
        }
    }

    /// The reply the mock gives to `text`.
    pub fn reply_to(text: &str) -> String {
        format!("You said: {text}")
    }

    /// The name recorded on answers (to tell several mocks apart in tests).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    pub fn with_first_token_delay(mut self, delay: Duration) -> Self {
        self.first_token_delay = delay;
        self
    }

    /// Queues replies for the next calls, in order; once they are used up
    /// the mock answers with its default reply again.
    pub fn script(&self, replies: impl IntoIterator<Item = MockReply>) {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        script.extend(replies);
    }

    fn next_scripted(&self) -> Option<MockReply> {
        let mut script = self.script.lock().unwrap_or_else(|e| e.into_inner());
        script.pop_front()
    }

    /// What the mock says after a tool result: the tool and its outcome.
    fn tool_outcome(request: &CompletionRequest) -> Option<String> {
        let result = request.messages.last().filter(|m| m.role == Role::Tool)?;
        let name = request
            .messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|call| call.call_id == result.tool_call_id)
            .map_or("the tool", |call| call.name.as_str());
        let verb = if result.is_error {
            "failed"
        } else {
            "returned"
        };
        Some(format!("{name} {verb}: {}", result.content))
    }

    /// The scripted reply, or what the message asks for, or the default.
    fn reply_for(&self, text: &str) -> MockReply {
        if let Some(reply) = self.next_scripted() {
            return reply;
        }
        let failure = text
            .strip_prefix(FAIL_COMMAND)
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        if let Some(call) = text.strip_prefix(TOOL_COMMAND) {
            let (name, arguments) = call
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((call.trim(), "{}"));
            return MockReply::ToolCall(crate::model::ToolCallChunk {
                call_id: "mock-call-1".into(),
                name: name.to_owned(),
                arguments_json: arguments.trim().to_owned(),
            });
        }
        match failure {
            Some(reason) => {
                let reason = reason.trim();
                let message = if reason.is_empty() {
                    "mock failure requested"
                } else {
                    reason
                };
                MockReply::Fail(ModelError::Failed(message.to_owned()))
            }
            None => MockReply::Text(Self::reply_to(text)),
        }
    }
}

/// Splits text into tokens that concatenate back to it: each token is a
/// word with the whitespace before it.
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let word_ended = current
            .chars()
            .last()
            .is_some_and(|last| !last.is_whitespace());
        if c.is_whitespace() && word_ended {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

impl ChatModel for MockModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
        let text = request.last_user_text().to_owned();
        let answered = match Self::tool_outcome(&request) {
            Some(outcome) => self.next_scripted().unwrap_or(MockReply::Text(outcome)),
            None => self.reply_for(&text),
        };
        let (reply, ending) = match answered {
            MockReply::Fail(error) => (String::new(), Ending::Fail(error)),
            MockReply::Text(reply) => (reply, Ending::Done),
            MockReply::FailAfter { text, error } => (text, Ending::Fail(error)),
            MockReply::StallAfter(text) => (text, Ending::Stall),
            MockReply::ToolCall(call) => (String::new(), Ending::ToolCall(call)),
        };
        let mut tokens = tokenize(&reply);
        if let Some(cap) = request.max_tokens {
            tokens.truncate(cap as usize);
        }
        let usage = Usage {
            prompt_tokens: tokenize(&text).len() as u32,
            completion_tokens: tokens.len() as u32,
        };
        let tool_call = matches!(ending, Ending::ToolCall(_));
        let (first_delay, delay) = (self.first_token_delay, self.token_delay);
        let token_chunks =
            stream::iter(tokens.into_iter().enumerate()).then(move |(index, token)| async move {
                let pause = if index == 0 {
                    first_delay + delay
                } else {
                    delay
                };
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                Ok(ModelChunk::Token(token))
            });
        let end = stream::once(async move {
            match ending {
                Ending::Done => Some(Ok(ModelChunk::Done {
                    usage,
                    finish_reason: "stop".into(),
                })),
                Ending::Fail(error) => Some(Err(error)),
                Ending::Stall => std::future::pending().await,
                Ending::ToolCall(call) => Some(Ok(ModelChunk::ToolCall(call))),
            }
        })
        .filter_map(std::future::ready);
        let tool_done = stream::iter(tool_call.then_some(Ok(ModelChunk::Done {
            usage,
            finish_reason: "tool_calls".into(),
        })));
        token_chunks.chain(end).chain(tool_done).boxed()
    }
}

enum Ending {
    Done,
    Fail(ModelError),
    Stall,
    ToolCall(crate::model::ToolCallChunk),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_back_to_the_text() {
        for text in ["You said: hello  world", " leading", "one", "", "a\nb\tc "] {
            assert_eq!(tokenize(text).concat(), text);
        }
        assert_eq!(tokenize("You said: hi"), vec!["You", " said:", " hi"]);
    }

    #[tokio::test]
    async fn streams_a_deterministic_reply_then_done() {
        let model = MockModel::new(Duration::ZERO);
        let request = CompletionRequest::for_text("t", "c", "hi there");
        let chunks: Vec<_> = model.stream(request).collect().await;
        let text: String = chunks
            .iter()
            .filter_map(|c| match c {
                Ok(ModelChunk::Token(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "You said: hi there");
        assert_eq!(
            chunks.last(),
            Some(&Ok(ModelChunk::Done {
                usage: Usage {
                    prompt_tokens: 2,
                    completion_tokens: 4
                },
                finish_reason: "stop".into()
            }))
        );
    }

    #[tokio::test]
    async fn fails_on_request() {
        let model = MockModel::new(Duration::ZERO);
        let request = CompletionRequest::for_text("t", "c", "/mock error boom");
        let chunks: Vec<_> = model.stream(request).collect().await;
        assert_eq!(chunks, vec![Err(ModelError::Failed("boom".into()))]);

        let request = CompletionRequest::for_text("t", "c", "/mock errors are fine to talk about");
        let chunks: Vec<_> = model.stream(request).collect().await;
        assert!(
            chunks
                .last()
                .is_some_and(|c| matches!(c, Ok(ModelChunk::Done { .. })))
        );
    }

    #[tokio::test]
    async fn plays_its_script_then_falls_back_to_the_default() {
        let model = MockModel::new(Duration::ZERO);
        model.script([
            MockReply::FailAfter {
                text: "half an".into(),
                error: ModelError::Interrupted("cut".into()),
            },
            MockReply::Text("scripted".into()),
        ]);
        let request = CompletionRequest::for_text("t", "c", "q");
        let first: Vec<_> = model.stream(request.clone()).collect().await;
        assert_eq!(
            first,
            vec![
                Ok(ModelChunk::Token("half".into())),
                Ok(ModelChunk::Token(" an".into())),
                Err(ModelError::Interrupted("cut".into()))
            ]
        );
        let second: Vec<_> = model.stream(request.clone()).collect().await;
        assert_eq!(second[0], Ok(ModelChunk::Token("scripted".into())));
        let third: Vec<_> = model.stream(request).collect().await;
        assert_eq!(third[0], Ok(ModelChunk::Token("You".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_script_streams_then_never_ends() {
        let model = MockModel::new(Duration::ZERO);
        model.script([MockReply::StallAfter("one".into())]);
        let mut chunks = model.stream(CompletionRequest::for_text("t", "c", "q"));
        assert_eq!(
            chunks.next().await,
            Some(Ok(ModelChunk::Token("one".into())))
        );
        let next = tokio::time::timeout(Duration::from_secs(3600), chunks.next()).await;
        assert!(next.is_err(), "the stream stays silent");
    }
}
