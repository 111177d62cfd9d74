//! `inlet-worker` binary: parse arguments, load config, bind, run until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

// glibc malloc showed up at ~13 % of ingest CPU under load (arena locks, consolidation);
// mimalloc's thread-local heaps remove most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inlet worker: records, routes, delivers.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The TOML configuration file shared with inlet-worker.
    #[arg(long, env = "INLET_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match inlet_shared::config::load_file(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("inlet-worker: invalid configuration: {error}");
            return ExitCode::from(64); // EX_USAGE
        }
    };
    if let Err(error) = inlet_shared::telemetry::init(&config.telemetry) {
        eprintln!("inlet-worker: {error}");
        return ExitCode::from(64);
    }
    let result = async {
        let listeners = inlet_worker::Listeners::bind(&config).await?;
        inlet_worker::run(config, listeners, inlet_shared::server::shutdown_on_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "inlet-worker failed");
            eprintln!("inlet-worker: {error:#}");
            ExitCode::FAILURE
        }
    }
}
