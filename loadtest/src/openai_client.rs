//! The OpenAI-compatible HTTP transport (`--transport openai`): every
//! message is a streamed `POST /v1/chat/completions` (docs/protocol.md
//! section 14) and its answer is read as the WebSocket one is measured:
//!
//! - ack: the response headers (the gateway answers only once the user
//!   message is durable in the log),
//! - first token: the first chunk with non-empty `delta.content`,
//! - completion: `data: [DONE]`; `data: {"error": ...}` fails the message.
//!
//! There is no session: each request opens its own conversation, so `Open`
//! and `Subscribe` are answered at once. A load connection is one HTTP
//! client whose pool opens a keep-alive connection per message in flight.
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::protocol::{Incoming, Outgoing, ReplyOutcome, TransportError};

pub struct OpenAiConnection {
    client: reqwest::Client,
    completions_url: String,
    /// The `model` of every request.
    model: String,
    ack_only: bool,
    incoming_tx: mpsc::UnboundedSender<Incoming>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
}

impl OpenAiConnection {
    /// `base_url` is the API root, e.g. `http://127.0.0.1:8000/v1`. Checks
    /// the key with `GET /models`, so a wrong address or key fails the setup.
    pub async fn connect(
        base_url: &str,
        model: &str,
        api_key: &str,
        ack_only: bool,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let base_url = base_url.trim_end_matches('/');
        let mut headers = reqwest::header::HeaderMap::new();
        let bearer = format!("Bearer {api_key}").parse().map_err(|_| {
            TransportError::Connect("the API key is not a valid header value".into())
        })?;
        headers.insert(reqwest::header::AUTHORIZATION, bearer);
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .tcp_nodelay(true)
            .no_proxy()
            .connect_timeout(timeout)
            .build()
            .map_err(|e| TransportError::Connect(format!("{base_url}: {e}")))?;
        let models = client
            .get(format!("{base_url}/models"))
            .send()
            .await
            .map_err(|e| TransportError::Connect(format!("{base_url}: {}", error_chain(&e))))?;
        if !models.status().is_success() {
            let status = models.status();
            let body = models.text().await.unwrap_or_default();
            return Err(TransportError::Connect(format!(
                "{base_url}/models answered HTTP {status}: {}",
                error_code(&body).unwrap_or(body)
            )));
        }
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        Ok(Self {
            client,
            completions_url: format!("{base_url}/chat/completions"),
            model: model.to_owned(),
            ack_only,
            incoming_tx,
            incoming,
        })
    }

    pub fn send(&mut self, frame: Outgoing) -> Result<(), TransportError> {
        let answer = match frame {
            Outgoing::Open { request_id } => Incoming::Opened {
                request_id: Some(request_id),
                conversation_id: String::new(),
            },
            Outgoing::Subscribe { .. } => Incoming::Subscribed,
            Outgoing::Send {
                request_id,
                client_message_id,
                text,
                ..
            } => {
                let mut request = self
                    .client
                    .post(&self.completions_url)
                    .json(&streamed_request(&self.model, &text));
                if let Some(key) = client_message_id {
                    request = request.header("idempotency-key", key);
                }
                let (answers, ack_only) = (self.incoming_tx.clone(), self.ack_only);
                tokio::spawn(follow_completion(request, request_id, ack_only, answers));
                return Ok(());
            }
        };
        self.incoming_tx
            .send(answer)
            .map_err(|_| TransportError::Lost("the connection's queue closed".into()))
    }

    pub async fn recv(&mut self) -> Result<Incoming, TransportError> {
        self.incoming
            .recv()
            .await
            .ok_or_else(|| TransportError::Lost("the connection's queue closed".into()))
    }
}

/// A streamed chat completion of one user message.
fn streamed_request(model: &str, text: &str) -> serde_json::Value {
    json!({
        "model": model,
        "messages": [{ "role": "user", "content": text }],
        "stream": true,
    })
}

/// Sends one completion request and reports its ack, first token and end.
/// The request id stands in for the event id: it is what the driver uses to
/// match the reply to the message.
async fn follow_completion(
    request: reqwest::RequestBuilder,
    request_id: String,
    ack_only: bool,
    answers: mpsc::UnboundedSender<Incoming>,
) {
    let failed = |code: String, message: String| Incoming::Error {
        request_id: Some(request_id.clone()),
        code,
        message,
    };
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            let _ = answers.send(failed("http_request".into(), error_chain(&error)));
            return;
        }
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let code = error_code(&body).unwrap_or_else(|| format!("http_{}", status.as_u16()));
        let _ = answers.send(failed(code, body));
        return;
    }
    let _ = answers.send(Incoming::Ack {
        request_id: Some(request_id.clone()),
        event_id: request_id.clone(),
    });
    if ack_only {
        return;
    }
    let mut body = response.bytes_stream();
    let mut events = SseEvents::default();
    let mut first_token_seen = false;
    let outcome = 'read: loop {
        let bytes = match body.next().await {
            Some(Ok(bytes)) => bytes,
            Some(Err(error)) => {
                break ReplyOutcome::Failed {
                    code: format!("stream_broken: {}", error_chain(&error)),
                };
            }
            None => {
                break ReplyOutcome::Failed {
                    code: "stream_ended_without_done".into(),
                };
            }
        };
        for data in events.push(&bytes) {
            match parse_chunk(&data) {
                Chunk::Done => break 'read ReplyOutcome::Answered,
                Chunk::Error(code) => break 'read ReplyOutcome::Failed { code },
                Chunk::Token if !first_token_seen => {
                    first_token_seen = true;
                    let _ = answers.send(Incoming::Delta {
                        reply_to: request_id.clone(),
                    });
                }
                Chunk::Token | Chunk::Other => {}
            }
        }
    };
    let _ = answers.send(Incoming::ReplyCommitted {
        causation_id: request_id,
        outcome,
    });
}

/// Splits a `text/event-stream` body into the `data` of each event, however
/// the network cut it into pieces.
#[derive(Default)]
struct SseEvents {
    pending: String,
}

impl SseEvents {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
        let mut complete = Vec::new();
        while let Some(end) = self.pending.find("\n\n") {
            let event: String = self.pending.drain(..end + 2).collect();
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            if !data.is_empty() {
                complete.push(data.join("\n"));
            }
        }
        complete
    }
}

#[derive(Debug, PartialEq)]
enum Chunk {
    /// A chunk carrying reply text.
    Token,
    Done,
    /// `{"error": {...}}`: the reply failed; its code.
    Error(String),
    /// The role chunk, the finish chunk, usage.
    Other,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    delta: WireDelta,
}

#[derive(Deserialize, Default)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(default)]
    code: Option<String>,
}

fn parse_chunk(data: &str) -> Chunk {
    if data.trim() == "[DONE]" {
        return Chunk::Done;
    }
    match serde_json::from_str::<WireChunk>(data) {
        Ok(WireChunk {
            error: Some(error), ..
        }) => Chunk::Error(error.code.unwrap_or_else(|| "unknown".into())),
        Ok(chunk)
            if chunk
                .choices
                .iter()
                .any(|c| c.delta.content.as_deref().is_some_and(|t| !t.is_empty())) =>
        {
            Chunk::Token
        }
        Ok(_) => Chunk::Other,
        Err(_) => Chunk::Error("unparseable_chunk".into()),
    }
}

/// The `error.code` of an OpenAI error body, if it is one.
fn error_code(body: &str) -> Option<String> {
    serde_json::from_str::<WireChunk>(body).ok()?.error?.code
}

/// "error sending request: client error (Connect): Connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_model_and_stream() {
        let body = streamed_request("bench", "hello there");
        assert_eq!(
            body,
            json!({
                "model": "bench",
                "messages": [{"role": "user", "content": "hello there"}],
                "stream": true,
            })
        );
    }

    #[test]
    fn events_are_split_wherever_the_network_cut_them() {
        let mut events = SseEvents::default();
        assert!(events.push(b"data: {\"a\":").is_empty());
        assert_eq!(events.push(b"1}\n\ndata: [DO"), vec!["{\"a\":1}"]);
        assert_eq!(events.push(b"NE]\n\n"), vec!["[DONE]"]);
    }

    #[test]
    fn chunks_from_the_protocol_document_are_told_apart() {
        let role = r#"{"id":"chatcmpl-U","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
        assert_eq!(parse_chunk(role), Chunk::Other);
        let token = r#"{"id":"chatcmpl-U","object":"chat.completion.chunk","created":1,"model":"mock","choices":[{"index":0,"delta":{"content":"You"},"finish_reason":null}]}"#;
        assert_eq!(parse_chunk(token), Chunk::Token);
        let finish =
            r#"{"id":"chatcmpl-U","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(parse_chunk(finish), Chunk::Other);
        assert_eq!(parse_chunk("[DONE]"), Chunk::Done);
        let error = r#"{"error":{"message":"down","type":"server_error","param":null,"code":"model_error"}}"#;
        assert_eq!(parse_chunk(error), Chunk::Error("model_error".into()));
        assert_eq!(error_code(error).as_deref(), Some("model_error"));
        assert!(matches!(parse_chunk("{not json"), Chunk::Error(_)));
    }
}
