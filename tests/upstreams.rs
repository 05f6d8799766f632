//! One gateway in front of several servers of the service: sessions spread
//! over the healthy ones, and when one dies or stops serving, its sessions'
//! streams re-open on another with their state replayed, on the same
//! WebSockets. Each server here has its own SQLite file (no shared database,
//! no cross-server fan-out): what is checked is where streams go and that
//! they keep working there.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::{Proxy, Server, ServerProcess, WAIT, Ws, run_to_exit, spawn_listening, wsgate};
use wsgate::proxy;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A gateway in front of `uris`, and the registry its metrics are in.
async fn gateway(uris: &[String]) -> (Proxy, prometheus::Registry) {
    gateway_with(proxy::Config {
        upstreams: uris.to_vec(),
        ..proxy::Config::new(String::new())
    })
    .await
}

async fn gateway_with(config: proxy::Config) -> (Proxy, prometheus::Registry) {
    let registry = wsgate::metrics::registry();
    let config = proxy::Config {
        metrics: registry.clone(),
        ..config
    };
    (Proxy::start_with(config).await, registry)
}

/// The value of gauge `name` for server `uri`: an `--upstream` as given,
/// or `http://` and one of the addresses a name gave; 0 when absent.
fn gauge(registry: &prometheus::Registry, name: &str, uri: &str) -> i64 {
    series(registry, name, uri).unwrap_or(0)
}

/// The value of gauge `name` for server `uri`, if it has one.
fn series(registry: &prometheus::Registry, name: &str, uri: &str) -> Option<i64> {
    let is_server = |label: &prometheus::proto::LabelPair| match label.name() {
        "upstream" => label.value() == uri,
        "address" => format!("http://{}", label.value()) == uri,
        _ => false,
    };
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .find(|metric| metric.get_label().iter().any(is_server))
        .map(|metric| metric.get_gauge().get_value() as i64)
}

fn streams_on(registry: &prometheus::Registry, uri: &str) -> i64 {
    gauge(registry, "wsgate_upstream_server_streams_open", uri)
}

/// Waits until `check` holds, polling the gateway's own gauges.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in time: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `count` new sessions in room `r`, as users `PREFIX0`, `PREFIX1`...
async fn joined(proxy: &Proxy, prefix: &str, count: usize) -> Vec<Ws> {
    let mut sessions = Vec::new();
    for i in 0..count {
        let mut ws = proxy.connect().await;
        ws.join("r", &format!("{prefix}{i}")).await;
        sessions.push(ws);
    }
    sessions
}

/// Sends a message until it is confirmed: while the connection's stream is
/// being re-opened, frames may be refused. The confirmation.
async fn send_until_confirmed(ws: &mut Ws, room: &str, user: &str, id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        ws.send(json!({"chat_message": {"id": id, "room_id": room, "sender_id": user, "content": id}, "request_id": id}))
            .await;
        let reply = ws
            .recv_until(|f| f["request_id"] == id || f.get("error").is_some())
            .await;
        if reply.get("chat_message").is_some() {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} could not send: {reply}"
        );
    }
}

/// Two sessions in one room, one stream on each of `uris` (which one is
/// whose is the gateway's choice): the session on `uris[0]`, then the other.
async fn one_on_each(proxy: &Proxy, registry: &prometheus::Registry, uris: &[String]) -> (Ws, Ws) {
    let mut first = proxy.connect().await;
    first.join("r", "first").await;
    let mut second = proxy.connect().await;
    second.join("r", "second").await;
    until("one stream on each server", || {
        streams_on(registry, &uris[0]) == 1 && streams_on(registry, &uris[1]) == 1
    })
    .await;
    // The gauge goes up when the stream opens, before the join is answered;
    // both joins were answered, so both streams are where the gauges say.
    let first_on_0 = {
        // A message from the session on uris[0] is stored there only.
        first.say("r", "first", "where", "where am I").await;
        let mut grpc =
            wsgate::proto::chat::chat_service_client::ChatServiceClient::connect(uris[0].clone())
                .await
                .unwrap();
        let page = grpc
            .get_chat_history(wsgate::proto::chat::GetChatHistoryRequest {
                room_id: "r".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        page.messages.iter().any(|m| m.id == "where")
    };
    if first_on_0 {
        (first, second)
    } else {
        (second, first)
    }
}

/// The session whose server went away is told once, its stream re-opens on
/// the other server in the same room (it never joins again), and chat goes
/// both ways there.
async fn moved_and_chatting(
    registry: &prometheus::Registry,
    uris: &[String],
    moved: &mut Ws,
    stayed: &mut Ws,
) -> serde_json::Value {
    let outage = moved.recv_until(|f| f.get("error").is_some()).await;
    assert_eq!(outage["error"]["code"], "UNAVAILABLE", "{outage}");
    until("both streams on the server left", || {
        streams_on(registry, &uris[1]) == 2 && streams_on(registry, &uris[0]) == 0
    })
    .await;
    let echo = send_until_confirmed(moved, "r", "moved", "after-move").await;
    assert_eq!(echo["chat_message"]["content"], "after-move");
    let got = stayed
        .recv_until(|f| f["chat_message"]["id"] == "after-move")
        .await;
    assert_eq!(got["chat_message"]["sender_id"], "moved");
    // Still in the room it joined on the first server: the gateway replayed
    // its stream's state on the second.
    stayed.say("r", "stayed", "reply", "welcome").await;
    let got = moved
        .recv_until(|f| f["chat_message"]["id"] == "reply")
        .await;
    assert_eq!(got["chat_message"]["content"], "welcome");
    // Unary calls go to the server left.
    let user = moved.call("get_user", json!({"user_id": "stayed"})).await;
    assert!(user.get("error").is_none(), "{user}");
    outage
}

#[tokio::test]
async fn a_killed_server_s_sessions_move_to_the_other_on_the_same_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::spawn(&dir.path().join("a.db"), any_port());
    let b = ServerProcess::spawn(&dir.path().join("b.db"), any_port());
    let uris = vec![a.uri(), b.uri()];
    let mut servers = vec![a, b];
    let (proxy, registry) = gateway(&uris).await;
    let (mut on_first, mut on_second) = one_on_each(&proxy, &registry, &uris).await;

    let (addr, db) = servers.remove(0).kill_9();
    moved_and_chatting(&registry, &uris, &mut on_first, &mut on_second).await;
    until("the killed server counted unhealthy", || {
        gauge(&registry, "wsgate_upstream_healthy", &uris[0]) == 0
    })
    .await;
    assert_eq!(gauge(&registry, "wsgate_upstream_healthy", &uris[1]), 1);

    // New sessions go to the server left, not to the dead one.
    let mut late = proxy.connect().await;
    late.join("r", "late").await;
    assert_eq!(streams_on(&registry, &uris[1]), 3);

    // Back on its address: healthy again, it gets new sessions (the ones
    // already moved stay where they are).
    let _back = ServerProcess::spawn(&db, addr);
    until("the restarted server counted healthy", || {
        gauge(&registry, "wsgate_upstream_healthy", &uris[0]) == 1
    })
    .await;
    let _later = joined(&proxy, "later", 2).await;
    assert_eq!(streams_on(&registry, &uris[0]), 1);
    assert_eq!(streams_on(&registry, &uris[1]), 4);
    proxy.stop().await;
}

#[tokio::test]
async fn a_server_shutting_down_gracefully_hands_its_sessions_over() {
    let (a, b) = (Server::start().await, Server::start().await);
    let uris = vec![a.uri(), b.uri()];
    let (proxy, registry) = gateway(&uris).await;
    let (mut on_first, mut on_second) = one_on_each(&proxy, &registry, &uris).await;

    // It says NOT_SERVING, then waits for its streams to end: the gateway
    // moves them, so the shutdown completes with the WebSockets still open.
    tokio::time::timeout(WAIT, a.stop())
        .await
        .expect("the server's graceful shutdown completes");
    moved_and_chatting(&registry, &uris, &mut on_first, &mut on_second).await;
    proxy.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_server_turning_not_serving_drains_its_sessions_and_gets_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let a = Server::start_with(&db, wsgate::server::Config::default()).await;
    let b = Server::start().await;
    let uris = vec![a.uri(), b.uri()];
    let (proxy, registry) = gateway(&uris).await;
    let (mut on_first, mut on_second) = one_on_each(&proxy, &registry, &uris).await;

    // Its database file is gone: the server stays up but its health says
    // NOT_SERVING (writes are no longer durable).
    std::fs::remove_file(&db).unwrap();
    until("the gateway sees it unhealthy", || {
        gauge(&registry, "wsgate_upstream_healthy", &uris[0]) == 0
    })
    .await;
    // Moved by the gateway: the server did not end the stream.
    let outage = moved_and_chatting(&registry, &uris, &mut on_first, &mut on_second).await;
    let message = outage["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no longer serving"), "{outage}");

    // Sessions opened now all go to the healthy one.
    let _late = joined(&proxy, "late", 4).await;
    assert_eq!(streams_on(&registry, &uris[0]), 0);
    assert_eq!(streams_on(&registry, &uris[1]), 6);
    proxy.stop().await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn new_sessions_spread_over_healthy_servers() {
    let (a, b) = (Server::start().await, Server::start().await);
    let uris = vec![a.uri(), b.uri()];
    let (proxy, registry) = gateway(&uris).await;
    let sessions = joined(&proxy, "u", 6).await;
    // In turn: three and three.
    assert_eq!(streams_on(&registry, &uris[0]), 3);
    assert_eq!(streams_on(&registry, &uris[1]), 3);
    drop(sessions);
    proxy.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn with_every_server_down_calls_answer_unavailable_and_streams_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (x, y) = (free(), free());
    let uris = vec![format!("http://{x}"), format!("http://{y}")];
    let (proxy, registry) = gateway(&uris).await;
    until("both seen down", || {
        gauge(&registry, "wsgate_upstream_healthy", &uris[0]) == 0
            && gauge(&registry, "wsgate_upstream_healthy", &uris[1]) == 0
    })
    .await;
    let mut ws = proxy.connect().await;
    let reply = ws.call("get_user", json!({"user_id": "x"})).await;
    assert_eq!(reply["error"]["code"], "UNAVAILABLE", "{reply}");

    // One comes up: the stream finds it.
    let _server = ServerProcess::spawn(&dir.path().join("y.db"), y);
    let echo = send_until_confirmed(&mut ws, "r", "u", "first").await;
    assert_eq!(echo["chat_message"]["content"], "first");
    proxy.stop().await;
}

#[tokio::test]
async fn the_binary_takes_several_upstreams_and_logs_each_health_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = ServerProcess::spawn(&dir.path().join("a.db"), any_port());
    let b = ServerProcess::spawn(&dir.path().join("b.db"), any_port());
    let (a_uri, b_uri) = (a.uri(), b.uri());
    let mut command = wsgate();
    // Comma-separated, a bare HOST:PORT among them.
    command.args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("{a_uri},{}", b.addr),
    ]);
    let gateway = spawn_listening(command, "WebSocket gateway listening");
    let url = format!("ws://{}/", gateway.addr);
    let mut first = Ws::connect(&url).await;
    first.join("r", "first").await;
    let mut second = Ws::connect(&url).await;
    second.join("r", "second").await;

    a.kill_9();
    // Whichever was on the killed server moves; then both are on b and
    // hear each other.
    send_until_confirmed(&mut first, "r", "first", "f1").await;
    send_until_confirmed(&mut second, "r", "second", "s1").await;
    first.say("r", "first", "f2", "both here").await;
    let got = second.recv_until(|f| f["chat_message"]["id"] == "f2").await;
    assert_eq!(got["chat_message"]["content"], "both here");

    let log = gateway.kill_and_read_log();
    let unhealthy: Vec<_> = log
        .iter()
        .filter(|l| l.contains("upstream unhealthy"))
        .collect();
    assert_eq!(unhealthy.len(), 1, "{unhealthy:#?}");
    assert!(unhealthy[0].contains(&a_uri), "{}", unhealthy[0]);
    assert!(
        log.iter()
            .any(|l| l.contains("WebSocket gateway listening") && l.contains(&b_uri))
    );
    drop(b);

    // The same server twice is a mistake, said as such.
    let mut twice = wsgate();
    twice.args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &a_uri,
        "--upstream",
        &a_uri,
    ]);
    let twice = run_to_exit(twice);
    assert_eq!(twice.status.code(), Some(1), "{twice:?}");
    assert!(twice.stderr.contains("is given twice"), "{}", twice.stderr);
}

/// `chat.test` for a gateway's resolver, with the addresses the test sets:
/// DNS, without the machine's resolver (its /etc/hosts gives `localhost`
/// one address and no test may edit it).
#[derive(Clone, Default)]
struct Names {
    answer: Arc<Mutex<Option<Vec<IpAddr>>>>,
    lookups: Arc<AtomicUsize>,
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

impl Names {
    fn giving(ips: &[IpAddr]) -> Names {
        let names = Names::default();
        *names.answer.lock().unwrap() = Some(ips.to_vec());
        names
    }

    fn resolver(&self) -> proxy::Resolver {
        let names = self.clone();
        proxy::Resolver::from_fn(move |host, port| {
            names.lookups.fetch_add(1, Ordering::SeqCst);
            let answer = names.answer.lock().unwrap().clone();
            Box::pin(async move {
                match answer {
                    Some(ips) if host == "chat.test" => {
                        Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                    }
                    _ => Err(std::io::Error::other("no such name")),
                }
            })
        })
    }

    /// Answers `ips` from now on (`None`: fails), and waits until the
    /// gateway has applied that answer: until the lookup after the next
    /// one has begun (lookups run one at a time).
    async fn answer(&self, ips: Option<&[IpAddr]>) {
        *self.answer.lock().unwrap() = ips.map(<[IpAddr]>::to_vec);
        let seen = self.lookups.load(Ordering::SeqCst);
        until("the new answer applied", || {
            self.lookups.load(Ordering::SeqCst) >= seen + 2
        })
        .await;
    }
}

/// A gateway in front of `http://chat.test:PORT`, looking it up in `names`
/// every 50 ms.
async fn gateway_for_name(names: &Names, port: u16) -> (Proxy, prometheus::Registry) {
    gateway_with(proxy::Config {
        upstream_resolver: names.resolver(),
        upstream_resolve_interval: Duration::from_millis(50),
        ..proxy::Config::new(format!("http://chat.test:{port}"))
    })
    .await
}

/// Two servers on one port, 127.0.0.1:P and [::1]:P, as a name with an A
/// and an AAAA record gives them.
fn two_on_one_port(dir: &std::path::Path) -> (ServerProcess, ServerProcess) {
    loop {
        let v4 = std::net::TcpListener::bind((V4, 0)).unwrap();
        let port = v4.local_addr().unwrap().port();
        // Taken on ::1: another port.
        let Ok(v6) = std::net::TcpListener::bind((V6, port)) else {
            continue;
        };
        drop((v4, v6));
        let a = ServerProcess::spawn(&dir.join("a.db"), SocketAddr::new(V4, port));
        let b = ServerProcess::spawn(&dir.join("b.db"), SocketAddr::new(V6, port));
        return (a, b);
    }
}

#[tokio::test]
async fn a_name_s_addresses_are_servers_sessions_spread_and_a_killed_one_s_move() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_on_one_port(dir.path());
    let servers = vec![a.uri(), b.uri()];
    assert!(servers[1].starts_with("http://[::1]:"), "{servers:?}");
    let names = Names::giving(&[V6, V4]);
    let (proxy, registry) = gateway_for_name(&names, a.addr.port()).await;
    // One session on each address: the name is two servers.
    let (mut on_first, mut on_second) = one_on_each(&proxy, &registry, &servers).await;
    assert_eq!(gauge(&registry, "wsgate_upstream_healthy", &servers[0]), 1);
    assert_eq!(gauge(&registry, "wsgate_upstream_healthy", &servers[1]), 1);

    a.kill_9();
    moved_and_chatting(&registry, &servers, &mut on_first, &mut on_second).await;
    until("the killed address counted unhealthy", || {
        gauge(&registry, "wsgate_upstream_healthy", &servers[0]) == 0
    })
    .await;
    let mut late = proxy.connect().await;
    late.join("r", "late").await;
    assert_eq!(streams_on(&registry, &servers[1]), 3);
    proxy.stop().await;
    drop(b);
}

#[tokio::test]
async fn an_address_the_name_gains_gets_sessions_and_one_it_loses_keeps_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_on_one_port(dir.path());
    let servers = [a.uri(), b.uri()];
    let names = Names::giving(&[V4]);
    let (proxy, registry) = gateway_for_name(&names, a.addr.port()).await;
    let mut first = proxy.connect().await;
    first.join("r", "first").await;
    assert_eq!(streams_on(&registry, &servers[0]), 1);
    // One address: one server, its health not watched (as with one
    // --upstream).
    assert_eq!(
        series(&registry, "wsgate_upstream_healthy", &servers[0]),
        None
    );

    // ::1 joins: new sessions go to both in turn, health is watched.
    names.answer(Some(&[V4, V6])).await;
    let mut sessions = joined(&proxy, "joined", 2).await;
    assert_eq!(streams_on(&registry, &servers[0]), 2);
    assert_eq!(streams_on(&registry, &servers[1]), 1);
    assert_eq!(
        series(&registry, "wsgate_upstream_healthy", &servers[1]),
        Some(1)
    );

    // 127.0.0.1 leaves the name: no new sessions there, and those on it
    // stay (it still serves them) and keep chatting.
    names.answer(Some(&[V6])).await;
    sessions.extend(joined(&proxy, "after", 2).await);
    assert_eq!(streams_on(&registry, &servers[1]), 3);
    assert_eq!(streams_on(&registry, &servers[0]), 2);
    let echo = first.say("r", "first", "still", "still here").await;
    assert_eq!(echo["content"], "still here");

    // A failed lookup keeps the set: new sessions still find ::1.
    names.answer(None).await;
    let mut ws = proxy.connect().await;
    ws.join("r", "during-failure").await;
    assert_eq!(streams_on(&registry, &servers[1]), 4);

    // Its last session gone, the address that left is forgotten: no
    // series of it stay behind.
    drop(first);
    drop(sessions);
    until("the left address's series removed", || {
        series(
            &registry,
            "wsgate_upstream_server_streams_open",
            &servers[0],
        )
        .is_none()
    })
    .await;
    proxy.stop().await;
    drop((a, b));
}

#[tokio::test]
async fn over_tls_a_name_s_servers_are_checked_against_the_name_not_the_address() {
    let ca = support::pki::Ca::new("test CA");
    let named = |names: &[&str]| {
        let pair = ca.server_named(names);
        wsgate::tls::ServerTls::from_pem(pair.cert.as_bytes(), pair.key.as_bytes(), None).unwrap()
    };
    // Its certificate holds the name only: checked against 127.0.0.1 it
    // would be refused.
    let server = Server::start_tls(named(&["chat.test"])).await;
    let names = Names::giving(&[V4]);
    let gateway_to = |port: u16| proxy::Config {
        upstream_tls: Some(ca.gateway_trusting(None)),
        upstream_resolver: names.resolver(),
        ..proxy::Config::new(format!("https://chat.test:{port}"))
    };
    let (proxy, _) = gateway_with(gateway_to(server.addr.port())).await;
    let mut ws = proxy.connect().await;
    let echo = ws.say("r", "u", "m1", "by name").await;
    assert_eq!(echo["seq"], "1");
    proxy.stop().await;

    // A certificate for another name is refused.
    let other = Server::start_tls(named(&["other.test"])).await;
    let (proxy, _) = gateway_with(gateway_to(other.addr.port())).await;
    let mut ws = proxy.connect().await;
    let reply = ws.call("get_user", json!({"user_id": "u"})).await;
    assert_eq!(reply["error"]["code"], "UNAVAILABLE", "{reply}");
    proxy.stop().await;
    server.stop().await;
    other.stop().await;
}

#[tokio::test]
async fn the_binary_looks_a_name_up_and_serves_through_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(&dir.path().join("a.db"), any_port());
    let port = server.addr.port();
    let mut command = wsgate();
    // The machine's resolver: localhost is 127.0.0.1 here, one address.
    command.args([
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &format!("http://localhost:{port}"),
        "--upstream-resolve-interval",
        "1",
    ]);
    let gateway = spawn_listening(command, "WebSocket gateway listening");
    let mut ws = Ws::connect(&format!("ws://{}/", gateway.addr)).await;
    let echo = ws.say("r", "u", "m1", "through a name").await;
    assert_eq!(echo["seq"], "1");
    let log = gateway.kill_and_read_log();
    let resolved: Vec<_> = log
        .iter()
        .filter(|l| l.contains("upstream name resolved"))
        .collect();
    assert_eq!(resolved.len(), 1, "{log:#?}");
    assert!(
        resolved[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        resolved[0]
    );

    // A zero interval is refused, said as such.
    let mut zero = wsgate();
    zero.args(["proxy", "--upstream-resolve-interval", "0"]);
    let zero = run_to_exit(zero);
    assert_eq!(zero.status.code(), Some(2), "{zero:?}");
    assert!(
        zero.stderr.contains("--upstream-resolve-interval"),
        "{}",
        zero.stderr
    );
}
