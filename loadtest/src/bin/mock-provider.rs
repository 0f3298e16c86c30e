//! `mock-provider`: an OpenAI-compatible model server whose latency is known
//! exactly, for scripts/bench.sh to put behind chatstream and behind other
//! gateways (and to drive directly, as the limit). `POST /v1/chat/completions`
//! answers streamed (server-sent `chat.completion.chunk`s, the usage when
//! `stream_options.include_usage` asks, `data: [DONE]`) or whole; `GET
//! /v1/models` lists the models it serves. Any API key is accepted.
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

#[path = "../mock_provider/mod.rs"]
mod mock_provider;

use mock_provider::answer::{Answer, Pace};
use mock_provider::request::{ApiError, ChatRequest};

#[derive(Parser)]
#[command(
    name = "mock-provider",
    about = "OpenAI-compatible chat completions server with a fixed answer length and exact \
             first-token and per-token delays: a model of known latency for benchmarks"
)]
struct Args {
    /// Address to listen on; port 0 picks a free one. Prints
    /// `listening on ADDR` on stdout once bound.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// From reading the request to the first content token.
    #[arg(long, default_value_t = 0)]
    first_token_delay_ms: u64,
    /// Between one token and the next.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Tokens in every answer (fewer when the request's `max_tokens` is lower).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    tokens: u32,
    /// A model name to serve; repeat for several. Without one, any name is
    /// served (and `GET /v1/models` lists none).
    #[arg(long = "model", value_name = "NAME")]
    models: Vec<String>,
}

struct Provider {
    pace: Pace,
    models: Vec<String>,
    /// Completion ids only need to be unique.
    next_id: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let provider = Arc::new(Provider {
        pace: Pace {
            tokens: args.tokens,
            first_token_delay: Duration::from_millis(args.first_token_delay_ms),
            token_delay: Duration::from_millis(args.token_delay_ms),
        },
        models: args.models,
        next_id: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind(args.listen.as_str()).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .with_state(provider);
    // Each token is a small write that must leave at once, not wait for
    // Nagle's algorithm: the schedule is the point of this server.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

async fn chat_completions(State(provider): State<Arc<Provider>>, body: Bytes) -> Response {
    let start = tokio::time::Instant::now();
    let request = match ChatRequest::parse(&body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    if !provider.models.is_empty() && !provider.models.contains(&request.model) {
        return ApiError::model_not_found(&request.model).into_response();
    }
    let sequence = provider.next_id.fetch_add(1, Ordering::Relaxed);
    let answer = Answer::new(&request, &provider.pace, sequence);
    if !request.stream {
        let last = answer.tokens() - 1;
        tokio::time::sleep_until(provider.pace.token_at(start, last)).await;
        return axum::Json(answer.completion()).into_response();
    }
    let events = answer.events(&provider.pace, start);
    let body = futures::stream::iter(events).then(|(due, event)| async move {
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
        }
        Ok::<_, Infallible>(event)
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn models(State(provider): State<Arc<Provider>>) -> Response {
    let data: Vec<_> = provider
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock-provider"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
