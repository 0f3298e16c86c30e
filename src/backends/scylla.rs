//! The ScyllaDB projection store.
use std::sync::Arc;

use anyhow::Context;
use chatstream_config::Config;
use chatstream_core::store::ProjectionStore;
use chatstream_scylla::{ScyllaStore, ScyllaStoreConfig};

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ProjectionStore>> {
    let store_config = ScyllaStoreConfig::from_config(config)
        .context("the scylla section of the config is not valid")?;
    Ok(Arc::new(ScyllaStore::connect(store_config).await.context(
        "cannot connect to the ScyllaDB projection store (has `chatstream schema apply` run?)",
    )?))
}
