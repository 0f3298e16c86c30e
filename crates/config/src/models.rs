//! Configuration of model providers, the model catalog with its prices, and
//! routing policies (the platform default here, a tenant's own in the
//! tenants file). The router turns these into live clients; this module
//! only parses and validates, so a bad file fails at start with a reason.
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Invalid;

/// The `models` section of `chatstream.yaml`. Empty (the default) means the
/// router answers with the built-in `mock` model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Provider endpoints by name, e.g. `openai`, `anthropic`, `local-vllm`.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Models tenants can be routed to, by the id policies use.
    pub catalog: BTreeMap<String, CatalogModel>,
    /// The policy of tenants without their own `routing` section.
    pub default_routing: Option<RoutingPolicyConfig>,
    pub circuit_breaker: CircuitBreakerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI Chat Completions and every server that speaks it (vLLM,
    /// Ollama, llama.cpp, LM Studio, most hosted APIs).
    OpenAi,
    /// The Anthropic Messages API.
    Anthropic,
    /// The built-in scriptable mock.
    Mock,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1` or `https://api.anthropic.com`.
    #[serde(default)]
    pub base_url: String,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the API key (e.g. a mounted secret); whitespace trimmed.
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Bound on connecting to the endpoint.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

// Hand-written so a config dump never shows where secrets live in full detail.
impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key_file", &self.api_key_file)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogModel {
    /// Name of a provider in `providers`.
    pub provider: String,
    /// The provider's own model name, e.g. `gpt-4o-mini`; the catalog id when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// USD per million prompt (input) tokens.
    #[serde(default)]
    pub prompt_usd_per_million: f64,
    /// USD per million completion (output) tokens.
    #[serde(default)]
    pub completion_usd_per_million: f64,
}

/// A routing policy: which models answer, in which order, and how long each
/// may take. Tenants can set their own in the tenants file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingPolicyConfig {
    /// Catalog ids in fallback order. With weights, the first attempt goes
    /// to one candidate chosen by weight; the others follow in this order.
    pub candidates: Vec<RoutingCandidate>,
    /// Catalog ids this tenant may use; any candidate when empty.
    pub allowed_models: Vec<String>,
    /// Cap on `max_tokens` of every call.
    pub max_tokens: u32,
    /// A call that has streamed no token after this long fails over.
    pub first_token_timeout_ms: u64,
    /// A stream silent for this long between tokens is stalled.
    pub stall_timeout_ms: u64,
    /// The whole turn, every attempt included.
    pub deadline_ms: u64,
    /// Extra attempts on the same candidate before falling back.
    pub retries: u32,
    /// First backoff between retries; doubles each time, with full jitter.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingCandidate {
    pub model: String,
    /// Share of first attempts; 0 means fallback only.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker of a provider endpoint.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before letting one trial through.
    pub open_ms: u64,
}

impl Default for RoutingPolicyConfig {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            allowed_models: Vec::new(),
            max_tokens: 4096,
            first_token_timeout_ms: 20_000,
            stall_timeout_ms: 20_000,
            deadline_ms: 120_000,
            retries: 1,
            backoff_ms: 200,
            max_backoff_ms: 5_000,
        }
    }
}

impl RoutingPolicyConfig {
    /// The catalog ids a client of this tenant may ask for by name: the
    /// allowlist, or without one the candidates.
    pub fn usable_models(&self) -> Vec<&str> {
        if self.allowed_models.is_empty() {
            self.candidates.iter().map(|c| c.model.as_str()).collect()
        } else {
            self.allowed_models.iter().map(String::as_str).collect()
        }
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_ms: 30_000,
        }
    }
}

impl ModelsConfig {
    /// Checks references and numbers; the error names what is wrong.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.catalog.is_empty() && !(self.providers.is_empty() && self.default_routing.is_none())
        {
            return Err(Invalid::Conflict {
                at: "models".into(),
                rule: "providers or default_routing are set but the catalog is empty".into(),
            });
        }
        for (name, provider) in &self.providers {
            let at = || format!("models.providers.{name}");
            if provider.kind != ProviderKind::Mock && provider.base_url.is_empty() {
                return Err(Invalid::Empty {
                    setting: format!("{}.base_url", at()),
                });
            }
            if provider.api_key_env.is_some() && provider.api_key_file.is_some() {
                return Err(Invalid::Conflict {
                    at: at(),
                    rule: "set api_key_env or api_key_file, not both".into(),
                });
            }
        }
        for (id, model) in &self.catalog {
            let at = || format!("models.catalog.{id}");
            if !self.providers.contains_key(&model.provider) {
                return Err(Invalid::UnknownReference {
                    at: at(),
                    what: "provider",
                    name: model.provider.clone(),
                    list: "models.providers",
                });
            }
            let prices = [
                model.prompt_usd_per_million,
                model.completion_usd_per_million,
            ];
            if prices.iter().any(|p| !(p.is_finite() && *p >= 0.0)) {
                return Err(Invalid::Malformed {
                    at: at(),
                    rule: "prices must be non-negative numbers".into(),
                });
            }
        }
        if let Some(policy) = &self.default_routing {
            self.validate_policy("models.default_routing", policy)?;
        }
        if self.circuit_breaker.failure_threshold == 0 {
            return Err(Invalid::TooSmall {
                setting: "models.circuit_breaker.failure_threshold".into(),
                min: 1,
            });
        }
        Ok(())
    }

    /// Checks a routing policy (the default, or tenant's own) against this
    /// catalog; `at` says whose policy it is in the error.
    pub fn validate_policy(&self, at: &str, policy: &RoutingPolicyConfig) -> Result<(), Invalid> {
        let mut seen = HashSet::new();
        for candidate in &policy.candidates {
            if !self.catalog.contains_key(&candidate.model) {
                return Err(Invalid::UnknownReference {
                    at: at.to_owned(),
                    what: "candidate",
                    name: candidate.model.clone(),
                    list: "models.catalog",
                });
            }
            if !seen.insert(&candidate.model) {
                return Err(Invalid::Duplicate {
                    at: at.to_owned(),
                    what: "candidate",
                    name: candidate.model.clone(),
                });
            }
        }
        if let Some(unknown) = policy
            .allowed_models
            .iter()
            .find(|m| !self.catalog.contains_key(m.as_str()))
        {
            return Err(Invalid::UnknownReference {
                at: at.to_owned(),
                what: "allowed model",
                name: unknown.clone(),
                list: "models.catalog",
            });
        }
        if !policy.candidates.is_empty() && policy.candidates.iter().all(|c| c.weight == 0) {
            return Err(Invalid::Malformed {
                at: at.to_owned(),
                rule: "at least one candidate needs a weight above 0".into(),
            });
        }
        for (name, value) in [
            ("first_token_timeout_ms", policy.first_token_timeout_ms),
            ("stall_timeout_ms", policy.stall_timeout_ms),
            ("deadline_ms", policy.deadline_ms),
            ("max_tokens", u64::from(policy.max_tokens)),
        ] {
            if value == 0 {
                return Err(Invalid::TooSmall {
                    setting: format!("{at}: {name}"),
                    min: 1,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
providers:
  openai: {kind: openai, base_url: "https://api.openai.com/v1", api_key_env: OPENAI_API_KEY}
  claude: {kind: anthropic, base_url: "https://api.anthropic.com", api_key_file: /run/secrets/anthropic}
catalog:
  gpt-4o-mini: {provider: openai, prompt_usd_per_million: 0.15, completion_usd_per_million: 0.6}
  haiku: {provider: claude, model: claude-haiku-4-5}
default_routing:
  candidates: [{model: gpt-4o-mini, weight: 3}, {model: haiku}]
"#;

    #[test]
    fn parses_and_validates_a_catalog() {
        let config: ModelsConfig = serde_yaml_ng::from_str(YAML).unwrap();
        config.validate().unwrap();
        let policy = config.default_routing.as_ref().unwrap();
        assert_eq!(policy.candidates[0].weight, 3);
        assert_eq!(policy.candidates[1].weight, 1);
        assert_eq!(policy.max_tokens, 4096);
    }

    #[test]
    fn rejects_dangling_references_with_a_reason() {
        let mut config: ModelsConfig = serde_yaml_ng::from_str(YAML).unwrap();
        config.catalog.get_mut("haiku").unwrap().provider = "nope".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("\"nope\"")
        );

        let config: ModelsConfig = serde_yaml_ng::from_str(YAML).unwrap();
        let mut policy = config.default_routing.clone().unwrap();
        policy.candidates[0].model = "gpt-5".into();
        let err = config
            .validate_policy("tenant acme", &policy)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gpt-5") && err.contains("tenant acme"),
            "{err}"
        );
    }
}
