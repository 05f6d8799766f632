//! The gRPC server directly, as grpcurl, Postman or a service in another
//! language would use it.

mod support;

use support::Server;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use wsgate::proto::chat::{ChatMessage, ChatStream, Code, GetUserRequest, chat_stream::Event};

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
