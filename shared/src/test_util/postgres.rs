//! [`TestPostgres`]: a real PostgreSQL server owned by one test.
//!
//! Each server gets its own cluster made by `initdb` in a temporary directory, listens on a free
//! loopback TCP port (its Unix socket lives in that directory, never in `/var/run/postgresql`),
//! has a database `inlet` owned by the superuser `inlet` (trust authentication, loopback only),
//! and is stopped by PID when the value is dropped, also when the test panics: a fast shutdown
//! (SIGINT), then SIGKILL if it has not exited within [`STOP_DEADLINE`].
//!
//! **Binaries.** `INLET_PG_BIN` (a directory with `initdb`, `postgres` and `createdb`), else the
//! newest `/usr/lib/postgresql/<major>/bin` (Debian's layout; `scripts/install-postgres.sh`
//! installs the package). A missing binary fails the test with a message saying how to install
//! it; tests are never skipped.
//!
//! **Root.** `initdb` and `postgres` refuse to run as root, and tests run as root in CI. As
//! root, both are started as the `postgres` system user the Debian package creates (`setpriv`,
//! which execs, so the child's PID is the postmaster's), with the temporary directory handed to
//! that user; without such a user, in their own user namespace (`unshare --user`, mapping root
//! to an unprivileged id, the trick [`super::TestNats::start_on_tmpfs`] uses), where the
//! root-owned directory is theirs. Not as root, they run as they are.
//!
//! **Readiness** is an event: the server's log line "database system is ready to accept
//! connections"; its exit is the end of its log (every server process has closed it).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a fast shutdown may take before the server is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// How long a start may take (initdb excluded) before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The superuser `initdb` creates and the database `start` creates.
const USER: &str = "inlet";
const DATABASE: &str = "inlet";

/// The log line that says the server takes connections.
const READY_LINE: &str = "database system is ready to accept connections";

/// The directory holding `initdb`, `postgres` and `createdb`: `INLET_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin`.
///
/// # Errors
///
/// A message saying how to install PostgreSQL when neither has them.
pub fn pg_bin_dir() -> Result<PathBuf, String> {
    let has_binaries = |dir: &Path| ["initdb", "postgres", "createdb"].iter().all(|b| dir.join(b).is_file());
    if let Some(dir) = std::env::var_os("INLET_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_binaries(&dir) {
            Ok(dir)
        } else {
            Err(format!("INLET_PG_BIN={} has no initdb, postgres and createdb", dir.display()))
        };
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_binaries(bin))
        .max_by_key(|(major, _)| *major);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        "no PostgreSQL server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin: run \
         scripts/install-postgres.sh (installs Debian's postgresql package) or set INLET_PG_BIN"
            .to_owned()
    })
}

/// Who `initdb` and `postgres` run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// This process's user (not root).
    Me,
    /// A system user (`setpriv` to its uid and gid).
    User { uid: u32, gid: u32 },
    /// Root mapped to an unprivileged id in a new user namespace (`unshare --user`).
    UserNamespace,
}

impl RunAs {
    /// For a process whose files are owned by `my_uid`: itself unless root; as root, the
    /// `postgres` user when there is one, else a user namespace.
    fn choose(my_uid: u32) -> RunAs {
        if my_uid != 0 {
            return RunAs::Me;
        }
        system_user("postgres").map_or(RunAs::UserNamespace, |(uid, gid)| RunAs::User { uid, gid })
    }

    /// A command running `program` as this.
    fn command(self, program: &Path) -> Command {
        match self {
            RunAs::Me => Command::new(program),
            RunAs::User { uid, gid } => {
                let mut command = Command::new("setpriv");
                command.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}")).arg("--clear-groups").arg(program);
                command
            }
            RunAs::UserNamespace => {
                let mut command = Command::new("unshare");
                command.args(["--user", "--map-user=1000", "--map-group=1000"]).arg(program);
                command
            }
        }
    }
}

/// (uid, gid) of a user in `/etc/passwd`.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|line| line.split(':').next() == Some(name))?;
    let mut ids = line.split(':').skip(2).map(str::parse::<u32>);
    Some((ids.next()?.ok()?, ids.next()?.ok()?))
}

/// A running postmaster.
struct Server {
    child: Child,
    /// Gets a message when the server says it is ready, and disconnects when its log ends
    /// (every server process exited). In a mutex only so that `TestPostgres` is `Sync`.
    events: Mutex<mpsc::Receiver<()>>,
}

/// A real PostgreSQL server owned by one test (see the module docs).
pub struct TestPostgres {
    /// The data directory is `data` inside; the Unix socket is in it directly.
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: RunAs,
    port: u16,
    server: Option<Server>,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestPostgres {
    /// `initdb`s a cluster into a temporary directory, starts it on a free loopback port and
    /// creates the database `inlet`.
    ///
    /// # Panics
    ///
    /// When PostgreSQL is not installed, or `initdb`, the start or `createdb` fails (the
    /// message holds their output).
    pub fn start() -> TestPostgres {
        Self::start_serving(None)
    }

    /// As [`TestPostgres::start`], with `ssl = on` and `certificate` as the server's certificate
    /// (clients may still connect without TLS: `pg_hba.conf` allows both).
    ///
    /// # Panics
    ///
    /// As [`TestPostgres::start`].
    pub fn start_with_tls(certificate: &super::tls::Issued) -> TestPostgres {
        Self::start_serving(Some(certificate))
    }

    fn start_serving(certificate: Option<&super::tls::Issued>) -> TestPostgres {
        let dir = tempfile::Builder::new().prefix("inlet-pg-").tempdir().expect("temp dir for PostgreSQL");
        let my_uid = std::fs::metadata(dir.path()).expect("temp dir metadata").uid();
        Self::start_as(dir, RunAs::choose(my_uid), certificate)
    }

    fn start_as(dir: tempfile::TempDir, run_as: RunAs, certificate: Option<&super::tls::Issued>) -> TestPostgres {
        let bin = pg_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        if let RunAs::User { uid, gid } = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("hand the temp dir to the postgres user");
        }
        let mut postgres = TestPostgres { dir, bin, run_as, port: 0, server: None, log: Arc::default() };
        postgres.initdb();
        if let Some(certificate) = certificate {
            postgres.serve_tls(certificate);
        }
        // The port is free when chosen, but another process may take it before the server
        // binds it: then try another.
        let mut attempts = 0;
        loop {
            attempts += 1;
            postgres.port = free_port();
            match postgres.spawn() {
                Ok(()) => break,
                Err(e) if attempts < 5 && e.contains("could not bind") => continue,
                Err(e) => panic!("PostgreSQL did not start: {e}\n{}", postgres.log()),
            }
        }
        postgres.create_database(DATABASE);
        postgres
    }

    fn initdb(&self) {
        // `--no-sync`: nothing is fsynced, the cluster is thrown away with the test.
        let output = self
            .run_as
            .command(&self.bin.join("initdb"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", USER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run initdb as {:?}: {e}", self.run_as));
        assert!(
            output.status.success(),
            "initdb (as {:?}) failed: {}\n{}\n{}",
            self.run_as,
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Puts `certificate` into the data directory as `server.crt` and `server.key` (owned by the
    /// server's user, the key readable by it alone, as PostgreSQL demands) and turns `ssl` on.
    fn serve_tls(&self, certificate: &super::tls::Issued) {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;
        let data = self.data_dir();
        for (name, content) in [("server.crt", &certificate.cert_pem), ("server.key", &certificate.key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, content).expect("write the server's certificate");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
            if let RunAs::User { uid, gid } = self.run_as {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("hand the file to the postgres user");
            }
        }
        let mut conf =
            std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("open postgresql.conf");
        writeln!(conf, "ssl = on").expect("turn ssl on");
    }

    /// Starts the postmaster on `self.port` and waits until it takes connections.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = self
            .run_as
            .command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "timezone=UTC"])
            // Test clusters are thrown away: no fsync, no full-page writes, commits return
            // before their WAL is flushed. Crash safety is not what these servers are for
            // (a stop is always a clean shutdown or the end of the cluster).
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run postgres as {:?}: {e}", self.run_as))?;
        let (ready, events) = mpsc::channel();
        read_log(child.stderr.take().expect("piped stderr"), Arc::clone(&self.log), ready);
        let deadline = Instant::now() + START_DEADLINE;
        let outcome = match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                Err(format!("postgres exited before it was ready: {}", tail.join(" | ")))
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("postgres not ready within {START_DEADLINE:?}"))
            }
        };
        if outcome.is_ok() {
            self.server = Some(Server { child, events: Mutex::new(events) });
        }
        outcome
    }

    /// Creates another database in this cluster and returns its URL (the tests of one binary
    /// can share a server this way).
    ///
    /// # Panics
    ///
    /// When `createdb` fails.
    pub fn create_database(&self, name: &str) -> String {
        let output = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, name])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run createdb: {e}"));
        assert!(
            output.status.success(),
            "createdb {name} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        self.database_url(name)
    }

    /// `postgres://inlet@127.0.0.1:<port>/inlet`.
    pub fn url(&self) -> String {
        self.database_url(DATABASE)
    }

    /// The URL of database `name` in this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|server| server.child.id())
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Fast shutdown (SIGINT: open sessions are ended, their transactions rolled back), waiting
    /// until every server process exited; SIGKILL after [`STOP_DEADLINE`]. Nothing when stopped.
    ///
    /// # Panics
    ///
    /// When the server had to be killed.
    pub fn stop(&mut self) {
        if let Err(e) = self.shut_down() {
            panic!("{e}\n{}", self.log());
        }
    }

    /// [`TestPostgres::stop`] (when running), then starts the same cluster again on the same
    /// port and waits until it takes connections.
    ///
    /// # Panics
    ///
    /// When the stop or the start fails.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("PostgreSQL did not start again on port {}: {e}\n{}", self.port, self.log());
        }
    }

    /// What the server logged so far (for failure messages).
    pub fn log(&self) -> String {
        self.log.lock().map(|lines| lines.join("\n")).unwrap_or_default()
    }

    fn shut_down(&mut self) -> Result<(), String> {
        let Some(Server { mut child, events }) = self.server.take() else { return Ok(()) };
        // The child is not reaped before `wait` below, so its PID cannot have been reused.
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let deadline = Instant::now() + STOP_DEADLINE;
        let events = events.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        let exited = loop {
            match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => continue,
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
            }
        };
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
        if exited { Ok(()) } else { Err(format!("PostgreSQL did not shut down within {STOP_DEADLINE:?}; killed")) }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Never panics: this also runs while a failed test unwinds.
        let _ = self.shut_down();
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Collects the server's log lines, sends a message on each "ready" line, and drops `ready`
/// when the log ends.
fn read_log(stderr: ChildStderr, log: Arc<Mutex<Vec<String>>>, ready: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(READY_LINE) {
                let _ = ready.send(());
            }
            if let Ok(mut lines) = log.lock() {
                lines.push(line);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// True while a process with this PID exists (a zombie counts: it is not reaped yet).
    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    fn accepts(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn a_dropped_server_is_gone_and_a_restarted_one_keeps_its_port() {
        let mut postgres = TestPostgres::start();
        let (port, first) = (postgres.port(), postgres.pid().unwrap());
        assert!(accepts(port));
        assert!(postgres.url().ends_with(&format!("127.0.0.1:{port}/inlet")));
        postgres.restart();
        let second = postgres.pid().unwrap();
        assert_ne!(first, second);
        assert!(!alive(first), "the first postmaster was reaped");
        assert!(accepts(port), "the restarted server listens on the same port");
        postgres.stop();
        assert!(postgres.pid().is_none() && !alive(second) && !accepts(port));
        postgres.restart();
        let third = postgres.pid().unwrap();
        let data_dir = postgres.data_dir();
        drop(postgres);
        assert!(!alive(third), "dropping stops the server");
        assert!(!accepts(port));
        assert!(!data_dir.exists(), "dropping removes the cluster");
    }

    /// A port taken between choosing it and the server binding it is recognised (`start`
    /// then tries another one).
    #[test]
    fn a_taken_port_is_told_apart() {
        let mut postgres = TestPostgres::start();
        postgres.stop();
        let _taken = std::net::TcpListener::bind(("127.0.0.1", postgres.port())).unwrap();
        let error = postgres.spawn().unwrap_err();
        assert!(error.contains("could not bind"), "{error}");
        assert!(postgres.pid().is_none());
    }

    #[test]
    fn it_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<TestPostgres>();
    }

    /// The way without a `postgres` user: an unprivileged id in a user namespace.
    #[test]
    fn a_server_in_a_user_namespace_works_too() {
        let dir = tempfile::Builder::new().prefix("inlet-pg-").tempdir().unwrap();
        let postgres = TestPostgres::start_as(dir, RunAs::UserNamespace, None);
        let pid = postgres.pid().unwrap();
        assert!(accepts(postgres.port()));
        drop(postgres);
        assert!(!alive(pid));
    }

    #[test]
    fn the_postgres_user_is_read_from_passwd() {
        assert_eq!(system_user("root"), Some((0, 0)));
        assert_eq!(system_user("no-such-user-here"), None);
        assert_eq!(RunAs::choose(1234), RunAs::Me);
    }
}
