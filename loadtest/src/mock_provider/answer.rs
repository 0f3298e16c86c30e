//! The mock's answer: a fixed number of word tokens on an exact schedule,
//! as one `chat.completion` or as `chat.completion.chunk` server-sent events.
//!
//! The schedule is counted from when the request was read: token `i` (from
//! 0) goes out at `first_token_delay + i × token_delay`, so the provider's
//! own time to first token is exactly `first_token_delay` and a whole answer
//! of N tokens takes `first_token_delay + (N − 1) × token_delay`. The role
//! chunk goes out at once, the finish chunk, the usage chunk and
//! `data: [DONE]` right after the last token.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::request::ChatRequest;

/// How every answer is shaped: the binary's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub tokens: u32,
    pub first_token_delay: Duration,
    pub token_delay: Duration,
}

impl Pace {
    /// When token `index` goes out, for a request read at `start`.
    pub fn token_at(&self, start: Instant, index: u32) -> Instant {
        start + self.first_token_delay + self.token_delay * index
    }
}

/// The words the answer cycles through, one token each.
const WORDS: [&str; 12] = [
    "Mock",
    "provider",
    "tokens",
    "arrive",
    "on",
    "a",
    "schedule",
    "known",
    "to",
    "the",
    "millisecond",
    "here",
];

/// Token `index` of every answer: a word, with a space before all but the first.
pub fn token(index: u32) -> String {
    let word = WORDS[index as usize % WORDS.len()];
    if index == 0 {
        word.to_owned()
    } else {
        format!(" {word}")
    }
}

/// One request's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    id: String,
    created: u64,
    model: String,
    tokens: u32,
    finish_reason: &'static str,
    prompt_tokens: u32,
    include_usage: bool,
}

impl Answer {
    /// `sequence` makes the completion id unique.
    pub fn new(request: &ChatRequest, pace: &Pace, sequence: u64) -> Self {
        let (tokens, finish_reason) = match request.max_tokens {
            Some(cap) if cap < pace.tokens => (cap, "length"),
            _ => (pace.tokens, "stop"),
        };
        Self {
            id: format!("chatcmpl-mock-{sequence}"),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            model: request.model.clone(),
            tokens,
            finish_reason,
            prompt_tokens: request.prompt_tokens,
            include_usage: request.include_usage,
        }
    }

    /// Tokens in this answer (fewer than the pace's when `max_tokens` cut it).
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    fn text(&self) -> String {
        (0..self.tokens).map(token).collect()
    }

    fn usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.tokens,
            "total_tokens": self.prompt_tokens + self.tokens,
        })
    }

    /// The whole answer as one `chat.completion`.
    pub fn completion(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.text(), "refusal": null},
                "logprobs": null,
                "finish_reason": self.finish_reason,
            }],
            "usage": self.usage(),
        })
    }

    /// The streamed answer: each event's text with the moment it is due
    /// (`None`: at once, right after the one before).
    pub fn events(&self, pace: &Pace, start: Instant) -> Vec<(Option<Instant>, String)> {
        let mut events = Vec::with_capacity(self.tokens as usize + 4);
        events.push((
            None,
            self.chunk(json!({"role": "assistant", "content": ""}), None),
        ));
        for index in 0..self.tokens {
            let delta = json!({"content": token(index)});
            events.push((Some(pace.token_at(start, index)), self.chunk(delta, None)));
        }
        events.push((None, self.chunk(json!({}), Some(self.finish_reason))));
        if self.include_usage {
            let mut usage = self.envelope();
            usage["choices"] = json!([]);
            usage["usage"] = self.usage();
            events.push((None, sse_data(&usage.to_string())));
        }
        events.push((None, sse_data("[DONE]")));
        events
    }

    fn envelope(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
        })
    }

    /// A chunk with one choice; with `include_usage` it carries
    /// `"usage": null` until the last, as OpenAI's do.
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> String {
        let mut chunk = self.envelope();
        chunk["choices"] = json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]);
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        sse_data(&chunk.to_string())
    }
}

fn sse_data(data: &str) -> String {
    format!("data: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(include_usage: bool, max_tokens: Option<u32>) -> ChatRequest {
        ChatRequest {
            model: "bench".into(),
            stream: true,
            include_usage,
            max_tokens,
            prompt_tokens: 3,
        }
    }

    const PACE: Pace = Pace {
        tokens: 4,
        first_token_delay: Duration::from_millis(200),
        token_delay: Duration::from_millis(20),
    };

    fn data(event: &str) -> Value {
        let data = event.strip_prefix("data: ").unwrap().trim_end();
        serde_json::from_str(data).unwrap()
    }

    #[test]
    fn tokens_are_due_on_the_schedule_and_the_rest_follows_at_once() {
        let start = Instant::now();
        let answer = Answer::new(&request(true, None), &PACE, 7);
        let events = answer.events(&PACE, start);
        // role, 4 tokens, finish, usage, [DONE]
        assert_eq!(events.len(), 8);
        let due: Vec<_> = events
            .iter()
            .map(|(at, _)| at.map(|at| at - start))
            .collect();
        let ms = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            due,
            [None, ms(200), ms(220), ms(240), ms(260), None, None, None]
        );
        assert_eq!(data(&events[1].1)["choices"][0]["delta"]["content"], "Mock");
        assert_eq!(
            data(&events[2].1)["choices"][0]["delta"]["content"],
            " provider"
        );
        assert_eq!(data(&events[5].1)["choices"][0]["finish_reason"], "stop");
        let usage = data(&events[6].1);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 4);
        assert_eq!(usage["usage"]["total_tokens"], 7);
        assert_eq!(events[7].1, "data: [DONE]\n\n");
        assert_eq!(data(&events[0].1)["id"], "chatcmpl-mock-7");
    }

    #[test]
    fn max_tokens_cuts_the_answer_with_finish_reason_length() {
        let answer = Answer::new(&request(false, Some(2)), &PACE, 1);
        assert_eq!(answer.tokens(), 2);
        let whole = answer.completion();
        assert_eq!(whole["choices"][0]["message"]["content"], "Mock provider");
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
        // No usage chunk unless asked for: role, 2 tokens, finish, [DONE].
        assert_eq!(answer.events(&PACE, Instant::now()).len(), 5);
    }
}
