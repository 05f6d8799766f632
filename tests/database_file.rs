//! The database file outside SQLite's view: one store per file, and a file
//! deleted or replaced under a running server stops its confirmations.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{Proxy, Server, ServerProcess, WAIT, Ws, run_to_exit, wsgate};
use tokio_stream::StreamExt as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use wsgate::storage::{SqliteOptions, SqliteStore};

#[test]
fn a_second_store_on_the_same_file_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let first = SqliteStore::open(&db, SqliteOptions::default()).unwrap();

    let Err(err) = SqliteStore::open(&db, SqliteOptions::default()) else {
        panic!("a second store opened {}", db.display());
    };
    let message = err.to_string();
    assert!(message.contains(&db.display().to_string()), "{message}");
    assert!(message.contains("in use"), "{message}");

    drop(first);
    SqliteStore::open(&db, SqliteOptions::default()).expect("free again");
}

#[tokio::test]
async fn a_second_process_on_the_same_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let first = ServerProcess::spawn(&db, "127.0.0.1:0".parse().unwrap());

    let mut second = wsgate();
    second
        .args(["server", "--grpc-listen", "127.0.0.1:0", "--db"])
        .arg(&db);
    let second = run_to_exit(second);
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let expected = format!("{} is in use by process {}", db.display(), first.pid());
    assert!(second.stderr.contains(&expected), "{}", second.stderr);
    assert!(!second.stderr.contains("listening"), "{}", second.stderr);

    // The first one is untouched.
    let mut grpc =
        wsgate::proto::chat::chat_service_client::ChatServiceClient::connect(first.uri())
            .await
            .unwrap();
    let page = grpc
        .get_chat_history(wsgate::proto::chat::GetChatHistoryRequest {
            room_id: "r".into(),
            ..Default::default()
        })
        .await
        .expect("the first server still answers");
    assert!(page.into_inner().messages.is_empty());
}

/// A server and gateway on `db`, a WebSocket that has had one message
/// confirmed, and health watches of the server and of the chat service.
struct Running {
    server: Server,
    proxy: Proxy,
    ws: Ws,
    watches: Vec<tonic::Streaming<tonic_health::pb::HealthCheckResponse>>,
}

impl Running {
    async fn start(db: &Path) -> Running {
        let server = Server::start_with(db, wsgate::server::Config::default()).await;
        // a_busy_database_stays_serving sends 3,000 frames in a few seconds.
        let proxy = Proxy::start_for_load(&server.uri()).await;
        let mut ws = proxy.connect().await;
        let echo = ws.say("r", "u", "m1", "stored").await;
        assert_eq!(echo["seq"], "1");
        let mut health = HealthClient::new(server.channel().await);
        let mut watches = Vec::new();
        for service in ["", wsgate::proto::CHAT_SERVICE] {
            let mut watch = health
                .watch(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
            watches.push(watch);
        }
        Running {
            server,
            proxy,
            ws,
            watches,
        }
    }

    /// Waits until both watches say NOT_SERVING, and Check agrees.
    async fn until_not_serving(&mut self) {
        for watch in &mut self.watches {
            while next_status(watch).await != ServingStatus::NotServing {}
        }
        let mut health = HealthClient::new(self.server.channel().await);
        let reply = health
            .check(HealthCheckRequest {
                service: wsgate::proto::CHAT_SERVICE.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::NotServing);
    }

    /// Sends a message and returns the answer to it: its echo or an error.
    async fn send(&mut self, id: &str) -> Value {
        self.ws
            .send(json!({"chat_message": {"id": id, "room_id": "r", "sender_id": "u", "content": "lost?"}, "request_id": id}))
            .await;
        self.ws
            .recv_until(|f| f["request_id"] == id || f["chat_message"]["id"] == id)
            .await
    }

    async fn stop(self) {
        // A health watch never ends by itself, and graceful shutdown waits
        // for every call.
        drop(self.watches);
        self.ws.close().await;
        self.proxy.stop().await;
        self.server.stop().await;
    }
}

async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> ServingStatus {
    let reply = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a health status within the wait")
        .expect("watch open")
        .expect("watch reply");
    reply.status()
}

fn assert_not_stored(answer: &Value) {
    assert_eq!(answer["error"]["code"], "UNAVAILABLE", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("deleted or replaced"), "{message}");
    assert!(message.contains("restart the server"), "{message}");
}

#[tokio::test]
async fn a_deleted_database_is_noticed_with_no_traffic_and_nothing_more_is_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut running = Running::start(&db).await;

    std::fs::remove_file(&db).unwrap();
    running.until_not_serving().await;
    for id in ["m2", "m3"] {
        assert_not_stored(&running.send(id).await);
    }
    running.stop().await;
}

#[tokio::test]
async fn a_database_replaced_by_a_rename_fails_the_next_message_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut running = Running::start(&db).await;

    let other = dir.path().join("other.db");
    std::fs::write(&other, b"").unwrap();
    std::fs::rename(&other, &db).unwrap();
    assert_not_stored(&running.send("m2").await);
    running.until_not_serving().await;
    assert_not_stored(&running.send("m3").await);
    running.stop().await;
}

#[tokio::test]
async fn a_database_moved_away_is_noticed_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut running = Running::start(&db).await;

    std::fs::rename(&db, dir.path().join("moved.db")).unwrap();
    assert_not_stored(&running.send("m2").await);
    running.until_not_serving().await;
    running.stop().await;
}

/// Confirmations go on as long as the file stays: checkpoints, which
/// rewrite the database and restart the WAL, are not mistaken for a
/// replacement.
#[tokio::test]
async fn a_busy_database_stays_serving() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let mut running = Running::start(&db).await;
    // Enough pages to go past the checkpoint threshold a few times; sent
    // in windows, each waited for, so no queue overflows.
    let content = "x".repeat(4000);
    for window in 0..30 {
        let ids: Vec<String> = (0..100).map(|i| format!("w{window}-{i}")).collect();
        for id in &ids {
            running
                .ws
                .send(json!({"chat_message": {"id": id, "room_id": "r", "sender_id": "u", "content": content}}))
                .await;
        }
        let frames = running.ws.frames_until_echo(&ids[99]).await;
        assert!(
            frames.iter().all(|f| f.get("error").is_none()),
            "{frames:?}"
        );
    }
    let echo = running.ws.say("r", "u", "last", "still stored").await;
    assert_eq!(echo["seq"], "3002");
    let mut health = HealthClient::new(running.server.channel().await);
    let reply = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
    running.stop().await;
}

/// A database as version 1 of the schema left it (before edits and the
/// directory), with two rooms of messages and a renamed user.
fn write_version_1_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE rooms (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
             last_seq INTEGER NOT NULL);
         CREATE TABLE messages (room INTEGER NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL,
             sender_id TEXT NOT NULL, content TEXT NOT NULL, timestamp_us INTEGER NOT NULL,
             PRIMARY KEY (room, seq)) WITHOUT ROWID;
         CREATE UNIQUE INDEX messages_by_id ON messages (room, id, sender_id);
         CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT NOT NULL,
             created_at INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO rooms VALUES (1, 'lobby', 2), (2, 'attic', 1);
         INSERT INTO messages VALUES
             (1, 1, 'a', 'ada', 'hello', 1700000000000000),
             (1, 2, 'b', 'bob', 'hi ada', 1700000060000000),
             (2, 1, 'c', 'ada', 'dusty', 1600000000000000);
         INSERT INTO users VALUES ('ada', 'Ada Lovelace', 1700000000000000);
         PRAGMA user_version = 1;",
    )
    .unwrap();
}

#[tokio::test]
async fn the_binary_migrates_a_version_1_database_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    write_version_1_database(&db);
    let server = ServerProcess::spawn(&db, "127.0.0.1:0".parse().unwrap());
    let proxy = Proxy::start(&server.uri()).await;
    let mut ws = proxy.connect().await;

    let history = ws
        .call("get_chat_history", json!({"room_id": "lobby"}))
        .await;
    let messages = history["chat_history"]["messages"].as_array().unwrap();
    let kept: Vec<_> = messages
        .iter()
        .map(|m| (m["seq"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(kept, [("1", "hello"), ("2", "hi ada")]);
    assert_eq!(messages[0].get("deleted"), None, "never changed");
    assert_eq!(messages[0].get("revision"), None);
    let user = ws.call("get_user", json!({"user_id": "ada"})).await;
    assert_eq!(user["user"]["name"], "Ada Lovelace");

    // The directory knows the old rooms' activity.
    let list = ws.call("list_rooms", json!({})).await;
    let rooms: Vec<_> = list["room_list"]["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["room_id"].as_str().unwrap(),
                r["last_message_at"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rooms,
        [
            ("lobby", "2023-11-14T22:14:20Z"),
            ("attic", "2020-09-13T12:26:40Z")
        ]
    );

    // Old messages take edits; new ones continue the seqs.
    ws.send(json!({"edit_message": {"room_id": "lobby", "seq": 1, "sender_id": "ada", "content": "hello, world"}, "request_id": "e"}))
        .await;
    let edited = ws.recv_until(|f| f["request_id"] == "e").await;
    assert_eq!(edited["message_changed"]["revision"], "1", "{edited}");
    let echo = ws.say("lobby", "ada", "d", "new").await;
    assert_eq!(echo["seq"], "3");
    proxy.stop().await;
}
