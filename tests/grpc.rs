//! The gRPC server directly, as grpcurl, Postman or a service in another
//! language would use it.

mod support;

use support::Server;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use wsgate::proto::chat::{
    ChatMessage, ChatStream, Code, GetUserRequest, Typing, chat_stream::Event,
};
use wsgate::server;
use wsgate::storage::WriterOptions;

#[tokio::test]
async fn health_says_serving() {
    let server = Server::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let reply = health
        .check(HealthCheckRequest {
            service: "chat.ChatService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_lists_the_chat_service() {
    let server = Server::start().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reply {reply:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"chat.ChatService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[tokio::test]
async fn get_user_of_an_unknown_id_is_not_found() {
    let server = Server::start().await;
    let status = server
        .grpc()
        .await
        .get_user(GetUserRequest {
            user_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn an_invalid_frame_gets_an_error_event_and_the_stream_goes_on() {
    let server = Server::start().await;
    let mut grpc = server.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = grpc
        .chat(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let send = |room: &str, id: &str, request_id: &str| ChatStream {
        event: Some(Event::ChatMessage(ChatMessage {
            id: id.into(),
            room_id: room.into(),
            sender_id: "u".into(),
            content: "hi".into(),
            ..Default::default()
        })),
        request_id: Some(request_id.into()),
    };
    tx.send(send("", "a", "bad")).await.unwrap();
    tx.send(send("r", "b", "good")).await.unwrap();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let frame = stream.message().await.unwrap().unwrap();
        match frame.event {
            Some(Event::Error(e)) => answers.push((frame.request_id, e.code(), e.message)),
            Some(Event::ChatMessage(m)) => {
                answers.push((frame.request_id, Code::Ok, m.seq.to_string()))
            }
            _ => {}
        }
    }
    assert_eq!(
        answers,
        [
            (
                Some("bad".into()),
                Code::InvalidArgument,
                "room_id is required".into()
            ),
            (Some("good".into()), Code::Ok, "1".into()),
        ]
    );
}

/// Thousands of small frames waiting, unread, on one HTTP/2 connection, as
/// when a gateway's browsers send faster than the server's streams read. h2
/// closes a connection whose unread small DATA frames exceed a budget of half
/// its connection window (GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames");
/// with hyper's default 1 MiB window that cut every stream of a gateway
/// connection once ~15,000 browsers had joined through one gateway.
///
/// Here the stream stops reading because its writes wait: another connection
/// holds SQLite's write lock, and the writer's queue holds a single write.
#[tokio::test]
async fn thousands_of_unread_small_frames_do_not_close_the_connection() {
    const FRAMES: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let config = server::Config {
        writer: WriterOptions {
            max_batch: 1,
            queue: 1,
        },
        ..server::Config::default()
    };
    let server = Server::start_with(&db, config).await;
    let mut grpc = server.grpc().await;
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let say = |id: &str| ChatStream {
        event: Some(Event::ChatMessage(ChatMessage {
            id: id.into(),
            room_id: "room".into(),
            sender_id: "alice".into(),
            content: "hi".into(),
            ..Default::default()
        })),
        request_id: Some(id.into()),
    };
    let typing = ChatStream {
        event: Some(Event::Typing(Typing {
            room_id: "room".into(),
            user_id: "alice".into(),
        })),
        request_id: None,
    };
    // The writer takes m1 and waits for the lock, m2 fills its queue, m3
    // waits for room in it: every frame after m3 waits unread.
    let (all_sent, sent) = tokio::sync::oneshot::channel();
    let frames = tokio_stream::iter([say("m1"), say("m2"), say("m3")])
        // One DATA frame each: tonic sends what it has whenever the stream
        // is not ready, and otherwise packs messages into one frame.
        .chain(
            tokio_stream::iter(std::iter::repeat_n(typing, FRAMES)).then(|frame| async {
                tokio::task::yield_now().await;
                frame
            }),
        )
        .chain(tokio_stream::iter([say("last")]))
        .chain(tokio_stream::once(all_sent).filter_map(|signal| {
            let _ = signal.send(());
            None
        }))
        .chain(tokio_stream::pending());
    let mut stream = grpc.chat(frames).await.unwrap().into_inner();
    if sent.await.is_err() {
        panic!(
            "the request stream was dropped before its end: {:?}",
            stream.message().await
        );
    }
    // A call behind every frame on the same connection: once it is answered,
    // the server has received them all.
    let status = grpc
        .get_user(GetUserRequest {
            user_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    lock.execute_batch("COMMIT").unwrap();

    let mut echoes = Vec::new();
    while echoes.last().map(String::as_str) != Some("last") {
        let frame = match stream.message().await {
            Ok(Some(frame)) => frame,
            other => panic!("the stream broke after echoes {echoes:?}: {other:?}"),
        };
        match frame.event {
            Some(Event::Error(e)) => panic!("error frame: {e:?}"),
            Some(Event::ChatMessage(m)) => echoes.push(m.id),
            _ => {}
        }
    }
    assert_eq!(echoes, ["m1", "m2", "m3", "last"]);
}
