//! `chatstream-loadtest`: drives a chatstream gateway over WebSocket, gRPC
//! or the OpenAI-compatible HTTP API (or, as a baseline, a Kafka topic with
//! a raw producer), measures ack latency, time to first token and completion latency
//! with HdrHistogram, and gates deployments on SLO thresholds.
mod cli;
mod connection;
mod driver;
mod gate;
mod grpc_client;
mod idle;
mod kafka_client;
mod openai_client;
mod plot;
mod progress;
mod protocol;
mod report;
mod run;
mod run_config;
mod schedule;
mod server_memory;
mod stats;
mod ws_client;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes, as documented in `--help`.
const EXIT_INTERNAL: u8 = 1;
const EXIT_USAGE_OR_CONNECT: u8 = 2;
const EXIT_GATE_BREACHED: u8 = 3;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_USAGE_OR_CONNECT);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let (json_out, plot_out) = (config.json_out.clone(), config.plot_out.clone());
    let report = match runtime.block_on(run::run(config)) {
        Ok(report) => report,
        Err(error) if error.is::<run::CannotConnect>() => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_USAGE_OR_CONNECT);
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json_out {
        if let Err(error) = report.write_json(&path) {
            eprintln!("error: {error:#}");
            return ExitCode::from(EXIT_INTERNAL);
        }
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = plot_out {
        if let Err(error) = std::fs::write(&path, plot::render(&report)) {
            eprintln!("error: cannot write {}: {error}", path.display());
            return ExitCode::from(EXIT_INTERNAL);
        }
        eprintln!("wrote {}", path.display());
    }
    if report.gates.passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("SLO gate breached:");
        for message in &report.gates.messages {
            eprintln!("  {message}");
        }
        ExitCode::from(EXIT_GATE_BREACHED)
    }
}
