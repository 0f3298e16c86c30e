//! Model providers behind `ChatModel`, and the catalog built from the
//! `models` config: each catalog id resolves to a provider endpoint, the
//! provider's model name and a price.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatstream_config::models::{ModelsConfig, ProviderKind};

use crate::mock::MockModel;
use crate::model::{ChatModel, Usage};

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod sse;

/// USD per million tokens, as in the price table.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Price {
    pub prompt_usd_per_million: f64,
    pub completion_usd_per_million: f64,
}

impl Price {
    /// The cost of `usage` in USD millionths (per-million prices times
    /// tokens give millionths directly).
    pub fn cost_micros(&self, usage: Usage) -> u64 {
        let micros = f64::from(usage.prompt_tokens) * self.prompt_usd_per_million
            + f64::from(usage.completion_tokens) * self.completion_usd_per_million;
        micros.round() as u64
    }
}

/// A model tenants can be routed to.
#[derive(Clone)]
pub struct CatalogEntry {
    /// The catalog id policies name.
    pub id: String,
    /// The provider endpoint's name; one circuit breaker each.
    pub provider: String,
    /// The provider's own model name, sent in requests.
    pub provider_model: String,
    pub model: Arc<dyn ChatModel>,
    pub price: Price,
}

impl std::fmt::Debug for CatalogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogEntry")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("provider_model", &self.provider_model)
            .finish_non_exhaustive()
    }
}

/// Builds every catalog model from the config (checked by
/// `ModelsConfig::validate`), reading API keys now so a missing key fails
/// at start, not on a tenant's first message.
pub fn build_catalog(
    config: &ModelsConfig,
    mock: &MockModel,
) -> Result<HashMap<String, CatalogEntry>, String> {
    let mut providers: HashMap<&str, Arc<dyn ChatModel>> = HashMap::new();
    for (name, provider) in &config.providers {
        let key = http::ApiKey::from_config(
            name,
            provider.api_key_env.as_deref(),
            provider.api_key_file.as_deref(),
        )?;
        let client = http::http_client(Duration::from_millis(provider.connect_timeout_ms));
        let model: Arc<dyn ChatModel> = match provider.kind {
            ProviderKind::OpenAi => Arc::new(openai::OpenAiModel::new(
                name,
                &provider.base_url,
                key,
                client,
            )),
            ProviderKind::Anthropic => Arc::new(anthropic::AnthropicModel::new(
                name,
                &provider.base_url,
                key,
                client,
            )),
            ProviderKind::Mock => Arc::new(mock.clone().named(name)),
        };
        providers.insert(name, model);
    }
    let mut catalog = HashMap::new();
    for (id, entry) in &config.catalog {
        let model = providers
            .get(entry.provider.as_str())
            .ok_or_else(|| format!("models.catalog.{id}: unknown provider"))?
            .clone();
        catalog.insert(
            id.clone(),
            CatalogEntry {
                id: id.clone(),
                provider: entry.provider.clone(),
                provider_model: entry.model.clone().unwrap_or_else(|| id.clone()),
                model,
                price: Price {
                    prompt_usd_per_million: entry.prompt_usd_per_million,
                    completion_usd_per_million: entry.completion_usd_per_million,
                },
            },
        );
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_come_from_per_million_prices() {
        let price = Price {
            prompt_usd_per_million: 0.15,
            completion_usd_per_million: 0.6,
        };
        let usage = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
        };
        // 1000 * 0.15 + 500 * 0.6 = 450 millionths of a dollar.
        assert_eq!(price.cost_micros(usage), 450);
    }

    #[test]
    fn a_missing_key_fails_the_build_with_its_name() {
        let config: ModelsConfig = serde_yaml_ng::from_str(
            "providers:\n  openai: {kind: openai, base_url: 'http://x', api_key_env: CHATSTREAM_TEST_SURELY_UNSET_KEY}\n",
        )
        .unwrap();
        let err = build_catalog(&config, &MockModel::new(Duration::ZERO)).unwrap_err();
        assert!(err.contains("CHATSTREAM_TEST_SURELY_UNSET_KEY"), "{err}");
    }
}
