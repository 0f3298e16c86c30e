//! The ScyllaDB projection store and analytics store.
use std::sync::Arc;

use anyhow::Context;
use chatstream_config::Config;
use chatstream_core::analytics::AnalyticsStore;
use chatstream_core::store::ProjectionStore;
use chatstream_scylla::{ScyllaAnalytics, ScyllaStore, ScyllaStoreConfig};

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn ProjectionStore>> {
    let store_config = ScyllaStoreConfig::from_config(config)
        .context("the scylla section of the config is not valid")?;
    Ok(Arc::new(ScyllaStore::connect(store_config).await.context(
        "cannot connect to the ScyllaDB projection store (has `chatstream schema apply` run?)",
    )?))
}

pub async fn open_analytics(config: &Config) -> anyhow::Result<Arc<dyn AnalyticsStore>> {
    let store_config = ScyllaStoreConfig::from_config(config)
        .context("the scylla section of the config is not valid")?;
    let store = ScyllaStore::connect(store_config).await.context(
        "cannot connect to the ScyllaDB analytics store (has `chatstream schema apply` run?)",
    )?;
    Ok(Arc::new(ScyllaAnalytics::new(&store).await.context(
        "cannot prepare the ScyllaDB analytics store (has `chatstream schema apply` run?)",
    )?))
}
