//! The SQLite file held by someone else: another process's write lock, a second worker on the
//! same file.

use std::time::Duration;

use crate::scheduling::second_worker_error;
use crate::support::{Backend, Pipeline, TestDestination};

/// The database locked by another process: the worker stops acking (nothing is recorded, so
/// nothing is delivered or acked), reports not ready, and resumes without loss once it is free.
#[tokio::test]
async fn a_locked_database_stops_acking_reports_not_ready_and_resumes_without_loss() {
    let destination = TestDestination::answering(200).await;
    let pipeline = Pipeline::start_on(Backend::Sqlite, &[("sink", destination.url(), "")]).await;
    let readyz = format!("http://{}/readyz", pipeline.worker_main);

    // Another process takes the write lock and keeps it.
    let locker = rusqlite::Connection::open(pipeline.store.sqlite_path()).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for n in 0..5 {
        assert_eq!(pipeline.send(&format!("locked-{n}"), "push", b"{}").await, 202, "ingest does not depend on SQLite");
    }
    // The writer gives up after its busy timeout: the worker says it is not ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while pipeline.client.get(&readyz).send().await.unwrap().status() != 503 {
        assert!(tokio::time::Instant::now() < deadline, "readiness never reported the locked database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(destination.count(), 0, "nothing recorded, so nothing delivered");

    locker.execute_batch("ROLLBACK").unwrap();
    destination.wait_for(5, Duration::from_secs(60)).await;
    assert_eq!(destination.delivered_keys().len(), 5, "every event delivered after the lock is gone");
    while pipeline.client.get(&readyz).send().await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline + Duration::from_secs(30), "never ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The same database file from a second worker process is refused by the file lock, naming
/// it; the first keeps working.
#[tokio::test]
async fn a_second_worker_on_the_same_file_is_refused_at_startup() {
    let sink = TestDestination::answering(200).await;
    let pipeline = Pipeline::start_on(Backend::Sqlite, &[("sink", sink.url(), "")]).await;
    let error = second_worker_error(&pipeline, &pipeline.store, &sink).await;
    assert!(error.contains("in use by another inlet-worker"), "{error}");
    assert_eq!(pipeline.send("still-1", "push", b"{}").await, 202);
    sink.wait_for(1, Duration::from_secs(20)).await;
}
