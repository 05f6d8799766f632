//! One gateway in front of several servers of the service: sessions spread
//! over the healthy ones, and when one dies or stops serving, its sessions'
//! streams re-open on another with their state replayed, on the same
//! WebSockets. Each server here has its own SQLite file (no shared database,
//! no cross-server fan-out): what is checked is where streams go and that
//! they keep working there.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use support::{Proxy, Server, ServerProcess, WAIT, Ws, run_to_exit, spawn_listening, wsgate};
use wsgate::proxy;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A gateway in front of `uris`, and the registry its metrics are in.
async fn gateway(uris: &[String]) -> (Proxy, prometheus::Registry) {
    let registry = wsgate::metrics::registry();
    let config = proxy::Config {
        upstreams: uris.to_vec(),
        metrics: registry.clone(),
        ..proxy::Config::new(String::new())
    };
    (Proxy::start_with(config).await, registry)
}

/// The value of gauge `name` for upstream `uri`.
fn gauge(registry: &prometheus::Registry, name: &str, uri: &str) -> i64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == name)
        .flat_map(|family| family.get_metric())
        .find(|metric| {
            metric
                .get_label()
                .iter()
                .any(|l| l.name() == "upstream" && l.value() == uri)
        })
        .map_or(0, |metric| metric.get_gauge().get_value() as i64)
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
    let mut later = Vec::new();
    for i in 0..2 {
        let mut ws = proxy.connect().await;
        ws.join("r", &format!("later{i}")).await;
        later.push(ws);
    }
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
    let mut late = Vec::new();
    for i in 0..4 {
        let mut ws = proxy.connect().await;
        ws.join("r", &format!("late{i}")).await;
        late.push(ws);
    }
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
    let mut sessions = Vec::new();
    for i in 0..6 {
        let mut ws = proxy.connect().await;
        ws.join("r", &format!("u{i}")).await;
        sessions.push(ws);
    }
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
