//! `chatstream schema apply`: creates or migrates the ScyllaDB keyspace and
//! tables of the projection store. Safe to run again (every statement is
//! `IF NOT EXISTS`), so deployments run it before each rollout.
use anyhow::Context;
use chatstream_config::Config;
use chatstream_scylla::{ScyllaStore, ScyllaStoreConfig};
use clap::{Args, Subcommand};

use crate::ConfigFile;

#[derive(Args, Debug)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Create the keyspace and tables, or add what a newer version needs.
    Apply(ApplyArgs),
}

/// Flags win over environment variables (`SCYLLA_NODES`,
/// `CHATSTREAM_SCYLLA_*`), which win over `chatstream.yaml`.
#[derive(Args, Debug)]
struct ApplyArgs {
    #[command(flatten)]
    config: ConfigFile,
    /// Comma-separated `host:port` contact points.
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// The keyspace to create or migrate.
    #[arg(long)]
    keyspace: Option<String>,
    /// Replicas per datacenter, `DC=N` (repeatable): NetworkTopologyStrategy.
    #[arg(long = "replication", value_parser = parse_datacenter_factor, conflicts_with = "replication_factor")]
    replication: Vec<(String, u32)>,
    /// One replication factor for the whole cluster: SimpleStrategy (a
    /// single datacenter or a development cluster).
    #[arg(long)]
    replication_factor: Option<u32>,
    /// Do not wait for every node to agree on the schema: only for a
    /// single-node test server that has no peers table.
    #[arg(long)]
    no_await_schema_agreement: bool,
}

pub fn run(args: SchemaArgs) -> anyhow::Result<()> {
    let SchemaCommand::Apply(apply_args) = args.command;
    let config = apply_args
        .config
        .load(|config| apply_args.apply_flags(config))?;
    let store_config = ScyllaStoreConfig::from_config(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(ScyllaStore::apply_schema(&store_config))
        .with_context(|| {
            format!(
                "cannot apply the schema of keyspace {} on {}",
                store_config.keyspace,
                store_config.known_nodes.join(",")
            )
        })?;
    println!(
        "schema of keyspace {} is up to date on {} ({} statements, each safe to run again)",
        report.keyspace,
        store_config.known_nodes.join(","),
        report.statements.len()
    );
    Ok(())
}

impl ApplyArgs {
    /// These flags over the config's `scylla` section.
    fn apply_flags(&self, config: &mut Config) {
        let scylla = &mut config.scylla;
        if !self.nodes.is_empty() {
            scylla.nodes = self.nodes.clone();
        }
        if let Some(keyspace) = &self.keyspace {
            scylla.keyspace = keyspace.clone();
        }
        if !self.replication.is_empty() {
            scylla.datacenters = self.replication.iter().cloned().collect();
        }
        // One factor means SimpleStrategy, which a datacenter list would override.
        if let Some(replication_factor) = self.replication_factor {
            scylla.replication_factor = replication_factor;
            scylla.datacenters.clear();
        }
        if self.no_await_schema_agreement {
            scylla.await_schema_agreement = false;
        }
    }
}

fn parse_datacenter_factor(value: &str) -> Result<(String, u32), String> {
    let (datacenter, factor) = value
        .split_once('=')
        .ok_or_else(|| format!("expected DC=N, got {value:?}"))?;
    let factor = factor
        .trim()
        .parse()
        .map_err(|_| format!("the replication factor of {datacenter:?} must be a number"))?;
    Ok((datacenter.trim().to_owned(), factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datacenter_factors_parse() {
        assert_eq!(parse_datacenter_factor("dc1=3"), Ok(("dc1".to_owned(), 3)));
        assert!(parse_datacenter_factor("dc1").is_err());
        assert!(parse_datacenter_factor("dc1=three").is_err());
    }
}
