//! Crashes and restarts: a killed server loses no confirmed message, and the
//! gateway keeps open WebSockets working across an upstream restart.

mod support;

use std::net::SocketAddr;

use serde_json::json;
use support::{Proxy, ServerProcess};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn confirmed_messages_survive_kill_9_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(&dir.path().join("chat.db"), any_port());
    let proxy = Proxy::start(&server.uri()).await;
    let mut ws = proxy.connect().await;
    for i in 1..=50 {
        let echo = ws.say("r", "u", &format!("m{i}"), "durable").await;
        assert_eq!(echo["seq"], i.to_string());
    }
    let (addr, db) = server.kill_9();

    let server = ServerProcess::spawn(&db, addr);
    let mut grpc =
        wsgate::proto::chat::chat_service_client::ChatServiceClient::connect(server.uri())
            .await
            .unwrap();
    let page = grpc
        .get_chat_history(wsgate::proto::chat::GetChatHistoryRequest {
            room_id: "r".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );

    // The same WebSocket, still open, goes on once the stream is back; the
    // next message continues the sequence.
    let echo = ws.say("r", "u", "m51", "after the crash").await;
    assert_eq!(echo["seq"], "51");
    // A resend of a message confirmed before the crash is still recognised.
    let again = ws.say("r", "u", "m7", "resent").await;
    assert_eq!(again["seq"], "7");
    assert_eq!(again["content"], "durable");
}

#[tokio::test]
async fn an_open_websocket_is_told_of_the_outage_and_rejoins_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(&dir.path().join("chat.db"), any_port());
    let proxy = Proxy::start(&server.uri()).await;
    let mut alice = proxy.connect().await;
    let mut bob = proxy.connect().await;
    alice.join("room1", "alice").await;
    bob.join("room1", "bob").await;

    let (addr, db) = server.kill_9();
    let outage = alice.recv_until(|f| f.get("error").is_some()).await;
    assert_eq!(outage["error"]["code"], "UNAVAILABLE", "{outage}");
    bob.recv_until(|f| f.get("error").is_some()).await;

    let _server = ServerProcess::spawn(&db, addr);
    // Each stream comes back on its own schedule (jittered backoff); wait
    // until both are back, bob's through a room he was never in.
    send_until_confirmed(&mut alice, "room1", "alice", "alice-back").await;
    send_until_confirmed(&mut bob, "elsewhere", "bob", "bob-back").await;

    // bob never re-joined room1 himself, yet he gets alice's message: the
    // gateway replayed his stream's resume state when it re-opened it.
    alice.say("room1", "alice", "live", "we're back").await;
    let got = bob.recv_until(|f| f["chat_message"]["id"] == "live").await;
    assert_eq!(got["chat_message"]["content"], "we're back");
}

/// Sends a message until it is confirmed: while the connection's stream is
/// being re-opened, frames may be refused.
async fn send_until_confirmed(ws: &mut support::Ws, room: &str, user: &str, id: &str) {
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        ws.send(json!({"chat_message": {"id": id, "room_id": room, "sender_id": user, "content": "back"}, "request_id": id}))
            .await;
        let reply = ws
            .recv_until(|f| f["request_id"] == id || f.get("error").is_some())
            .await;
        if reply.get("chat_message").is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} could not send after restart: {reply}"
        );
    }
}

/// Also: a ping (a frame with only a `request_id`) is the gateway's to
/// answer, so it proves the socket to a client whatever the upstream's state.
#[tokio::test]
async fn the_gateway_starts_with_the_upstream_down_and_answers_pings_itself() {
    // Reserve a port, then free it: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&format!("http://{addr}")).await;
    let mut ws = proxy.connect().await;
    let reply = ws.call("get_user", json!({"user_id": "x"})).await;
    assert_eq!(reply["error"]["code"], "UNAVAILABLE", "{reply}");
    ws.send_text(r#"{"request_id": "p1"}"#).await;
    assert_eq!(ws.recv().await, json!({"request_id": "p1"}));

    let dir = tempfile::tempdir().unwrap();
    let _server = ServerProcess::spawn(&dir.path().join("chat.db"), addr);
    let echo = ws.say("r", "u", "first", "upstream is up").await;
    assert_eq!(echo["seq"], "1");
    ws.send_text(r#"{"request_id": "p2"}"#).await;
    let pong = ws
        .recv_until(|f| f.get("request_id") == Some(&json!("p2")))
        .await;
    assert_eq!(pong, json!({"request_id": "p2"}), "nothing but the id");
}

#[tokio::test]
async fn graceful_shutdown_closes_websockets_with_1001_and_keeps_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = support::Server::start_with(&db, Default::default()).await;
    let proxy = Proxy::start(&server.uri()).await;
    let mut ws = proxy.connect().await;
    for i in 1..=20 {
        ws.say("r", "u", &format!("m{i}"), "kept").await;
    }
    proxy.stop().await;
    assert_eq!(ws.closed_with().await, 1001);
    server.stop().await;

    let server = support::Server::start_with(&db, Default::default()).await;
    let page = server
        .grpc()
        .await
        .get_chat_history(wsgate::proto::chat::GetChatHistoryRequest {
            room_id: "r".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.messages.len(), 20);
}
