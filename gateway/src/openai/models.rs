//! `GET /v1/models` and `GET /v1/models/{id}`: the models the calling
//! tenant may use, in OpenAI's list shape.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chatstream_runtime::tenants::Principal;
use serde_json::{Value, json};

use super::authenticate;
use super::error::OpenAiError;
use crate::Gateway;

/// The models every tenant may use. Tenants do not carry a model
/// allowlist yet (it comes with per-tenant routing policies); until then
/// this is the router's built-in model.
const PLATFORM_MODELS: &[&str] = &["mock"];

/// The models `who` may use.
pub fn allowed_models(_who: &Principal) -> &'static [&'static str] {
    PLATFORM_MODELS
}

/// The model named `id` if `who` may use it.
pub fn find_model(who: &Principal, id: &str) -> Option<&'static str> {
    allowed_models(who)
        .iter()
        .copied()
        .find(|model| *model == id)
}

fn model_object(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "chatstream" })
}

pub async fn list(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    match authenticate(&gateway, &headers) {
        Ok(who) => {
            let data: Vec<Value> = allowed_models(&who)
                .iter()
                .map(|id| model_object(id))
                .collect();
            Json(json!({ "object": "list", "data": data })).into_response()
        }
        Err(error) => error.into_response(),
    }
}

pub async fn retrieve(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let who = match authenticate(&gateway, &headers) {
        Ok(who) => who,
        Err(error) => return error.into_response(),
    };
    match find_model(&who, &id) {
        Some(model) => Json(model_object(model)).into_response(),
        None => OpenAiError::model_not_found(&id).into_response(),
    }
}
