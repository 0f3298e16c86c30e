//! The `chatstream` binary: one executable, one subcommand per role.
mod analytics;
mod backends;
mod dev;
mod edge;
mod gateway_role;
mod keygen;
mod lifecycle;
mod probes;
mod processor_role;
mod processors;
#[cfg(feature = "scylla")]
mod schema;
mod tail;
mod telemetry;
#[cfg(feature = "kafka")]
mod topics;

use std::path::PathBuf;
use std::process::ExitCode;

use chatstream_config::{Config, LogBackend};
use clap::{Args, Parser, Subcommand};

// Every event, frame and delta allocates: glibc's malloc, free and
// consolidation took about 18% of the CPU of a 1,024-conversation run
// (perf, docs/performance.md). jemalloc took that away as well as mimalloc
// did and kept idle connections as small as glibc did (mimalloc: half
// again as much memory).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "chatstream",
    version,
    about = "Multi-tenant AI chat as an event-sourced stream processor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and every processor in one process on the embedded
    /// backends with the built-in mock model.
    Dev(DevArgs),
    /// Run the gateway alone (one replica of many) on Kafka, ScyllaDB and Redis.
    Gateway(ServeArgs),
    /// Run one processor kind alone (one replica of its consumer group) on
    /// Kafka, ScyllaDB and Redis.
    Processor(ProcessorArgs),
    /// Print a new API key and the tenants-file entry that holds its hash.
    Keygen(keygen::KeygenArgs),
    /// Read a tenant's usage or latency figures from the analytics store.
    Analytics(analytics::AnalyticsArgs),
    /// Print the events on the log (either backend), readable or as JSON Lines.
    Tail(tail::TailArgs),
    /// Create or describe the Kafka topics (events and dead letters).
    #[cfg(feature = "kafka")]
    Topics(topics::TopicsArgs),
    /// Create or migrate the ScyllaDB keyspace and tables (safe to run again).
    #[cfg(feature = "scylla")]
    Schema(schema::SchemaArgs),
}

/// Where the config comes from: the one `--config` flag, flattened into
/// every subcommand that reads the config.
#[derive(Args, Debug, Default)]
pub struct ConfigFile {
    /// YAML config file (default: ./chatstream.yaml when present).
    #[arg(long, env = "CHATSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigFile {
    /// Defaults, the file, the environment, then `flags` (so flags win);
    /// then every rule of every section, so a bad value stops the start.
    pub fn load(&self, flags: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), flags)?)
    }
}

/// Flags win over environment variables, which win over `chatstream.yaml`.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigFile,
    /// HTTP and WebSocket port (env CHATSTREAM_HTTP_PORT).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// gRPC port (env CHATSTREAM_GRPC_PORT).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Tenants file (env CHATSTREAM_TENANTS_FILE).
    #[arg(long)]
    pub tenants: Option<PathBuf>,
}

impl ServeArgs {
    /// The config with these flags, and then `more` flags, applied on top.
    pub fn load_config(&self, more: impl FnOnce(&mut Config)) -> anyhow::Result<Config> {
        self.config.load(|config| {
            if let Some(port) = self.http_port {
                config.server.http_port = port;
            }
            if let Some(port) = self.grpc_port {
                config.server.grpc_port = port;
            }
            if let Some(path) = &self.tenants {
                config.tenants_file = Some(path.clone());
            }
            more(config);
        })
    }
}

#[derive(Args, Debug, Default)]
pub struct DevArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Directory for the embedded log and store and the dev tenant's key.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where the event log lives: `embedded` (default) or `kafka`
    /// (KAFKA_BOOTSTRAP_SERVERS; the topic must exist: `chatstream topics create`).
    #[arg(long, value_parser = parse_log_backend)]
    pub log: Option<LogBackend>,
}

impl DevArgs {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        self.serve.load_config(|config| {
            if let Some(dir) = &self.data_dir {
                config.data_dir = dir.clone();
            }
            if let Some(log) = self.log {
                config.log.backend = log;
            }
        })
    }
}

#[derive(Args, Debug)]
pub struct ProcessorArgs {
    /// Which processor to run.
    #[arg(value_enum)]
    pub kind: processors::ProcessorKind,
    #[command(flatten)]
    pub config: ConfigFile,
    /// Port of the health, readiness and metrics endpoints (env CHATSTREAM_HTTP_PORT).
    #[arg(long)]
    pub http_port: Option<u16>,
}

impl ProcessorArgs {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        self.config.load(|config| {
            if let Some(port) = self.http_port {
                config.server.http_port = port;
            }
        })
    }
}

fn parse_log_backend(value: &str) -> Result<LogBackend, String> {
    match value {
        "embedded" => Ok(LogBackend::Embedded),
        "kafka" => Ok(LogBackend::Kafka),
        _ => Err("expected `embedded` or `kafka`".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Gateway(args) => gateway_role::run(args),
        Command::Processor(args) => processor_role::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Analytics(args) => analytics::run(args),
        Command::Tail(args) => tail::run(args),
        #[cfg(feature = "kafka")]
        Command::Topics(args) => topics::run(args),
        #[cfg(feature = "scylla")]
        Command::Schema(args) => schema::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
