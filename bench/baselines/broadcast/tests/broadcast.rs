//! The wire contract of bench/README.md, against an in-process server.
//!
//! No sleeps: to show that a frame did NOT reach a client, that client later
//! gets a frame of its own and must see it first. A malformed frame is
//! answered with an error frame, after everything the same client sent
//! before it was handled; the tests use it as a barrier.

use std::time::Duration;

use bare_broadcast::{Config, MAX_MESSAGE_SIZE, run};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async, connect_async};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Guards every wait, so that a broken server fails a test instead of
/// hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn start(config: Config) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(run(listener, config));
    format!("ws://{addr}/")
}

async fn connect(url: &str) -> Client {
    connect_async(url).await.expect("connect").0
}

async fn send(client: &mut Client, text: &str) {
    client
        .send(Message::text(text))
        .await
        .expect("send to the server");
}

/// The next text frame; panics on anything else (pings and pongs aside).
async fn next_text(client: &mut Client) -> String {
    loop {
        let next = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("timed out waiting for a frame");
        match next {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn expect_error(client: &mut Client) -> String {
    let text = next_text(client).await;
    let frame: serde_json::Value = serde_json::from_str(&text).expect("an error frame is JSON");
    frame["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error frame, got {text}"))
        .to_owned()
}

/// Returns once the server has handled everything `client` sent so far.
async fn barrier(client: &mut Client) {
    send(client, "barrier: not JSON").await;
    expect_error(client).await;
}

fn chat(id: &str, room: &str, sender: &str, content: &str) -> String {
    serde_json::json!({
        "chat_message": { "id": id, "room_id": room, "sender_id": sender, "content": content }
    })
    .to_string()
}

#[tokio::test]
async fn a_publish_reaches_every_member_of_its_room_verbatim_and_no_one_else() {
    let url = start(Config::default()).await;
    let mut alice = connect(&url).await;
    let mut bob = connect(&url).await;
    let mut carol = connect(&url).await;

    send(
        &mut alice,
        r#"{"join_room":{"room_id":"a","user_id":"alice"}}"#,
    )
    .await;
    // "\u0061" is "a": the room id is decoded, not compared as raw text.
    send(
        &mut bob,
        r#"{"join_room":{"room_id":"\u0061","user_id":"bob"}}"#,
    )
    .await;
    send(
        &mut carol,
        r#"{"join_room":{"room_id":"b","user_id":"carol"}}"#,
    )
    .await;
    barrier(&mut alice).await;
    barrier(&mut bob).await;
    barrier(&mut carol).await;

    // Odd spacing and field order, and a field the server does not know:
    // it must come back byte for byte.
    let hello = r#"{ "chat_message" : {"content":"hi \"all\" ☃","room_id":"a","id":"m1","sender_id":"alice","extra":[1,{"x":null}]}}"#;
    send(&mut alice, hello).await;
    assert_eq!(
        next_text(&mut alice).await,
        hello,
        "the sender gets its copy"
    );
    assert_eq!(next_text(&mut bob).await, hello);

    let in_b = chat("m2", "b", "carol", "only b");
    send(&mut carol, &in_b).await;
    assert_eq!(
        next_text(&mut carol).await,
        in_b,
        "carol, in room b, must not have received the frame published to a"
    );

    // Bob leaves a: alice's next publish reaches only her.
    send(
        &mut bob,
        r#"{"leave_room":{"room_id":"a","user_id":"bob"}}"#,
    )
    .await;
    barrier(&mut bob).await;
    let after_leave = chat("m3", "a", "alice", "bob has left");
    send(&mut alice, &after_leave).await;
    assert_eq!(next_text(&mut alice).await, after_leave);
    let elsewhere = chat("m4", "c", "bob", "bob in c");
    send(&mut bob, &elsewhere).await;
    assert_eq!(next_text(&mut bob).await, elsewhere, "bob left a");
}

#[tokio::test]
async fn publishing_joins_the_sender_to_the_room() {
    let url = start(Config::default()).await;
    let mut alice = connect(&url).await;
    let mut bob = connect(&url).await;

    let first = chat("m1", "r7", "bob", "first");
    send(&mut bob, &first).await;
    assert_eq!(next_text(&mut bob).await, first);

    let second = chat("m2", "r7", "alice", "second");
    send(&mut alice, &second).await;
    assert_eq!(next_text(&mut alice).await, second);
    assert_eq!(next_text(&mut bob).await, second);
}

#[tokio::test]
async fn bad_input_is_answered_with_an_error_and_the_connection_stays_open() {
    let url = start(Config::default()).await;
    let mut client = connect(&url).await;

    for bad in [
        "",
        "not json",
        "{",
        "[]",
        "null",
        r#"{"chat_message":{"id":"m1","content":"no room"}}"#,
        r#"{"chat_message":{"room_id":7}}"#,
        r#"{"unknown_thing":{"room_id":"r"}}"#,
        r#"{"join_room":{"room_id":"r"},"leave_room":{"room_id":"r"}}"#,
        r#"{"join_room":{"room_id":"r"}} trailing"#,
    ] {
        send(&mut client, bad).await;
        let message = expect_error(&mut client).await;
        assert!(!message.is_empty(), "{bad:?}: empty error message");
    }
    client
        .send(Message::Binary(Bytes::from_static(b"\x00\x01")))
        .await
        .expect("send binary");
    expect_error(&mut client).await;

    let still_there = chat("m2", "r", "u", "still connected");
    send(&mut client, &still_there).await;
    assert_eq!(next_text(&mut client).await, still_there);
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let url = start(Config::default()).await;
    let mut client = connect(&url).await;
    let huge = chat("m1", "r", "u", &"x".repeat(MAX_MESSAGE_SIZE));
    send(&mut client, &huge).await;
    let next = tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("timed out waiting for the close frame");
    match next {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// The largest send buffer the kernel may give a socket, from
/// net.ipv4.tcp_wmem (Linux); 4 MiB elsewhere.
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_and_the_room_carries_on() {
    let url = start(Config { queue: 4 }).await;
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .expect("address");
    // A tiny receive window, so that the server's socket fills quickly.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(addr).await.expect("connect");
    let mut sloth = client_async(url.as_str(), MaybeTlsStream::Plain(tcp))
        .await
        .expect("handshake")
        .0;
    send(
        &mut sloth,
        r#"{"join_room":{"room_id":"r","user_id":"sloth"}}"#,
    )
    .await;
    barrier(&mut sloth).await;

    // Enough to fill the server's send buffer, the client's receive buffer
    // and the queue several times over.
    let content = "x".repeat(60_000);
    let frames = 2 * max_send_buffer() / content.len() + 64;
    let mut publisher = connect(&url).await;
    for i in 0..frames {
        let frame = chat(&format!("m{i}"), "r", "publisher", &content);
        send(&mut publisher, &frame).await;
        assert_eq!(next_text(&mut publisher).await, frame);
    }

    // The slow client gets what was in flight, then the end: a close frame
    // with 1008 if it was still being waited for, or just the end of the
    // stream.
    let mut received = 0;
    loop {
        let next = tokio::time::timeout(PATIENCE, sloth.next())
            .await
            .expect("timed out: the slow client was not dropped");
        match next {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| f.code);
                assert_eq!(code, Some(CloseCode::Policy));
                break;
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        received < frames,
        "the slow client got all {frames} frames: it was not dropped"
    );
}
