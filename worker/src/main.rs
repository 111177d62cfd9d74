//! `inlet-worker` binary: parse arguments, load config, bind, run until SIGINT/SIGTERM; or,
//! with `copy-store`, copy the SQLite store into PostgreSQL and exit; or, with `backup`, copy
//! the SQLite store to a file while the worker runs, check the copy and exit; or, with
//! `backfill`, ask a source's provider for what it sent during an outage and exit.

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
    /// Ask a source's provider for what it sent since a time and recover what is not stored
    ///
    /// Stripe: events listed by its events API and not stored are published into the intake
    /// stream. GitHub: the hook's deliveries that never got a 2xx and are not stored are
    /// redelivered by GitHub. Needs the source's [[backfill]]; with SQLite, run it while the
    /// worker is stopped (or use the API's `backfill` mutation). Prints the counts. See
    /// docs/backfill.md.
    Backfill {
        /// The source's name.
        #[arg(long)]
        source: String,
        /// From when, RFC 3339 (e.g. 2026-12-03T09:00:00Z).
        #[arg(long, value_parser = rfc3339)]
        since: chrono::DateTime<chrono::FixedOffset>,
        /// Only count: publish nothing, request no redelivery, write no audit row.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `--since`: RFC 3339 only, so that a date without a time or a zone is refused, not guessed.
fn rfc3339(text: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, String> {
    chrono::DateTime::parse_from_rfc3339(text).map_err(|e| format!("not an RFC 3339 date-time ({e})"))
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
        Some(Command::Backfill { source, since, dry_run }) => {
            inlet_shared::server::binary_main("inlet-worker backfill", &config, |config, shutdown| async move {
                // Audited as who ran the command on which host.
                let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
                let actor = format!("command line ({user})");
                tokio::select! {
                    done = inlet_worker::backfill(&config, &source, since, dry_run, &actor) => {
                        let report = done?;
                        std::io::Write::write_all(&mut std::io::stdout().lock(), report.to_string().as_bytes())?;
                        Ok(())
                    }
                    () = shutdown.cancelled() => anyhow::bail!("interrupted: what was done is in the audit log"),
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
