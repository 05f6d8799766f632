//! A client that stops reading is cut off with a clear reason, and nobody
//! else is held up by it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Proxy, Server, WAIT, Ws};
use tokio::net::TcpStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsgate::proto::chat::{ChatMessage, ChatStream, JoinRoom, chat_stream::Event};

fn message(room: &str, i: usize, size: usize) -> ChatStream {
    ChatStream {
        event: Some(Event::ChatMessage(ChatMessage {
            id: format!("m{i}"),
            room_id: room.into(),
            sender_id: "loud".into(),
            content: "x".repeat(size),
            ..Default::default()
        })),
        request_id: None,
    }
}

/// Sends `n` messages on one gRPC stream, one at a time (each waits for its
/// echo), as a well-behaved publisher whose own queue never fills.
async fn publish(server: &Server, room: &str, n: usize, size: usize) {
    publish_until(server, room, n, size, &AtomicBool::new(false)).await;
}

/// Like [`publish`], but stops early once `stop` is set; returns how many
/// messages it sent.
async fn publish_until(
    server: &Server,
    room: &str,
    n: usize,
    size: usize,
    stop: &AtomicBool,
) -> usize {
    let mut grpc = server.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut echoes = grpc
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..n {
        if stop.load(Ordering::Relaxed) {
            return i;
        }
        tx.send(message(room, i, size)).await.unwrap();
        loop {
            let frame = tokio::time::timeout(support::WAIT, echoes.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if matches!(frame.event, Some(Event::ChatMessage(_))) {
                break;
            }
        }
    }
    n
}

#[tokio::test]
async fn the_server_ends_a_stream_that_stops_reading_with_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let config = wsgate::server::Config {
        stream_buffer: 8,
        ..Default::default()
    };
    let server = Server::start_with(&dir.path().join("chat.db"), config).await;

    // A stream that joins, then never reads.
    let mut grpc = server.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(ChatStream {
        event: Some(Event::JoinRoom(JoinRoom {
            room_id: "r".into(),
            user_id: "sleepy".into(),
        })),
        request_id: None,
    })
    .await
    .unwrap();
    let mut sleepy = grpc
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The join is handled before any later message of the room: prove it by
    // waiting for the presence snapshot that answers it.
    let first = sleepy.message().await.unwrap().unwrap();
    assert!(
        matches!(first.event, Some(Event::Presence(ref p)) if p.snapshot),
        "{first:?}"
    );

    // 2000 x 1 KiB: far more than HTTP/2 windows and the 8-frame queue hold.
    // The publisher is not held up by the sleeper.
    publish(&server, "r", 2000, 1024).await;

    let status = loop {
        match tokio::time::timeout(support::WAIT, sleepy.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("after_seq"),
        "tells how to catch up: {status:?}"
    );
    drop(tx);
}

#[tokio::test]
async fn the_gateway_closes_a_websocket_that_stops_reading_with_1008() {
    let server = Server::start().await;
    let mut config = wsgate::proxy::Config::new(server.uri());
    config.outbound_queue = 64;
    // The close frame waits behind the frames already written, until the
    // sleeper reads again after the publisher is done.
    config.write_timeout = Duration::from_secs(60);
    let proxy = Proxy::start_with(config).await;
    let mut sleepy = proxy.connect().await;
    sleepy.join("r", "sleepy").await;
    let mut reader = proxy.connect().await;
    reader.join("r", "reader").await;

    // The reader keeps reading, and gets everything.
    let reading = tokio::spawn(async move {
        reader
            .recv_until(|f| f["chat_message"]["id"] == "m1999")
            .await;
        reader
    });
    // ~8 MiB towards a socket nobody reads fills the kernel buffers, then the
    // gateway's queue for it.
    publish(&server, "r", 2000, 4000).await;
    let mut reader = reading.await.unwrap();
    assert_eq!(sleepy.closed_with().await, 1008);
    let reply = reader.call("get_user", json!({"user_id": "reader"})).await;
    assert_eq!(reply["user"]["status"], "ONLINE");
}

/// A WebSocket client that joins a room, then reads nothing until told to.
struct Sleeper {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Sleeper {
    async fn join(proxy: &Proxy, room: &str, user: &str) -> Sleeper {
        let (mut ws, _) = tokio_tungstenite::connect_async(proxy.url()).await.unwrap();
        let join = json!({"join_room": {"room_id": room, "user_id": user}});
        ws.send(Message::text(join.to_string())).await.unwrap();
        // The snapshot answers the join: from now on the room's messages
        // come to this connection.
        loop {
            let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
            let Some(Ok(Message::Text(text))) = frame else {
                panic!("expected the presence snapshot, got {frame:?}");
            };
            let frame: Value = serde_json::from_str(text.as_str()).unwrap();
            if frame["presence"]["snapshot"] == true {
                return Sleeper { ws };
            }
        }
    }

    /// Reads everything the gateway sent, to the end of the connection:
    /// the close code, if a close frame came, and the messages before it.
    async fn wake(mut self) -> (Option<u16>, usize) {
        let mut messages = 0;
        let code = tokio::time::timeout(WAIT, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(frame))) => {
                        return Some(frame.map_or(1005, |f| f.code.into()));
                    }
                    Some(Ok(Message::Text(_))) => messages += 1,
                    Some(Ok(_)) => {}
                    // The TCP connection ended without a close frame.
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
        .expect("the connection ends");
        (code, messages)
    }
}

/// Reads `reader`'s frames until `user` goes offline in the room.
async fn until_offline(reader: &mut Ws, user: &str) {
    reader
        .recv_until(|f| {
            f["presence"]["offline"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == user))
        })
        .await;
}

/// The most messages a flood sends.
const FLOOD: usize = 5000;

/// Publishes 4 KB messages until the reader sees `user` leave the room,
/// then checks the reader got every message; returns how many there were.
async fn flood_until_offline(server: &Server, reader: Ws, user: &'static str) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let watching = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut reader = reader;
            until_offline(&mut reader, user).await;
            stop.store(true, Ordering::Relaxed);
            reader
        }
    });
    // ~4 MB of kernel buffers stall a socket on loopback here: 20 MB is
    // plenty, and takes seconds.
    let sent = publish_until(server, "r", FLOOD, 4000, &stop).await;
    assert!(
        sent < FLOOD,
        "the stalled client was not dropped during the flood"
    );
    let mut reader = watching.await.unwrap();
    // The reader, who keeps reading, got everything.
    let last = format!("m{}", sent - 1);
    reader
        .recv_until(|f| f["chat_message"]["id"] == last.as_str())
        .await;
    sent
}

/// A sleeper and a reader in one room of a gateway with these limits
/// towards each browser; floods the room until the gateway has dropped the
/// sleeper. Returns how many messages were sent, then the sleeper's close
/// code and how many messages it found once it read again.
async fn flood_past_a_sleeper(
    frames: usize,
    bytes: usize,
    write_timeout: Duration,
) -> (usize, Option<u16>, usize) {
    let server = Server::start().await;
    let mut config = wsgate::proxy::Config::new(server.uri());
    config.outbound_queue = frames;
    config.outbound_queue_bytes = bytes;
    config.write_timeout = write_timeout;
    let proxy = Proxy::start_with(config).await;
    let sleepy = Sleeper::join(&proxy, "r", "sleepy").await;
    let mut reader = proxy.connect().await;
    reader.join("r", "reader").await;
    let sent = flood_until_offline(&server, reader, "sleepy").await;
    let (code, messages) = sleepy.wake().await;
    (sent, code, messages)
}

/// Issue 8: a client that stopped reading, with 6,000 messages of 4 KB
/// going to its room, was not closed within 20 s. With the frame and byte
/// bounds out of the way, the write timeout alone drops it.
#[tokio::test]
async fn a_stalled_reader_is_dropped_after_the_write_timeout() {
    let (sent, code, messages) =
        flood_past_a_sleeper(1_000_000, usize::MAX / 2, Duration::from_secs(1)).await;
    // The connection was dropped: the sleeper, reading again, finds its
    // end after fewer messages than were sent. The close frame is a
    // courtesy to a peer that took nothing for a second, but if it got
    // through, it says 1008.
    assert!(messages < sent, "{messages} of {sent}");
    assert!(matches!(code, None | Some(1008)), "{code:?}");
}

/// The byte bound closes a slow reader before its frame bound would, and
/// the close frame (1008) reaches it once it reads again.
#[tokio::test]
async fn the_byte_bound_closes_a_slow_reader_with_1008() {
    let (sent, code, messages) =
        flood_past_a_sleeper(1_000_000, 256 * 1024, Duration::from_secs(60)).await;
    assert_eq!(code, Some(1008));
    assert!(messages < sent, "{messages} of {sent}");
}
