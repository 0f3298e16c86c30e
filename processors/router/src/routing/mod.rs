//! Model routing: the catalog, each tenant's policy and budget, and one
//! circuit breaker per provider endpoint, shared by every turn.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chatstream_config::models::{ModelsConfig, RoutingCandidate, RoutingPolicyConfig};
use chatstream_config::tenants::Tenant;

use crate::model::ChatModel;
use crate::providers::{CatalogEntry, Price};

pub mod breaker;
pub mod policy;
pub mod retry;
pub mod turn;

use breaker::CircuitBreaker;

/// What the router knows about a tenant.
#[derive(Debug, Clone, Default)]
struct TenantRouting {
    policy: Option<RoutingPolicyConfig>,
    monthly_token_budget: Option<u64>,
}

#[derive(Debug)]
pub struct Routing {
    catalog: HashMap<String, CatalogEntry>,
    default_policy: Option<RoutingPolicyConfig>,
    tenants: HashMap<String, TenantRouting>,
    breakers: HashMap<String, Arc<CircuitBreaker>>,
}

impl Routing {
    /// Checks every tenant's policy against the catalog.
    pub fn new(
        config: &ModelsConfig,
        catalog: HashMap<String, CatalogEntry>,
        tenants: &[Arc<Tenant>],
    ) -> Result<Self, String> {
        let breaker = &config.circuit_breaker;
        let breakers = catalog
            .values()
            .map(|entry| {
                let breaker = CircuitBreaker::new(
                    breaker.failure_threshold,
                    Duration::from_millis(breaker.open_ms),
                );
                (entry.provider.clone(), breaker)
            })
            .collect();
        let mut by_tenant = HashMap::new();
        for tenant in tenants {
            if let Some(policy) = &tenant.routing {
                config
                    .validate_policy(&format!("tenant {:?} routing", tenant.id), policy)
                    .map_err(|invalid| invalid.to_string())?;
            }
            by_tenant.insert(
                tenant.id.clone(),
                TenantRouting {
                    policy: tenant.routing.clone(),
                    monthly_token_budget: tenant.limits.monthly_token_budget,
                },
            );
        }
        Ok(Self {
            catalog,
            default_policy: config.default_routing.clone(),
            tenants: by_tenant,
            breakers,
        })
    }

    /// Every tenant answered by one model with the default policy: the
    /// built-in mock of `chatstream dev`.
    pub fn single(model: Arc<dyn ChatModel>) -> Self {
        let name = model.name().to_owned();
        let entry = CatalogEntry {
            id: name.clone(),
            provider: name.clone(),
            provider_model: String::new(),
            model,
            price: Price::default(),
        };
        let policy = RoutingPolicyConfig {
            candidates: vec![RoutingCandidate {
                model: name.clone(),
                weight: 1,
            }],
            // The mock's replies echo the message: never cut them short.
            max_tokens: u32::MAX,
            ..Default::default()
        };
        let config = ModelsConfig::default();
        let breaker = CircuitBreaker::new(
            config.circuit_breaker.failure_threshold,
            Duration::from_millis(config.circuit_breaker.open_ms),
        );
        Self {
            catalog: HashMap::from([(name.clone(), entry)]),
            default_policy: Some(policy),
            tenants: HashMap::new(),
            breakers: HashMap::from([(name, breaker)]),
        }
    }

    /// The tenant's policy, else the platform default.
    pub fn policy_for(&self, tenant_id: &str) -> Option<&RoutingPolicyConfig> {
        self.tenants
            .get(tenant_id)
            .and_then(|t| t.policy.as_ref())
            .or(self.default_policy.as_ref())
    }

    pub fn monthly_budget(&self, tenant_id: &str) -> Option<u64> {
        self.tenants
            .get(tenant_id)
            .and_then(|t| t.monthly_token_budget)
    }

    pub fn entry(&self, model: &str) -> Option<&CatalogEntry> {
        self.catalog.get(model)
    }

    /// The breaker of a provider endpoint (for tests and metrics).
    pub fn breaker(&self, provider: &str) -> Option<&Arc<CircuitBreaker>> {
        self.breakers.get(provider)
    }
}
