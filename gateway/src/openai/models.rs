//! `GET /v1/models` and `GET /v1/models/{id}`: the models the calling
//! tenant may use, in OpenAI's list shape.
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chatstream_config::models::ModelsConfig;
use chatstream_config::tenants::Principal;
use serde_json::{Value, json};

use super::authenticate;
use super::error::OpenAiError;
use crate::Gateway;

/// The router's built-in model, the only one when no catalog is configured.
const BUILTIN_MODEL: &str = "mock";

/// The models each tenant may ask for by name, as the router decides them:
/// the tenant's routing policy (else the platform's default policy) names
/// them; with no catalog configured, the built-in mock answers everyone.
#[derive(Debug, Clone, Default)]
pub struct ModelDirectory {
    models: ModelsConfig,
}

impl ModelDirectory {
    pub fn new(models: ModelsConfig) -> Self {
        Self { models }
    }

    /// Catalog ids `who` may use, in policy order.
    pub fn models_for(&self, who: &Principal) -> Vec<String> {
        if self.models.catalog.is_empty() {
            return vec![BUILTIN_MODEL.to_owned()];
        }
        who.tenant
            .routing
            .as_ref()
            .or(self.models.default_routing.as_ref())
            .map(|policy| {
                policy
                    .usable_models()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `who` may ask for `model`.
    pub fn offers(&self, who: &Principal, model: &str) -> bool {
        self.models_for(who).iter().any(|m| m == model)
    }
}

fn model_object(id: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 0, "owned_by": "chatstream" })
}

pub async fn list(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    match authenticate(&gateway, &headers) {
        Ok(who) => {
            let data: Vec<Value> = gateway
                .models
                .models_for(&who)
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
    if gateway.models.offers(&who, &id) {
        Json(model_object(&id)).into_response()
    } else {
        OpenAiError::model_not_found(&id).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chatstream_config::tenants::TenantRegistry;

    use super::*;

    fn principal(registry: &TenantRegistry, id: &str) -> Principal {
        let tenant = registry
            .tenants()
            .iter()
            .find(|t| t.id == id)
            .expect("tenant")
            .clone();
        Principal {
            tenant: Arc::clone(&tenant),
            key_id: "k".into(),
        }
    }

    #[test]
    fn each_tenant_sees_its_own_models() {
        let hash = chatstream_config::tenants::hash_api_key;
        let registry = TenantRegistry::parse(&format!(
            "tenants:\n  - id: acme\n    api_keys: [{{id: a, sha256: {}}}]\n    routing: {{candidates: [{{model: fast}}, {{model: smart, weight: 0}}]}}\n  - id: globex\n    api_keys: [{{id: g, sha256: {}}}]\n    routing: {{candidates: [{{model: fast}}], allowed_models: [cheap]}}\n  - id: initech\n    api_keys: [{{id: i, sha256: {}}}]\n",
            hash("a"),
            hash("g"),
            hash("i")
        ))
        .unwrap();
        let models: ModelsConfig = serde_yaml_ng::from_str(
            "providers: {m: {kind: mock}}\ncatalog: {fast: {provider: m}, smart: {provider: m}, cheap: {provider: m}}\ndefault_routing: {candidates: [{model: smart}]}\n",
        )
        .unwrap();
        let directory = ModelDirectory::new(models);
        assert_eq!(
            directory.models_for(&principal(&registry, "acme")),
            ["fast", "smart"]
        );
        assert_eq!(
            directory.models_for(&principal(&registry, "globex")),
            ["cheap"]
        );
        assert_eq!(
            directory.models_for(&principal(&registry, "initech")),
            ["smart"],
            "the default policy"
        );
        assert!(!directory.offers(&principal(&registry, "globex"), "fast"));

        let builtin = ModelDirectory::default();
        assert_eq!(builtin.models_for(&principal(&registry, "acme")), ["mock"]);
    }
}
