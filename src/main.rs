//! The `chatstream` binary: one executable, one subcommand per role.
mod dev;
mod keygen;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    /// Print a new API key and the tenants-file entry that holds its hash.
    Keygen(keygen::KeygenArgs),
}

/// Flags win over environment variables, which win over `chatstream.yaml`.
#[derive(Args, Debug, Default)]
pub struct DevArgs {
    /// YAML config file (default: ./chatstream.yaml when present).
    #[arg(long, env = "CHATSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the log, the store and the dev tenant's key.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP and WebSocket port (env CHATSTREAM_HTTP_PORT).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// gRPC port (env CHATSTREAM_GRPC_PORT).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Tenants file; without it a `dev` tenant is created in the data dir.
    #[arg(long)]
    pub tenants: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args),
        Command::Keygen(args) => keygen::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
