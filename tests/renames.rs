//! A rename reaches, at once, every stream in a room where the renamed user
//! is present: once per stream however many rooms it shares, and never a
//! stream that shares none.

mod support;

use serde_json::{Value, json};

use support::System;

fn renames(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter_map(|f| f.get("user_renamed"))
        .collect()
}

#[tokio::test]
async fn a_rename_reaches_members_of_shared_rooms_once_and_strangers_never() {
    let system = System::start().await;
    let mut alice = system.connect().await;
    let mut bob = system.connect().await;
    let mut carol = system.connect().await;
    // Bob shares two rooms with alice; carol shares none.
    for room in ["shared", "also-shared"] {
        alice.join(room, "alice").await;
        bob.join(room, "bob").await;
    }
    carol.join("elsewhere", "carol").await;

    let reply = alice
        .call(
            "set_user_name",
            json!({"user_id": "alice", "name": "Alice Liddell"}),
        )
        .await;
    assert_eq!(reply["user"]["name"], "Alice Liddell");

    // Bob hears of it once, before anything said after it.
    let renamed = bob.recv_until(|f| f.get("user_renamed").is_some()).await;
    assert_eq!(
        renamed,
        json!({"user_renamed": {"user_id": "alice", "name": "Alice Liddell"}})
    );
    alice.say("shared", "alice", "after", "renamed").await;
    assert!(
        renames(&bob.frames_until_echo("after").await).is_empty(),
        "only once"
    );
    // The rename went out before its reply did: carol's frames up to a
    // message she sends now would hold it, had she been sent it.
    carol
        .send(json!({"chat_message": {"id": "probe", "room_id": "elsewhere", "sender_id": "carol", "content": "anyone?"}}))
        .await;
    assert!(renames(&carol.frames_until_echo("probe").await).is_empty());

    // A rename is news again after carol joins a room alice is in.
    carol.join("shared", "carol").await;
    alice
        .call(
            "set_user_name",
            json!({"user_id": "alice", "name": "Alice"}),
        )
        .await;
    let renamed = carol.recv_until(|f| f.get("user_renamed").is_some()).await;
    assert_eq!(renamed["user_renamed"]["name"], "Alice");
    system.stop().await;
}
