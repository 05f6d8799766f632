//! A PostgreSQL schema of a test's own, so tests run in parallel on one
//! database. Shared by the integration tests and the storage unit tests
//! (`src/storage/postgres.rs` includes this file).
//!
//! The database is `$WSGATE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). If it is not up, the first
//! test to need it tries to start the local cluster; if that fails, the
//! test fails saying so: a test needing PostgreSQL is never skipped.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// How long to wait for a PostgreSQL started by a test to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The database the tests use.
pub fn base_url() -> String {
    std::env::var("WSGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// One schema: `url` connects with it as the `search_path`, and names
/// every connection after it (`application_name`), so that a test can end
/// exactly its own connections. Dropped with everything in it.
pub struct TestSchema {
    pub name: String,
    pub url: String,
}

/// Where the test database listens, from [`base_url`].
pub fn base_address() -> (String, u16) {
    let config: tokio_postgres::Config = base_url().parse().expect("WSGATE_TEST_POSTGRES");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    (host, config.get_ports().first().copied().unwrap_or(5432))
}

impl TestSchema {
    /// Blocks (runs its SQL on a thread of its own): fine in async tests.
    pub fn create() -> TestSchema {
        ensure_up();
        let name = format!("t_{:016x}", fastrand::u64(..));
        sql(&format!("CREATE SCHEMA {name}")).unwrap_or_else(|e| panic!("create {name}: {e}"));
        let base = base_url();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url =
            format!("{base}{separator}options=-c%20search_path%3D{name}&application_name={name}");
        TestSchema { name, url }
    }

    /// The URL of this schema, as reached at `addr` instead (a proxy).
    pub fn url_through(&self, addr: std::net::SocketAddr) -> String {
        let config: tokio_postgres::Config = base_url().parse().expect("WSGATE_TEST_POSTGRES");
        format!(
            "postgres://{}@{addr}/{}?options=-c%20search_path%3D{name}&application_name={name}",
            config.get_user().unwrap_or("postgres"),
            config.get_dbname().unwrap_or("postgres"),
            name = self.name
        )
    }

    /// Ends every connection to this schema (`pg_terminate_backend`), as a
    /// restart of the database would, without disturbing other tests.
    /// Returns how many were ended.
    pub fn terminate_connections(&self) -> u64 {
        terminate_connections(&self.name)
    }

    /// Runs SQL in this schema; the rows as text.
    pub fn query(&self, query: &str) -> Vec<Vec<String>> {
        sql(&format!("SET search_path = {}; {query}", self.name))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        self.terminate_connections();
        let _ = sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// Ends every connection named `application_name` (see [`TestSchema`]).
pub fn terminate_connections(application_name: &str) -> u64 {
    let rows = sql(&format!(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = '{application_name}'"
    ))
    .unwrap_or_else(|e| panic!("terminate the connections of {application_name}: {e}"));
    rows.first()
        .and_then(|row| row.first())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Checks once per process that the database answers, starting the local
/// cluster if it does not; panics if it cannot be had.
fn ensure_up() {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        if sql("SELECT 1").is_ok() {
            return Ok(());
        }
        start_local_cluster()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match sql("SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("started, but still no answer: {e}"));
                }
                // Polling a server that is starting: it announces nothing.
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    if let Err(e) = up {
        panic!(
            "this test needs PostgreSQL at {} (set WSGATE_TEST_POSTGRES to use another): {e}",
            base_url()
        );
    }
}

/// `pg_ctlcluster VERSION main start` for each installed version.
fn start_local_cluster() -> Result<(), String> {
    let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .map_err(|e| format!("it is down, and no cluster to start (/etc/postgresql: {e})"))?
        .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    let mut errors = Vec::new();
    for version in versions {
        let status = std::process::Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
        match status {
            Ok(status) if status.success() => return Ok(()),
            Ok(status) => errors.push(format!("pg_ctlcluster {version} main start: {status}")),
            Err(e) => errors.push(format!("pg_ctlcluster: {e}")),
        }
    }
    Err(format!(
        "it is down and could not be started: {}",
        errors.join("; ")
    ))
}

/// Runs `query` (simple protocol, several statements allowed) on a new
/// connection, on a thread with a runtime of its own so that it may be
/// called from sync and async tests alike.
fn sql(query: &str) -> Result<Vec<Vec<String>>, String> {
    let query = query.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&base_url(), NoTls)
                .await
                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
            let connection = tokio::spawn(connection);
            let messages = client.simple_query(&query).await.map_err(|e| {
                format!(
                    "{e}: {:?}",
                    std::error::Error::source(&e).map(|s| s.to_string())
                )
            });
            drop(client);
            let _ = connection.await;
            Ok(messages?
                .into_iter()
                .filter_map(|message| match message {
                    SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("").to_owned())
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the SQL thread panicked".into()))
}
