//! Tenants and their API keys, loaded from a YAML file. Keys are stored only
//! as SHA-256 hashes: keys are 256-bit random secrets, so a fast hash is
//! enough, and a leaked tenants file does not leak a usable key.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Invalid, TenantsError, TenantsFileError};

/// The tenants file as written on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    pub tenants: Vec<TenantConfig>,
    /// Keys of the platform's operators: they read any tenant's analytics
    /// (naming the tenant) and cannot chat. None when absent.
    #[serde(default)]
    pub operator_keys: Vec<ApiKeyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub limits: TenantLimits,
    /// The tenant's own MCP servers; no tools when absent.
    #[serde(default)]
    pub mcp_servers: Vec<crate::mcp::McpServerConfig>,
    /// The tenant's own routing policy; the platform default when absent.
    #[serde(default)]
    pub routing: Option<crate::models::RoutingPolicyConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for the key that may appear in logs and events (never the secret).
    pub id: String,
    /// Hex SHA-256 of the key, as printed by `chatstream keygen`.
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// Largest user message in bytes; the platform default when absent.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Sustained sends and opens per second; the platform default when absent.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Requests allowed at once on top of the sustained rate; the platform
    /// default when absent.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Open WebSocket and gRPC `Converse` connections at once, across
    /// every gateway; the platform default when absent.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Model tokens (prompt and completion) per calendar month (UTC);
    /// unlimited when absent.
    #[serde(default)]
    pub monthly_token_budget: Option<u64>,
}

impl TenantLimits {
    fn validate(&self) -> Result<(), Invalid> {
        if self
            .requests_per_second
            .is_some_and(|rate| !(rate.is_finite() && rate > 0.0))
        {
            return Err(Invalid::NotPositive {
                setting: "requests_per_second".into(),
            });
        }
        if self.burst == Some(0) {
            return Err(Invalid::TooSmall {
                setting: "burst".into(),
                min: 1,
            });
        }
        Ok(())
    }
}

/// A tenant as the platform uses it at runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub limits: TenantLimits,
    pub mcp_servers: Vec<crate::mcp::McpServerConfig>,
    pub routing: Option<crate::models::RoutingPolicyConfig>,
}

/// Who is calling: the tenant and the key it authenticated with.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Arc<Tenant>,
    pub key_id: String,
}

/// An operator, known by the id of the key it authenticated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub key_id: String,
}

/// Every tenant, indexed by the hash of each of its API keys, and the
/// operators' keys.
#[derive(Debug, Default)]
pub struct TenantRegistry {
    by_key_hash: HashMap<[u8; 32], Principal>,
    operators_by_key_hash: HashMap<[u8; 32], Operator>,
    tenants: Vec<Arc<Tenant>>,
}

impl TenantRegistry {
    pub fn load(path: &Path) -> Result<Self, TenantsError> {
        let text = std::fs::read_to_string(path).map_err(|error| TenantsError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text).map_err(|reason| TenantsError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and validates the YAML text of a tenants file.
    pub fn parse(yaml: &str) -> Result<Self, TenantsFileError> {
        let file: TenantsFile = serde_yaml_ng::from_str(yaml).map_err(TenantsFileError::Yaml)?;
        Ok(Self::from_file(file)?)
    }

    pub fn from_file(file: TenantsFile) -> Result<Self, Invalid> {
        let mut registry = Self::default();
        let mut tenant_ids = HashSet::new();
        for config in file.tenants {
            validate_tenant_id(&config.id)?;
            if !tenant_ids.insert(config.id.clone()) {
                return Err(Invalid::Duplicate {
                    at: "tenants".into(),
                    what: "tenant",
                    name: config.id,
                });
            }
            config
                .limits
                .validate()
                .and_then(|()| crate::mcp::validate_mcp_servers(&config.mcp_servers))
                .map_err(|invalid| invalid.in_tenant(&config.id))?;
            if config.api_keys.is_empty() {
                return Err(Invalid::Empty {
                    setting: "api_keys".into(),
                }
                .in_tenant(&config.id));
            }
            let tenant = Arc::new(Tenant {
                id: config.id.clone(),
                name: config.name.clone(),
                limits: config.limits.clone(),
                mcp_servers: config.mcp_servers.clone(),
                routing: config.routing.clone(),
            });
            for key in &config.api_keys {
                let hash = parse_key_hash(&key.sha256).map_err(|rule| {
                    Invalid::Malformed {
                        at: format!("key {:?}", key.id),
                        rule: rule.into(),
                    }
                    .in_tenant(&config.id)
                })?;
                let principal = Principal {
                    tenant: tenant.clone(),
                    key_id: key.id.clone(),
                };
                if registry.by_key_hash.insert(hash, principal).is_some() {
                    return Err(Invalid::Conflict {
                        at: format!("key {:?}", key.id),
                        rule: "has the same hash as another key".into(),
                    }
                    .in_tenant(&config.id));
                }
            }
            registry.tenants.push(tenant);
        }
        for key in &file.operator_keys {
            let at = || format!("operator_keys: key {:?}", key.id);
            let hash = parse_key_hash(&key.sha256).map_err(|rule| Invalid::Malformed {
                at: at(),
                rule: rule.into(),
            })?;
            let operator = Operator {
                key_id: key.id.clone(),
            };
            if registry.by_key_hash.contains_key(&hash)
                || registry
                    .operators_by_key_hash
                    .insert(hash, operator)
                    .is_some()
            {
                return Err(Invalid::Conflict {
                    at: at(),
                    rule: "has the same hash as another key".into(),
                });
            }
        }
        Ok(registry)
    }

    /// The principal an API key belongs to, or `None` for an unknown key.
    pub fn authenticate(&self, api_key: &str) -> Option<Principal> {
        self.by_key_hash.get(&hash_bytes(api_key)).cloned()
    }

    /// The operator an operator key belongs to, or `None` (a tenant's key
    /// is not an operator's).
    pub fn authenticate_operator(&self, api_key: &str) -> Option<Operator> {
        self.operators_by_key_hash
            .get(&hash_bytes(api_key))
            .cloned()
    }

    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    pub fn tenant(&self, tenant_id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|tenant| tenant.id == tenant_id)
    }
}

/// Tenant ids go into log keys, table keys and metric labels: keep them plain.
fn validate_tenant_id(id: &str) -> Result<(), Invalid> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Invalid::Malformed {
            at: format!("tenant id {id:?}"),
            rule: "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_' or '.'".into(),
        })
    }
}

fn parse_key_hash(text: &str) -> Result<[u8; 32], &'static str> {
    const RULE: &str = "sha256 must be 64 hex characters";
    let bytes = hex::decode(text.trim()).map_err(|_| RULE)?;
    bytes.try_into().map_err(|_| RULE)
}

fn hash_bytes(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

/// Hex SHA-256 of an API key, the form the tenants file stores.
pub fn hash_api_key(api_key: &str) -> String {
    hex::encode(hash_bytes(api_key))
}

/// A new random API key: `cs_` and 256 random bits in hex.
pub fn generate_api_key() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("cs_{}", hex::encode(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml_with(key: &str) -> String {
        format!(
            "tenants:\n  - id: acme\n    api_keys:\n      - id: ci\n        sha256: {}\n    limits:\n      max_message_bytes: 10\n",
            hash_api_key(key)
        )
    }

    #[test]
    fn authenticates_known_keys_only() {
        let key = generate_api_key();
        let registry = TenantRegistry::parse(&yaml_with(&key)).unwrap();
        let principal = registry.authenticate(&key).expect("known key");
        assert_eq!(principal.tenant.id, "acme");
        assert_eq!(principal.key_id, "ci");
        assert_eq!(principal.tenant.limits.max_message_bytes, Some(10));
        assert!(registry.authenticate("cs_wrong").is_none());
        assert!(registry.authenticate("").is_none());
    }

    #[test]
    fn operator_keys_authenticate_as_operators_and_never_as_tenants() {
        let (tenant_key, operator_key) = (generate_api_key(), generate_api_key());
        let yaml = format!(
            "{}operator_keys:\n  - id: ops\n    sha256: {}\n",
            yaml_with(&tenant_key),
            hash_api_key(&operator_key)
        );
        let registry = TenantRegistry::parse(&yaml).unwrap();
        assert_eq!(
            registry.authenticate_operator(&operator_key),
            Some(Operator {
                key_id: "ops".into()
            })
        );
        assert!(registry.authenticate(&operator_key).is_none());
        assert!(registry.authenticate_operator(&tenant_key).is_none());

        let shared = format!(
            "{}operator_keys:\n  - id: ops\n    sha256: {}\n",
            yaml_with(&tenant_key),
            hash_api_key(&tenant_key)
        );
        let error = TenantRegistry::parse(&shared).unwrap_err().to_string();
        assert!(
            error.contains("operator_keys") && error.contains("same hash"),
            "{error}"
        );
    }

    #[test]
    fn rejects_bad_files_with_a_reason() {
        let err = TenantRegistry::parse("tenants:\n  - id: 'a b'\n    api_keys: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tenant id"), "{err}");
        let err = TenantRegistry::parse(
            "tenants:\n  - id: a\n    api_keys:\n      - id: k\n        sha256: xyz\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("64 hex"), "{err}");
        let doubled = format!(
            "{}{}",
            yaml_with("k1"),
            yaml_with("k2").replace("tenants:\n", "")
        );
        assert!(
            TenantRegistry::parse(&doubled)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
