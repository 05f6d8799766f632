//! Several chat servers on one PostgreSQL database, linked by the bus
//! (`--bus`, NATS): members of one room on different servers chat as if
//! on one server. Each test has its own schema and subject prefix.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use support::postgres::TestSchema;
use support::{Proxy, Server, ServerProcess, Ws, nats, postgres_store, wsgate};
use wsgate::server;
use wsgate::server::bus::BusConfig;

/// Servers sharing one schema, each with a gateway in front.
struct Cluster {
    schema: TestSchema,
    prefix: String,
    nodes: Vec<(Server, Proxy)>,
}

impl Cluster {
    async fn start(servers: usize) -> Cluster {
        let mut cluster = Cluster {
            schema: TestSchema::create(),
            prefix: nats::subject_prefix(),
            nodes: Vec::new(),
        };
        for _ in 0..servers {
            cluster.add(true).await;
        }
        cluster
    }

    /// Starts one more server, on the bus or (`false`) off it.
    async fn add(&mut self, on_bus: bool) -> usize {
        let store = postgres_store(&self.schema.url).await;
        let bus = on_bus.then(|| BusConfig {
            url: nats::url(),
            subject_prefix: self.prefix.clone(),
        });
        let config = server::Config {
            bus,
            ..server::Config::default()
        };
        let server = Server::start_on(Arc::new(store), config).await;
        let proxy = Proxy::start_for_load(&server.uri()).await;
        self.nodes.push((server, proxy));
        self.nodes.len() - 1
    }

    async fn connect(&self, node: usize) -> Ws {
        self.nodes[node].1.connect().await
    }

    async fn stop(self) {
        for (server, proxy) in self.nodes {
            proxy.stop().await;
            server.stop().await;
        }
    }
}

fn presence(frame: &Value) -> Option<&Value> {
    frame.get("presence").filter(|p| p["snapshot"] == false)
}

/// Reads chat messages of `room` until every id of `ids` came; returns the
/// seqs in the order they came.
async fn seqs_until_all(ws: &mut Ws, room: &str, ids: &HashSet<String>) -> Vec<u64> {
    let mut missing = ids.clone();
    let mut seqs = Vec::new();
    while !missing.is_empty() {
        let frame = ws
            .recv_until(|f| f["chat_message"]["room_id"] == room)
            .await;
        let msg = &frame["chat_message"];
        seqs.push(seq_of(msg));
        if let Some(id) = msg["id"].as_str() {
            missing.remove(id);
        }
    }
    seqs
}

/// A message's seq: a string on the wire, as every 64-bit integer.
fn seq_of(msg: &Value) -> u64 {
    msg["seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("seq")
}

fn consecutive(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test]
async fn members_on_different_servers_get_every_message_once_in_seq_order() {
    const EACH: usize = 60;
    let cluster = Cluster::start(2).await;
    let mut ada = cluster.connect(0).await;
    let mut bob = cluster.connect(1).await;
    ada.join("r", "ada").await;
    bob.join("r", "bob").await;

    // Both send at once, without waiting: the room's seqs interleave.
    let mut ids = HashSet::new();
    for n in 0..EACH {
        for (ws, user) in [(&mut ada, "ada"), (&mut bob, "bob")] {
            let id = format!("{user}-{n}");
            ws.send(json!({"chat_message": {"id": id, "room_id": "r", "sender_id": user, "content": "x"}}))
                .await;
            ids.insert(id);
        }
    }
    for ws in [&mut ada, &mut bob] {
        let seqs = seqs_until_all(ws, "r", &ids).await;
        assert!(consecutive(&seqs), "in order, no gap, none twice: {seqs:?}");
        assert!(seqs.len() >= 2 * EACH);
    }
    cluster.stop().await;
}

#[tokio::test]
async fn presence_typing_edits_and_renames_cross_servers() {
    let cluster = Cluster::start(2).await;
    let mut ada = cluster.connect(0).await;
    ada.join("r", "ada").await;

    let mut bob = cluster.connect(1).await;
    let snapshot = bob
        .call("join_room", json!({"room_id": "r", "user_id": "bob"}))
        .await;
    assert_eq!(
        snapshot["presence"]["online"],
        json!(["ada", "bob"]),
        "the snapshot is the union over servers: {snapshot}"
    );
    let arrived = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(arrived["presence"]["online"], json!(["bob"]));

    let user = ada.call("get_user", json!({"user_id": "bob"})).await;
    assert_eq!(user["user"]["status"], "ONLINE", "{user}");

    bob.send(json!({"typing": {"room_id": "r", "user_id": "bob"}}))
        .await;
    let typing = ada.recv_until(|f| f.get("typing").is_some()).await;
    assert_eq!(typing["typing"], json!({"room_id": "r", "user_id": "bob"}));

    let said = ada.say("r", "ada", "m1", "hello").await;
    let seq = seq_of(&said);
    bob.recv_until(|f| f["chat_message"]["id"] == "m1").await;
    ada.send(json!({"edit_message": {"room_id": "r", "seq": seq, "sender_id": "ada", "content": "hello!"}}))
        .await;
    let changed = bob.recv_until(|f| f.get("message_changed").is_some()).await;
    assert_eq!(changed["message_changed"]["content"], "hello!");
    assert_eq!(seq_of(&changed["message_changed"]), seq);

    let reply = bob
        .call(
            "set_user_name",
            json!({"user_id": "bob", "name": "Bob Dylan"}),
        )
        .await;
    assert_eq!(reply["user"]["name"], "Bob Dylan");
    let renamed = ada.recv_until(|f| f.get("user_renamed").is_some()).await;
    assert_eq!(
        renamed,
        json!({"user_renamed": {"user_id": "bob", "name": "Bob Dylan"}})
    );

    bob.close().await;
    let left = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(left["presence"]["offline"], json!(["bob"]));
    cluster.stop().await;
}

/// Asks the directory until `room` is listed with `want` members (or
/// fails): the servers learn of each other by heartbeat, so the first
/// answers may come before this server knows them all.
async fn wait_directory_members(ws: &mut Ws, room: &str, want: u64) {
    let found = tokio::time::timeout(support::WAIT, async {
        loop {
            let list = ws.call("list_rooms", json!({})).await;
            let members = list["room_list"]["rooms"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["room_id"] == room)
                .and_then(|r| r["members"].as_u64());
            if members == Some(want) {
                return;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{room} never listed with {want} members"))
}

#[tokio::test]
async fn the_directory_counts_members_on_every_server_once() {
    let cluster = Cluster::start(3).await;
    // Ada and Bob are in the room through server 1, Ada also through server 2.
    let mut ada = cluster.connect(1).await;
    ada.say("busy", "ada", "b1", "hi").await;
    let mut bob = cluster.connect(1).await;
    bob.join("busy", "bob").await;
    let mut ada_again = cluster.connect(2).await;
    ada_again.join("busy", "ada").await;

    // Server 0 has nobody in the room, and counts them all, Ada once.
    let mut newcomer = cluster.connect(0).await;
    wait_directory_members(&mut newcomer, "busy", 2).await;
    bob.close().await;
    wait_directory_members(&mut newcomer, "busy", 1).await;
    drop((ada, ada_again));
    cluster.stop().await;
}

/// A server that never publishes (off the bus) stands for every message
/// the bus loses: the members elsewhere still get them, in order, from
/// the store check.
#[tokio::test]
async fn messages_the_bus_never_carried_come_from_the_store_in_order() {
    let mut cluster = Cluster::start(1).await;
    let off_bus = cluster.add(false).await;
    let mut ada = cluster.connect(0).await;
    ada.join("r", "ada").await;
    let mut carol = cluster.connect(off_bus).await;
    carol.join("r", "carol").await;
    let mut ids = HashSet::new();
    for n in 0..20 {
        let id = format!("c{n}");
        carol.say("r", "carol", &id, "unheard").await;
        ids.insert(id);
    }
    // And one ada sends after them: it waits for the gap to be filled.
    ada.send(json!({"chat_message": {"id": "a-last", "room_id": "r", "sender_id": "ada", "content": "x"}}))
        .await;
    ids.insert("a-last".into());
    let seqs = seqs_until_all(&mut ada, "r", &ids).await;
    assert!(consecutive(&seqs), "{seqs:?}");
    cluster.stop().await;
}

/// kill -9 of a server: no goodbye, only silence. Its users go offline for
/// the members on the other servers within seconds (the heartbeat's
/// timeout), and GetUser says so.
#[tokio::test]
async fn a_killed_servers_users_go_offline_elsewhere() {
    let cluster = Cluster::start(1).await;
    let mut command = wsgate();
    command.args([
        "server",
        "--grpc-listen",
        "127.0.0.1:0",
        "--db",
        &cluster.schema.url,
        "--bus",
        &nats::url(),
        "--bus-subject-prefix",
        &cluster.prefix,
    ]);
    let doomed = ServerProcess::spawn_command(command);
    let proxy = Proxy::start(&doomed.uri()).await;

    let mut ada = cluster.connect(0).await;
    ada.join("r", "ada").await;
    let mut bob = proxy.connect().await;
    bob.join("r", "bob").await;
    ada.recv_until(|f| presence(f).is_some_and(|p| p["online"] == json!(["bob"])))
        .await;

    doomed.kill_9();
    let gone = ada
        .recv_until(|f| presence(f).is_some_and(|p| p["offline"] == json!(["bob"])))
        .await;
    assert_eq!(gone["presence"]["room_id"], "r");
    let user = ada.call("get_user", json!({"user_id": "bob"})).await;
    assert_eq!(user["user"]["status"], "OFFLINE", "{user}");
    let snapshot = ada
        .call("join_room", json!({"room_id": "r", "user_id": "ada"}))
        .await;
    let online: BTreeSet<&str> = snapshot["presence"]["online"]
        .as_array()
        .expect("online")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(online, BTreeSet::from(["ada"]));
    drop(bob);
    proxy.stop().await;
    cluster.stop().await;
}

#[test]
fn the_bus_needs_a_shared_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = wsgate()
        .args(["server", "--grpc-listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("chat.db"))
        .args(["--bus", "nats://127.0.0.1:1"])
        .output()
        .expect("run wsgate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--bus") && stderr.contains("postgres"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_bus_is_a_startup_error_without_its_password() {
    let schema = TestSchema::create();
    let output = wsgate()
        .args([
            "server",
            "--grpc-listen",
            "127.0.0.1:0",
            "--db",
            &schema.url,
        ])
        .args(["--bus", "nats://ada:s3cret@127.0.0.1:1"])
        .output()
        .expect("run wsgate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the bus at nats://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
