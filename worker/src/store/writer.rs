//! The single writer: one thread, one connection, queued commands coalesced into one
//! `BEGIN IMMEDIATE … COMMIT` (group commit), each command in its own savepoint, every answer
//! sent after the commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Transaction;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::deliveries::{AttemptRecord, AttemptSettled, record_attempt};
use super::events::{NewEvent, RecordedRow, prune, record_events};
use super::search::index_pending;
use super::wal::restart_wal_if_wanted;
use crate::model::UnixMs;

/// What the writer is asked to do: the data plane's hot writes have their own variants (no
/// boxing); anything else is a [`WriteJob`].
pub(super) enum Command {
    Record {
        events: Vec<NewEvent>,
        /// Until when the new deliveries are claimed by this process, Unix ms.
        claims: std::sync::Arc<super::events::FirstClaims>,
        reply: oneshot::Sender<Result<Vec<RecordedRow>, StoreError>>,
    },
    Attempt {
        record: AttemptRecord,
        reply: oneshot::Sender<Result<AttemptSettled, StoreError>>,
    },
    Prune {
        cutoff: UnixMs,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Any other write (the operator plane's): runs in the group's transaction, in its own
    /// savepoint, and answers after the commit.
    Write(Box<dyn WriteJob>),
}

/// A write job that ran in the group's transaction.
pub(super) struct Ran {
    /// Answers once the commit's outcome is known (`true`: committed).
    answer: Box<dyn FnOnce(bool) + Send>,
    /// Why it failed, when the database cannot take writes (see [`storage_failure`]).
    storage_failure: Option<String>,
}

/// A typed write travelling through the writer queue.
pub(super) trait WriteJob: Send {
    /// Runs the work; returns how to answer once the commit's outcome is known.
    fn run(self: Box<Self>, transaction: &Transaction<'_>) -> Ran;
    /// Answers without running (the transaction could not begin).
    fn fail(self: Box<Self>);
}

pub(super) struct TypedWrite<T, F> {
    pub(super) work: F,
    pub(super) reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteJob for TypedWrite<T, F>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error> + Send + 'static,
{
    fn run(self: Box<Self>, transaction: &Transaction<'_>) -> Ran {
        let TypedWrite { work, reply } = *self;
        let result = in_savepoint(transaction, work);
        let storage_failure = storage_failure(&result);
        Ran {
            answer: Box::new(move |committed| {
                let _ = reply.send(settled(committed, result));
            }),
            storage_failure,
        }
    }

    fn fail(self: Box<Self>) {
        let _ = self.reply.send(Err(StoreError::NotCommitted));
    }
}

/// Most commands coalesced into one transaction.
const MAX_GROUP: usize = 512;

/// Events indexed for search per indexing transaction: small, so a group that arrives meanwhile
/// waits for one short transaction at most.
const INDEX_BATCH: usize = 64;

/// Under steady load the queue is never empty: a batch is indexed at least this often anyway.
const INDEX_AT_LEAST_EVERY: Duration = Duration::from_millis(200);

pub(super) fn writer_loop(
    mut connection: r2d2::PooledConnection<SqliteConnectionManager>,
    mut receiver: mpsc::Receiver<Command>,
    failing: &AtomicBool,
    wal_restart: &AtomicBool,
) {
    // The search index follows recording (`store/search.rs`): whenever the queue is empty, and
    // at least every INDEX_AT_LEAST_EVERY, a batch of the events not indexed yet. At startup some
    // may be left (the migration that brought search, or a stop before the index caught up).
    let mut index_behind = true;
    let mut indexed_at = Instant::now();
    loop {
        let first = if index_behind {
            match receiver.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Empty) => {
                    (index_behind, indexed_at) = (index_search(&mut connection), Instant::now());
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            match receiver.blocking_recv() {
                Some(command) => command,
                None => break,
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        index_behind |= group.iter().any(|command| matches!(command, Command::Record { .. }));
        let committed = execute_group(&mut connection, group);
        failing.store(!committed, Ordering::SeqCst);
        if index_behind && indexed_at.elapsed() >= INDEX_AT_LEAST_EVERY {
            (index_behind, indexed_at) = (index_search(&mut connection), Instant::now());
        }
        restart_wal_if_wanted(&connection, wal_restart);
    }
    tracing::info!("database writer stopped");
}

/// Indexes a batch of events for search in a transaction of its own; returns whether more are left.
/// A failure is logged and indexing waits for the next recorded group (the events stay, and a
/// search reads the ones not indexed directly).
fn index_search(connection: &mut rusqlite::Connection) -> bool {
    let indexed = connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).and_then(|t| {
        let indexed = index_pending(&t, INDEX_BATCH)?;
        t.commit()?;
        Ok(indexed)
    });
    match indexed {
        Ok(indexed) => indexed == INDEX_BATCH,
        Err(error) => {
            tracing::warn!(%error, "could not index events for search; trying again after the next recording");
            false
        }
    }
}

/// Runs every command of the group in one transaction; answers after the commit. Returns
/// whether the transaction committed.
pub(super) fn execute_group(connection: &mut rusqlite::Connection, group: Vec<Command>) -> bool {
    let group_started = std::time::Instant::now();
    enum Answer {
        Record(oneshot::Sender<Result<Vec<RecordedRow>, StoreError>>, Result<Vec<RecordedRow>, rusqlite::Error>),
        Attempt(oneshot::Sender<Result<AttemptSettled, StoreError>>, Result<AttemptSettled, rusqlite::Error>),
        Prune(oneshot::Sender<Result<usize, StoreError>>, Result<usize, rusqlite::Error>),
        Write(Box<dyn FnOnce(bool) + Send>),
    }
    let transaction = match connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            tracing::error!(%error, "cannot begin write transaction");
            fail_all(group);
            return false;
        }
    };
    let now = UnixMs::now();
    let mut answers = Vec::with_capacity(group.len());
    let mut commands = group.into_iter();
    // Why the group cannot commit, once a command found the database unable to take writes.
    let mut aborted: Option<String> = None;
    for command in commands.by_ref() {
        // Each command runs inside a savepoint so one failing command does not take the
        // others' writes with it.
        let failure = match command {
            Command::Record { events, claims, reply } => {
                let result = in_savepoint(&transaction, |tx| record_events(tx, &events, now, &claims));
                let failure = storage_failure(&result);
                answers.push(Answer::Record(reply, result));
                failure
            }
            Command::Attempt { record, reply } => {
                let result = in_savepoint(&transaction, |tx| record_attempt(tx, &record, now));
                let failure = storage_failure(&result);
                answers.push(Answer::Attempt(reply, result));
                failure
            }
            Command::Prune { cutoff, reply } => {
                let result = in_savepoint(&transaction, |tx| prune(tx, cutoff));
                let failure = storage_failure(&result);
                answers.push(Answer::Prune(reply, result));
                failure
            }
            Command::Write(job) => {
                let ran = job.run(&transaction);
                answers.push(Answer::Write(ran.answer));
                ran.storage_failure
            }
        };
        // After some disk-full and I/O errors SQLite rolls the whole transaction back by itself;
        // the next commands would then run outside it, each committing alone while the group is
        // answered as failed. And when SQLite undid only the statement, the commit would fail
        // the same way or, worse, succeed with the failure unreported to readiness. Either way
        // the group stops here and is rolled back: every command of it is retried.
        aborted = failure.or_else(|| transaction.is_autocommit().then(|| "SQLite rolled the transaction back".into()));
        if aborted.is_some() {
            break;
        }
    }
    let skipped: Vec<Command> = commands.collect();
    let committed = match &aborted {
        Some(reason) => {
            tracing::error!(
                error = %reason,
                skipped = skipped.len(),
                "a write failed because the database cannot take writes; nothing of this group is recorded"
            );
            // Already gone when SQLite rolled it back itself; nothing to report then.
            let _ = transaction.rollback();
            false
        }
        None => {
            let commit_started = std::time::Instant::now();
            let committed = transaction.commit();
            metrics::histogram!(crate::metric_names::DB_COMMIT).record(commit_started.elapsed().as_secs_f64());
            if let Err(error) = &committed {
                tracing::error!(%error, "write transaction failed to commit; nothing of this group is recorded");
            }
            committed.is_ok()
        }
    };
    metrics::histogram!(crate::metric_names::DB_GROUP).record(answers.len() as f64);
    metrics::histogram!(crate::metric_names::DB_GROUP_DURATION).record(group_started.elapsed().as_secs_f64());
    for answer in answers {
        // A receiver that went away (cancelled caller) is fine to ignore: the write stands.
        match answer {
            Answer::Record(reply, result) => {
                let _ = reply.send(settled(committed, result));
            }
            Answer::Attempt(reply, result) => {
                let _ = reply.send(settled(committed, result));
            }
            Answer::Prune(reply, result) => {
                let _ = reply.send(settled(committed, result));
            }
            Answer::Write(answer) => answer(committed),
        }
    }
    fail_all(skipped);
    committed
}

/// A command's answer once the group's outcome is known: its own error when it had one (the
/// most precise cause), else [`StoreError::NotCommitted`] when the group did not commit.
fn settled<T>(committed: bool, result: Result<T, rusqlite::Error>) -> Result<T, StoreError> {
    match result {
        Ok(_) if !committed => Err(StoreError::NotCommitted),
        result => result.map_err(Into::into),
    }
}

/// The error's text when it says the database cannot take writes now (disk full, I/O error,
/// locked, out of memory, read-only, corrupt), as opposed to a failure of the command itself
/// (a constraint, a missing row), which only undoes that command.
fn storage_failure<T>(result: &Result<T, rusqlite::Error>) -> Option<String> {
    use rusqlite::ErrorCode;
    let error = result.as_ref().err()?;
    matches!(
        error.sqlite_error_code()?,
        ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::DatabaseCorrupt
    )
    .then(|| error.to_string())
}

fn in_savepoint<T>(
    transaction: &Transaction<'_>,
    work: impl FnOnce(&rusqlite::Connection) -> Result<T, rusqlite::Error>,
) -> Result<T, rusqlite::Error> {
    // Cached statements: a group runs hundreds of these, and parsing showed in profiles.
    transaction.prepare_cached("SAVEPOINT command")?.execute([])?;
    match work(transaction) {
        Ok(value) => {
            transaction.prepare_cached("RELEASE command")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            let _ = transaction.execute_batch("ROLLBACK TO command; RELEASE command");
            Err(error)
        }
    }
}

/// Answers commands that did not run: nothing of them is stored.
fn fail_all(group: Vec<Command>) {
    for command in group {
        match command {
            Command::Record { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted));
            }
            Command::Attempt { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted));
            }
            Command::Prune { reply, .. } => {
                let _ = reply.send(Err(StoreError::NotCommitted));
            }
            Command::Write(job) => job.fail(),
        }
    }
}
