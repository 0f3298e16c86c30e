//! Builds the router the binary runs from its config: the built-in mock
//! alone when no models are configured (`chatstream dev` out of the box),
//! else the catalog with the tenants' policies and budgets.
use std::sync::Arc;

use chatstream_config::models::ModelsConfig;
use chatstream_config::tenants::Tenant;
use chatstream_core::fanout::FanOut;
use chatstream_core::log::EventLog;
use chatstream_core::store::ProjectionStore;

use crate::ModelRouter;
use crate::mock::MockModel;
use crate::providers::build_catalog;
use crate::routing::Routing;

/// Fails with a message naming the bad setting (unknown model, missing
/// API key, ...), so a misconfigured router never starts. The binary's
/// config was checked at load; this checks again for callers that build
/// `models` themselves.
pub fn router_from_config(
    log: Arc<dyn EventLog>,
    store: Arc<dyn ProjectionStore>,
    fanout: Arc<dyn FanOut>,
    models: &ModelsConfig,
    mock: MockModel,
    tenants: &[Arc<Tenant>],
) -> Result<ModelRouter, String> {
    models.validate().map_err(|invalid| invalid.to_string())?;
    if models.catalog.is_empty() {
        return Ok(ModelRouter::new(log, store, fanout, Arc::new(mock)));
    }
    let catalog = build_catalog(models, &mock)?;
    let routing = Routing::new(models, catalog, tenants)?;
    Ok(ModelRouter::with_routing(
        log,
        store,
        fanout,
        Arc::new(routing),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chatstream_config::tenants::TenantRegistry;
    use chatstream_core::fanout::in_process::InProcessFanOut;
    use chatstream_core::log::embedded::EmbeddedLog;
    use chatstream_core::store::embedded::EmbeddedStore;

    use super::*;

    #[test]
    fn bad_configs_fail_with_a_reason_and_an_empty_one_runs_the_mock() {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(dir.path(), 1).unwrap());
        let store: Arc<dyn ProjectionStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let fanout: Arc<dyn FanOut> = Arc::new(InProcessFanOut::new());
        let build = |yaml: &str, tenants: &[Arc<Tenant>]| {
            let models: ModelsConfig = serde_yaml_ng::from_str(yaml).unwrap();
            let mock = MockModel::new(Duration::ZERO);
            router_from_config(
                log.clone(),
                store.clone(),
                fanout.clone(),
                &models,
                mock,
                tenants,
            )
            .map(|_| ())
        };
        build("{}", &[]).unwrap();
        let mocks = "providers: {m: {kind: mock}}\ncatalog: {fast: {provider: m}}\ndefault_routing: {candidates: [{model: fast}]}\n";
        build(mocks, &[]).unwrap();

        let registry = TenantRegistry::parse(&format!(
            "tenants:\n  - id: acme\n    api_keys: [{{id: k, sha256: {}}}]\n    routing: {{candidates: [{{model: slow}}]}}\n",
            chatstream_config::tenants::hash_api_key("k")
        ))
        .unwrap();
        let err = build(mocks, registry.tenants()).unwrap_err();
        assert!(
            err.contains("tenant \"acme\"") && err.contains("slow"),
            "{err}"
        );
        let err = build("providers: {m: {kind: mock}}\n", &[]).unwrap_err();
        assert!(err.contains("catalog is empty"), "{err}");
    }
}
