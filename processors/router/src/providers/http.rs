//! What every HTTP provider shares: API keys that never print, posting a
//! streaming request and mapping HTTP failures (with `Retry-After`) onto
//! `ModelError`, and turning decoded SSE events into model chunks.
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use futures::stream::{self, BoxStream, StreamExt};
use reqwest::header::HeaderMap;

use crate::model::{ModelChunk, ModelError};
use crate::providers::sse::{SseEvent, sse_events};

/// A provider API key. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key named by a provider's config: from an env var or a file.
    pub fn from_config(
        provider: &str,
        env: Option<&str>,
        file: Option<&std::path::Path>,
    ) -> Result<Option<Self>, String> {
        if let Some(name) = env {
            let secret = std::env::var(name).map_err(|_| {
                format!("provider {provider}: environment variable {name} is not set")
            })?;
            return Ok(Some(Self(secret.trim().to_owned())));
        }
        if let Some(path) = file {
            let secret = std::fs::read_to_string(path)
                .map_err(|e| format!("provider {provider}: cannot read {}: {e}", path.display()))?;
            return Ok(Some(Self(secret.trim().to_owned())));
        }
        Ok(None)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// One provider endpoint: its name, base URL, key and HTTP client.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    /// Without a trailing `/`; each provider appends its path.
    base_url: String,
    pub api_key: Option<ApiKey>,
    client: reqwest::Client,
}

impl Endpoint {
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<ApiKey>,
        client: reqwest::Client,
    ) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            client,
        }
    }

    /// A `POST` to `path` under the base URL.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base_url))
    }
}

/// A client for one provider endpoint: no overall timeout, because a
/// stream may rightly run for minutes; the router bounds each phase.
pub fn http_client(connect_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Posts `body` and returns the response's events, or the failure.
pub async fn post_event_stream(
    request: reqwest::RequestBuilder,
    body: serde_json::Value,
) -> Result<BoxStream<'static, Result<SseEvent, ModelError>>, ModelError> {
    let response = request
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&body)
        .send()
        .await
        .map_err(|e| ModelError::Connect(error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = retry_after(response.headers(), SystemTime::now());
        // Error bodies are small JSON documents; cap what we keep of them.
        let message = truncated(&response.text().await.unwrap_or_default(), 500);
        return Err(ModelError::Status {
            status: status.as_u16(),
            retry_after,
            message,
        });
    }
    Ok(sse_events(response.bytes_stream().boxed()))
}

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

/// How long the provider asks us to wait: `retry-after-ms` (OpenAI), or
/// `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return duration_from_secs(ms / 1000.0);
    }
    let value = header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return duration_from_secs(seconds);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

fn duration_from_secs(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// What a provider's decoder made of one event.
pub enum Decoded {
    Chunks(Vec<ModelChunk>),
    /// The provider said it is done; nothing after this is read.
    Finished(Vec<ModelChunk>),
}

/// A provider's wire format: events in, chunks out.
pub trait StreamDecoder: Send + 'static {
    fn decode(&mut self, event: SseEvent) -> Result<Decoded, ModelError>;

    /// The body ended before `Finished`: what that means for this provider.
    fn ended_early(&mut self) -> Result<Vec<ModelChunk>, ModelError>;
}

/// Runs `decoder` over a request's events; the stream ends after the first
/// error or the provider's end.
pub fn decode_stream<D: StreamDecoder>(
    events: impl std::future::Future<
        Output = Result<BoxStream<'static, Result<SseEvent, ModelError>>, ModelError>,
    > + Send
    + 'static,
    decoder: D,
) -> BoxStream<'static, Result<ModelChunk, ModelError>> {
    enum State<D> {
        Connecting(
            futures::future::BoxFuture<
                'static,
                Result<BoxStream<'static, Result<SseEvent, ModelError>>, ModelError>,
            >,
            D,
        ),
        Streaming(BoxStream<'static, Result<SseEvent, ModelError>>, D),
        Done,
    }
    let start = State::Connecting(Box::pin(events), decoder);
    stream::unfold(
        (start, VecDeque::new()),
        |(mut state, mut ready)| async move {
            loop {
                if let Some(item) = ready.pop_front() {
                    return Some((item, (state, ready)));
                }
                let outcome = match std::mem::replace(&mut state, State::Done) {
                    State::Done => return None,
                    State::Connecting(connect, decoder) => {
                        match connect.await {
                            Ok(events) => state = State::Streaming(events, decoder),
                            Err(error) => ready.push_back(Err(error)),
                        }
                        continue;
                    }
                    State::Streaming(mut events, mut decoder) => {
                        let outcome = match events.next().await {
                            Some(Ok(event)) => decoder.decode(event),
                            Some(Err(error)) => Err(error),
                            None => decoder.ended_early().map(Decoded::Finished),
                        };
                        if let Ok(Decoded::Chunks(_)) = &outcome {
                            state = State::Streaming(events, decoder);
                        }
                        outcome
                    }
                };
                match outcome {
                    Ok(Decoded::Chunks(chunks)) | Ok(Decoded::Finished(chunks)) => {
                        ready.extend(chunks.into_iter().map(Ok))
                    }
                    Err(error) => ready.push_back(Err(error)),
                }
            }
        },
    )
    .boxed()
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncated(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Parses an event's JSON data, naming the provider in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    provider: &str,
    data: &str,
) -> Result<T, ModelError> {
    serde_json::from_str(data).map_err(|e| {
        let sample = truncated(data, 200);
        ModelError::Protocol(format!(
            "{provider} sent an unreadable chunk ({e}): {sample}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after_in_its_three_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        headers.insert("retry-after", later.parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(120)));
        headers.insert("retry-after-ms", "1500".parse().unwrap());
        assert_eq!(
            retry_after(&headers, now),
            Some(Duration::from_millis(1500))
        );
        headers.remove("retry-after-ms");
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn api_keys_never_print() {
        let key = ApiKey::new("sk-secret");
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(key.expose(), "sk-secret");
    }
}
