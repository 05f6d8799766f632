//! Faults of a real multi-node system, with load running: three `wsgate
//! server` processes on one PostgreSQL database with NATS as their bus,
//! two gateways in front of them, and WebSocket clients in a few rooms
//! sending messages one at a time, resending an unconfirmed one with the
//! same id, reconnecting to the other gateway when theirs is gone, and
//! catching up by `after_seq` (`tests/support/cluster.rs`).
//!
//! Each test ends by checking every confirmation against the history (each
//! confirmed id stored once, under the seq it was confirmed with; seqs
//! 1..n with no gap in each room) and every client's view of its rooms
//! against it (each message of the room, under its seq; received live in
//! seq order, with no seq skipped once the client has caught up after
//! joining: the servers fill gaps from the database themselves).
//!
//! Multi-thread runtime: starting and stopping processes blocks (in
//! `block_in_place`), and the clients must go on meanwhile.

mod support;

use support::cluster::{Cluster, Load, SERVERS, Setup};

/// How many confirmations the load gets before a fault, and after it
/// (proving that writes go on).
const BEFORE: u64 = 100;
const AFTER: u64 = 150;

/// Other servers a server hears on the bus, and what it read from the
/// database because the bus did not bring it (its metrics).
const PEERS: &str = "wsgate_bus_peers";
const GAP_FILLED: &str = "wsgate_bus_gap_filled_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_under_load_loses_no_confirmed_message() {
    let mut cluster = Cluster::start(Setup::default()).await;
    let load = Load::start(&cluster).await;
    load.confirmed_more(BEFORE).await;
    let streams = cluster.streams_on(0).await;
    assert!(streams > 0.0, "the server to kill holds streams");
    cluster.kill_server(0);
    load.confirmed_more(AFTER).await;
    let report = load.finish(&cluster).await;
    assert!(report.figures.streams_lost > 0, "{:?}", report.figures);
    report.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_under_load_loses_no_confirmed_message() {
    let mut cluster = Cluster::start(Setup::default()).await;
    let load = Load::start(&cluster).await;
    load.confirmed_more(BEFORE).await;
    cluster.kill_gateway(0);
    // Its clients are back, on the other gateway, caught up.
    load.until("the killed gateway's clients reconnected", |load| {
        load.figures().reconnects >= (support::cluster::CLIENTS / 2) as u64
    })
    .await;
    load.confirmed_more(AFTER).await;
    let report = load.finish(&cluster).await;
    report.check();
}

/// NATS killed and started again on its port: the servers reconnect,
/// delivery across servers resumes, and what was committed meanwhile
/// reaches every member, from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_under_load_delivers_every_message() {
    let mut cluster = Cluster::start(Setup::default()).await;
    let load = Load::start(&cluster).await;
    load.confirmed_more(BEFORE).await;
    cluster.kill_nats();
    // Writes go on without the bus; the servers stop hearing each other.
    load.confirmed_more(AFTER / 2).await;
    for i in 0..SERVERS {
        cluster.until_metric(i, PEERS, |n| n == 0.0).await;
    }
    cluster.start_nats();
    // Back on the bus, every server hears the two others again.
    for i in 0..SERVERS {
        cluster.until_metric(i, PEERS, |n| n == 2.0).await;
    }
    load.confirmed_more(AFTER).await;
    let report = load.finish(&cluster).await;
    report.check();
    let mut filled = 0.0;
    for i in 0..SERVERS {
        filled += cluster.metric(i, GAP_FILLED).await;
    }
    assert!(
        filled > 0.0,
        "what the bus missed was read from the database"
    );
}

/// PostgreSQL stopped at once (as in a crash) and started again. The
/// shared database must stay up for the other tests: this one runs a
/// PostgreSQL of its own. Senders get UNAVAILABLE meanwhile and resend;
/// nothing is confirmed that was not stored; writes resume after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_no_confirmed_message() {
    let cluster = Cluster::start(Setup {
        private_postgres: true,
        ..Setup::default()
    })
    .await;
    let load = Load::start(&cluster).await;
    load.confirmed_more(BEFORE).await;
    cluster.stop_postgres();
    let refused = load.figures().unavailable;
    load.until("senders refused with UNAVAILABLE", |load| {
        load.figures().unavailable > refused
    })
    .await;
    cluster.start_postgres();
    load.confirmed_more(AFTER).await;
    let report = load.finish(&cluster).await;
    report.check();
}

/// One server cut off from NATS (a relay between them, cut) but not from
/// PostgreSQL: the members on it still get every message, live, the other
/// servers' from the database (gap fill and the periodic check of each
/// room's newest seq), and the other servers' members get its messages the
/// same way. The load ends while it is still cut off: nothing waits for
/// the bus to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cut_off_from_nats_still_delivers_every_message() {
    const CUT: usize = 2;
    let cluster = Cluster::start(Setup {
        bus_relay_for: Some(CUT),
        ..Setup::default()
    })
    .await;
    let load = Load::start(&cluster).await;
    load.confirmed_more(BEFORE).await;
    assert!(
        cluster.streams_on(CUT).await > 0.0,
        "the server cut off holds streams"
    );
    let relay = cluster.bus_relay.as_ref().expect("relay");
    relay.cut();
    // It hears nobody, and nobody hears it.
    cluster.until_metric(CUT, PEERS, |n| n == 0.0).await;
    cluster.until_metric(0, PEERS, |n| n == 1.0).await;
    load.confirmed_more(AFTER).await;
    let report = load.finish(&cluster).await;
    report.check();
    assert!(
        cluster.metric(CUT, GAP_FILLED).await > 0.0,
        "the server cut off read the others' messages from the database"
    );
}
