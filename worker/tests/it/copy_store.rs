//! `inlet-worker copy-store` as an operator runs it: the configuration names both ends (the
//! URL through `{ env = … }`), the summary is printed, the URL and its password never are; a
//! held SQLite file and a target that holds rows are refused with a non-zero exit.

use std::process::{Command, Output};

use inlet_shared::test_util::TestPostgres;

use crate::support::{Backend, TestStore, config_text};

const PASSWORD: &str = "pw-never-printed";

fn copy_store(config: &std::path::Path, url: &str) -> (Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_inlet-worker"))
        .args(["copy-store", "--config"])
        .arg(config)
        .env("INLET_TEST_TARGET_URL", url)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains(PASSWORD) && !text.contains(url), "the URL is never printed:\n{text}");
    (output, text)
}

#[tokio::test]
async fn copy_store_copies_once_prints_a_summary_and_never_the_url() {
    let server = tokio::task::spawn_blocking(TestPostgres::start).await.unwrap();
    // Trust authentication ignores the password; it is there to be looked for in the output.
    let url = server.url().replacen("postgres://inlet@", &format!("postgres://inlet:{PASSWORD}@"), 1);
    assert!(url.contains(PASSWORD));
    let dir = tempfile::tempdir().unwrap();
    // The source is SQLite whichever backend the suite runs on.
    let source = TestStore::start_on(Backend::Sqlite, dir.path());
    drop(rusqlite::Connection::open(source.sqlite_path()).unwrap()); // an empty SQLite file: migrated by the copy
    let mut text = config_text("nats://127.0.0.1:4222", &source, &[]);
    text.push_str("\n[store]\nbackend = \"postgres\"\nurl = { env = \"INLET_TEST_TARGET_URL\" }\n");
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, text).unwrap();

    // A worker holds the SQLite file (its lock file): refused.
    let lock = std::fs::File::create(dir.path().join("inlet.db.lock")).unwrap();
    lock.try_lock().unwrap();
    let (held, output) = copy_store(&config, &url);
    assert!(!held.status.success());
    assert!(output.contains("is in use by another inlet-worker"), "{output}");
    drop(lock);

    let (copied, output) = copy_store(&config, &url);
    assert!(copied.status.success(), "{output}");
    let summary = String::from_utf8_lossy(&copied.stdout);
    assert!(summary.contains("rows copied:"), "{summary}");
    for (table, rows) in [("events", 0), ("deliveries", 0), ("audit_log", 0), ("store_identity", 1)] {
        assert!(
            summary.lines().any(|line| line.split_whitespace().collect::<Vec<_>>() == [table, &rows.to_string()]),
            "{table}: {rows} in\n{summary}"
        );
    }

    // Someone wrote to the target since: a copy into it is refused.
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.execute("INSERT INTO users (email, role, created_at_ms) VALUES ('ada@x', 'admin', 1)", &[]).await.unwrap();
    let (refused, output) = copy_store(&config, &url);
    assert!(!refused.status.success());
    assert!(output.contains("target is not empty: table users holds rows"), "{output}");
}
