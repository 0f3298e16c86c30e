//! The gateway's analytics API, over HTTP (`http.rs`) and gRPC
//! (`grpc.rs`): a tenant key reads its own tenant's figures, an operator key
//! (`operator_keys` in the tenants file) any tenant's it names. Queries are
//! checked and answered by `chatstream_core::analytics::query`, so both
//! edges give the same answers.
use std::time::{SystemTime, UNIX_EPOCH};

use chatstream_config::tenants::TenantRegistry;

pub mod grpc;
pub mod http;

pub use http::routes;

/// Now, in Unix milliseconds: the default end of a query's range.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Why a caller may not read the figures it asked for.
#[derive(Debug, PartialEq, Eq)]
enum ScopeError {
    /// No key, or one nobody has.
    Unauthenticated,
    /// A tenant key naming another tenant.
    OtherTenant,
    /// An operator key naming no tenant.
    TenantRequired,
    /// An operator key naming a tenant that does not exist.
    UnknownTenant(String),
}

impl std::fmt::Display for ScopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthenticated => {
                f.write_str("a valid API key is required (Authorization: Bearer <key>)")
            }
            Self::OtherTenant => f.write_str("a tenant's key reads only its own tenant's figures"),
            Self::TenantRequired => f.write_str("an operator key must name the tenant (`tenant`)"),
            Self::UnknownTenant(tenant) => write!(f, "no tenant {tenant:?}"),
        }
    }
}

/// The tenant whose figures the holder of `key` reads, given the tenant it
/// named (if any).
fn tenant_in_scope(
    tenants: &TenantRegistry,
    key: Option<&str>,
    named: Option<&str>,
) -> Result<String, ScopeError> {
    let key = key.ok_or(ScopeError::Unauthenticated)?;
    if let Some(principal) = tenants.authenticate(key) {
        return match named {
            Some(named) if named != principal.tenant.id => Err(ScopeError::OtherTenant),
            _ => Ok(principal.tenant.id.clone()),
        };
    }
    if tenants.authenticate_operator(key).is_some() {
        let named = named.ok_or(ScopeError::TenantRequired)?;
        return match tenants.tenant(named) {
            Some(tenant) => Ok(tenant.id.clone()),
            None => Err(ScopeError::UnknownTenant(named.to_owned())),
        };
    }
    Err(ScopeError::Unauthenticated)
}

#[cfg(test)]
mod tests {
    use chatstream_config::tenants::{generate_api_key, hash_api_key};

    use super::*;

    struct Keys {
        acme: String,
        operator: String,
    }

    fn registry() -> (TenantRegistry, Keys) {
        let keys = Keys {
            acme: generate_api_key(),
            operator: generate_api_key(),
        };
        let globex = generate_api_key();
        let yaml = format!(
            "tenants:\n  - id: acme\n    api_keys: [{{id: a, sha256: {}}}]\n  - id: globex\n    api_keys: [{{id: g, sha256: {}}}]\noperator_keys: [{{id: ops, sha256: {}}}]\n",
            hash_api_key(&keys.acme),
            hash_api_key(&globex),
            hash_api_key(&keys.operator),
        );
        (TenantRegistry::parse(&yaml).unwrap(), keys)
    }

    #[test]
    fn a_tenant_key_reads_its_own_tenant_only() {
        let (tenants, keys) = registry();
        let acme = Some(keys.acme.as_str());
        assert_eq!(tenant_in_scope(&tenants, acme, None), Ok("acme".into()));
        assert_eq!(
            tenant_in_scope(&tenants, acme, Some("acme")),
            Ok("acme".into())
        );
        assert_eq!(
            tenant_in_scope(&tenants, acme, Some("globex")),
            Err(ScopeError::OtherTenant)
        );
    }

    #[test]
    fn an_operator_key_reads_any_tenant_it_names() {
        let (tenants, keys) = registry();
        let operator = Some(keys.operator.as_str());
        for tenant in ["acme", "globex"] {
            assert_eq!(
                tenant_in_scope(&tenants, operator, Some(tenant)),
                Ok(tenant.into())
            );
        }
        assert_eq!(
            tenant_in_scope(&tenants, operator, None),
            Err(ScopeError::TenantRequired)
        );
        assert_eq!(
            tenant_in_scope(&tenants, operator, Some("initech")),
            Err(ScopeError::UnknownTenant("initech".into()))
        );
    }

    #[test]
    fn no_key_or_an_unknown_one_reads_nothing() {
        let (tenants, _) = registry();
        for key in [None, Some("cs_unknown")] {
            assert_eq!(
                tenant_in_scope(&tenants, key, Some("acme")),
                Err(ScopeError::Unauthenticated)
            );
        }
    }
}
