//! Every scenario, tiny, against a real wsgate (chat server and gateway in
//! this process, on ephemeral loopback ports, with a temporary SQLite
//! database), asserting what it measured: nothing lost, everything joined,
//! pages returned.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use wsgate::storage::{SqliteOptions, SqliteStore};
use wsgate::{proxy, server};
use wsgate_bench::cli::{Cli, Command};
use wsgate_bench::{connections, fanout, history, ingest, pingpong};

/// wsgate (server + gateway) running in this process.
struct Wsgate {
    grpc: SocketAddr,
    ws: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Wsgate {
    async fn start() -> Wsgate {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("chat.db"), SqliteOptions::default())
            .expect("open store");
        let shutdown = CancellationToken::new();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc = grpc_listener.local_addr().expect("addr");
        let server = tokio::spawn(server::run(
            grpc_listener,
            Arc::new(store),
            server::Config::default(),
            shutdown.clone(),
        ));
        let (ws, proxy) = gateway(grpc, &shutdown).await;
        Wsgate {
            grpc,
            ws,
            shutdown,
            tasks: vec![server, proxy],
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.ws)
    }

    fn grpc(&self) -> String {
        format!("http://{}", self.grpc)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("stops in time")
                .expect("task")
                .expect("run");
        }
    }
}

/// A WebSocket gateway in front of the chat server at `grpc`.
async fn gateway(
    grpc: SocketAddr,
    shutdown: &CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let pool = wsgate::proto::descriptor_pool();
    let service = pool
        .get_service_by_name(wsgate::proto::CHAT_SERVICE)
        .expect("service");
    let gateway = Arc::new(proxy::Gateway::from_service(&service, None).expect("gateway"));
    let ws_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ws = ws_listener.local_addr().expect("addr");
    let task = tokio::spawn(proxy::run(
        ws_listener,
        gateway,
        // A load generator floods on purpose: the edge limits that protect
        // a deployment from one client are lifted, as bench/lib.sh does.
        proxy::Config {
            max_connections: 1_000_000,
            max_connections_per_ip: 1_000_000,
            max_frames_per_second: 1_000_000,
            frame_burst: 1_000_000,
            ..proxy::Config::new(format!("http://{grpc}"))
        },
        shutdown.clone(),
    ));
    (ws, task)
}

/// A TCP relay to `to` that counts the connections it accepted.
async fn counting_relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

/// Runs the fanout of command line `line`; it must be ok and clean.
async fn clean_fanout(line: &str) -> fanout::FanoutReport {
    let Command::Fanout(args) = command(line) else {
        panic!("not a fanout: {line}")
    };
    let r = fanout::run(&args).await.expect("fanout runs");
    eprintln!("{}", r.summary());
    assert!(r.ok && r.clean, "{r:#?}");
    r
}

/// Parses a command line exactly as the binary does.
fn command(line: &str) -> Command {
    Cli::try_parse_from(std::iter::once("wsgate-bench").chain(line.split_whitespace()))
        .unwrap_or_else(|e| panic!("{line}: {e}"))
        .command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_closed_loop_delivers_every_message_to_every_member() {
    let w = Wsgate::start().await;
    let r = clean_fanout(&format!(
        "fanout --url {} --rooms 2 --clients 3 --publishers 1 --window 4 --size 64 \
         --warmup 0.2 --duration 1",
        w.url()
    ))
    .await;
    assert_eq!(r.setup.connected, 6);
    assert_eq!(r.setup.members_confirmed, 6);
    assert!(r.sent > 0 && r.sent_measured > 0);
    assert_eq!(r.expected, r.sent * 3, "every message to all 3 members");
    assert_eq!(r.received, r.expected);
    assert_eq!(
        (r.lost, r.duplicates, r.out_of_order, r.foreign),
        (0, 0, 0, 0)
    );
    assert_eq!(r.error_frames, 0);
    assert!(r.drained);
    assert!(r.confirmed_per_sec > 0.0 && r.delivered_per_sec > r.confirmed_per_sec);
    // Two other members per message; the sender's echo is the confirmation.
    assert_eq!(r.confirm_latency.count, r.sent_measured);
    assert_eq!(r.delivery_latency.count, 2 * r.sent_measured);
    assert_eq!(r.delivery_latency_same_url.count, 2 * r.sent_measured);
    assert_eq!(r.delivery_latency_other_url.count, 0, "one URL");
    assert!(r.confirm_latency.p50_us > 0.0);
    assert_eq!(r.send_lag.count, 0, "closed loop has no schedule");
    // The JSON line holds the figures.
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
    assert_eq!(json["lost"], 0);
    assert_eq!(json["scenario"], "fanout");
    assert_eq!(json["run"]["url"], w.url(), "one URL: a string, as before");
    w.stop().await;
}

/// Two gateways in front of one server; the second behind a relay that
/// counts who connects to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_over_two_urls_spreads_each_room_and_splits_the_latency() {
    let mut w = Wsgate::start().await;
    let (second, task) = gateway(w.grpc, &w.shutdown).await;
    w.tasks.push(task);
    let (relay, accepted) = counting_relay(second).await;
    let r = clean_fanout(&format!(
        "fanout --url {} --url ws://{relay}/ --rooms 2 --clients 3 --publishers 1 --window 4 \
         --warmup 0.2 --duration 1",
        w.url()
    ))
    .await;
    // Slots 0 and 2 of each room on the first URL, slot 1 on the second.
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one client per room on URL 2"
    );
    // The publisher (slot 0) is on the first URL: slot 2 is on its URL,
    // slot 1 is not.
    assert_eq!(r.delivery_latency_same_url.count, r.sent_measured);
    assert_eq!(r.delivery_latency_other_url.count, r.sent_measured);
    assert_eq!(r.delivery_latency.count, 2 * r.sent_measured);
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
    assert_eq!(json["run"]["url"], format!("{},ws://{relay}/", w.url()));
    assert_eq!(json["delivery_latency_other_url"]["count"], r.sent_measured);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_open_loop_keeps_its_schedule() {
    let w = Wsgate::start().await;
    let r = clean_fanout(&format!(
        "fanout --url {} --rooms 2 --clients 2 --publishers 2 --rate 400 --warmup 0.2 --duration 1",
        w.url()
    ))
    .await;
    assert_eq!(r.received, r.expected);
    assert_eq!(r.expected, r.sent * 2);
    // 400/s offered over 1 s (schedule with random phases: +-1 per publisher).
    assert!(
        (396..=404).contains(&r.sent_measured),
        "{}",
        r.sent_measured
    );
    assert!(r.send_lag.count > 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingpong_measures_round_trips() {
    let w = Wsgate::start().await;
    let Command::Pingpong(args) = command(&format!(
        "pingpong --url {} -n 50 --warmup 0.1 --duration 30",
        w.url()
    )) else {
        unreachable!()
    };
    let r = pingpong::run(&args).await.expect("pingpong runs");
    eprintln!("{}", r.summary());
    assert!(r.ok && r.clean, "{r:#?}");
    assert_eq!(r.rtt.count, 50, "exactly the measured round trips");
    assert_eq!(r.received, r.sent);
    assert_eq!(r.lost, 0);
    assert!(r.rtt.p50_us > 0.0 && r.rtt.max_us >= r.rtt.p50_us);
    assert!(
        r.measured_secs < 30.0,
        "stopped at the count, not the duration"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_all_join_from_several_source_addresses() {
    let w = Wsgate::start().await;
    let Command::Connections(args) = command(&format!(
        "connections --url {} -n 50 --source-ips 2 --rooms 5 --pid self={}",
        w.url(),
        std::process::id()
    )) else {
        unreachable!()
    };
    let r = connections::run(&args).await.expect("connections run");
    eprintln!("{}", r.summary());
    assert!(r.ok, "{r:#?}");
    assert_eq!((r.connections, r.joined, r.failures), (50, 50, 0));
    assert_eq!(r.rooms, 5);
    assert!(r.handshakes_per_sec > 0.0);
    assert!(r.all_joined_secs >= r.connect_secs);
    assert_eq!(r.memory.len(), 1);
    assert_eq!(r.memory[0].name, "self");
    assert!(r.memory[0].after_kib > 0);
    assert!(r.memory_total.is_some());
    assert!(r.ended_while_open.is_empty(), "{:?}", r.ended_while_open);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_confirms_every_message() {
    let w = Wsgate::start().await;
    let Command::Ingest(args) = command(&format!(
        "ingest --grpc {} --senders 4 --window 8 --rooms 2 --warmup 0.2 --duration 1",
        w.grpc()
    )) else {
        unreachable!()
    };
    let r = ingest::run(&args).await.expect("ingest runs");
    eprintln!("{}", r.summary());
    assert!(r.ok && r.clean, "{r:#?}");
    assert!(r.sent > 0);
    assert_eq!(r.confirmed, r.sent);
    assert_eq!(r.unconfirmed, 0);
    assert!(r.confirmed_per_sec > 0.0);
    assert!(r.confirm_latency.count > 0);
    // Two senders per room: each also receives the other's messages.
    assert!(r.deliveries_per_sec > 0.0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_fills_the_room_and_reads_pages() {
    let w = Wsgate::start().await;
    let Command::History(args) = command(&format!(
        "history --grpc {} --room smoke --fill 200 --requests 40 --newest-requests 10 \
         --concurrency 2",
        w.grpc()
    )) else {
        unreachable!()
    };
    let r = history::run(&args).await.expect("history runs");
    eprintln!("{}", r.summary());
    assert!(r.ok && r.clean, "{r:#?}");
    assert_eq!(r.newest_seq, 200);
    let fill = r.fill.as_ref().expect("filled");
    assert_eq!(
        (fill.newest_before, fill.added, fill.unconfirmed),
        (0, 200, 0)
    );
    assert_eq!((r.random.requests, r.random.latency.count), (40, 40));
    assert_eq!((r.newest.requests, r.newest.latency.count), (10, 10));
    assert_eq!(r.random.bad_pages + r.newest.bad_pages, 0);

    // A second run finds the room full and does not fill it again.
    let again = history::run(&args).await.expect("history runs");
    assert!(again.fill.is_none());
    assert_eq!(again.newest_seq, 200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failures_are_errors() {
    // A port nobody listens on.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let Command::Fanout(args) = command(&format!(
        "fanout --url ws://{addr}/ --rooms 1 --clients 2 --window 1 --duration 1"
    )) else {
        unreachable!()
    };
    let e = fanout::run(&args).await.expect_err("cannot connect");
    assert!(e.to_string().contains("0 of 2 clients"), "{e}");
    assert!(e.to_string().contains("ConnectionRefused"), "{e}");
    let Command::Ingest(args) = command(&format!("ingest --grpc http://{addr} --duration 1"))
    else {
        unreachable!()
    };
    assert!(ingest::run(&args).await.is_err());
}

/// A WebSocket server that answers each text frame with what `answer`
/// returns for it (nothing, for `None`).
async fn fake_server(answer: fn(&str) -> Option<String>) -> SocketAddr {
    use futures_util::{SinkExt as _, StreamExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let Some(reply) = msg
                        .is_text()
                        .then(|| msg.to_text().ok())
                        .flatten()
                        .and_then(answer)
                    else {
                        continue;
                    };
                    if ws.send(reply.into()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Answers every frame with an error and never echoes: membership can never
/// be confirmed.
async fn refusing_server() -> SocketAddr {
    fake_server(|_| {
        Some(r#"{"error":{"code":"UNAVAILABLE","message":"no rooms here"}}"#.to_owned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_never_confirmed_is_a_setup_failure() {
    let addr = refusing_server().await;
    let Command::Connections(args) = command(&format!(
        "connections --url ws://{addr}/ -n 3 --source-ips 0 --setup-timeout 0.5"
    )) else {
        unreachable!()
    };
    let e = connections::run(&args).await.expect_err("never confirmed");
    let e = e.to_string();
    assert!(e.contains("0 of 3 members received a probe"), "{e}");
    assert!(e.contains("UNAVAILABLE: no rooms here"), "{e}");
    let Command::Fanout(args) = command(&format!(
        "fanout --url ws://{addr}/ --rooms 1 --clients 2 --window 1 --setup-timeout 0.5"
    )) else {
        unreachable!()
    };
    assert!(fanout::run(&args).await.is_err());
}

/// Echoes the load generator's probes to their sender (membership of a room
/// of one is proven) and swallows every other message: a run measures
/// nothing.
async fn swallowing_server() -> SocketAddr {
    fake_server(|text| {
        text.contains(r#""content":"probe""#)
            .then(|| text.to_owned())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_measured_nothing_fails() {
    let addr = swallowing_server().await;
    let line = format!(
        "fanout --url ws://{addr}/ --rooms 1 --clients 1 --window 1 --warmup 0.1 --duration 0.2 \
         --drain-timeout 0.1 --setup-timeout 10"
    );
    let Command::Fanout(args) = command(&line) else {
        unreachable!()
    };
    let r = fanout::run(&args).await.expect("the setup succeeds");
    eprintln!("{}", r.summary());
    assert_eq!(r.setup.members_confirmed, 1, "membership was proven");
    assert!(!r.ok, "{r:#?}");
    let error = r.error.as_deref().expect("a reason");
    assert!(error.starts_with("measured nothing: "), "{error}");

    // The binary: exit status 1, and the JSON line says why.
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate-bench"))
            .args(line.split_whitespace())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("ends in time")
    .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(json["ok"], false, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("measured nothing: ")),
        "{json}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED: measured nothing"));
}
