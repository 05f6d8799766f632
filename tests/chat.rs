//! The chat over WebSocket, end to end: real server, real gateway, real
//! WebSocket clients.

mod support;

use serde_json::json;
use support::System;

#[tokio::test]
async fn the_handouts_postman_frame_is_echoed_as_confirmation() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.send_text(
        r#"{
  "chat_message": {
    "id": "msg1",
    "room_id": "room1",
    "sender_id": "client1",
    "content": "Hello World !"
  }
}"#,
    )
    .await;
    let frame = ws.recv().await;
    let m = &frame["chat_message"];
    assert_eq!(m["id"], "msg1");
    assert_eq!(m["room_id"], "room1");
    assert_eq!(m["sender_id"], "client1");
    assert_eq!(m["content"], "Hello World !");
    assert_eq!(m["seq"], "1", "canonical JSON: 64-bit integers are strings");
    assert!(
        m["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{frame}"
    );
    assert!(
        frame.get("request_id").is_none(),
        "no request_id was sent: {frame}"
    );
    system.stop().await;
}

#[tokio::test]
async fn every_member_gets_every_message_in_one_order() {
    let system = System::start().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut ws = system.connect().await;
        ws.join("lobby", &format!("user{i}")).await;
        clients.push(ws);
    }
    // Everyone's probes arrive to everyone; start from a clean point: each
    // client sends 10 messages without waiting, interleaved across clients.
    for n in 0..10 {
        for (i, ws) in clients.iter_mut().enumerate() {
            ws.send(json!({"chat_message": {"id": format!("m{i}-{n}"), "room_id": "lobby", "sender_id": format!("user{i}"), "content": format!("{n}")}}))
                .await;
        }
    }
    let mut orders = Vec::new();
    for ws in &mut clients {
        let mut seen = Vec::new();
        while seen.len() < 30 {
            let frame = ws.recv().await;
            let m = &frame["chat_message"];
            if m["id"].as_str().is_some_and(|id| id.starts_with('m')) {
                seen.push((
                    m["seq"].as_str().unwrap().parse::<u64>().unwrap(),
                    m["id"].as_str().unwrap().to_owned(),
                ));
            }
        }
        orders.push(seen);
    }
    for seen in &orders {
        assert!(
            seen.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "seqs contiguous and increasing: {seen:?}"
        );
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    system.stop().await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    alice.join("a", "alice").await;
    bob.join("b", "bob").await;

    // A message is fanned out to every member before its sender's echo, so
    // once alice has her echo, anything bound for bob is already queued
    // ahead of his next echo.
    alice.say("a", "alice", "to-a", "only for a").await;
    bob.send(json!({"chat_message": {"id": "check", "room_id": "b", "sender_id": "bob", "content": "x"}})).await;
    let seen = bob.frames_until_echo("check").await;
    assert!(
        seen.iter().all(|f| f["chat_message"]["room_id"] == "b"),
        "bob saw another room: {seen:?}"
    );
    system.stop().await;
}

#[tokio::test]
async fn leaving_a_room_stops_its_messages() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    alice.join("a", "alice").await;
    alice.join("b", "alice").await;
    bob.join("b", "bob").await;

    bob.say("b", "bob", "before", "alice is here").await;
    let got = alice
        .recv_until(|f| f["chat_message"]["id"] == "before")
        .await;
    assert_eq!(got["chat_message"]["room_id"], "b");

    // Frames on one stream are handled in order: the leave takes effect
    // before alice's next message, whose echo proves it was handled.
    alice.send(json!({"leave_room": {"room_id": "b"}})).await;
    alice.say("a", "alice", "sync", "left b").await;
    bob.say("b", "bob", "after", "alice is gone").await;
    alice.send(json!({"chat_message": {"id": "last", "room_id": "a", "sender_id": "alice", "content": "x"}})).await;
    let seen = alice.frames_until_echo("last").await;
    assert!(
        seen.iter().all(|f| f["chat_message"]["id"] != "after"),
        "alice got room b after leaving: {seen:?}"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_resend_is_stored_once_and_confirmed_with_the_original() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    let first = ws.say("r", "u", "same-id", "first").await;
    let again = ws.say("r", "u", "same-id", "second attempt").await;
    assert_eq!(again, first, "the original comes back, not a new message");
    let history = ws.call("get_chat_history", json!({"room_id": "r"})).await;
    let messages = history["chat_history"]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["content"], "first");
    // The same id from another sender is another message.
    let other = ws.say("r", "v", "same-id", "from v").await;
    assert_eq!(other["seq"], "2");
    system.stop().await;
}

#[tokio::test]
async fn an_empty_id_gets_a_server_generated_one() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.send(json!({"chat_message": {"room_id": "r", "sender_id": "u", "content": "no id"}, "request_id": "r1"})).await;
    let frame = ws.recv_until(|f| f["request_id"] == "r1").await;
    let id = frame["chat_message"]["id"].as_str().unwrap();
    assert!(id.len() >= 16, "generated id: {id:?}");
    system.stop().await;
}

#[tokio::test]
async fn request_id_comes_back_on_the_senders_echo_only() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    bob.join("r", "bob").await;
    alice
        .send(json!({"chat_message": {"id": "x", "room_id": "r", "sender_id": "alice", "content": "hi"}, "request_id": "req-7"}))
        .await;
    let own = alice.recv().await;
    assert_eq!(own["request_id"], "req-7");
    let theirs = bob.recv_until(|f| f["chat_message"]["id"] == "x").await;
    assert!(theirs.get("request_id").is_none(), "{theirs}");
    system.stop().await;
}

#[tokio::test]
async fn get_user_finds_users_and_says_not_found_with_the_request_id() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.join("r", "ada").await;
    let reply = ws.call("get_user", json!({"user_id": "ada"})).await;
    let user = &reply["user"];
    assert_eq!(user["id"], "ada");
    assert_eq!(user["name"], "ada", "the default name is the id");
    assert_eq!(user["status"], "ONLINE");

    ws.send(json!({"get_user": {"user_id": "nobody"}, "request_id": "q1"}))
        .await;
    let reply = ws.recv_until(|f| f["request_id"] == "q1").await;
    assert_eq!(reply["error"]["code"], "NOT_FOUND");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nobody"),
        "{reply}"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_user_can_change_its_name_and_goes_offline_when_its_stream_ends() {
    let system = System::start().await;
    let mut ada = system.connect().await;
    ada.join("r", "ada").await;
    let reply = ada
        .call(
            "set_user_name",
            json!({"user_id": "ada", "name": "  Ada Lovelace "}),
        )
        .await;
    assert_eq!(reply["user"]["name"], "Ada Lovelace");
    assert_eq!(reply["user"]["status"], "ONLINE");

    let mut observer = system.connect().await;
    ada.close().await;
    // Presence is updated when the server sees the stream end; wait for it.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    loop {
        let reply = observer.call("get_user", json!({"user_id": "ada"})).await;
        assert_eq!(reply["user"]["name"], "Ada Lovelace");
        if reply["user"]["status"] == "OFFLINE" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ada still online: {reply}"
        );
        tokio::task::yield_now().await;
    }
    system.stop().await;
}

#[tokio::test]
async fn lower_camel_case_input_is_accepted() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.send(
        json!({"chatMessage": {"id": "c1", "roomId": "r", "senderId": "u", "content": "camel"}}),
    )
    .await;
    let frame = ws.recv().await;
    assert_eq!(
        frame["chat_message"]["room_id"], "r",
        "output uses proto names: {frame}"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_client_that_vanishes_does_not_disturb_the_others() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    alice.join("r", "alice").await;
    bob.join("r", "bob").await;
    {
        let mut ghost = system.connect().await;
        ghost.join("r", "ghost").await;
        ghost.send(json!({"chat_message": {"id": "g1", "room_id": "r", "sender_id": "ghost", "content": "bye"}})).await;
        // Dropped without a close handshake: the TCP connection just ends.
        drop(ghost);
    }
    for i in 0..20 {
        alice
            .say("r", "alice", &format!("a{i}"), "still here")
            .await;
    }
    let last = bob.recv_until(|f| f["chat_message"]["id"] == "a19").await;
    assert_eq!(last["chat_message"]["sender_id"], "alice");
    system.stop().await;
}
