//! The chat server run with `--auth jwt`: it verifies the token the gateway
//! forwards (`authorization: Bearer <jwt>`) and binds every frame to the
//! token's user and rooms. A real server, a real tonic client.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::Sender;
use tonic::{Code, Streaming};

use support::{Server, TEST_SECRET, WAIT, bearer, test_verifier, token, token_for};
use wsgate::auth::{Claims, TokenRequest};
use wsgate::proto::chat::chat_service_client::ChatServiceClient;
use wsgate::proto::chat::{
    self, ChatHistory, ChatMessage, ChatStream, GetChatHistoryRequest, GetUserRequest, JoinRoom,
    LeaveRoom, SetUserNameRequest, Typing, chat_stream::Event,
};
use wsgate::server;

fn frame(event: Event, request_id: &str) -> ChatStream {
    ChatStream {
        event: Some(event),
        request_id: Some(request_id.into()),
    }
}

fn say(room: &str, sender: &str, id: &str, content: &str) -> Event {
    Event::ChatMessage(ChatMessage {
        id: id.into(),
        room_id: room.into(),
        sender_id: sender.into(),
        content: content.into(),
        ..Default::default()
    })
}

fn join(room: &str, user: &str) -> Event {
    Event::JoinRoom(JoinRoom {
        room_id: room.into(),
        user_id: user.into(),
    })
}

fn typing(room: &str, user: &str) -> Event {
    Event::Typing(Typing {
        room_id: room.into(),
        user_id: user.into(),
    })
}

/// One open `Chat` stream, as a client sees it.
struct Chat {
    tx: Sender<ChatStream>,
    rx: Streaming<ChatStream>,
}

impl Chat {
    async fn open(server: &Server, token: &str) -> Chat {
        let (tx, rx) = server.chat_as(Some(token)).await.expect("Chat opens");
        Chat { tx, rx }
    }

    async fn send(&self, event: Event, request_id: &str) {
        self.tx
            .send(frame(event, request_id))
            .await
            .expect("stream open");
    }

    /// The next frame other than the resume state.
    async fn next(&mut self) -> ChatStream {
        loop {
            let frame = tokio::time::timeout(WAIT, self.rx.message())
                .await
                .expect("a frame in time")
                .expect("the stream goes on")
                .expect("the stream is open");
            if !matches!(frame.event, Some(Event::Resume(_))) {
                return frame;
            }
        }
    }

    /// The answer to the frame sent with `request_id`.
    async fn answer(&mut self, request_id: &str) -> Event {
        loop {
            let frame = self.next().await;
            if frame.request_id.as_deref() == Some(request_id) {
                return frame.event.expect("an event");
            }
        }
    }

    /// The error code answering the frame sent with `request_id`.
    async fn refused(&mut self, request_id: &str) -> (Code, String) {
        match self.answer(request_id).await {
            Event::Error(e) => (Code::from(e.code), e.message),
            other => panic!("expected an error for {request_id}, got {other:?}"),
        }
    }

    /// Sends a message and returns its stored echo.
    async fn say(&mut self, room: &str, sender: &str, id: &str, content: &str) -> ChatMessage {
        self.send(say(room, sender, id, content), id).await;
        match self.answer(id).await {
            Event::ChatMessage(m) => m,
            other => panic!("expected the echo of {id}, got {other:?}"),
        }
    }

    /// Joins and waits for the snapshot answering it.
    async fn join(&mut self, room: &str, user: &str) -> chat::Presence {
        let request_id = format!("join-{room}");
        self.send(join(room, user), &request_id).await;
        match self.answer(&request_id).await {
            Event::Presence(p) => p,
            other => panic!("expected the snapshot of {room}, got {other:?}"),
        }
    }

    /// How the server ended the stream.
    async fn ended_with(&mut self) -> tonic::Status {
        loop {
            match tokio::time::timeout(WAIT, self.rx.message())
                .await
                .expect("the stream ends in time")
            {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    }
}

/// The newest page of `room`, read with `token`.
async fn history_as(server: &Server, room: &str, token: &str) -> ChatHistory {
    let request = GetChatHistoryRequest {
        room_id: room.into(),
        ..Default::default()
    };
    server
        .grpc()
        .await
        .get_chat_history(bearer(request, token))
        .await
        .expect("history")
        .into_inner()
}

fn seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `sub` that expired `ago` seconds ago.
fn expired_token(sub: &str, ago: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        exp: seconds_now() - ago,
        nbf: None,
        iat: Some(seconds_now() - ago - 60),
        name: None,
        rooms: None,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET).unwrap(),
    )
    .unwrap()
}

fn with_rooms(user: &str, rooms: &[&str]) -> String {
    token(TokenRequest {
        user: user.into(),
        rooms: Some(rooms.iter().map(|r| r.to_string()).collect()),
        ..Default::default()
    })
}

#[tokio::test]
async fn no_token_a_bad_one_and_an_expired_one_are_unauthenticated() {
    let server = Server::start_with_jwt().await;
    let other_key = wsgate::auth::mint(
        &wsgate::auth::SignKey::Secret(b"some other secret, also 32 bytes long".to_vec()),
        &TokenRequest {
            user: "alice".into(),
            ttl: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .unwrap();
    let expired = expired_token("alice", 3600);
    let cases = [
        (None, "a token is required"),
        (Some("not-a-jwt"), "not a well-formed JWT"),
        (Some(other_key.as_str()), "signature is not valid"),
        (Some(expired.as_str()), "has expired"),
    ];
    for (token, message) in cases {
        let Err(status) = server.chat_as(token).await else {
            panic!("a stream opened with a token that should be refused");
        };
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains(message), "{status:?}");

        let request = GetUserRequest {
            user_id: "alice".into(),
        };
        let request = match token {
            Some(token) => bearer(request, token),
            None => tonic::Request::new(request),
        };
        let status = server.grpc().await.get_user(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        if let Some(token) = token {
            assert!(!status.message().contains(token), "{status:?}");
        }
    }
    // A valid one opens the stream.
    let mut alice = Chat::open(&server, &token_for("alice")).await;
    alice.say("room", "alice", "m1", "hi").await;
    server.stop().await;
}

#[tokio::test]
async fn health_answers_without_a_token() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = Server::start_with_jwt().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "chat.ChatService"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health needs no token")
            .into_inner();
        assert_eq!(reply.status, 1, "SERVING");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_spoofed_sender_is_refused_and_the_same_stream_then_sends_fine() {
    let server = Server::start_with_jwt().await;
    let mut alice = Chat::open(&server, &token_for("alice")).await;
    alice
        .send(say("room", "bob", "m1", "I am bob"), "spoof")
        .await;
    let (code, message) = alice.refused("spoof").await;
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("\"alice\""), "{message}");

    let echo = alice.say("room", "alice", "m2", "I am alice").await;
    assert_eq!((echo.sender_id.as_str(), echo.seq), ("alice", 1));
    // Joining or typing as someone else: refused the same way.
    alice.send(join("room", "bob"), "join-as-bob").await;
    assert_eq!(alice.refused("join-as-bob").await.0, Code::PermissionDenied);
    alice.send(typing("room", "bob"), "type-as-bob").await;
    assert_eq!(alice.refused("type-as-bob").await.0, Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn an_empty_sender_or_user_is_filled_from_the_token() {
    let server = Server::start_with_jwt().await;
    let token = token_for("alice");
    let mut alice = Chat::open(&server, &token).await;
    let presence = alice.join("room", "").await;
    assert_eq!(presence.online, ["alice"], "joined as the token's user");
    let echo = alice.say("room", "", "m1", "who am I").await;
    assert_eq!(echo.sender_id, "alice");

    let history = history_as(&server, "room", &token).await;
    assert_eq!(history.messages.len(), 1);
    assert_eq!(history.messages[0].sender_id, "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_user_renames_only_itself() {
    let server = Server::start_with_jwt().await;
    let token = token_for("alice");
    let mut grpc = server.grpc().await;
    let rename = |user: &str, name: &str| {
        bearer(
            SetUserNameRequest {
                user_id: user.into(),
                name: name.into(),
            },
            &token,
        )
    };
    let status = grpc
        .set_user_name(rename("bob", "Mallory"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = grpc
        .get_user(bearer(
            GetUserRequest {
                user_id: "bob".into(),
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "bob was not registered");

    let user = grpc.set_user_name(rename("alice", "Ada")).await.unwrap();
    assert_eq!(user.into_inner().name, "Ada");
    let user = grpc.set_user_name(rename("", "Countess")).await.unwrap();
    let user = user.into_inner();
    assert_eq!(
        (user.id.as_str(), user.name.as_str()),
        ("alice", "Countess")
    );
    server.stop().await;
}

#[tokio::test]
async fn the_name_claim_names_a_new_user_and_a_rename_outlives_it() {
    let server = Server::start_with_jwt().await;
    let token = token(TokenRequest {
        user: "ada".into(),
        name: Some("Ada Lovelace".into()),
        ..Default::default()
    });
    let get_ada = || {
        bearer(
            GetUserRequest {
                user_id: "ada".into(),
            },
            &token,
        )
    };
    let mut grpc = server.grpc().await;
    let mut ada = Chat::open(&server, &token).await;
    // Sending first: the message registers her, after the name claim did.
    ada.say("room", "", "m1", "hello").await;
    assert_eq!(
        grpc.get_user(get_ada()).await.unwrap().into_inner().name,
        "Ada Lovelace"
    );

    grpc.set_user_name(bearer(
        SetUserNameRequest {
            user_id: "ada".into(),
            name: "Countess".into(),
        },
        &token,
    ))
    .await
    .unwrap();
    let mut again = Chat::open(&server, &token).await;
    again.join("room", "").await;
    again.say("room", "", "m2", "back").await;
    assert_eq!(
        grpc.get_user(get_ada()).await.unwrap().into_inner().name,
        "Countess"
    );
    server.stop().await;
}

/// The attack of issue 9: send (room, victim, id) first, and the victim's
/// real message would be "deduplicated" into the forgery.
#[tokio::test]
async fn a_forged_message_no_longer_suppresses_the_victims() {
    let server = Server::start_with_jwt().await;
    let mut mallory = Chat::open(&server, &token_for("mallory")).await;
    let bob_token = token_for("bob");
    let mut bob = Chat::open(&server, &bob_token).await;
    bob.join("room", "").await;
    mallory.join("room", "").await;

    // The forgery, as Bob: refused.
    mallory
        .send(say("room", "bob", "bob-1", "forged"), "forge")
        .await;
    assert_eq!(mallory.refused("forge").await.0, Code::PermissionDenied);
    // The same id, as herself: stored as hers.
    let forged = mallory.say("room", "", "bob-1", "forged").await;
    assert_eq!(forged.sender_id, "mallory");

    // Bob's real message, same id: stored, his, delivered to both.
    let real = bob.say("room", "", "bob-1", "the real one").await;
    assert_eq!(
        (real.sender_id.as_str(), real.content.as_str()),
        ("bob", "the real one")
    );
    assert_ne!(real.seq, forged.seq, "a new message, not a duplicate");
    let seen = loop {
        if let Some(Event::ChatMessage(m)) = mallory.next().await.event
            && m.sender_id == "bob"
        {
            break m;
        }
    };
    assert_eq!(seen.content, "the real one");

    let history = history_as(&server, "room", &bob_token).await;
    let stored: Vec<_> = history
        .messages
        .iter()
        .map(|m| (m.id.as_str(), m.sender_id.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        stored,
        [
            ("bob-1", "mallory", "forged"),
            ("bob-1", "bob", "the real one")
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_rooms_claim_limits_join_send_typing_and_history() {
    let server = Server::start_with_jwt().await;
    let token = with_rooms("alice", &["general", "team-*"]);
    let mut alice = Chat::open(&server, &token).await;

    alice.join("general", "").await;
    alice.join("team-red", "").await;
    alice.send(join("secret", ""), "join").await;
    let (code, message) = alice.refused("join").await;
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains("\"secret\""), "{message}");
    alice.send(say("secret", "", "m1", "hi"), "send").await;
    assert_eq!(alice.refused("send").await.0, Code::PermissionDenied);
    alice.send(typing("secret", ""), "type").await;
    assert_eq!(alice.refused("type").await.0, Code::PermissionDenied);
    // The stream is still usable, in the rooms it may enter.
    alice.say("team-red", "", "m2", "hi team").await;

    let mut grpc = server.grpc().await;
    let history = |room: &str| {
        bearer(
            GetChatHistoryRequest {
                room_id: room.into(),
                ..Default::default()
            },
            &token,
        )
    };
    let status = grpc.get_chat_history(history("secret")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let page = grpc.get_chat_history(history("team-red")).await.unwrap();
    assert_eq!(page.into_inner().messages.len(), 1);

    // A resume replayed into a room the token does not allow is refused too.
    alice
        .tx
        .send(ChatStream {
            event: Some(Event::Resume(chat::Resume {
                joins: vec![JoinRoom {
                    room_id: "secret".into(),
                    user_id: "alice".into(),
                }],
            })),
            request_id: None,
        })
        .await
        .unwrap();
    let frame = alice.next().await;
    assert!(
        matches!(frame.event, Some(Event::Error(ref e)) if e.code == Code::PermissionDenied as i32),
        "{frame:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_stream_is_in_at_most_max_rooms_per_stream_rooms() {
    let server = Server::start_configured(server::Config {
        max_rooms_per_stream: 2,
        ..server::Config::default()
    })
    .await;
    let (tx, rx) = server.chat().await;
    let mut chat = Chat { tx, rx };
    chat.join("a", "ada").await;
    chat.say("b", "ada", "m1", "joins b by sending").await;

    chat.send(join("c", "ada"), "join-c").await;
    let (code, message) = chat.refused("join-c").await;
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("2 rooms"), "{message}");
    chat.send(say("c", "ada", "m2", "hi"), "send-c").await;
    assert_eq!(chat.refused("send-c").await.0, Code::ResourceExhausted);

    // Rooms it is in still work; leaving one makes room for another.
    chat.say("a", "ada", "m3", "still here").await;
    chat.send(
        Event::LeaveRoom(LeaveRoom {
            room_id: "a".into(),
        }),
        "leave",
    )
    .await;
    chat.join("c", "ada").await;
    server.stop().await;
}

#[tokio::test]
async fn typing_is_relayed_at_most_once_a_second_per_room_per_stream() {
    let server = Server::start().await;
    let (tx, rx) = server.chat().await;
    let mut ada = Chat { tx, rx };
    let (tx, rx) = server.chat().await;
    let mut bob = Chat { tx, rx };
    for room in ["a", "b"] {
        bob.join(room, "bob").await;
        ada.join(room, "ada").await;
    }
    // A burst of keystrokes in one room, one in another, then a message.
    for i in 0..5 {
        ada.send(typing("a", "ada"), &format!("t{i}")).await;
    }
    ada.send(typing("b", "ada"), "tb").await;
    ada.say("a", "ada", "m1", "done typing").await;

    let mut relayed = Vec::new();
    loop {
        match bob.next().await.event {
            Some(Event::Typing(t)) => relayed.push(t.room_id),
            Some(Event::ChatMessage(m)) if m.id == "m1" => break,
            _ => {}
        }
    }
    assert_eq!(relayed, ["a", "b"], "one per room; the rest dropped");
    // Dropped without an answer: the next answer ada gets is to what follows.
    ada.send(typing("a", ""), "anonymous").await;
    assert_eq!(ada.refused("anonymous").await.0, Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_ends_with_unauthenticated_when_its_token_expires() {
    let server = Server::start_configured(server::Config {
        auth: Some(test_verifier(Duration::ZERO)),
        ..server::Config::default()
    })
    .await;
    let token = token(TokenRequest {
        user: "alice".into(),
        ttl: Duration::from_secs(2),
        ..Default::default()
    });
    let mut alice = Chat::open(&server, &token).await;
    alice.say("room", "", "m1", "before expiry").await;
    let status = alice.ended_with().await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("expired"), "{status:?}");
    // Its presence is gone with it.
    let user = server
        .grpc()
        .await
        .get_user(bearer(
            GetUserRequest {
                user_id: "alice".into(),
            },
            &token_for("observer"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.status, chat::UserStatus::Offline as i32);
    server.stop().await;
}

/// The server's own log, at its most verbose, while tokens come and go:
/// accepted, refused, expired. No token (nor the secret) is in it.
#[tokio::test]
async fn no_token_or_secret_reaches_the_server_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let secret = std::str::from_utf8(TEST_SECRET).unwrap();
    let mut command = support::wsgate();
    command
        .env("RUST_LOG", "trace")
        .env("WSGATE_JWT_SECRET", secret)
        .args(["server", "--auth", "jwt", "--grpc-listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("chat.db"));
    let server = support::spawn_listening(command, "gRPC chat server listening");
    let uri = format!("http://{}", server.addr);

    let valid = token_for("alice");
    let tampered = format!("{}A", &valid[..valid.len() - 1]);
    let expired = expired_token("alice", 3600);
    let mut grpc = ChatServiceClient::connect(uri).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = grpc
        .chat(bearer(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            &valid,
        ))
        .await
        .unwrap()
        .into_inner();
    tx.send(frame(say("room", "", "m1", "hi"), "m1"))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if frame.request_id.as_deref() == Some("m1") {
            break;
        }
    }
    for token in [&valid, &tampered, &expired] {
        let _ = grpc
            .get_user(bearer(
                GetUserRequest {
                    user_id: "alice".into(),
                },
                token,
            ))
            .await;
    }
    drop((tx, stream));

    let log = server.kill_and_read_log();
    assert!(
        log.iter().any(|line| line.contains("call refused")),
        "the refusals are logged"
    );
    for (what, text) in [
        ("token", &valid),
        ("tampered token", &tampered),
        ("expired token", &expired),
    ] {
        // A signature alone would be enough to replay a token.
        let signature = text.rsplit('.').next().unwrap();
        assert!(
            !log.iter().any(|line| line.contains(signature)),
            "a {what} is in the log"
        );
    }
    assert!(
        !log.iter().any(|line| line.contains(secret)),
        "the secret is in the log"
    );
}

#[tokio::test]
async fn without_auth_anyone_acts_as_anyone() {
    let server = Server::start().await;
    let (tx, rx) = server.chat().await;
    let mut chat = Chat { tx, rx };
    chat.say("room", "alice", "m1", "as alice").await;
    chat.say("room", "bob", "m2", "as bob").await;
    let user = server
        .grpc()
        .await
        .set_user_name(SetUserNameRequest {
            user_id: "bob".into(),
            name: "Renamed by alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.name, "Renamed by alice");
    server.stop().await;
}
