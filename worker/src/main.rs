//! `inlet-worker` binary: parse arguments, load config, bind, run until SIGINT/SIGTERM; or,
//! with `copy-store`, copy the SQLite store into PostgreSQL and exit; or, with `backup`, copy
//! the SQLite store to a file while the worker runs, check the copy and exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

// glibc malloc showed up at ~13 % of ingest CPU under load (arena locks, consolidation);
// mimalloc's thread-local heaps remove most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inlet worker: records, routes, delivers.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The TOML configuration file shared with inlet-ingest.
    // Optional for clap only so that it can be global (clap refuses a required global
    // argument): `inlet-worker --config x` and `inlet-worker copy-store --config x` both work;
    // its absence is reported below as clap would.
    #[arg(long, env = "INLET_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Copy the SQLite store into PostgreSQL, keeping every id, then exit
    ///
    /// Copies `worker.database` into the empty PostgreSQL database of `[store] url`. Stop the
    /// worker first; write the configuration the workers will run with on PostgreSQL
    /// (`[store] backend = "postgres"`) and pass it with --config. See docs/operations.md,
    /// "Moving from SQLite to PostgreSQL".
    // One --config rather than --from/--to flags: the command reads both ends from the very
    // file the workers start with afterwards (nothing retyped, nothing to mismatch), and the
    // URL, which may hold a password, comes through `{ env = "…" }` as for the worker: never
    // on the command line (shell history, `ps`) and never printed.
    CopyStore,
    /// Copy the SQLite store to a new file while the worker runs, check the copy, then exit
    ///
    /// Takes a consistent copy of `worker.database` (one read transaction: the worker keeps
    /// recording and delivering), checks it (integrity, foreign keys, counts), syncs it and
    /// prints what it holds. Never replaces a file. A worker started on the restored copy
    /// records the intake stream again from where the copy ends. See docs/operations.md,
    /// "Backing up and restoring SQLite".
    Backup {
        /// The file to write; must not exist.
        #[arg(long)]
        to: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Some(config) = args.config else {
        Args::command()
            .error(clap::error::ErrorKind::MissingRequiredArgument, "--config <CONFIG> (or INLET_CONFIG) is required")
            .exit()
    };
    match args.command {
        None => {
            inlet_shared::server::binary_main("inlet-worker", &config, |config, shutdown| async move {
                let listeners = inlet_worker::Listeners::bind(&config).await?;
                inlet_worker::run(config, listeners, shutdown).await
            })
            .await
        }
        Some(Command::CopyStore) => {
            inlet_shared::server::binary_main("inlet-worker copy-store", &config, |config, shutdown| async move {
                tokio::select! {
                    copied = inlet_worker::copy_store(&config) => {
                        // The summary is the command's output (logs are separate lines): on stdout,
                        // with a failed write (a closed pipe) reported, not ignored.
                        let summary = copied?;
                        std::io::Write::write_all(&mut std::io::stdout().lock(), summary.to_string().as_bytes())?;
                        Ok(())
                    }
                    // The copy is one transaction: dropping it rolls everything back.
                    () = shutdown.cancelled() => anyhow::bail!("interrupted: nothing was copied"),
                }
            })
            .await
        }
        Some(Command::Backup { to }) => {
            inlet_shared::server::binary_main("inlet-worker backup", &config, |config, shutdown| async move {
                let summary = inlet_worker::backup_store(&config, &to, shutdown).await?;
                std::io::Write::write_all(&mut std::io::stdout().lock(), summary.to_string().as_bytes())?;
                Ok(())
            })
            .await
        }
    }
}
