//! The built-in `mock` model: a deterministic reply streamed token by token
//! with a configurable delay, so the whole flow runs without a provider.
//! A message starting with `/mock error` makes it fail, for testing the
//! error path end to end.
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use crate::model::{ChatModel, CompletionRequest, ModelChunk, ModelError, Usage};

/// Messages starting with this make the mock model fail with the rest as the error.
pub const FAIL_COMMAND: &str = "/mock error";

#[derive(Debug, Clone)]
pub struct MockModel {
    pub token_delay: Duration,
}

impl MockModel {
    pub fn new(token_delay: Duration) -> Self {
        Self { token_delay }
    }

    /// The reply the mock gives to `text`.
    pub fn reply_to(text: &str) -> String {
        format!("You said: {text}")
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
        "mock"
    }

    fn stream(
        &self,
        request: CompletionRequest,
    ) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
        let failure = request
            .text
            .strip_prefix(FAIL_COMMAND)
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        if let Some(reason) = failure {
            let reason = reason.trim();
            let message = if reason.is_empty() {
                "mock failure requested"
            } else {
                reason
            }
            .to_owned();
            return stream::once(async move { Err(ModelError::Failed(message)) }).boxed();
        }
        let tokens = tokenize(&Self::reply_to(&request.text));
        let usage = Usage {
            prompt_tokens: tokenize(&request.text).len() as u32,
            completion_tokens: tokens.len() as u32,
        };
        let delay = self.token_delay;
        let token_chunks = stream::iter(tokens).then(move |token| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(ModelChunk::Token(token))
        });
        let done = stream::once(async move {
            Ok(ModelChunk::Done {
                usage,
                finish_reason: "stop".into(),
            })
        });
        token_chunks.chain(done).boxed()
    }
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
        let request = CompletionRequest {
            tenant_id: "t".into(),
            conversation_id: "c".into(),
            text: "hi there".into(),
        };
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
        let request = CompletionRequest {
            tenant_id: "t".into(),
            conversation_id: "c".into(),
            text: "/mock error boom".into(),
        };
        let chunks: Vec<_> = model.stream(request).collect().await;
        assert_eq!(chunks, vec![Err(ModelError::Failed("boom".into()))]);

        let request = CompletionRequest {
            tenant_id: "t".into(),
            conversation_id: "c".into(),
            text: "/mock errors are fine to talk about".into(),
        };
        let chunks: Vec<_> = model.stream(request).collect().await;
        assert!(
            chunks
                .last()
                .is_some_and(|c| matches!(c, Ok(ModelChunk::Done { .. })))
        );
    }
}
