//! The PostgreSQL engine under faults: the database going away and coming
//! back, and its connections ended under load. Every confirmation a sender
//! got is checked against the history afterwards.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use wsgate::proto::chat::Code;

use support::postgres::{TestSchema, base_address};
use support::relay::Relay;
use support::{Server, ServerProcess, WAIT, postgres_store, whole_history};
use wsgate::proto::chat::chat_service_client::ChatServiceClient;
use wsgate::proto::chat::chat_stream::Event;
use wsgate::proto::chat::{ChatMessage, ChatStream};

fn chat_message(id: &str, room: &str, sender: &str) -> ChatStream {
    ChatStream {
        event: Some(Event::ChatMessage(ChatMessage {
            id: id.into(),
            room_id: room.into(),
            sender_id: sender.into(),
            content: format!("content of {id}"),
            ..Default::default()
        })),
        request_id: Some(id.into()),
    }
}

/// What a sent message got: its seq, or the error's code.
async fn answer(stream: &mut tonic::Streaming<ChatStream>, id: &str) -> Result<u64, Code> {
    loop {
        let frame = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an answer in time")
            .expect("stream open")
            .expect("stream not ended");
        match frame.event {
            Some(Event::ChatMessage(m))
                if m.id == id && frame.request_id.as_deref() == Some(id) =>
            {
                return Ok(m.seq);
            }
            Some(Event::Error(e)) if frame.request_id.as_deref() == Some(id) => {
                return Err(e.code());
            }
            _ => {}
        }
    }
}

async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> ServingStatus {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("a health status within the wait")
        .expect("watch open")
        .expect("watch reply")
        .status()
}

/// Waits until `count` reaches `target`: confirmations still come.
async fn confirmed_at_least(count: &tokio::sync::watch::Sender<u64>, target: u64) {
    let mut count = count.subscribe();
    tokio::time::timeout(2 * WAIT, count.wait_for(|n| *n >= target))
        .await
        .expect("confirmations go on")
        .expect("counter open");
}

/// The database goes away (every connection dropped, new ones refused):
/// a message sent meanwhile gets UNAVAILABLE and is not stored, health
/// says NOT_SERVING; once it is back, health says SERVING again and the
/// resent message is stored, under the next seq, without a restart.
#[tokio::test]
async fn a_database_that_goes_away_refuses_writes_until_it_is_back() {
    let schema = TestSchema::create();
    let (host, port) = base_address();
    let relay = Relay::start(&format!("{host}:{port}")).await;
    let store = postgres_store(&schema.url_through(relay.addr)).await;
    let server = Server::start_on(Arc::new(store), wsgate::server::Config::default()).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: wsgate::proto::CHAT_SERVICE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_status(&mut watch).await, ServingStatus::Serving);
    let (tx, mut stream) = server.chat().await;
    tx.send(chat_message("m1", "r", "u")).await.unwrap();
    assert_eq!(answer(&mut stream, "m1").await, Ok(1));

    relay.cut();
    tx.send(chat_message("m2", "r", "u")).await.unwrap();
    assert_eq!(answer(&mut stream, "m2").await, Err(Code::Unavailable));
    while next_status(&mut watch).await != ServingStatus::NotServing {}
    tx.send(chat_message("m3", "r", "u")).await.unwrap();
    assert_eq!(answer(&mut stream, "m3").await, Err(Code::Unavailable));

    relay.restore();
    while next_status(&mut watch).await != ServingStatus::Serving {}
    tx.send(chat_message("m2", "r", "u")).await.unwrap();
    assert_eq!(answer(&mut stream, "m2").await, Ok(2));
    let history = whole_history(server.uri(), "r").await;
    assert_eq!(history, [(1, "m1".into()), (2, "m2".into())]);
    drop((tx, stream, watch));
    server.stop().await;
}

/// A real `wsgate server` on PostgreSQL, eight senders each keeping one
/// message in flight, and every connection of the server ended by the
/// database again and again (as a restart does). A sender told
/// UNAVAILABLE resends the same id. Afterwards: every confirmation is in
/// the history under the seq it gave, each message is stored once, the
/// seqs run 1..n with no gap, and writes went on after the last fault.
#[tokio::test]
async fn connections_ended_under_writes_lose_no_confirmed_message() {
    const SENDERS: usize = 8;
    const FAULTS: u64 = 5;
    let schema = TestSchema::create();
    let server = ServerProcess::spawn_on_url(&schema.url, "127.0.0.1:0".parse().unwrap());
    let (confirmed, _) = tokio::sync::watch::channel(0_u64);
    let unavailable = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut senders = JoinSet::new();
    for s in 0..SENDERS {
        let uri = server.uri();
        let (confirmed, unavailable, stop) = (confirmed.clone(), unavailable.clone(), stop.clone());
        senders.spawn(async move {
            let mut grpc = ChatServiceClient::connect(uri).await.unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let mut stream = grpc
                .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let mut got: HashMap<String, u64> = HashMap::new();
            let mut n = 0;
            while !stop.is_cancelled() {
                let id = format!("s{s}-{n}");
                // Resent until stored: the client's half of "nothing lost".
                loop {
                    tx.send(chat_message(&id, "r", &format!("u{s}")))
                        .await
                        .unwrap();
                    match answer(&mut stream, &id).await {
                        Ok(seq) => {
                            got.insert(id.clone(), seq);
                            confirmed.send_modify(|n| *n += 1);
                            break;
                        }
                        Err(Code::Unavailable) => {
                            unavailable.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(code) => panic!("{id}: {code:?}"),
                    }
                }
                n += 1;
            }
            got
        });
    }

    // A fault each time 200 more messages were confirmed, until faults
    // have refused some writes (a fault between two batches refuses none:
    // the store reconnects before the next).
    let mut faults = 0;
    let deadline = tokio::time::Instant::now() + 6 * WAIT;
    while faults < FAULTS || unavailable.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{faults} faults refused no write"
        );
        // Once the planned faults are done, more often: a fault must land
        // inside a batch's transaction to refuse anything, and the store
        // retries a batch whose connection was found dead before it began.
        let step = if faults < FAULTS { 200 } else { 20 };
        let target = *confirmed.borrow() + step;
        confirmed_at_least(&confirmed, target).await;
        let ended = schema.terminate_connections();
        assert!(ended > 0, "the server's connections are found by name");
        faults += 1;
    }
    // Writes resume: 500 more confirmations after the last fault.
    let target = *confirmed.borrow() + 500;
    confirmed_at_least(&confirmed, target).await;
    stop.cancel();
    let mut told: BTreeMap<u64, String> = BTreeMap::new();
    while let Some(got) = senders.join_next().await {
        for (id, seq) in got.unwrap() {
            assert!(
                told.insert(seq, id.clone()).is_none(),
                "seq {seq} confirmed twice"
            );
        }
    }

    let history = whole_history(server.uri(), "r").await;
    let seqs: Vec<u64> = history.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "no gap"
    );
    let stored: HashMap<u64, &str> = history.iter().map(|(s, id)| (*s, id.as_str())).collect();
    let mut ids: Vec<&str> = stored.values().copied().collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), history.len(), "each message stored once");
    for (seq, id) in &told {
        assert_eq!(
            stored.get(seq),
            Some(&id.as_str()),
            "confirmed {id} as seq {seq}"
        );
    }
    // A sender stops only once its last message is stored: nothing in the
    // history went unconfirmed.
    assert_eq!(history.len(), told.len());
    eprintln!(
        "{} confirmed, {} refused with UNAVAILABLE and resent, {faults} faults",
        told.len(),
        unavailable.load(Ordering::SeqCst)
    );
    drop(server);
}

/// A database that cannot be reached at start stops the server at once,
/// saying where and why, and never prints the URL's password.
#[test]
fn an_unreachable_database_is_a_startup_error_that_hides_the_password() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = support::wsgate();
    command.args([
        "server",
        "--grpc-listen",
        "127.0.0.1:0",
        "--db",
        &format!("postgres://alice:s3cret@127.0.0.1:{port}/chat"),
    ]);
    let finished = support::run_to_exit(command);
    assert_eq!(finished.status.code(), Some(1), "{finished:?}");
    let expected = format!("cannot open the database postgres://alice@127.0.0.1:{port}/chat");
    assert!(finished.stderr.contains(&expected), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("Connection refused"),
        "{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("s3cret"), "{}", finished.stderr);
}

/// A server that starts on PostgreSQL logs where it stores, without the
/// password (the test database trusts any).
#[test]
fn the_log_names_the_database_without_the_password() {
    let schema = TestSchema::create();
    let url = schema.url.replacen("postgres@", "postgres:s3cret@", 1);
    assert!(url.contains("s3cret"), "{url}");
    let mut command = support::wsgate();
    command.args(["server", "--grpc-listen", "127.0.0.1:0", "--db", &url]);
    let server = support::spawn_listening(command, "gRPC chat server listening");
    let ready = server
        .log
        .iter()
        .find(|line| line.contains("storage ready (PostgreSQL)"))
        .cloned();
    let log = server.kill_and_read_log();
    let ready = ready.expect("a storage ready line");
    assert!(ready.contains("db=postgres://postgres@"), "{ready}");
    assert!(log.iter().all(|line| !line.contains("s3cret")), "{log:?}");
}
