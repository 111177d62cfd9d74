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
    /// The TOML configuration file shared with inlet-ingest.
    #[arg(long, env = "INLET_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    inlet_shared::server::binary_main("inlet-worker", &args.config, |config, shutdown| async move {
        let listeners = inlet_worker::Listeners::bind(&config).await?;
        inlet_worker::run(config, listeners, shutdown).await
    })
    .await
}
