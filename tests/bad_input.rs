//! Bad input gets a clear error frame and the connection stays usable;
//! only oversize frames end it (1009).

mod support;

use serde_json::json;
use support::{Proxy, System, Ws};
use tokio_tungstenite::tungstenite::Message;

/// Sends `text`, expects an INVALID_ARGUMENT error mentioning `needle`, then
/// proves the connection still works.
async fn refused(ws: &mut Ws, text: &str, needle: &str) {
    ws.send_text(text).await;
    let frame = ws.recv().await;
    assert_eq!(
        frame["error"]["code"], "INVALID_ARGUMENT",
        "for {text}: {frame}"
    );
    let message = frame["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(needle),
        "for {text}: {message:?} should mention {needle:?}"
    );
    still_usable(ws).await;
}

async fn still_usable(ws: &mut Ws) {
    let reply = ws.call("get_chat_history", json!({"room_id": "any"})).await;
    assert!(reply.get("chat_history").is_some(), "{reply}");
}

#[tokio::test]
async fn malformed_frames_get_an_error_and_the_connection_goes_on() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    refused(&mut ws, "{not json", "invalid JSON").await;
    refused(&mut ws, "[1, 2]", "JSON object").await;
    refused(&mut ws, "42", "JSON object").await;
    refused(&mut ws, "{}", "JSON object").await;
    refused(&mut ws, r#"{"launch_rockets": {}}"#, "unknown action").await;
    refused(&mut ws, r#"{"resume": {"joins": []}}"#, "unknown action").await;
    refused(
        &mut ws,
        r#"{"get_user": {"user_id": "a"}, "join_room": {}}"#,
        "2 action keys",
    )
    .await;
    refused(&mut ws, r#"{"get_user": {"user_id": 5}}"#, "get_user").await;
    refused(
        &mut ws,
        r#"{"get_chat_history": {"room_id": "r", "limit": "lots"}}"#,
        "get_chat_history",
    )
    .await;
    refused(&mut ws, r#"{"get_user": {"user": "a"}}"#, "user").await;
    refused(
        &mut ws,
        r#"{"get_user": {"user_id": "a"}, "request_id": 7}"#,
        "request_id",
    )
    .await;
    refused(&mut ws, r#"{"chat_message": "hello"}"#, "chat_message").await;
}

/// Issue 8: `after_seq` of 2^64 was an empty page, `limit` of 2^64 an
/// error. Every integer that does not fit its field is refused alike.
#[tokio::test]
async fn integers_that_do_not_fit_their_field_are_refused() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    let u64_range = "must be an integer from 0 to 18446744073709551615";
    for (text, needle) in [
        (
            r#"{"get_chat_history": {"room_id": "r", "after_seq": 18446744073709551616}}"#,
            format!("after_seq {u64_range}"),
        ),
        (
            r#"{"get_chat_history": {"room_id": "r", "after_seq": "18446744073709551616"}}"#,
            format!("after_seq {u64_range}"),
        ),
        (
            r#"{"get_chat_history": {"room_id": "r", "before_seq": -1}}"#,
            format!("before_seq {u64_range}"),
        ),
        (
            r#"{"get_chat_history": {"room_id": "r", "limit": 18446744073709551616}}"#,
            "limit must be an integer from 0 to 4294967295".to_owned(),
        ),
        (
            r#"{"get_chat_history": {"room_id": "r", "limit": 1.5}}"#,
            "limit must be an integer from 0 to 4294967295".to_owned(),
        ),
        (
            r#"{"chat_message": {"room_id": "r", "sender_id": "u", "content": "x", "seq": 18446744073709551616}}"#,
            format!("seq {u64_range}"),
        ),
    ] {
        refused(&mut ws, text, &needle).await;
    }
    // The largest value is still a value.
    let reply = ws
        .call(
            "get_chat_history",
            json!({"room_id": "r", "after_seq": "18446744073709551615"}),
        )
        .await;
    assert_eq!(reply["chat_history"]["messages"], json!([]), "{reply}");
}

#[tokio::test]
async fn the_error_echoes_the_request_id_when_it_can_be_read() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.send_text(r#"{"bogus": {}, "request_id": "r-9"}"#).await;
    let frame = ws.recv().await;
    assert_eq!(frame["request_id"], "r-9");
    assert_eq!(frame["error"]["code"], "INVALID_ARGUMENT");
}

#[tokio::test]
async fn missing_or_invalid_fields_are_refused_by_the_service() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    let cases = [
        (
            json!({"chat_message": {"room_id": "", "sender_id": "u", "content": "x"}}),
            "room_id is required",
        ),
        (
            json!({"chat_message": {"room_id": "r", "sender_id": "", "content": "x"}}),
            "sender_id is required",
        ),
        (
            json!({"chat_message": {"room_id": "r", "sender_id": "u", "content": ""}}),
            "content is required",
        ),
        (
            json!({"chat_message": {"room_id": "r", "sender_id": "u", "content": "x".repeat(4097)}}),
            "limit is 4096",
        ),
        (
            json!({"join_room": {"user_id": "u"}}),
            "room_id is required",
        ),
        (
            json!({"error": {"code": "NOT_FOUND", "message": "spoof"}}),
            "sent by the server",
        ),
    ];
    for (i, (frame, needle)) in cases.into_iter().enumerate() {
        let mut frame = frame;
        frame["request_id"] = json!(format!("bad-{i}"));
        ws.send(frame).await;
        let reply = ws
            .recv_until(|f| f["request_id"] == format!("bad-{i}").as_str())
            .await;
        assert_eq!(reply["error"]["code"], "INVALID_ARGUMENT", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} should mention {needle:?}"
        );
    }
    for (action, body, needle) in [
        ("get_user", json!({}), "user_id is required"),
        ("get_chat_history", json!({}), "room_id is required"),
        (
            "set_user_name",
            json!({"user_id": "u", "name": "  "}),
            "name is required",
        ),
    ] {
        let reply = ws.call(action, body).await;
        assert_eq!(reply["error"]["code"], "INVALID_ARGUMENT", "{reply}");
        assert!(
            reply["error"]["message"].as_str().unwrap().contains(needle),
            "{reply}"
        );
    }
    // The stream survived all of it.
    let echo = ws.say("r", "u", "ok", "fine").await;
    assert_eq!(echo["seq"], "1");
    system.stop().await;
}

#[tokio::test]
async fn binary_frames_get_an_error() {
    let system = System::start().await;
    let mut ws = system.connect().await;
    ws.send_raw(Message::binary(vec![1, 2, 3])).await;
    let frame = ws.recv().await;
    assert_eq!(frame["error"]["code"], "INVALID_ARGUMENT");
    assert!(
        frame["error"]["message"]
            .as_str()
            .unwrap()
            .contains("binary")
    );
    still_usable(&mut ws).await;
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let system = System::start().await;
    let mut config = wsgate::proxy::Config::new(system.server.uri());
    config.max_frame_bytes = 1024;
    let proxy = Proxy::start_with(config).await;
    let mut ws = proxy.connect().await;
    let big =
        json!({"chat_message": {"room_id": "r", "sender_id": "u", "content": "x".repeat(2000)}});
    ws.send(big).await;
    assert_eq!(ws.closed_with().await, 1009);
    // Other connections are unaffected.
    let mut other = proxy.connect().await;
    still_usable(&mut other).await;
}

#[tokio::test]
async fn the_page_is_served_on_plain_get() {
    let system = System::start().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(system.proxy.addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("<title>wsgate chat</title>"));
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_dropped_with_1008() {
    use tokio::io::AsyncReadExt;
    let system = System::start().await;
    let mut config = wsgate::proxy::Config::new(system.server.uri());
    config.ping_interval = std::time::Duration::from_secs(1);
    let proxy = Proxy::start_with(config).await;
    let (ws, _) = tokio_tungstenite::connect_async(proxy.url()).await.unwrap();
    // Read the raw socket: unlike a WebSocket client, it never answers pings.
    let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = ws.into_inner() else {
        panic!("plain TCP expected");
    };
    let mut bytes = Vec::new();
    tokio::time::timeout(support::WAIT, tcp.read_to_end(&mut bytes))
        .await
        .expect("the gateway hangs up within two ping intervals")
        .unwrap();
    // Server frames are unmasked: a close frame is 0x88, length, then the code.
    let close = bytes
        .windows(4)
        .find(|w| w[0] == 0x88)
        .expect("a close frame");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1008, "{bytes:?}");
    assert!(bytes.contains(&0x89), "pings were sent first");
}
