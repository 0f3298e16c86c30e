//! A fake model provider: a real HTTP server on loopback that plays
//! scripted OpenAI-compatible or Anthropic responses byte for byte (status
//! codes and headers, SSE bodies cut into pieces with pauses between them
//! so they cross TCP reads, bodies that break off or stall), or answers
//! each request by a function of it. It records every request it gets, so
//! tests can check what the provider was sent and how often. The SSE
//! builders below write the providers' stream formats.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::StreamExt;

/// How a scripted response body ends.
#[derive(Debug, Clone)]
pub enum End {
    /// The body finishes normally.
    Close,
    /// The connection breaks mid-body (the client sees an incomplete body).
    Reset,
    /// The server goes silent and keeps the connection open.
    Stall,
}

#[derive(Debug, Clone)]
pub enum Piece {
    Bytes(String),
    Pause(Duration),
}

#[derive(Debug, Clone)]
pub enum Reply {
    Status {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    Stream {
        pieces: Vec<Piece>,
        end: End,
    },
}

impl Reply {
    /// A normal SSE body sent in one piece.
    pub fn sse(body: &str) -> Self {
        Reply::Stream {
            pieces: vec![Piece::Bytes(body.to_owned())],
            end: End::Close,
        }
    }

    /// An SSE body sent `size` bytes at a time with a short pause between
    /// pieces, so the client reads it across many TCP segments.
    pub fn sse_in_pieces(body: &str, size: usize) -> Self {
        let mut pieces = Vec::new();
        let bytes = body.as_bytes();
        for chunk in bytes.chunks(size) {
            pieces.push(Piece::Bytes(String::from_utf8_lossy(chunk).into_owned()));
            pieces.push(Piece::Pause(Duration::from_millis(2)));
        }
        Reply::Stream {
            pieces,
            end: End::Close,
        }
    }

    pub fn status(status: u16, body: &str) -> Self {
        Reply::Status {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

/// Answers a request by a function of it.
type Responder = Arc<dyn Fn(&RecordedRequest) -> Reply + Send + Sync>;

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    /// Answers when the script is empty.
    responder: Option<Responder>,
    /// Played when the script is empty and there is no responder.
    default: Option<Reply>,
    requests: Vec<RecordedRequest>,
    /// Requests whose response has not ended yet, and the most at once.
    in_flight: usize,
    most_in_flight: usize,
}

/// Counts one request in flight until its response ends (or is dropped).
struct InFlight(Arc<Mutex<Inner>>);

impl InFlight {
    fn start(inner: &Arc<Mutex<Inner>>) -> Self {
        let mut state = inner.lock().unwrap();
        state.in_flight += 1;
        state.most_in_flight = state.most_in_flight.max(state.in_flight);
        Self(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

#[derive(Clone)]
pub struct ProviderServer {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl ProviderServer {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues replies for the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// The reply once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }

    /// Answers every request the script does not by `respond` of it.
    pub fn respond_with(
        &self,
        respond: impl Fn(&RecordedRequest) -> Reply + Send + Sync + 'static,
    ) {
        self.inner.lock().unwrap().responder = Some(Arc::new(respond));
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The most requests this server was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.inner.lock().unwrap().most_in_flight
    }
}

async fn serve(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let in_flight = InFlight::start(&inner);
    let reply = {
        let mut inner = inner.lock().unwrap();
        let request = RecordedRequest {
            path: uri.path().to_owned(),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        };
        let reply = inner
            .script
            .pop_front()
            .or_else(|| inner.responder.as_ref().map(|respond| respond(&request)))
            .or_else(|| inner.default.clone())
            .unwrap_or_else(|| Reply::status(500, "{\"error\":\"nothing scripted\"}"));
        inner.requests.push(request);
        reply
    };
    match reply {
        Reply::Status {
            status,
            headers,
            body,
        } => {
            let mut response = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Stream { pieces, end } => {
            let pieces = futures::stream::iter(pieces).filter_map(|piece| async move {
                match piece {
                    Piece::Bytes(text) => Some(Ok::<_, std::io::Error>(Bytes::from(text))),
                    Piece::Pause(pause) => {
                        tokio::time::sleep(pause).await;
                        None
                    }
                }
            });
            let ending = futures::stream::once(async move {
                // The response ends here: it stops counting as in flight.
                let _in_flight = in_flight;
                match end {
                    End::Close => None,
                    End::Reset => {
                        // Let what came before reach the client first.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some(Err(std::io::Error::other("connection cut")))
                    }
                    End::Stall => std::future::pending::<Option<_>>().await,
                }
            })
            .filter_map(std::future::ready);
            Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(pieces.chain(ending)))
                .unwrap()
        }
    }
}

/// One OpenAI Chat Completions stream chunk (an SSE `data:` event) with
/// `delta` and `finish_reason`.
pub fn openai_chunk(delta: serde_json::Value, finish_reason: Option<&str>) -> String {
    let chunk = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    });
    format!("data: {chunk}\n\n")
}

/// The end of an OpenAI Chat Completions stream: the usage chunk and `[DONE]`.
pub fn openai_usage_and_done(prompt_tokens: u32, completion_tokens: u32) -> String {
    let usage = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    });
    format!("data: {usage}\n\ndata: [DONE]\n\n")
}

/// An OpenAI Chat Completions stream of `tokens`, with a usage chunk.
pub fn openai_stream(tokens: &[&str], prompt_tokens: u32) -> String {
    let mut body: String = tokens
        .iter()
        .map(|token| openai_chunk(serde_json::json!({"content": token}), None))
        .collect();
    body.push_str(&openai_chunk(serde_json::json!({}), Some("stop")));
    body.push_str(&openai_usage_and_done(prompt_tokens, tokens.len() as u32));
    body
}

/// The start of an Anthropic Messages stream: `message_start`, a `ping`
/// and the text block's start.
pub fn anthropic_start(input_tokens: u32) -> String {
    let start = serde_json::json!({
        "type": "message_start",
        "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                    "model": "claude", "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1}}
    });
    format!(
        "event: message_start\ndata: {start}\n\nevent: ping\ndata: {{\"type\": \"ping\"}}\n\nevent: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
    )
}

pub fn anthropic_text(text: &str) -> String {
    let delta = serde_json::json!({
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": text}
    });
    format!("event: content_block_delta\ndata: {delta}\n\n")
}

/// The end of an Anthropic stream: block stop, `message_delta` with the
/// cumulative output tokens, `message_stop`.
pub fn anthropic_end(output_tokens: u32, stop_reason: &str) -> String {
    let delta = serde_json::json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}
    });
    format!(
        "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {delta}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    )
}

/// An OpenAI Chat Completions stream that asks for one tool: the call's id
/// and name in the first piece, its arguments split over the next ones,
/// then `finish_reason: tool_calls`, usage and `[DONE]`.
pub fn openai_tool_call_stream(call_id: &str, name: &str, argument_pieces: &[&str]) -> String {
    let mut body = openai_chunk(
        serde_json::json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        ]}),
        None,
    );
    for piece in argument_pieces {
        body.push_str(&openai_chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
            None,
        ));
    }
    body.push_str(&openai_chunk(serde_json::json!({}), Some("tool_calls")));
    body.push_str(&openai_usage_and_done(20, 7));
    body
}

/// An Anthropic stream that says `text`, then asks for one tool: a
/// `tool_use` block at index 1 whose input arrives as `input_json_delta`
/// pieces, then `stop_reason: tool_use`.
pub fn anthropic_tool_use_stream(
    text: &str,
    id: &str,
    name: &str,
    input_pieces: &[&str],
) -> String {
    let mut body = anthropic_start(30);
    body.push_str(&anthropic_text(text));
    body.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    let start = serde_json::json!({
        "type": "content_block_start", "index": 1,
        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}
    });
    body.push_str(&format!("event: content_block_start\ndata: {start}\n\n"));
    for piece in input_pieces {
        let delta = serde_json::json!({
            "type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": piece}
        });
        body.push_str(&format!("event: content_block_delta\ndata: {delta}\n\n"));
    }
    let delta = serde_json::json!({
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": null},
        "usage": {"output_tokens": 12}
    });
    body.push_str(&format!(
        "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":1}}\n\nevent: message_delta\ndata: {delta}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
    ));
    body
}
