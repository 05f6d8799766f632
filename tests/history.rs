//! GetChatHistory through the gateway and over gRPC: paging both ways, caps.

mod support;

use serde_json::{Value, json};
use support::System;
use wsgate::proto::chat::{ChatStream, GetChatHistoryRequest, chat_stream::Event};

/// Stores `n` messages in `room` straight over gRPC and waits for every echo.
async fn fill(system: &System, room: &str, n: usize) {
    let mut grpc = system.server.grpc().await;
    let (tx, rx) = tokio::sync::mpsc::channel(n.max(1));
    for i in 1..=n {
        let message = wsgate::proto::chat::ChatMessage {
            id: format!("m{i}"),
            room_id: room.into(),
            sender_id: "filler".into(),
            content: format!("message {i}"),
            ..Default::default()
        };
        tx.send(ChatStream {
            event: Some(Event::ChatMessage(message)),
            request_id: None,
        })
        .await
        .unwrap();
    }
    let mut echoes = grpc
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut confirmed = 0;
    while confirmed < n {
        let frame = tokio::time::timeout(support::WAIT, echoes.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Event::ChatMessage(_)) = frame.event {
            confirmed += 1;
        }
    }
}

fn seqs(page: &Value) -> Vec<u64> {
    page["chat_history"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn paging_backwards_and_forwards_covers_every_message_once() {
    let system = System::start().await;
    fill(&system, "big", 130).await;
    let mut ws = system.connect().await;

    // Backwards from the newest, as a client scrolling up does.
    let mut all = Vec::new();
    let mut before = 0u64;
    let mut pages = 0;
    loop {
        let page = ws
            .call(
                "get_chat_history",
                json!({"room_id": "big", "limit": 50, "before_seq": before}),
            )
            .await;
        let s = seqs(&page);
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "oldest first, no gap: {s:?}"
        );
        pages += 1;
        all.splice(0..0, s.iter().copied());
        if page["chat_history"]["has_more"] == false {
            break;
        }
        before = s[0];
    }
    assert_eq!(pages, 3);
    assert_eq!(all, (1..=130).collect::<Vec<_>>());

    // Forwards from a seq, as a reconnecting client catches up.
    let page = ws
        .call(
            "get_chat_history",
            json!({"room_id": "big", "after_seq": 100}),
        )
        .await;
    assert_eq!(seqs(&page), (101..=130).collect::<Vec<_>>());
    assert_eq!(page["chat_history"]["has_more"], false);
    let page = ws
        .call(
            "get_chat_history",
            json!({"room_id": "big", "after_seq": 1, "limit": 10}),
        )
        .await;
    assert_eq!(seqs(&page), (2..=11).collect::<Vec<_>>());
    assert_eq!(page["chat_history"]["has_more"], true);
    let page = ws
        .call(
            "get_chat_history",
            json!({"room_id": "big", "after_seq": 10, "before_seq": 15}),
        )
        .await;
    assert_eq!(seqs(&page), vec![11, 12, 13, 14]);
    system.stop().await;
}

#[tokio::test]
async fn catching_up_page_by_page_after_a_seq_has_no_gap_or_duplicate() {
    let system = System::start().await;
    fill(&system, "r", 125).await;
    let mut grpc = system.server.grpc().await;
    let mut after = 3;
    let mut got = Vec::new();
    loop {
        let page = grpc
            .get_chat_history(GetChatHistoryRequest {
                room_id: "r".into(),
                limit: 50,
                after_seq: Some(after),
                before_seq: 0,
                changed_since: None,
            })
            .await
            .unwrap()
            .into_inner();
        got.extend(page.messages.iter().map(|m| m.seq));
        if !page.has_more {
            break;
        }
        after = page.messages.last().unwrap().seq;
    }
    assert_eq!(got, (4..=125).collect::<Vec<_>>());
    system.stop().await;
}

#[tokio::test]
async fn after_seq_0_walks_a_room_from_its_first_message() {
    let system = System::start().await;
    fill(&system, "r", 120).await;
    let mut ws = system.connect().await;
    // A client that has seen nothing pages forward from the start...
    let mut after = 0;
    let mut got: Vec<u64> = Vec::new();
    loop {
        let page = ws
            .call(
                "get_chat_history",
                json!({"room_id": "r", "after_seq": after, "limit": 50}),
            )
            .await;
        let page_seqs = seqs(&page);
        got.extend(&page_seqs);
        if page["chat_history"]["has_more"] != true {
            break;
        }
        after = *page_seqs.last().unwrap();
    }
    assert_eq!(got, (1..=120).collect::<Vec<_>>());
    // ... while leaving after_seq out still gives the newest page.
    let page = ws
        .call("get_chat_history", json!({"room_id": "r", "limit": 50}))
        .await;
    assert_eq!(seqs(&page), (71..=120).collect::<Vec<_>>());
    system.stop().await;
}

#[tokio::test]
async fn the_limit_defaults_to_50_and_is_capped_at_500() {
    let system = System::start().await;
    fill(&system, "r", 520).await;
    let mut ws = system.connect().await;
    let page = ws.call("get_chat_history", json!({"room_id": "r"})).await;
    assert_eq!(seqs(&page), (471..=520).collect::<Vec<_>>());
    let page = ws
        .call("get_chat_history", json!({"room_id": "r", "limit": 100000}))
        .await;
    assert_eq!(seqs(&page).len(), 500);
    assert_eq!(page["chat_history"]["has_more"], true);
    system.stop().await;
}

#[tokio::test]
async fn an_unknown_room_has_an_empty_history_and_every_field_is_present() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    let page = ws
        .call("get_chat_history", json!({"room_id": "nowhere"}))
        .await;
    assert_eq!(
        page["chat_history"],
        json!({"room_id": "nowhere", "messages": [], "has_more": false, "revision": "0"})
    );
    system.stop().await;
}
