//! The WebSocket client side: where to connect, connecting (optionally from
//! a given source address), the frames of the contract (bench/README.md),
//! and cheap parsing of what comes back.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::ids::{MessageId, RunId};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// A `ws://host:port/path` URL, resolved once.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let Some(rest) = url.strip_prefix("ws://") else {
            bail!("{url:?}: only ws:// URLs are supported");
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            bail!("{url:?}: no host");
        }
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let host_port = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
            .await
            .with_context(|| format!("cannot resolve {host_port}"))?
            .collect();
        let Some(addr) = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
        else {
            bail!("{host_port} resolves to no address");
        };
        let url = if rest.contains('/') {
            url.to_owned()
        } else {
            format!("{url}/")
        };
        Ok(Target { url, addr })
    }
}

/// Small buffers: up to 19,000 connections live in one process, and
/// tungstenite zero-fills the whole read buffer before each read.
pub fn config(buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(buffer)
        .write_buffer_size(buffer)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// The source addresses `127.0.0.2 ..= 127.0.0.(1+n)` (none for 0).
pub fn source_ips(n: u8) -> Vec<Ipv4Addr> {
    (0..n).map(|i| Ipv4Addr::new(127, 0, 0, 2 + i)).collect()
}

/// Connects and does the WebSocket handshake, from `source` if given.
/// The error is a short reason, fit for counting.
pub async fn connect(
    target: &Target,
    source: Option<Ipv4Addr>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Ws, String> {
    let attempt = async {
        let socket = match target.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| io_reason("socket", &e))?;
        if let Some(ip) = source {
            #[cfg(target_os = "linux")]
            crate::sys::bind_address_no_port(std::os::fd::AsRawFd::as_raw_fd(&socket));
            socket
                .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .map_err(|e| io_reason("bind", &e))?;
        }
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|e| io_reason("connect", &e))?;
        let _ = stream.set_nodelay(true);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(config))
                .await
                .map_err(|e| ws_reason("handshake", &e))?;
        Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

pub fn io_reason(stage: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{stage}: {:?} (os error {code})", e.kind()),
        None => format!("{stage}: {:?}", e.kind()),
    }
}

pub fn ws_reason(stage: &str, e: &tungstenite::Error) -> String {
    use tungstenite::Error as E;
    match e {
        E::Io(e) => io_reason(stage, e),
        E::Http(response) => format!("{stage}: HTTP {}", response.status()),
        E::ConnectionClosed | E::AlreadyClosed => format!("{stage}: closed"),
        E::Protocol(p) => format!("{stage}: protocol: {p}"),
        E::Capacity(c) => format!("{stage}: capacity: {c}"),
        other => format!("{stage}: {other}"),
    }
}

/// `{"join_room":{"room_id":ROOM,"user_id":USER}}`
pub fn join_frame(room: &str, user: &str) -> Message {
    Message::text(format!(
        r#"{{"join_room":{{"room_id":"{room}","user_id":"{user}"}}}}"#
    ))
}

/// A publisher's chat frames: everything but the id is fixed, so a frame
/// is one allocation and three copies.
#[derive(Clone, Debug)]
pub struct ChatFrames {
    run: RunId,
    suffix: String,
}

const CHAT_PREFIX: &str = r#"{"chat_message":{"id":""#;

impl ChatFrames {
    /// `room`, `sender` and `content` must not need JSON escaping (the
    /// tool's own names and [`crate::ids::content`] never do).
    pub fn new(run: &RunId, room: &str, sender: &str, content: &str) -> ChatFrames {
        ChatFrames {
            run: run.clone(),
            suffix: format!(
                r#"","room_id":"{room}","sender_id":"{sender}","content":"{content}"}}}}"#
            ),
        }
    }

    pub fn frame(&self, id: &MessageId) -> Message {
        let mut s =
            String::with_capacity(CHAT_PREFIX.len() + crate::ids::ID_LEN + self.suffix.len());
        s.push_str(CHAT_PREFIX);
        id.push_to(&self.run, &mut s);
        s.push_str(&self.suffix);
        Message::text(s)
    }
}

/// What the tool needs of a frame from the server; every other key is
/// skipped without being materialised.
#[derive(Deserialize)]
pub struct Incoming<'a> {
    #[serde(borrow, default)]
    pub chat_message: Option<IncomingChat<'a>>,
    #[serde(default)]
    pub error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
pub struct IncomingChat<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

/// A frame's kind, parsed cheaply.
pub enum Parsed<'a> {
    Chat(Cow<'a, str>),
    Error,
    Other,
    Unparsable,
}

#[inline]
pub fn parse(text: &str) -> Parsed<'_> {
    match serde_json::from_str::<Incoming<'_>>(text) {
        Ok(Incoming {
            chat_message: Some(chat),
            ..
        }) => Parsed::Chat(chat.id),
        Ok(Incoming { error: Some(_), .. }) => Parsed::Error,
        Ok(_) => Parsed::Other,
        Err(_) => Parsed::Unparsable,
    }
}

/// A short description of an error frame (its code and message), for the
/// report's samples: the rare path, so it may allocate.
pub fn describe_error(text: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let code = v["error"]["code"].as_str().unwrap_or("?");
    let message = v["error"]["message"].as_str().unwrap_or("");
    clip(&format!("{code}: {message}"), 200).to_owned()
}

/// At most `max` bytes of `text`, cut at a character boundary (peer text
/// may hold multi-byte characters anywhere).
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Kind;

    #[test]
    fn chat_frames_are_the_contract_and_parse_back() {
        let run = RunId::new();
        let frames = ChatFrames::new(&run, "r1", "u1", "hello");
        let id = MessageId {
            ts_ns: 99,
            kind: Kind::Message,
            publisher: 3,
            counter: 4,
        };
        let Message::Text(text) = frames.frame(&id) else {
            panic!("text frame");
        };
        let v: serde_json::Value = serde_json::from_str(text.as_str()).expect("json");
        assert_eq!(v["chat_message"]["room_id"], "r1");
        assert_eq!(v["chat_message"]["sender_id"], "u1");
        assert_eq!(v["chat_message"]["content"], "hello");
        match parse(text.as_str()) {
            Parsed::Chat(got) => assert_eq!(MessageId::parse(&run, &got), Some(id)),
            _ => panic!("a chat message"),
        }
    }

    #[test]
    fn parsing_ignores_key_order_extra_fields_and_other_frames() {
        let wsgate = r#"{"chat_message":{"id":"m1","room_id":"r","sender_id":"s","content":"a \"q\" \u00e9","timestamp":"2026-01-01T00:00:00Z","seq":"7"},"request_id":"x"}"#;
        let reordered = r#"{ "chat_message" : { "seq": 7, "content": "x", "id": "m1" } }"#;
        for text in [wsgate, reordered] {
            assert!(
                matches!(parse(text), Parsed::Chat(id) if id == "m1"),
                "{text}"
            );
        }
        assert!(matches!(
            parse(r#"{"presence":{"room_id":"r","online":["a"],"offline":[],"snapshot":true}}"#),
            Parsed::Other
        ));
        let error = r#"{"error":{"code":"INVALID_ARGUMENT","message":"bad"}}"#;
        assert!(matches!(parse(error), Parsed::Error));
        assert_eq!(describe_error(error), "INVALID_ARGUMENT: bad");
        assert!(matches!(parse("not json"), Parsed::Unparsable));
        assert!(matches!(
            parse(r#"{"chat_message":{"seq":1}}"#),
            Parsed::Unparsable
        ));
    }

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("abc", 10), "abc");
        assert_eq!(clip("abcdef", 3), "abc");
        // 'é' is two bytes: cutting inside it keeps the character out.
        assert_eq!(clip("aé", 2), "a");
        let long = format!(
            "{{\"error\":{{\"code\":\"X\",\"message\":\"{}\"}}}}",
            "é".repeat(300)
        );
        assert!(describe_error(&long).len() <= 200);
    }

    #[tokio::test]
    async fn targets_resolve() {
        let t = Target::resolve("ws://127.0.0.1:8080")
            .await
            .expect("target");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.url, "ws://127.0.0.1:8080/");
        let t = Target::resolve("ws://localhost/x").await.expect("target");
        assert_eq!(t.addr.port(), 80);
        assert!(Target::resolve("http://127.0.0.1:1/").await.is_err());
    }
}
