//! Presence (who is in a room) and typing, over WebSocket.

mod support;

use serde_json::{Value, json};
use support::System;

fn presence(frame: &Value) -> Option<&Value> {
    frame.get("presence")
}

#[tokio::test]
async fn a_join_is_answered_with_who_is_there_and_others_learn_of_it() {
    let system = System::start().await;
    let mut ada = system.connect().await;
    ada.send(json!({"join_room": {"room_id": "r", "user_id": "ada"}}))
        .await;
    let snapshot = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(
        snapshot["presence"],
        json!({"room_id": "r", "online": ["ada"], "offline": [], "snapshot": true})
    );

    let mut bob = system.connect().await;
    bob.send(json!({"join_room": {"room_id": "r", "user_id": "bob"}}))
        .await;
    let snapshot = bob.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(snapshot["presence"]["online"], json!(["ada", "bob"]));
    let arrived = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(
        arrived["presence"],
        json!({"room_id": "r", "online": ["bob"], "offline": [], "snapshot": false})
    );

    bob.close().await;
    let left = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(
        left["presence"],
        json!({"room_id": "r", "online": [], "offline": ["bob"], "snapshot": false})
    );
    system.stop().await;
}

#[tokio::test]
async fn a_user_with_two_connections_stays_present_until_the_last_leaves() {
    let system = System::start().await;
    let mut ada = system.connect().await;
    ada.join("r", "ada").await;
    let mut bob_phone = system.connect().await;
    bob_phone.join("r", "bob").await;
    ada.recv_until(|f| presence(f).is_some_and(|p| p["online"] == json!(["bob"])))
        .await;
    let mut bob_laptop = system.connect().await;
    bob_laptop.join("r", "bob").await;
    bob_phone.close().await;
    // No "offline" for bob: his laptop is still there. The next presence ada
    // sees is carol arriving.
    let mut carol = system.connect().await;
    carol.join("r", "carol").await;
    let next = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(next["presence"]["online"], json!(["carol"]), "{next}");
    system.stop().await;
}

#[tokio::test]
async fn typing_reaches_the_others_and_is_never_stored() {
    let system = System::start().await;
    let mut ada = system.connect().await;
    let mut bob = system.connect().await;
    ada.join("r", "ada").await;
    bob.join("r", "bob").await;
    ada.send(json!({"typing": {"room_id": "r", "user_id": "ada"}}))
        .await;
    let typing = bob.recv_until(|f| f.get("typing").is_some()).await;
    assert_eq!(typing["typing"], json!({"room_id": "r", "user_id": "ada"}));
    // ada does not get her own typing back.
    ada.send(
        json!({"chat_message": {"id": "m", "room_id": "r", "sender_id": "ada", "content": "hi"}}),
    )
    .await;
    // Nothing of it arrives before the echo of a message sent after it.
    let seen = ada.frames_until_echo("m").await;
    assert!(seen.iter().all(|f| f.get("typing").is_none()), "{seen:?}");
    let history = ada.call("get_chat_history", json!({"room_id": "r"})).await;
    let contents: Vec<_> = history["chat_history"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert!(
        !contents.contains(&json!("typing")) && contents.len() == 3,
        "{contents:?}"
    );
    system.stop().await;
}

#[tokio::test]
async fn typing_outside_a_joined_room_is_refused() {
    let system = System::start().await;
    let mut ada = system.connect().await;
    ada.send(json!({"typing": {"room_id": "elsewhere", "user_id": "ada"}, "request_id": "t"}))
        .await;
    let reply = ada.recv_until(|f| f["request_id"] == "t").await;
    assert_eq!(reply["error"]["code"], "FAILED_PRECONDITION", "{reply}");
    ada.send(json!({"presence": {"room_id": "r"}, "request_id": "p"}))
        .await;
    let reply = ada.recv_until(|f| f["request_id"] == "p").await;
    assert_eq!(reply["error"]["code"], "INVALID_ARGUMENT", "{reply}");
    system.stop().await;
}

/// A dashboard or a script written against the handout joins with the room
/// alone: it hears everything, and nobody sees it in the room.
#[tokio::test]
async fn a_listener_joins_with_only_a_room_id() {
    let system = System::start().await;
    let mut ada = system.connect().await;
    ada.join("r", "ada").await;

    let mut listener = system.connect().await;
    listener
        .send(json!({"join_room": {"room_id": "r"}, "request_id": "j1"}))
        .await;
    let answer = listener.recv().await;
    assert_eq!(
        answer,
        json!({"presence": {"room_id": "r", "online": ["ada"], "offline": [], "snapshot": true},
               "request_id": "j1"})
    );

    ada.say("r", "ada", "m1", "hello listeners").await;
    let heard = listener
        .recv_until(|f| f["chat_message"]["id"] == "m1")
        .await;
    assert_eq!(heard["chat_message"]["content"], "hello listeners");

    // Ada saw no one arrive, and sees no one leave.
    listener.close().await;
    let mut bob = system.connect().await;
    bob.send(json!({"join_room": {"room_id": "r", "user_id": "bob"}}))
        .await;
    let next = ada.recv_until(|f| presence(f).is_some()).await;
    assert_eq!(next["presence"]["online"], json!(["bob"]), "{next}");
    system.stop().await;
}

/// The handout's flow (send first, which joins) then an explicit join: the
/// join is answered like any other.
#[tokio::test]
async fn a_join_after_sending_to_the_room_is_answered() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.say("r", "client1", "msg1", "Hello World !").await;
    ws.send(json!({"join_room": {"room_id": "r", "user_id": "client1"}, "request_id": "j1"}))
        .await;
    let answer = ws.recv().await;
    assert_eq!(answer["request_id"], "j1", "{answer}");
    assert_eq!(
        answer["presence"],
        json!({"room_id": "r", "online": ["client1"], "offline": [], "snapshot": true})
    );
    // And so is a second join of the same room.
    ws.send(json!({"join_room": {"room_id": "r", "user_id": "client1"}, "request_id": "j2"}))
        .await;
    assert_eq!(ws.recv().await["request_id"], "j2");
    system.stop().await;
}
