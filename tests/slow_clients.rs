//! A client that stops reading is cut off with a clear reason, and nobody
//! else is held up by it.

mod support;

use serde_json::json;
use support::{Proxy, Server};
use tokio_stream::wrappers::ReceiverStream;
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
    let mut grpc = server.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut echoes = grpc
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..n {
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
