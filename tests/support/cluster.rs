//! Several real processes working as one chat system, for the fault tests
//! (`tests/cluster.rs`): three `wsgate server` processes on one PostgreSQL
//! database, a nats-server of the test's own as their bus, two `wsgate
//! proxy` gateways in front of all three; and load clients that count
//! every confirmation and every message they receive, so that a test can
//! check both against the history once the fault is over.
//!
//! ```text
//! let cluster = Cluster::start(Setup::default()).await;
//! let load = Load::start(&cluster).await;      // every client in its rooms
//! load.confirmed_more(100).await;
//! cluster.kill_server(0);
//! load.confirmed_more(150).await;              // writes go on
//! load.finish(&cluster).await.check();         // every confirmation accounted for
//! ```
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::postgres::TestSchema;
use super::relay::Relay;
use super::{
    Listening, ServerProcess, WAIT, spawn_listening, spawn_logging, whole_history, wsgate,
};

/// Servers and gateways of a [`Cluster`].
pub const SERVERS: usize = 3;
pub const GATEWAYS: usize = 2;

/// A port nothing listens on now (bound, then released), for programs
/// that cannot be told to pick one themselves and say which (nats-server
/// with a fixed port to come back on, PostgreSQL).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `f`, which waits for a process (to start, to stop), without
/// holding up the test's other tasks (the load clients, a relay): the
/// tests run on tokio's multi-thread runtime for this.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

// ---------------------------------------------------------------- NATS

/// The nats-server binary: `$WSGATE_TEST_NATS_SERVER`, or
/// `/usr/sbin/nats-server` (Debian's package), or the first on `PATH`.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("WSGATE_TEST_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.exists() {
        return debian;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|path| path.exists())
        })
        .unwrap_or(debian)
}

/// A nats-server of the test's own (JetStream on, as deployed), on a port
/// it keeps across restarts; never the shared one, which other tests use.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
}

impl Nats {
    /// Starts it and waits until it is ready; panics, saying what is
    /// missing, if nats-server is not installed.
    pub fn start() -> Nats {
        let binary = nats_server_binary();
        assert!(
            binary.exists(),
            "these tests need nats-server, not found at {} (install it: apt-get install \
             nats-server, or set WSGATE_TEST_NATS_SERVER to its path)",
            binary.display()
        );
        let mut nats = Nats {
            child: None,
            port: free_port(),
            store: tempfile::tempdir().expect("temp dir"),
        };
        nats.start_again();
        nats
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: every connection to it dropped at once.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on its port, with the same store directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is running");
        let mut command = Command::new(nats_server_binary());
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path());
        let (child, (), _, _) = spawn_logging(command, "nats", |line| {
            line.contains("Server is ready").then_some(())
        })
        .unwrap_or_else(|log| panic!("nats-server did not start: {log:#?}"));
        self.child = Some(child);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill_9();
    }
}

// ---------------------------------------------------------- PostgreSQL

/// A PostgreSQL cluster of the test's own (initdb in a temporary
/// directory), for a test that restarts the database: the shared one
/// must stay up for every other test. As root, its programs run as the
/// user `postgres` (it refuses to run as root).
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// initdb, then start it; panics saying why if either fails.
    pub fn start() -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        if running_as_root() {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir.path())
                .status();
            assert!(
                matches!(chown, Ok(s) if s.success()),
                "chown postgres {}: {chown:?} (is there a postgres user?)",
                dir.path().display()
            );
        }
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin,
        };
        let data = pg.data();
        let initdb = pg.run(&[
            "initdb",
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        assert!(initdb.status.success(), "initdb: {initdb:?}");
        pg.start_again();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// `pg_ctl start`, waiting until it accepts connections. fsync is off
    /// (the test kills the database, not the machine: what was committed
    /// is in the page cache and survives); `synchronous_commit` stays on,
    /// so a commit returns once its WAL is written.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        let started = self.run(&[
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "30",
            "-D",
            &self.data(),
            "-l",
            &log,
            "-o",
            &options,
        ]);
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(started.status.success(), "pg_ctl start: {started:?}\n{log}");
    }

    /// `pg_ctl stop -m immediate`: every backend ends at once, without a
    /// checkpoint (the next start recovers from the WAL), as in a crash.
    pub fn stop_immediately(&self) {
        let stopped = self.run(&[
            "pg_ctl",
            "stop",
            "-w",
            "-m",
            "immediate",
            "-D",
            &self.data(),
        ]);
        assert!(stopped.status.success(), "pg_ctl stop: {stopped:?}");
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when root.
    fn run(&self, args: &[&str]) -> super::Finished {
        let program = self.bin.join(args[0]);
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(&args[1..]).current_dir(self.dir.path());
        super::run_to_exit(command)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.run(&["pg_ctl", "stop", "-m", "immediate", "-D", &self.data()]);
    }
}

/// `$WSGATE_TEST_POSTGRES_BIN`, or the newest `/usr/lib/postgresql/N/bin`.
fn postgres_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("WSGATE_TEST_POSTGRES_BIN") {
        return PathBuf::from(dir);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max();
    let dir = newest.map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")));
    match dir {
        Some(dir) if dir.join("initdb").exists() => dir,
        _ => panic!(
            "this test needs PostgreSQL's programs (initdb, pg_ctl): none in \
             /usr/lib/postgresql/*/bin; set WSGATE_TEST_POSTGRES_BIN"
        ),
    }
}

fn running_as_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let uids = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
                Some(uids.split_whitespace().nth(1)? == "0")
            })
            .unwrap_or(false)
    })
}

// ------------------------------------------------------------- Cluster

/// What a [`Cluster`] runs on.
#[derive(Default)]
pub struct Setup {
    /// A PostgreSQL of its own ([`PrivatePostgres`]), which the test may
    /// restart; otherwise a schema of the shared one.
    pub private_postgres: bool,
    /// This server reaches NATS through a [`Relay`] the test can cut.
    pub bus_relay_for: Option<usize>,
}

enum Database {
    Shared(TestSchema),
    Private(PrivatePostgres),
}

/// Three servers, two gateways, NATS, PostgreSQL: each a real process.
/// Dropping it kills them all.
pub struct Cluster {
    gateways: Vec<Option<Listening>>,
    /// `ws://ADDR/` of each gateway, also after it was killed.
    pub gateway_urls: Vec<String>,
    servers: Vec<Option<ServerProcess>>,
    /// `http://ADDR` of each server, also after it was killed.
    pub server_uris: Vec<String>,
    metrics: Vec<SocketAddr>,
    /// This test's subjects on NATS: `--bus-subject-prefix`.
    pub subject_prefix: String,
    pub bus_relay: Option<Relay>,
    nats: Nats,
    /// Last: dropped once nothing uses it.
    database: Database,
}

impl Cluster {
    pub async fn start(setup: Setup) -> Cluster {
        let database = blocking(|| {
            if setup.private_postgres {
                Database::Private(PrivatePostgres::start())
            } else {
                Database::Shared(TestSchema::create())
            }
        });
        let db_url = match &database {
            Database::Shared(schema) => schema.url.clone(),
            Database::Private(pg) => pg.url(),
        };
        let nats = blocking(Nats::start);
        let subject_prefix = format!("t{:016x}", fastrand::u64(..));
        let bus_relay = match setup.bus_relay_for {
            Some(_) => Some(Relay::start(&nats.address()).await),
            None => None,
        };
        let mut servers = Vec::new();
        let mut metrics = Vec::new();
        for i in 0..SERVERS {
            let mut command = wsgate();
            command.args(["server", "--grpc-listen", "127.0.0.1:0", "--db", &db_url]);
            let bus_url = match (&bus_relay, setup.bus_relay_for) {
                (Some(relay), Some(j)) if i == j => format!("nats://{}", relay.addr),
                _ => nats.url(),
            };
            command.args(["--bus", &bus_url, "--bus-subject-prefix", &subject_prefix]);
            let (server, metrics_addr) = blocking(|| ServerProcess::spawn_with_metrics(command));
            servers.push(server);
            metrics.push(metrics_addr);
        }
        let server_uris: Vec<String> = servers.iter().map(|s| s.uri()).collect();
        let mut gateways = Vec::new();
        for _ in 0..GATEWAYS {
            let mut command = wsgate();
            command.args([
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &server_uris.join(","),
                // The load clients send faster than a person types.
                "--max-frames-per-second",
                "100000",
                "--frame-burst",
                "100000",
            ]);
            gateways.push(blocking(|| {
                spawn_listening(command, "WebSocket gateway listening")
            }));
        }
        Cluster {
            gateway_urls: gateways
                .iter()
                .map(|g| format!("ws://{}/", g.addr))
                .collect(),
            gateways: gateways.into_iter().map(Some).collect(),
            server_uris,
            servers: servers.into_iter().map(Some).collect(),
            metrics,
            subject_prefix,
            bus_relay,
            nats,
            database,
        }
    }

    /// SIGKILL of server `i`.
    pub fn kill_server(&mut self, i: usize) {
        let server = self.servers[i].take().expect("server running");
        server.kill_9();
    }

    /// SIGKILL of gateway `i`: its WebSockets drop at once.
    pub fn kill_gateway(&mut self, i: usize) {
        self.gateways[i].take().expect("gateway running").kill();
    }

    /// The `Chat` streams open on server `i` (its metrics).
    pub async fn streams_on(&self, i: usize) -> f64 {
        self.metric(i, "wsgate_server_streams_open").await
    }

    /// One series of server `i`'s metrics.
    pub async fn metric(&self, i: usize, series: &str) -> f64 {
        let (status, page) = super::http_get(self.metrics[i], "/metrics").await;
        assert_eq!(status, 200, "{page}");
        super::metric(&page, series)
    }

    /// Polls server `i`'s `series` until `check` holds.
    pub async fn until_metric(&self, i: usize, series: &str, check: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + 3 * WAIT;
        loop {
            let value = self.metric(i, series).await;
            if check(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server {i}: {series} is still {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the private PostgreSQL ([`Setup::private_postgres`]) at once.
    pub fn stop_postgres(&self) {
        blocking(|| self.private_postgres().stop_immediately());
    }

    /// Starts the private PostgreSQL again; returns once it accepts
    /// connections.
    pub fn start_postgres(&self) {
        blocking(|| self.private_postgres().start_again());
    }

    fn private_postgres(&self) -> &PrivatePostgres {
        match &self.database {
            Database::Private(pg) => pg,
            Database::Shared(_) => panic!("the cluster runs on the shared PostgreSQL"),
        }
    }

    /// SIGKILL of the NATS server.
    pub fn kill_nats(&mut self) {
        self.nats.kill_9();
    }

    /// Starts NATS again on its port; returns once it is ready.
    pub fn start_nats(&mut self) {
        blocking(|| self.nats.start_again());
    }

    /// A room's whole history, `(seq, id)` oldest first, read from a
    /// server still running.
    pub async fn history(&self, room: &str) -> Vec<(u64, String)> {
        let server = self
            .servers
            .iter()
            .flatten()
            .next()
            .expect("a server running");
        whole_history(server.uri(), room).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A `Listening` is not killed by being dropped.
        for gateway in self.gateways.iter_mut().filter_map(Option::take) {
            gateway.kill();
        }
    }
}

// ---------------------------------------------------------------- Load

/// Clients in rooms, each client in two of the rooms.
pub const CLIENTS: usize = 9;
pub const ROOMS: usize = 3;
/// Each client sends at most one message per tick, one at a time.
const TICK: Duration = Duration::from_millis(40);
/// A message with no answer for this long is sent again (same id).
const RESEND_AFTER: Duration = Duration::from_secs(2);
/// A message refused with `UNAVAILABLE` is sent again after this long.
const RETRY_AFTER: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    /// Clients join their rooms; nobody sends.
    Joining,
    Sending,
    /// No new message; each client resends its last until confirmed.
    Stopping,
    /// The rooms' final tops: each client waits until it has every
    /// message up to them.
    Final(Arc<HashMap<String, u64>>),
}

#[derive(Default)]
struct Counters {
    ready: AtomicU64,
    done_sending: AtomicU64,
    unavailable: AtomicU64,
    resent: AtomicU64,
    streams_lost: AtomicU64,
    reconnects: AtomicU64,
    catch_ups: AtomicU64,
}

/// Figures of a load so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Figures {
    pub confirmed: u64,
    /// Sends refused with `UNAVAILABLE` (then sent again).
    pub unavailable: u64,
    /// Messages sent again: refused, unanswered, or in flight at a move.
    pub resent: u64,
    /// Streams the gateway reported lost (moved to another server).
    pub streams_lost: u64,
    /// WebSockets that dropped and were opened again (to a gateway up).
    pub reconnects: u64,
    /// History pages read to catch up.
    pub catch_ups: u64,
}

/// [`CLIENTS`] WebSocket clients spread over the cluster's gateways.
pub struct Load {
    phase: watch::Sender<Phase>,
    confirmed: watch::Sender<u64>,
    counters: Arc<Counters>,
    give_up: CancellationToken,
    clients: JoinSet<ClientReport>,
    rooms: Vec<String>,
}

/// What a client saw and was told.
#[derive(Debug)]
pub struct ClientReport {
    user: String,
    /// `(room, id, seq)` of each message it sent, as confirmed.
    confirmed: Vec<(String, String, u64)>,
    /// Per room, every message it has: seq -> id.
    views: HashMap<String, BTreeMap<u64, String>>,
    /// Live messages after which a seq was missing although the client
    /// was in the room and caught up, all along (the server should have
    /// filled it from the database before delivering).
    unexplained_gaps: Vec<String>,
    /// Anything else it was not supposed to see.
    problems: Vec<String>,
}

/// A finished load and the history it is checked against.
pub struct LoadReport {
    pub figures: Figures,
    clients: Vec<ClientReport>,
    history: HashMap<String, Vec<(u64, String)>>,
}

impl Load {
    /// Starts the clients (client `i` on gateway `i % GATEWAYS`) and waits
    /// until each has joined its rooms; then they send.
    pub async fn start(cluster: &Cluster) -> Load {
        let rooms: Vec<String> = (0..ROOMS).map(|r| format!("room{r}")).collect();
        let (phase, _) = watch::channel(Phase::Joining);
        let (confirmed, _) = watch::channel(0);
        let counters = Arc::new(Counters::default());
        let give_up = CancellationToken::new();
        let gateways = Arc::new(cluster.gateway_urls.clone());
        let mut clients = JoinSet::new();
        for i in 0..CLIENTS {
            let client = Client {
                user: format!("u{i}"),
                rooms: vec![rooms[i % ROOMS].clone(), rooms[(i + 1) % ROOMS].clone()],
                gateways: gateways.clone(),
                gateway: i % gateways.len(),
                phase: phase.subscribe(),
                confirmed_count: confirmed.clone(),
                counters: counters.clone(),
                give_up: give_up.clone(),
                state: State::default(),
            };
            clients.spawn(client.run());
        }
        let load = Load {
            phase,
            confirmed,
            counters,
            give_up,
            clients,
            rooms,
        };
        load.until("every client in its rooms", |load| {
            load.counters.ready.load(Ordering::SeqCst) == CLIENTS as u64
        })
        .await;
        load.phase.send_replace(Phase::Sending);
        load
    }

    pub fn figures(&self) -> Figures {
        let c = &self.counters;
        Figures {
            confirmed: *self.confirmed.borrow(),
            unavailable: c.unavailable.load(Ordering::SeqCst),
            resent: c.resent.load(Ordering::SeqCst),
            streams_lost: c.streams_lost.load(Ordering::SeqCst),
            reconnects: c.reconnects.load(Ordering::SeqCst),
            catch_ups: c.catch_ups.load(Ordering::SeqCst),
        }
    }

    /// Waits until `more` messages more than now are confirmed.
    pub async fn confirmed_more(&self, more: u64) {
        let target = *self.confirmed.borrow() + more;
        let mut confirmed = self.confirmed.subscribe();
        let reached = tokio::time::timeout(3 * WAIT, confirmed.wait_for(|n| *n >= target)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "confirmations stopped short of {target}: {:?}",
            self.figures()
        );
    }

    /// Polls `check` (the load's counters) until it holds.
    pub async fn until(&self, what: &str, check: impl Fn(&Load) -> bool) {
        let deadline = Instant::now() + 3 * WAIT;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "not in time: {what} ({:?})",
                self.figures()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending (each client's last message confirmed first), reads
    /// the history, waits until every client has every message up to the
    /// rooms' tops, and returns what all of them saw.
    pub async fn finish(mut self, cluster: &Cluster) -> LoadReport {
        self.phase.send_replace(Phase::Stopping);
        self.until("every client's last message confirmed", |load| {
            load.counters.done_sending.load(Ordering::SeqCst) == CLIENTS as u64
        })
        .await;
        let mut history = HashMap::new();
        for room in &self.rooms {
            history.insert(room.clone(), cluster.history(room).await);
        }
        let tops = history
            .iter()
            .map(|(room, h)| (room.clone(), h.last().map_or(0, |(seq, _)| *seq)))
            .collect();
        self.phase.send_replace(Phase::Final(Arc::new(tops)));
        // A client that never gets there is told to give up, and reports
        // what it has: the check says what is missing.
        let give_up = self.give_up.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(3 * WAIT).await;
            give_up.cancel();
        });
        let mut clients = Vec::new();
        while let Some(report) = self.clients.join_next().await {
            clients.push(report.expect("a client task"));
        }
        timer.abort();
        clients.sort_by(|a, b| a.user.cmp(&b.user));
        LoadReport {
            figures: self.figures(),
            clients,
            history,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.give_up.cancel();
    }
}

impl LoadReport {
    /// Every confirmation against the history, and every client's view of
    /// its rooms against it; panics listing everything that is wrong.
    pub fn check(&self) {
        let mut wrong = Vec::new();
        let mut stored = 0;
        for (room, history) in &self.history {
            stored += history.len();
            let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
            if seqs != (1..=history.len() as u64).collect::<Vec<_>>() {
                wrong.push(format!(
                    "{room}: seqs are not 1..{}: {seqs:?}",
                    history.len()
                ));
            }
            let mut ids: Vec<&str> = history.iter().map(|(_, id)| id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != history.len() {
                wrong.push(format!("{room}: a message stored twice"));
            }
        }
        let stored_at = |room: &str, seq: u64| {
            let history = self.history.get(room)?;
            let (s, id) = history.get(usize::try_from(seq).ok()?.checked_sub(1)?)?;
            (*s == seq).then_some(id.as_str())
        };
        let mut confirmed = 0;
        for client in &self.clients {
            for (room, id, seq) in &client.confirmed {
                confirmed += 1;
                if stored_at(room, *seq) != Some(id.as_str()) {
                    wrong.push(format!(
                        "{id} was confirmed as {room} seq {seq}, which holds {:?}",
                        stored_at(room, *seq)
                    ));
                }
            }
        }
        // Each client resends its last message until it is confirmed, so
        // every stored message was confirmed to its sender.
        if confirmed != stored {
            wrong.push(format!("{confirmed} confirmed, {stored} stored"));
        }
        for client in &self.clients {
            let user = &client.user;
            for (room, view) in &client.views {
                let history = &self.history[room];
                let missing: Vec<u64> = history
                    .iter()
                    .filter(|(seq, _)| !view.contains_key(seq))
                    .map(|(seq, _)| *seq)
                    .collect();
                if !missing.is_empty() {
                    wrong.push(format!("{user} never got {room} seqs {missing:?}"));
                }
                for (seq, id) in view {
                    if stored_at(room, *seq) != Some(id.as_str()) {
                        wrong.push(format!("{user} got {id} as {room} seq {seq}"));
                    }
                }
            }
            wrong.extend(client.problems.iter().map(|p| format!("{user}: {p}")));
            wrong.extend(
                client
                    .unexplained_gaps
                    .iter()
                    .map(|g| format!("{user}: {g}")),
            );
        }
        eprintln!(
            "load: {stored} messages stored in {} rooms, {:?}",
            self.history.len(),
            self.figures
        );
        assert!(
            wrong.is_empty(),
            "{} things wrong:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}

// -------------------------------------------------------------- Client

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Client {
    user: String,
    rooms: Vec<String>,
    gateways: Arc<Vec<String>>,
    /// The gateway it is (or was last) connected to.
    gateway: usize,
    phase: watch::Receiver<Phase>,
    confirmed_count: watch::Sender<u64>,
    counters: Arc<Counters>,
    give_up: CancellationToken,
    state: State,
}

#[derive(Default)]
struct State {
    sent: u64,
    pending: Option<Pending>,
    /// Each message sent: (room, seq) once confirmed.
    confirmed: HashMap<String, (String, u64)>,
    views: HashMap<String, RoomView>,
    /// Bumped each time the stream or the WebSocket is lost: what was
    /// asked before belongs to another life of the connection.
    life: u64,
    catch_ups: HashMap<String, CatchUp>,
    next_request: u64,
    ready: bool,
    done_sending: bool,
    final_catch_up: bool,
    unexplained_gaps: Vec<String>,
    problems: Vec<String>,
}

struct Pending {
    id: String,
    room: String,
    attempts: u32,
    send_at: Instant,
}

#[derive(Default)]
struct RoomView {
    /// seq -> id of every message of the room the client has.
    have: BTreeMap<u64, String>,
    /// The first seq it does not have.
    next: u64,
    /// The seq of the last live message on this life of the stream.
    last_live: u64,
    /// Its join was answered in this life of the stream.
    joined: bool,
    /// Caught up since its join was answered: from now on, a gap in live
    /// messages is the server's.
    synced: bool,
    /// A catch-up failed and is to be asked again.
    retry: bool,
}

struct CatchUp {
    room: String,
    life: u64,
    /// Asked after the join was answered: completing it syncs the room.
    syncs: bool,
}

impl RoomView {
    fn fresh() -> RoomView {
        RoomView {
            next: 1,
            ..RoomView::default()
        }
    }
}

impl Client {
    async fn run(mut self) -> ClientReport {
        for room in &self.rooms {
            self.state.views.insert(room.clone(), RoomView::fresh());
        }
        let mut ws = self.connect(self.gateway).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.finished() {
            let Some(socket) = ws.as_mut() else {
                self.state
                    .problems
                    .push("could not reconnect to any gateway".into());
                break;
            };
            tokio::select! {
                _ = self.give_up.cancelled() => {
                    self.state.problems.push("gave up waiting for every message".into());
                    break;
                }
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                        Ok(frame) => self.on_frame(socket, frame).await,
                        Err(e) => self.state.problems.push(format!("not JSON ({e}): {text}")),
                    },
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        ws = self.reconnect().await;
                    }
                    Some(Ok(_)) => {} // pings are answered by tungstenite
                },
                _ = tick.tick() => self.on_tick(socket).await,
            }
        }
        if let Some(mut socket) = ws {
            let _ = socket.close(None).await;
        }
        let state = self.state;
        ClientReport {
            user: self.user,
            confirmed: state
                .confirmed
                .into_iter()
                .map(|(id, (room, seq))| (room, id, seq))
                .collect(),
            views: state
                .views
                .into_iter()
                .map(|(room, view)| (room, view.have))
                .collect(),
            unexplained_gaps: state.unexplained_gaps,
            problems: state.problems,
        }
    }

    /// Opens a WebSocket to a gateway, trying each from `first` on, again
    /// and again until one answers or the wait is over; then joins the
    /// client's rooms on it.
    async fn connect(&mut self, first: usize) -> Option<Socket> {
        let deadline = Instant::now() + 3 * WAIT;
        let n = self.gateways.len();
        for attempt in 0.. {
            let gateway = (first + attempt) % n;
            let url = self.gateways[gateway].clone();
            let connected = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_tungstenite::connect_async(url),
            )
            .await;
            if let Ok(Ok((mut socket, _))) = connected {
                self.gateway = gateway;
                for room in self.rooms.clone() {
                    let frame = json!({"join_room": {"room_id": room, "user_id": self.user}});
                    let _ = socket.send(Message::text(frame.to_string())).await;
                }
                return Some(socket);
            }
            if Instant::now() > deadline {
                return None;
            }
            if attempt % n == n - 1 {
                // Every gateway refused: they may be starting. Retry pacing.
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
        None
    }

    /// The WebSocket dropped (its gateway died): a new life on the next
    /// gateway that answers; the last message goes again.
    async fn reconnect(&mut self) -> Option<Socket> {
        self.counters.reconnects.fetch_add(1, Ordering::SeqCst);
        self.new_life();
        self.connect(self.gateway + 1).await
    }

    /// The stream (or the WebSocket) was lost: messages may have been
    /// missed, and the one in flight may not have arrived.
    fn new_life(&mut self) {
        let state = &mut self.state;
        state.life += 1;
        state.catch_ups.clear();
        for view in state.views.values_mut() {
            view.last_live = 0;
            view.joined = false;
            view.synced = false;
        }
        if let Some(pending) = &mut state.pending {
            pending.send_at = Instant::now();
        }
    }

    fn finished(&self) -> bool {
        let Phase::Final(tops) = &*self.phase.borrow() else {
            return false;
        };
        self.state.pending.is_none()
            && self
                .state
                .views
                .iter()
                .all(|(room, view)| view.next > tops.get(room).copied().unwrap_or(0))
    }

    async fn on_tick(&mut self, ws: &mut Socket) {
        let phase = self.phase.borrow().clone();
        let now = Instant::now();
        if phase == Phase::Joining
            && !self.state.ready
            && self.state.views.values().all(|v| v.synced)
        {
            self.state.ready = true;
            self.counters.ready.fetch_add(1, Ordering::SeqCst);
        }
        if phase == Phase::Sending && self.state.pending.is_none() {
            let room = self.rooms[self.state.sent as usize % self.rooms.len()].clone();
            let id = format!("{}-{}", self.user, self.state.sent);
            self.state.sent += 1;
            self.state.pending = Some(Pending {
                id,
                room,
                attempts: 0,
                send_at: now,
            });
        }
        if let Some(pending) = &mut self.state.pending
            && pending.send_at <= now
        {
            if pending.attempts > 0 {
                self.counters.resent.fetch_add(1, Ordering::SeqCst);
            }
            pending.attempts += 1;
            pending.send_at = now + RESEND_AFTER;
            let frame = json!({
                "chat_message": {"id": pending.id, "room_id": pending.room,
                                 "sender_id": self.user, "content": format!("content of {}", pending.id)},
                "request_id": pending.id,
            });
            let _ = ws.send(Message::text(frame.to_string())).await;
        }
        if !matches!(phase, Phase::Joining | Phase::Sending)
            && self.state.pending.is_none()
            && !self.state.done_sending
        {
            self.state.done_sending = true;
            self.counters.done_sending.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(phase, Phase::Final(_)) && !self.state.final_catch_up {
            // A room not caught up since its last disruption (its join
            // not answered again yet, say) is caught up now; the others
            // must get every message live.
            self.state.final_catch_up = true;
            for room in self.rooms.clone() {
                if !self.state.views[&room].synced {
                    self.catch_up(ws, &room, false).await;
                }
            }
        }
        for room in self.rooms.clone() {
            if std::mem::take(&mut self.view(&room).retry) {
                let syncs = self.state.views[&room].joined;
                self.catch_up(ws, &room, syncs).await;
            }
        }
    }

    fn view(&mut self, room: &str) -> &mut RoomView {
        self.state
            .views
            .entry(room.to_owned())
            .or_insert_with(RoomView::fresh)
    }

    /// Asks for the room's messages after the first one it lacks.
    async fn catch_up(&mut self, ws: &mut Socket, room: &str, syncs: bool) {
        let after = self.view(room).next - 1;
        self.ask_history(ws, room, after, syncs).await;
    }

    async fn ask_history(&mut self, ws: &mut Socket, room: &str, after: u64, syncs: bool) {
        self.state.next_request += 1;
        let request_id = format!("history-{}", self.state.next_request);
        self.state.catch_ups.insert(
            request_id.clone(),
            CatchUp {
                room: room.to_owned(),
                life: self.state.life,
                syncs,
            },
        );
        self.counters.catch_ups.fetch_add(1, Ordering::SeqCst);
        let frame = json!({
            "get_chat_history": {"room_id": room, "after_seq": after, "limit": 500},
            "request_id": request_id,
        });
        let _ = ws.send(Message::text(frame.to_string())).await;
    }

    async fn on_frame(&mut self, ws: &mut Socket, frame: Value) {
        let request_id = frame["request_id"].as_str().unwrap_or("").to_owned();
        if let Some(message) = frame.get("chat_message") {
            self.on_message(ws, message, &request_id).await;
        } else if let Some(history) = frame.get("chat_history") {
            self.on_history(ws, history, &request_id).await;
        } else if let Some(presence) = frame.get("presence") {
            let room = presence["room_id"].as_str().unwrap_or("").to_owned();
            if presence["snapshot"] == true && self.state.views.contains_key(&room) {
                // The join took effect (first, or replayed after a move):
                // what was said before it comes from the history.
                self.view(&room).joined = true;
                self.catch_up(ws, &room, true).await;
            }
        } else if let Some(error) = frame.get("error") {
            self.on_error(error, &request_id);
        }
    }

    async fn on_message(&mut self, ws: &mut Socket, message: &Value, request_id: &str) {
        let (Some(room), Some(id), Some(seq)) = (
            message["room_id"].as_str(),
            message["id"].as_str(),
            message["seq"].as_str().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            self.state
                .problems
                .push(format!("a message without room, id or seq: {message}"));
            return;
        };
        let own = message["sender_id"] == self.user.as_str() && request_id == id;
        // An echo of a message sent more than once may come after newer
        // messages (its first answer was lost at a move): not live order.
        let mut live = true;
        if own {
            let first = !self.state.confirmed.contains_key(id);
            match self.state.confirmed.get(id) {
                Some((_, known)) if *known != seq => self
                    .state
                    .problems
                    .push(format!("{id} confirmed as seq {known}, then as seq {seq}")),
                _ => {}
            }
            if self.state.pending.as_ref().is_some_and(|p| p.id == id) {
                let pending = self.state.pending.take().expect("pending");
                live = pending.attempts == 1;
            } else {
                live = false;
            }
            if first {
                self.state
                    .confirmed
                    .insert(id.to_owned(), (room.to_owned(), seq));
                self.confirmed_count.send_modify(|n| *n += 1);
            }
        }
        if !self.state.views.contains_key(room) {
            self.state
                .problems
                .push(format!("a message of {room}, not one of its rooms"));
            return;
        }
        self.record(room, seq, id);
        if !live {
            return;
        }
        let view = self.view(room);
        if seq <= view.last_live {
            let last = view.last_live;
            self.state
                .problems
                .push(format!("{room}: seq {seq} arrived after seq {last}"));
            return;
        }
        view.last_live = seq;
        if view.next < seq {
            // A seq is missing below this one: fill it, as clients do.
            let (next, synced) = (view.next, view.synced);
            if synced {
                self.state.unexplained_gaps.push(format!(
                    "{room}: seq {seq} arrived live, seqs from {next} missing"
                ));
            }
            self.catch_up(ws, room, false).await;
        }
    }

    async fn on_history(&mut self, ws: &mut Socket, history: &Value, request_id: &str) {
        let Some(asked) = self.state.catch_ups.remove(request_id) else {
            return; // asked in a previous life
        };
        let empty = Vec::new();
        let messages = history["messages"].as_array().unwrap_or(&empty);
        let mut last = None;
        for message in messages {
            let id = message["id"].as_str().unwrap_or("");
            let seq = message["seq"].as_str().and_then(|s| s.parse::<u64>().ok());
            match seq {
                Some(seq) => {
                    self.record(&asked.room, seq, id);
                    last = Some(seq);
                }
                None => self
                    .state
                    .problems
                    .push(format!("history without seq: {message}")),
            }
        }
        match last {
            Some(last) if history["has_more"] == true => {
                self.ask_history(ws, &asked.room, last, asked.syncs).await;
            }
            _ if asked.syncs && asked.life == self.state.life => {
                self.view(&asked.room).synced = true
            }
            _ => {}
        }
    }

    fn on_error(&mut self, error: &Value, request_id: &str) {
        let code = error["code"].as_str().unwrap_or("");
        let message = error["message"].as_str().unwrap_or("");
        if let Some(pending) = &mut self.state.pending
            && pending.id == request_id
        {
            if code == "UNAVAILABLE" {
                self.counters.unavailable.fetch_add(1, Ordering::SeqCst);
                pending.send_at = Instant::now() + RETRY_AFTER;
            } else {
                self.state
                    .problems
                    .push(format!("{request_id} refused: {code} {message}"));
                self.state.pending = None;
            }
        } else if let Some(asked) = self.state.catch_ups.remove(request_id) {
            // History unavailable a moment (its server died, the
            // database restarts): asked again.
            if code != "UNAVAILABLE" {
                self.state
                    .problems
                    .push(format!("history refused: {code} {message}"));
            }
            if asked.life == self.state.life {
                self.view(&asked.room).retry = true;
            }
        } else if request_id.is_empty() && message.starts_with("upstream stream lost") {
            self.counters.streams_lost.fetch_add(1, Ordering::SeqCst);
            self.new_life();
        } else if !request_id.starts_with("history-")
            && !self.state.confirmed.contains_key(request_id)
        {
            self.state
                .problems
                .push(format!("unexpected error: {error}"));
        }
    }

    /// Notes that the room's `seq` is `id`; a seq seen with two ids is a
    /// problem.
    fn record(&mut self, room: &str, seq: u64, id: &str) {
        let view = self.view(room);
        if let Some(known) = view.have.get(&seq) {
            if known != id {
                let problem = format!("{room} seq {seq} seen as {known} and as {id}");
                self.state.problems.push(problem);
            }
            return;
        }
        view.have.insert(seq, id.to_owned());
        while view.have.contains_key(&view.next) {
            view.next += 1;
        }
    }
}
