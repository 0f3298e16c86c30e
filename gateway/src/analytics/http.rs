//! The analytics HTTP API: `GET /api/v2/analytics/usage` and
//! `GET /api/v2/analytics/latency`, scoped to the tenant of the caller's
//! API key (`Authorization: Bearer`), like every other tenant route, or to
//! the `tenant` an operator key names. The parameters (`from`, `to`,
//! `bucket`, `group_by`) are checked by `AnalyticsQuery::parse`; a bad one
//! is a 400 that names it.
use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chatstream_core::analytics::query::{AnalyticsQuery, InvalidParameter, QueryParameters};
use chatstream_core::store::StoreError;
use serde_json::json;

use super::{ScopeError, tenant_in_scope};
use crate::{Gateway, ws};

/// The parameters the routes take; any other is refused, so a typo is not
/// silently ignored.
const PARAMETERS: [&str; 5] = ["from", "to", "bucket", "group_by", "tenant"];

pub fn routes() -> Router<Gateway> {
    Router::new()
        .route("/api/v2/analytics/usage", get(usage))
        .route("/api/v2/analytics/latency", get(latency))
}

/// Why an analytics request was refused.
#[derive(Debug)]
enum AnalyticsError {
    OutOfScope(ScopeError),
    InvalidParameter(InvalidParameter),
    UnknownParameter(String),
    Store(StoreError),
}

impl IntoResponse for AnalyticsError {
    fn into_response(self) -> Response {
        let (status, code, message, parameter) = match self {
            Self::OutOfScope(refused) => {
                let (status, code, parameter) = match &refused {
                    ScopeError::Unauthenticated => {
                        (StatusCode::UNAUTHORIZED, "unauthenticated", None)
                    }
                    ScopeError::OtherTenant => (StatusCode::FORBIDDEN, "forbidden", Some("tenant")),
                    ScopeError::TenantRequired => {
                        (StatusCode::BAD_REQUEST, "invalid_parameter", Some("tenant"))
                    }
                    ScopeError::UnknownTenant(_) => {
                        (StatusCode::NOT_FOUND, "tenant_not_found", Some("tenant"))
                    }
                };
                (
                    status,
                    code,
                    refused.to_string(),
                    parameter.map(str::to_owned),
                )
            }
            Self::InvalidParameter(invalid) => (
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                invalid.message,
                Some(invalid.parameter.to_owned()),
            ),
            Self::UnknownParameter(name) => (
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!(
                    "unknown parameter `{name}`; expected {}",
                    PARAMETERS.join(", ")
                ),
                Some(name),
            ),
            Self::Store(error) => {
                let status = match error {
                    StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                tracing::warn!(%error, "analytics query failed");
                (status, "unavailable", error.to_string(), None)
            }
        };
        let mut error = json!({ "code": code, "message": message });
        if let Some(parameter) = parameter {
            error["parameter"] = parameter.into();
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}

/// The caller's query: its tenant from the key (and `tenant`), the rest
/// from the URL.
fn query_of(
    gateway: &Gateway,
    headers: &HeaderMap,
    parameters: &HashMap<String, String>,
) -> Result<AnalyticsQuery, AnalyticsError> {
    let get = |name: &str| parameters.get(name).map(String::as_str);
    let tenant_id = tenant_in_scope(&gateway.tenants, ws::bearer_token(headers), get("tenant"))
        .map_err(AnalyticsError::OutOfScope)?;
    if let Some(unknown) = parameters
        .keys()
        .find(|name| !PARAMETERS.contains(&name.as_str()))
    {
        return Err(AnalyticsError::UnknownParameter(unknown.clone()));
    }
    AnalyticsQuery::parse(
        &tenant_id,
        &QueryParameters {
            from: get("from"),
            to: get("to"),
            bucket: get("bucket"),
            group_by: get("group_by"),
        },
        super::now_ms(),
    )
    .map_err(AnalyticsError::InvalidParameter)
}

async fn usage(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Response, AnalyticsError> {
    let query = query_of(&gateway, &headers, &parameters)?;
    let answer = query
        .usage(gateway.analytics.as_ref())
        .await
        .map_err(AnalyticsError::Store)?;
    Ok(Json(answer).into_response())
}

async fn latency(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    Query(parameters): Query<HashMap<String, String>>,
) -> Result<Response, AnalyticsError> {
    let query = query_of(&gateway, &headers, &parameters)?;
    let answer = query
        .latency(gateway.analytics.as_ref())
        .await
        .map_err(AnalyticsError::Store)?;
    Ok(Json(answer).into_response())
}
