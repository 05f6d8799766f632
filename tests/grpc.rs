//! The gRPC server directly, as grpcurl, Postman or a service in another
//! language would use it.

mod support;

use std::sync::Arc;
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
use wsgate::storage::{
    ChangesQuery, HistoryPage, HistoryQuery, RoomsPage, RoomsQuery, SqliteOptions, SqliteStore,
    Store, StoreError, UserRecord, Write, WriterOptions, Written,
};

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
    server.stop().await;
}

/// A load balancer watching the server's health learns that it is going
/// away, and its open Watch stream does not hold up the graceful shutdown.
#[tokio::test]
async fn a_health_watch_sees_not_serving_and_ends_when_the_server_stops() {
    let server = Server::start().await;
    let mut health = HealthClient::new(server.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "chat.ChatService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    let stopping = tokio::spawn(server.stop());
    let mut statuses = Vec::new();
    while let Some(reply) = tokio::time::timeout(support::WAIT, watch.message())
        .await
        .expect("the watch ends in time")
        .unwrap()
    {
        statuses.push(reply.status());
    }
    assert_eq!(statuses, [ServingStatus::NotServing]);
    stopping.await.unwrap();
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
    server.stop().await;
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
    server.stop().await;
}

#[tokio::test]
async fn an_invalid_frame_gets_an_error_event_and_the_stream_goes_on() {
    let server = Server::start().await;
    let (tx, mut stream) = server.chat().await;
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
    server.stop().await;
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
    server.stop().await;
}

/// An encoded `ChatStream` with a chat message.
fn encoded_message(id: &str) -> bytes::Bytes {
    prost::Message::encode_to_vec(&ChatStream {
        event: Some(Event::ChatMessage(ChatMessage {
            id: id.into(),
            room_id: "r".into(),
            sender_id: "u".into(),
            content: "hi".into(),
            ..Default::default()
        })),
        request_id: None,
    })
    .into()
}

/// Opens `Chat`, sends these gRPC messages as they are, and returns the ids
/// of the messages echoed and the status the stream ended with.
async fn chat_raw(server: &Server, messages: Vec<bytes::Bytes>) -> (Vec<String>, tonic::Status) {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len());
    for message in messages {
        tx.send(message).await.unwrap();
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/chat.ChatService/Chat");
    let mut inbound = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await
        .unwrap()
        .into_inner();
    let mut echoes = Vec::new();
    let status = loop {
        match tokio::time::timeout(support::WAIT, inbound.message())
            .await
            .expect("the stream ends in time")
        {
            Ok(Some(frame)) => {
                if let Some(Event::ChatMessage(m)) = frame.event {
                    echoes.push(m.id);
                }
            }
            Ok(None) => panic!("the stream ended with OK: the sender cannot tell"),
            Err(status) => break status,
        }
    };
    drop(tx);
    (echoes, status)
}

/// Two messages, then bytes that are not a `ChatStream` (field 1 is a number
/// where `ChatStream` has a message), sent before reading anything: the
/// echoes of both come first, then the stream ends saying why.
#[tokio::test]
async fn a_stream_that_sends_what_is_not_a_message_ends_with_invalid_argument() {
    let server = Server::start().await;
    let garbage = bytes::Bytes::from_static(&[0x08, 0x07]);
    let (echoes, status) = chat_raw(
        &server,
        vec![encoded_message("m1"), encoded_message("m2"), garbage],
    )
    .await;
    assert_eq!(echoes, ["m1", "m2"]);
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not a valid chat.ChatStream"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_that_sends_a_message_over_the_size_limit_ends_with_resource_exhausted() {
    let server = Server::start().await;
    let huge = bytes::Bytes::from(vec![b'x'; 10 * 1024 * 1024]);
    let (_, status) = chat_raw(&server, vec![huge]).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{status:?}");
    server.stop().await;
}

/// Sends raw bytes as gRPC messages and decodes `ChatStream`s.
#[derive(Clone, Copy)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = ChatStream;
    type Encoder = RawEncoder;
    type Decoder =
        <tonic_prost::ProstCodec<ChatStream, ChatStream> as tonic::codec::Codec>::Decoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(
            &mut tonic_prost::ProstCodec::<ChatStream, ChatStream>::default(),
        )
    }
}

/// A store whose writes all fail with one error, as a full or locked disk
/// would make them; reads go to a real database.
struct FailingStore {
    error: StoreError,
    reads: SqliteStore,
}

impl Store for FailingStore {
    fn write_batch(&self, _: Vec<Write>) -> Result<Vec<Written>, StoreError> {
        Err(self.error.clone())
    }
    fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.reads.history(query)
    }
    fn changes(&self, query: &ChangesQuery) -> Result<HistoryPage, StoreError> {
        self.reads.changes(query)
    }
    fn rooms(&self, query: &RoomsQuery) -> Result<RoomsPage, StoreError> {
        self.reads.rooms(query)
    }
    fn get_user(&self, user_id: &str) -> Result<Option<UserRecord>, StoreError> {
        self.reads.get_user(user_id)
    }
}

/// gRPC's status code guide: a full disk is RESOURCE_EXHAUSTED, a transient
/// failure worth retrying UNAVAILABLE, a damaged file DATA_LOSS; on the
/// stream (a message not stored) and on unary calls (a rename) alike.
#[tokio::test]
async fn storage_failures_reach_clients_with_the_code_for_what_failed() {
    let cases = [
        (
            StoreError::Full("database or disk is full".into()),
            Code::ResourceExhausted,
        ),
        (
            StoreError::Unavailable("database is locked".into()),
            Code::Unavailable,
        ),
        (
            StoreError::Corrupt("database disk image is malformed".into()),
            Code::DataLoss,
        ),
    ];
    for (error, code) in cases {
        let dir = tempfile::tempdir().unwrap();
        let reads =
            SqliteStore::open(&dir.path().join("chat.db"), SqliteOptions::default()).unwrap();
        let store = Arc::new(FailingStore {
            error: error.clone(),
            reads,
        });
        let server = Server::start_on(store, server::Config::default()).await;
        let (tx, mut stream) = server.chat().await;
        tx.send(ChatStream {
            event: Some(Event::ChatMessage(ChatMessage {
                id: "m1".into(),
                room_id: "r".into(),
                sender_id: "u".into(),
                content: "hi".into(),
                ..Default::default()
            })),
            request_id: Some("q".into()),
        })
        .await
        .unwrap();
        let answer = loop {
            let frame = stream.message().await.unwrap().unwrap();
            if let Some(Event::Error(e)) = frame.event {
                assert_eq!(frame.request_id.as_deref(), Some("q"));
                break e;
            }
        };
        assert_eq!(answer.code(), code, "{error:?}: {answer:?}");
        assert!(answer.message.contains("message not stored"), "{answer:?}");

        let status = server
            .grpc()
            .await
            .set_user_name(wsgate::proto::chat::SetUserNameRequest {
                user_id: "u".into(),
                name: "Ada".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            i32::from(status.code()),
            code as i32,
            "{error:?}: {status:?}"
        );
        drop(tx);
        server.stop().await;
    }
}
