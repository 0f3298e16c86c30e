//! The OpenAI-compatible HTTP edge: `POST /v1/chat/completions` and
//! `GET /v1/models`, so the official OpenAI SDKs work against chatstream
//! unchanged. Each completion is one turn through `ChatCore`, like a
//! WebSocket or gRPC send; errors use OpenAI's JSON error shape.
mod chat_completions;
mod completion;
mod error;
mod models;
mod request;
mod turn;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use chatstream_config::tenants::Principal;

pub use chat_completions::CONVERSATION_ID_HEADER;
pub use error::OpenAiError;
pub use models::ModelDirectory;

use crate::{EdgeLimits, Gateway, ws};

/// The `/v1` routes, to merge into the gateway's HTTP router.
pub fn routes(limits: &EdgeLimits) -> Router<Gateway> {
    Router::new()
        .route(
            "/v1/chat/completions",
            // Room for the largest message plus the earlier messages sent as context.
            post(chat_completions::create).layer(DefaultBodyLimit::max(limits.max_frame_bytes)),
        )
        .route("/v1/models", get(models::list))
        .route("/v1/models/{id}", get(models::retrieve))
}

/// The caller's tenant from `Authorization: Bearer <api key>`, as on the
/// WebSocket and gRPC edges.
fn authenticate(gateway: &Gateway, headers: &HeaderMap) -> Result<Principal, OpenAiError> {
    let key = ws::bearer_token(headers).ok_or_else(OpenAiError::missing_api_key)?;
    gateway
        .tenants
        .authenticate(key)
        .ok_or_else(|| crate::error::ChatError::Unauthenticated.into())
}
