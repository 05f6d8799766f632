//! The room directory (`list_rooms`): rooms other clients created, with
//! their activity and the users in them now, most recent first, in pages;
//! with tokens, only the rooms a token may enter.

mod support;

use serde_json::{Value, json};

use support::{Server, System, bearer, token};
use wsgate::auth::TokenRequest;
use wsgate::proto::chat::{ChatMessage, ChatStream, ListRoomsRequest, chat_stream::Event};

/// (room, last_seq, members) of each room of a `room_list` answer.
fn rooms(list: &Value) -> Vec<(String, String, u64)> {
    list["room_list"]["rooms"]
        .as_array()
        .unwrap_or_else(|| panic!("expected a room list, got {list}"))
        .iter()
        .map(|r| {
            (
                r["room_id"].as_str().unwrap().to_owned(),
                r["last_seq"].as_str().unwrap().to_owned(),
                r["members"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(room: &str, last_seq: &str, members: u64) -> (String, String, u64) {
    (room.to_owned(), last_seq.to_owned(), members)
}

#[tokio::test]
async fn the_directory_lists_rooms_others_made_newest_first_with_who_is_in_them() {
    let system = System::start().await;
    // Carol talks in alpha and beta (sending joins a room) and stays.
    let mut carol = system.connect().await;
    carol.say("alpha", "carol", "a1", "first").await;
    carol.say("beta", "carol", "b1", "hi").await;
    // Dave is in beta too, on two connections: one user.
    let mut dave = system.connect().await;
    dave.join("beta", "dave").await;
    let mut dave_again = system.connect().await;
    dave_again
        .send(json!({"join_room": {"room_id": "beta", "user_id": "dave"}, "request_id": "j"}))
        .await;
    dave_again.recv_until(|f| f["request_id"] == "j").await;
    // A listener is in beta but nobody's member.
    let mut listener = system.connect().await;
    listener
        .send(json!({"join_room": {"room_id": "beta"}, "request_id": "l"}))
        .await;
    listener.recv_until(|f| f["request_id"] == "l").await;
    // Eve says something in gamma and leaves.
    let mut eve = system.connect().await;
    eve.say("gamma", "eve", "g1", "bye").await;
    eve.hang_up().await;
    // Alpha is the most recent again.
    carol.say("alpha", "carol", "a2", "again").await;

    // A newcomer who joined nothing browses.
    let mut newcomer = system.connect().await;
    // Eve's stream leaving is noticed by the server when the gateway ends
    // it: wait for gamma to be empty rather than sleeping.
    let list = tokio::time::timeout(support::WAIT, async {
        loop {
            let list = newcomer.call("list_rooms", json!({})).await;
            if rooms(&list)
                .iter()
                .any(|(room, _, n)| room == "gamma" && *n == 0)
            {
                return list;
            }
        }
    })
    .await
    .expect("eve's stream ends");
    assert_eq!(
        rooms(&list),
        [
            row("alpha", "2", 1),
            row("gamma", "1", 0),
            // carol, and dave (twice); "joined" probes are messages too.
            row("beta", "2", 2),
        ]
    );
    assert_eq!(list["room_list"]["next_cursor"], "");
    let alpha = &list["room_list"]["rooms"][0];
    assert!(alpha["last_message_at"].is_string(), "{alpha}");

    // Pages: two, then the rest, then no cursor.
    let first = newcomer.call("list_rooms", json!({"limit": 2})).await;
    assert_eq!(rooms(&first).len(), 2);
    let cursor = first["room_list"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!cursor.is_empty());
    let second = newcomer
        .call("list_rooms", json!({"limit": 2, "cursor": cursor}))
        .await;
    assert_eq!(rooms(&second), [row("beta", "2", 2)]);
    assert_eq!(second["room_list"]["next_cursor"], "");

    let refused = newcomer
        .call("list_rooms", json!({"cursor": "not a cursor"}))
        .await;
    assert_eq!(refused["error"]["code"], "INVALID_ARGUMENT", "{refused}");
    system.stop().await;
}

/// Sends one message to each room as the bearer of `token`.
async fn talk_in(server: &Server, token: &str, rooms: &[&str]) {
    let (tx, mut rx) = server.chat_as(Some(token)).await.expect("Chat opens");
    for room in rooms {
        let message = ChatMessage {
            id: format!("in-{room}"),
            room_id: room.to_string(),
            content: "hello".into(),
            ..Default::default()
        };
        tx.send(ChatStream {
            event: Some(Event::ChatMessage(message)),
            request_id: None,
        })
        .await
        .unwrap();
    }
    let mut echoes = 0;
    while echoes < rooms.len() {
        let frame = tokio::time::timeout(support::WAIT, rx.message())
            .await
            .expect("in time")
            .expect("stream")
            .expect("open");
        if let Some(Event::ChatMessage(_)) = frame.event {
            echoes += 1;
        }
    }
}

#[tokio::test]
async fn a_rooms_claim_lists_only_the_rooms_the_token_may_enter() {
    let server = Server::start_with_jwt().await;
    let admin = token(TokenRequest {
        user: "admin".into(),
        ..Default::default()
    });
    talk_in(
        &server,
        &admin,
        &["team-a", "secret", "team-b", "general", "hr"],
    )
    .await;
    let alice = token(TokenRequest {
        user: "alice".into(),
        rooms: Some(vec!["team-*".into(), "general".into()]),
        ..Default::default()
    });
    let list = |token: &str, limit: u32, cursor: &str| {
        bearer(
            ListRoomsRequest {
                limit,
                cursor: cursor.into(),
            },
            token,
        )
    };
    let mut grpc = server.grpc().await;
    let names = |rooms: &[wsgate::proto::chat::RoomInfo]| -> Vec<String> {
        rooms.iter().map(|r| r.room_id.clone()).collect()
    };
    let all = grpc
        .list_rooms(list(&admin, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&all.rooms),
        ["hr", "general", "team-b", "secret", "team-a"]
    );

    let mine = grpc
        .list_rooms(list(&alice, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&mine.rooms), ["general", "team-b", "team-a"]);
    assert_eq!(mine.next_cursor, "");
    // Paged, the claim holds on every page.
    let first = grpc
        .list_rooms(list(&alice, 2, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&first.rooms), ["general", "team-b"]);
    let rest = grpc
        .list_rooms(list(&alice, 2, &first.next_cursor))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&rest.rooms), ["team-a"]);
    assert_eq!(rest.next_cursor, "");
    let status = grpc
        .list_rooms(ListRoomsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    server.stop().await;
}
