//! Editing and deleting your own messages: live for the room through the
//! gateway, in history after, refused for anyone else's message (with and
//! without tokens), and learnt by a client that was away.

mod support;

use serde_json::{Value, json};
use tonic::Code;

use support::{Proxy, Server, System, WAIT, Ws, bearer, token_for};
use wsgate::proto::chat::{
    ChatMessage, ChatStream, DeleteMessage, EditMessage, GetChatHistoryRequest, chat_stream::Event,
};

/// Sends an edit of message `seq` of `room` as `sender` and returns the
/// answer to it (a `message_changed` or an `error` frame).
async fn edit(ws: &mut Ws, room: &str, seq: &str, sender: &str, content: &str) -> Value {
    let request_id = format!("edit-{}", fastrand::u64(..));
    ws.send(json!({
        "edit_message": {"room_id": room, "seq": seq, "sender_id": sender, "content": content},
        "request_id": request_id,
    }))
    .await;
    ws.recv_until(|f| f["request_id"] == request_id.as_str())
        .await
}

async fn delete(ws: &mut Ws, room: &str, seq: &str, sender: &str) -> Value {
    let request_id = format!("delete-{}", fastrand::u64(..));
    ws.send(json!({
        "delete_message": {"room_id": room, "seq": seq, "sender_id": sender},
        "request_id": request_id,
    }))
    .await;
    ws.recv_until(|f| f["request_id"] == request_id.as_str())
        .await
}

/// The next `message_changed` frame, skipping anything else.
async fn next_change(ws: &mut Ws) -> Value {
    ws.recv_until(|f| f.get("message_changed").is_some()).await["message_changed"].clone()
}

fn error_code(frame: &Value) -> &str {
    frame["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {frame}"))
}

fn history_message<'a>(history: &'a Value, seq: &str) -> &'a Value {
    history["chat_history"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["seq"] == seq)
        .unwrap_or_else(|| panic!("no seq {seq} in {history}"))
}

#[tokio::test]
async fn an_edit_and_a_deletion_reach_the_room_live_and_stay_in_history() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    alice.join("r", "alice").await;
    bob.join("r", "bob").await;
    let sent = alice.say("r", "alice", "m1", "helo").await;
    let seq = sent["seq"].as_str().unwrap().to_owned();
    // A message that never changed carries nothing more than before.
    assert_eq!(
        (sent.get("deleted"), sent.get("revision")),
        (None, None),
        "{sent}"
    );
    bob.recv_until(|f| f["chat_message"]["id"] == "m1").await;

    // The editor's answer carries its request_id; the room gets the same
    // message, as it is now, at the same seq.
    let answer = edit(&mut alice, "r", &seq, "alice", "hello").await;
    let edited = &answer["message_changed"];
    assert_eq!(edited["seq"], seq.as_str());
    assert_eq!(edited["id"], "m1");
    assert_eq!(edited["content"], "hello");
    assert_eq!(edited["deleted"], false);
    assert_eq!(edited["revision"], "1");
    assert_eq!(edited["timestamp"], sent["timestamp"], "sent at, still");
    assert!(edited["edited_at"].is_string(), "{answer}");
    let seen = bob.recv_until(|f| f.get("message_changed").is_some()).await;
    assert_eq!(
        seen.get("request_id"),
        None,
        "only the editor's copy has it"
    );
    assert_eq!(&seen["message_changed"], edited);

    let answer = delete(&mut alice, "r", &seq, "alice").await;
    let deleted = &answer["message_changed"];
    assert_eq!(
        (
            &deleted["deleted"],
            &deleted["content"],
            &deleted["revision"]
        ),
        (&json!(true), &json!(""), &json!("2"))
    );
    assert_eq!(deleted["seq"], seq.as_str());
    assert_eq!(&next_change(&mut bob).await, deleted);

    // Neither took a seq: the next message follows the last one.
    let next = alice.say("r", "alice", "m2", "next").await;
    let next_seq: u64 = next["seq"].as_str().unwrap().parse().unwrap();
    assert_eq!(next_seq, seq.parse::<u64>().unwrap() + 1);

    // History keeps the marker at its seq, and says the room's revision.
    let history = bob.call("get_chat_history", json!({"room_id": "r"})).await;
    assert_eq!(history["chat_history"]["revision"], "2");
    assert_eq!(history_message(&history, &seq), deleted);
    system.stop().await;
}

#[tokio::test]
async fn someone_elses_message_unknown_seqs_and_deleted_messages_are_refused() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    alice.join("r", "alice").await;
    bob.join("r", "bob").await;
    let seq = alice.say("r", "alice", "m1", "mine").await["seq"]
        .as_str()
        .unwrap()
        .to_owned();

    let refused = edit(&mut bob, "r", &seq, "bob", "yours now").await;
    assert_eq!(error_code(&refused), "PERMISSION_DENIED", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only its sender"),
        "{refused}"
    );
    let refused = delete(&mut bob, "r", &seq, "bob").await;
    assert_eq!(error_code(&refused), "PERMISSION_DENIED");
    assert_eq!(
        error_code(&edit(&mut alice, "r", "999", "alice", "x").await),
        "NOT_FOUND"
    );
    assert_eq!(
        error_code(&edit(&mut alice, "nowhere", "1", "alice", "x").await),
        "NOT_FOUND"
    );
    assert_eq!(
        error_code(&edit(&mut alice, "r", "0", "alice", "x").await),
        "INVALID_ARGUMENT"
    );
    assert_eq!(
        error_code(&edit(&mut alice, "r", &seq, "alice", " ").await),
        "INVALID_ARGUMENT"
    );
    let too_long = "x".repeat(4097);
    assert_eq!(
        error_code(&edit(&mut alice, "r", &seq, "alice", &too_long).await),
        "INVALID_ARGUMENT"
    );

    // The same edit twice: the second changes nothing and nobody else hears of it.
    let first = edit(&mut alice, "r", &seq, "alice", "edited").await;
    let again = edit(&mut alice, "r", &seq, "alice", "edited").await;
    assert_eq!(again["message_changed"], first["message_changed"]);
    alice.say("r", "alice", "probe", "after the edits").await;
    let frames = bob.frames_until_echo("probe").await;
    let changes = frames
        .iter()
        .filter(|f| f.get("message_changed").is_some())
        .count();
    assert_eq!(changes, 1, "{frames:?}");

    assert!(delete(&mut alice, "r", &seq, "alice").await["message_changed"]["deleted"] == true);
    let refused = edit(&mut alice, "r", &seq, "alice", "back").await;
    assert_eq!(error_code(&refused), "FAILED_PRECONDITION", "{refused}");
    // Deleting again is harmless.
    let again = delete(&mut alice, "r", &seq, "alice").await;
    assert_eq!(again["message_changed"]["deleted"], true);

    // Without --auth, a claim is believed: whoever says "alice" is alice.
    let seq2 = alice.say("r", "alice", "m2", "claimed").await["seq"]
        .as_str()
        .unwrap()
        .to_owned();
    let claimed = edit(&mut bob, "r", &seq2, "alice", "by bob").await;
    assert_eq!(claimed["message_changed"]["content"], "by bob");
    system.stop().await;
}

/// A `Chat` stream over gRPC as the bearer of `token`.
struct GrpcChat {
    tx: tokio::sync::mpsc::Sender<ChatStream>,
    rx: tonic::Streaming<ChatStream>,
}

impl GrpcChat {
    async fn open(server: &Server, token: &str) -> GrpcChat {
        let (tx, rx) = server.chat_as(Some(token)).await.expect("Chat opens");
        GrpcChat { tx, rx }
    }

    async fn send(&self, event: Event, request_id: &str) {
        self.tx
            .send(ChatStream {
                event: Some(event),
                request_id: Some(request_id.into()),
            })
            .await
            .expect("stream open");
    }

    /// The next frame that `pick` keeps.
    async fn until<T>(&mut self, mut pick: impl FnMut(ChatStream) -> Option<T>) -> T {
        loop {
            let frame = tokio::time::timeout(WAIT, self.rx.message())
                .await
                .expect("a frame in time")
                .expect("the stream goes on")
                .expect("the stream is open");
            if let Some(found) = pick(frame) {
                return found;
            }
        }
    }

    async fn answer(&mut self, request_id: &str) -> Event {
        self.until(|f| {
            (f.request_id.as_deref() == Some(request_id))
                .then_some(f.event)
                .flatten()
        })
        .await
    }

    async fn say(&mut self, room: &str, id: &str) -> ChatMessage {
        let message = ChatMessage {
            id: id.into(),
            room_id: room.into(),
            content: "hi".into(),
            ..Default::default()
        };
        self.send(Event::ChatMessage(message), id).await;
        match self.answer(id).await {
            Event::ChatMessage(m) => m,
            other => panic!("expected the echo of {id}, got {other:?}"),
        }
    }

    async fn edit(&mut self, room: &str, seq: u64, sender: &str, request_id: &str) -> Event {
        let edit = EditMessage {
            room_id: room.into(),
            seq,
            sender_id: sender.into(),
            content: format!("edited by {request_id}"),
        };
        self.send(Event::EditMessage(edit), request_id).await;
        self.answer(request_id).await
    }

    async fn delete(&mut self, room: &str, seq: u64, request_id: &str) -> Event {
        let delete = DeleteMessage {
            room_id: room.into(),
            seq,
            sender_id: String::new(),
        };
        self.send(Event::DeleteMessage(delete), request_id).await;
        self.answer(request_id).await
    }
}

fn refused_with(event: Event) -> Code {
    match event {
        Event::Error(e) => Code::from(e.code),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn with_tokens_only_the_verified_sender_edits_or_deletes() {
    let server = Server::start_with_jwt().await;
    let mut alice = GrpcChat::open(&server, &token_for("alice")).await;
    let mut bob = GrpcChat::open(&server, &token_for("bob")).await;
    let seq = alice.say("r", "m1").await.seq;
    bob.say("r", "b1").await;

    // Bob as himself: not his message. Bob claiming to be alice: not him.
    assert_eq!(
        refused_with(bob.edit("r", seq, "", "bob-edit").await),
        Code::PermissionDenied
    );
    assert_eq!(
        refused_with(bob.edit("r", seq, "alice", "bob-as-alice").await),
        Code::PermissionDenied
    );
    assert_eq!(
        refused_with(bob.delete("r", seq, "bob-delete").await),
        Code::PermissionDenied
    );
    // A token whose rooms claim leaves the room out cannot touch it, even
    // for its own user.
    let limited = support::token(wsgate::auth::TokenRequest {
        user: "alice".into(),
        rooms: Some(vec!["elsewhere".into()]),
        ..Default::default()
    });
    let mut limited = GrpcChat::open(&server, &limited).await;
    assert_eq!(
        refused_with(limited.edit("r", seq, "", "limited").await),
        Code::PermissionDenied
    );

    // Alice, with an empty sender_id filled from her token, may; bob sees it.
    let Event::MessageChanged(edited) = alice.edit("r", seq, "", "alice-edit").await else {
        panic!("alice's edit refused");
    };
    assert_eq!((edited.sender_id.as_str(), edited.seq), ("alice", seq));
    let seen = bob
        .until(|f| match f.event {
            Some(Event::MessageChanged(m)) => Some(m),
            _ => None,
        })
        .await;
    assert_eq!(seen, edited);
    let Event::MessageChanged(deleted) = alice.delete("r", seq, "alice-delete").await else {
        panic!("alice's delete refused");
    };
    assert!(deleted.deleted == Some(true) && deleted.content.is_empty());
    server.stop().await;
}

/// The changes after `since` in `room`, walked page by page as a
/// reconnecting client does: every message, and the highest revision.
async fn changes_since(ws: &mut Ws, room: &str, mut since: String, limit: u32) -> Vec<Value> {
    let mut changed = Vec::new();
    loop {
        let page = ws
            .call(
                "get_chat_history",
                json!({"room_id": room, "changed_since": since, "limit": limit}),
            )
            .await;
        let messages = page["chat_history"]["messages"].as_array().unwrap().clone();
        if let Some(last) = messages.last() {
            since = last["revision"].as_str().unwrap().to_owned();
        }
        changed.extend(messages);
        if page["chat_history"]["has_more"] != true {
            return changed;
        }
    }
}

#[tokio::test]
async fn a_client_that_was_away_learns_the_edits_it_missed_without_reloading_pages() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    alice.join("r", "alice").await;
    let mut seqs = Vec::new();
    for i in 1..=5 {
        let echo = alice
            .say("r", "alice", &format!("m{i}"), &format!("text {i}"))
            .await;
        seqs.push(echo["seq"].as_str().unwrap().to_owned());
    }
    // One edit before bob comes: his history page already shows it.
    edit(&mut alice, "r", &seqs[0], "alice", "early edit").await;

    let mut bob = system.connect().await;
    bob.join("r", "bob").await;
    let page = bob.call("get_chat_history", json!({"room_id": "r"})).await;
    let known = page["chat_history"]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(known, "1");
    assert_eq!(history_message(&page, &seqs[0])["content"], "early edit");
    bob.hang_up().await;

    // While bob is away: two edits (one message twice) and a deletion.
    edit(&mut alice, "r", &seqs[1], "alice", "second, edited").await;
    edit(&mut alice, "r", &seqs[2], "alice", "third, edited").await;
    edit(&mut alice, "r", &seqs[1], "alice", "second, edited again").await;
    delete(&mut alice, "r", &seqs[3], "alice").await;

    let mut bob = system.connect().await;
    let changed = changes_since(&mut bob, "r", known.clone(), 2).await;
    let got: Vec<_> = changed
        .iter()
        .map(|m| {
            (
                m["seq"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
                m["revision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (seqs[2].clone(), "third, edited".to_owned(), "3".to_owned()),
        (
            seqs[1].clone(),
            "second, edited again".to_owned(),
            "4".to_owned(),
        ),
        (seqs[3].clone(), String::new(), "5".to_owned()),
    ];
    assert_eq!(got, expected, "each changed message once, in change order");
    assert_eq!(changed[2]["deleted"], true);
    // Nothing after the newest.
    assert!(
        changes_since(&mut bob, "r", "5".into(), 50)
            .await
            .is_empty()
    );
    // changed_since is a query of its own.
    let refused = bob
        .call(
            "get_chat_history",
            json!({"room_id": "r", "changed_since": "1", "after_seq": "1"}),
        )
        .await;
    assert_eq!(error_code(&refused), "INVALID_ARGUMENT");
    system.stop().await;
}

#[tokio::test]
async fn the_same_catch_up_over_grpc_reads_revisions_as_numbers() {
    let server = Server::start_with_jwt().await;
    let token = token_for("alice");
    let mut alice = GrpcChat::open(&server, &token).await;
    let seq = alice.say("r", "m1").await.seq;
    alice.edit("r", seq, "", "e1").await;
    let page = server
        .grpc()
        .await
        .get_chat_history(bearer(
            GetChatHistoryRequest {
                room_id: "r".into(),
                changed_since: Some(0),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("changes")
        .into_inner();
    assert_eq!(page.revision, 1);
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        (page.messages[0].seq, page.messages[0].revision),
        (seq, Some(1))
    );
    assert!(page.messages[0].edited_at.is_some());
    server.stop().await;
}

/// A WebSocket through a `--auth jwt` gateway, signed in by its first frame.
async fn signed_in(proxy: &Proxy, user: &str) -> Ws {
    let mut ws = proxy.connect().await;
    ws.send(json!({"auth": {"token": token_for(user)}})).await;
    assert_eq!(ws.recv().await["auth"]["sub"], user);
    ws
}

#[tokio::test]
async fn through_a_jwt_gateway_another_users_message_is_refused_as_json() {
    let server = Server::start_with_jwt().await;
    let proxy = Proxy::start_with(wsgate::proxy::Config {
        auth: Some(support::test_verifier(std::time::Duration::ZERO)),
        ..wsgate::proxy::Config::new(server.uri())
    })
    .await;
    let mut alice = signed_in(&proxy, "alice").await;
    let mut bob = signed_in(&proxy, "bob").await;
    alice.join("r", "alice").await;
    bob.join("r", "bob").await;
    let seq = alice.say("r", "alice", "m1", "mine").await["seq"]
        .as_str()
        .unwrap()
        .to_owned();

    // As himself: not his message; as alice: not him.
    let refused = edit(&mut bob, "r", &seq, "", "yours now").await;
    assert_eq!(error_code(&refused), "PERMISSION_DENIED", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not yours")
    );
    let refused = delete(&mut bob, "r", &seq, "alice").await;
    assert_eq!(error_code(&refused), "PERMISSION_DENIED", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sender_id")
    );

    // Alice leaves sender_id empty: the server fills it from her token.
    let answer = edit(&mut alice, "r", &seq, "", "mine, edited").await;
    assert_eq!(answer["message_changed"]["sender_id"], "alice", "{answer}");
    assert_eq!(next_change(&mut bob).await["content"], "mine, edited");
    proxy.stop().await;
    server.stop().await;
}
