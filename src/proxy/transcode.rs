//! WebSocket text frames ⇄ protobuf messages, by the action tables of a
//! [`Gateway`].
//!
//! Inbound, [`Gateway::parse_frame`] reads a frame's top level once, keeping
//! each value as a borrowed [`RawValue`] (its text, validated but not built),
//! then deserializes the action's message straight from that text: no
//! `serde_json::Value` is built on this per-frame path.
//!
//! Outbound, [`reply_json`], [`event_json`] and [`error_json`] write one
//! `String` through `serde_json`'s serializer, in the canonical protobuf JSON
//! mapping with proto field names and default values included.

use std::borrow::Cow;
use std::fmt;

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, SerializeOptions,
    Value,
};
use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use serde_json::value::RawValue;
use tonic::Code;

use super::gateway::{Action, ERROR, Gateway, REQUEST_ID, StreamMethod, UnaryMethod, json_quote};
use crate::proto::code_name;

mod integers;

/// A browser frame, ready to send upstream.
#[derive(Debug)]
pub enum Frame<'a> {
    /// Call `method` with `request`; reply with [`reply_json`] and
    /// `request_id`.
    Unary {
        method: &'a UnaryMethod,
        request: DynamicMessage,
        request_id: Option<String>,
    },
    /// Send on the stream. The frame's `request_id` is inside, if the stream
    /// message has a `request_id` field (else it was dropped). `action` is
    /// the oneof field it sets.
    Stream {
        action: &'a str,
        message: DynamicMessage,
    },
    /// A frame with a `request_id` and no action: a ping, which the gateway
    /// answers itself with [`pong_json`] (nothing goes upstream). A client
    /// sends one to learn that its connection still carries frames both
    /// ways: a socket whose peer vanished (a laptop that slept, a network
    /// that changed) reports nothing until TCP gives up, minutes later.
    Ping { request_id: String },
}

/// A frame the gateway refuses; answer it with [`FrameError::to_json`]. The
/// message is written for the developer of the browser client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    pub message: String,
    /// The bad frame's request id, if it had a readable one.
    pub request_id: Option<String>,
}

impl FrameError {
    /// The `INVALID_ARGUMENT` error frame answering the bad frame.
    pub fn to_json(&self) -> String {
        error_json(
            Code::InvalidArgument,
            &self.message,
            self.request_id.as_deref(),
        )
    }
}

impl Gateway {
    /// Reads one WebSocket text frame: a JSON object with exactly one action
    /// key and optionally a string `"request_id"`.
    ///
    /// Top-level keys are matched exactly (after JSON unescaping); the
    /// action's fields may be snake_case or lowerCamelCase. Unknown fields and
    /// wrong types are errors, so typos surface instead of being dropped.
    pub fn parse_frame(&self, text: &str) -> Result<Frame<'_>, FrameError> {
        let top = scan(text).map_err(|e| match e.classify() {
            // Well-formed JSON, but not an object.
            Category::Data => self.not_a_frame(None),
            Category::Syntax | Category::Eof | Category::Io => FrameError {
                message: format!("invalid JSON: {e}"),
                request_id: None,
            },
        })?;
        let request_id = match top.request_id {
            None => None,
            Some(raw) => {
                Some(
                    serde_json::from_str::<String>(raw.get()).map_err(|_| FrameError {
                        message: format!("{REQUEST_ID} must be a string"),
                        request_id: None,
                    })?,
                )
            }
        };
        let fail = |message: String| FrameError {
            message,
            request_id: request_id.clone(),
        };

        if let Some(key) = &top.duplicate {
            return Err(fail(format!(
                "key {} appears more than once; send it once",
                json_quote(key)
            )));
        }
        let Some((key, raw)) = top.action else {
            return match request_id {
                Some(request_id) => Ok(Frame::Ping { request_id }),
                None => Err(self.not_a_frame(None)),
            };
        };
        if !top.more_actions.is_empty() {
            let keys: Vec<&str> = std::iter::once(&*key)
                .chain(top.more_actions.iter().map(|k| &**k))
                .collect();
            return Err(fail(format!(
                "frame has {} action keys ({}); send one per frame",
                keys.len(),
                keys.join(", ")
            )));
        }

        match self.action(&key) {
            None => Err(fail(format!(
                "unknown action {}; expected one of: {}",
                json_quote(&key),
                self.action_list()
            ))),
            Some(Action::Unary(method)) => {
                let request = deserialize_part(text, raw, method.input.clone())
                    .map_err(|e| fail(format!("invalid {}: {e}", method.action)))?;
                Ok(Frame::Unary {
                    method,
                    request,
                    request_id,
                })
            }
            Some(Action::Stream(stream, field)) => {
                let message = stream_message(text, raw, stream, field, request_id.as_deref())
                    .map_err(|e| fail(format!("invalid {}: {e}", field.name())))?;
                Ok(Frame::Stream {
                    action: field.name(),
                    message,
                })
            }
        }
    }

    fn not_a_frame(&self, request_id: Option<String>) -> FrameError {
        FrameError {
            message: format!(
                "a frame must be a JSON object with one action key, e.g. {}",
                self.example()
            ),
            request_id,
        }
    }
}

/// The stream message of a frame whose action is the oneof member `field`,
/// with the frame's request id in the message's `request_id` field, if it
/// has one (else the id is dropped: the server could not echo it).
///
/// The result is what deserializing the frame as a whole into the stream
/// message gives, but for a message-typed member (the usual case) only the
/// member's value is parsed again, not the whole frame: measured ~20% faster
/// per frame. prost-reflect reads other kinds only as part of their message,
/// so those go the whole-frame way.
fn stream_message(
    frame: &str,
    raw: &RawValue,
    stream: &StreamMethod,
    field: &FieldDescriptor,
    request_id: Option<&str>,
) -> Result<DynamicMessage, String> {
    let mut message = match field.kind() {
        Kind::Message(desc) => {
            let value = deserialize_part(frame, raw, desc)?;
            let mut message = DynamicMessage::new(stream.input.clone());
            message
                .try_set_field(field, Value::Message(value))
                .map_err(|e| e.to_string())?;
            message
        }
        _ => {
            // Without a `request_id` field, a whole frame with one would be
            // refused (unknown field): keep only the action then. Error
            // positions are then in that rebuilt text, not the frame.
            let whole: Cow<'_, str> = match (request_id, stream.request_id_field()) {
                (Some(_), None) => {
                    Cow::Owned(format!("{{{}:{}}}", json_quote(field.name()), raw.get()))
                }
                _ => Cow::Borrowed(frame),
            };
            let message = deserialize_whole(&whole, stream.input.clone())?;
            // prost-reflect reads `null` as "unset": a frame without an
            // event is nothing to forward.
            if !message.has_field(field) {
                return Err("must not be null".to_owned());
            }
            message
        }
    };
    if let (Some(id), Some(id_field)) = (request_id, stream.request_id_field()) {
        message
            .try_set_field(id_field, Value::String(id.to_owned()))
            .map_err(|e| e.to_string())?;
    }
    Ok(message)
}

/// A frame's top level: keys decoded, values left as raw JSON text.
#[derive(Default)]
struct TopLevel<'a> {
    action: Option<(Cow<'a, str>, &'a RawValue)>,
    request_id: Option<&'a RawValue>,
    /// Action keys after the first, in order: only ever reported.
    more_actions: Vec<Cow<'a, str>>,
    /// The first key seen twice.
    duplicate: Option<Cow<'a, str>>,
}

impl<'a> TopLevel<'a> {
    fn add(&mut self, key: Cow<'a, str>, value: &'a RawValue) {
        let seen = (key == REQUEST_ID && self.request_id.is_some())
            || self.action.as_ref().is_some_and(|(k, _)| *k == key)
            || self.more_actions.contains(&key);
        if seen {
            self.duplicate.get_or_insert(key);
        } else if key == REQUEST_ID {
            self.request_id = Some(value);
        } else if self.action.is_none() {
            self.action = Some((key, value));
        } else {
            self.more_actions.push(key);
        }
    }
}

/// An object key: borrowed from the frame unless it had escapes.
#[derive(Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = TopLevel::default();
        while let Some(Key(key)) = map.next_key()? {
            top.add(key, map.next_value()?);
        }
        Ok(top)
    }
}

/// Parses the top level of `text`. Every value is validated (a raw value's
/// end must be found), so invalid JSON anywhere is reported first.
fn scan(text: &str) -> Result<TopLevel<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = de.deserialize_map(TopLevelVisitor)?;
    de.end()?;
    Ok(top)
}

fn deserialize_whole(text: &str, desc: MessageDescriptor) -> Result<DynamicMessage, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(desc.clone(), integers::exact(&mut de, &desc))
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(message)
}

/// Deserializes `part`, a value inside `frame`, reporting error positions in
/// `frame` (where the developer will look), not in `part`.
fn deserialize_part(
    frame: &str,
    part: &RawValue,
    desc: MessageDescriptor,
) -> Result<DynamicMessage, String> {
    let text = part.get();
    let mut de = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(desc.clone(), integers::exact(&mut de, &desc))
        .map_err(|e| relocate(&e, frame, text))?;
    de.end().map_err(|e| relocate(&e, frame, text))?;
    Ok(message)
}

/// `e`'s message with its position moved from `part` to `frame`, `part`
/// being a slice of `frame`. serde_json has no way to start parsing at an
/// offset, so the position is recomputed: serde_json's column is the byte
/// count since the start of the line.
fn relocate(e: &serde_json::Error, frame: &str, part: &str) -> String {
    let full = e.to_string();
    if e.line() == 0 {
        return full;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let (Some(message), Some(base)) = (full.strip_suffix(&suffix), offset_in(frame, part)) else {
        return full;
    };
    let index = (base + line_start(part, e.line()) + e.column()).min(frame.len());
    let (line, column) = position(frame, index);
    format!("{message} at line {line} column {column}")
}

/// Byte offset of `inner` in `outer`, if it is a slice of it.
fn offset_in(outer: &str, inner: &str) -> Option<usize> {
    let base = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (base + inner.len() <= outer.len()).then_some(base)
}

/// Byte offset at which 1-based `line` of `text` starts.
fn line_start(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'\n')
        .nth(line - 2)
        .map_or(text.len(), |(i, _)| i + 1)
}

/// serde_json's (line, column) of byte `index` of `text`.
fn position(text: &str, index: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..index.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    (line, before.len() - line_start)
}

/// Canonical protobuf JSON with proto field names (`room_id`), every field
/// present including defaults (`"name": ""`, `"status": "OFFLINE"`) so a
/// browser never has to know proto3's defaults, 64-bit integers as strings
/// (JavaScript numbers lose precision past 2^53). Fields with presence
/// (`optional`, oneof members, messages) are still omitted when unset.
const JSON_OPTIONS: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .skip_default_fields(false);

/// The answer when even an error frame could not be encoded (serializing
/// strings cannot fail, so this is only a panic-free fallback).
const ENCODE_FAILED: &str =
    r#"{"error":{"code":"INTERNAL","message":"the gateway could not encode a frame as JSON"}}"#;

/// A message, serialized with [`JSON_OPTIONS`].
struct Proto<'a>(&'a DynamicMessage);

impl Serialize for Proto<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_options(serializer, &JSON_OPTIONS)
    }
}

/// `{"<key>": <body>, "request_id": "..."}`, request id only if given.
struct Envelope<'a, T> {
    key: &'a str,
    body: T,
    request_id: Option<&'a str>,
}

impl<T: Serialize> Serialize for Envelope<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 1 + usize::from(self.request_id.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry(self.key, &self.body)?;
        if let Some(id) = self.request_id {
            map.serialize_entry(REQUEST_ID, id)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
}

/// The reply frame of a unary call: `{"user": {...}, "request_id": "r1"}`.
///
/// A reply that cannot be written as JSON (e.g. a Timestamp out of range) is
/// answered with an `INTERNAL` error frame instead.
pub fn reply_json(
    method: &UnaryMethod,
    reply: &DynamicMessage,
    request_id: Option<&str>,
) -> String {
    let envelope = Envelope {
        key: &method.reply_key,
        body: Proto(reply),
        request_id,
    };
    serde_json::to_string(&envelope).unwrap_or_else(|e| {
        let message = format!("could not encode the {} reply as JSON: {e}", method.action);
        tracing::warn!(method = %method.path, "{message}");
        error_json(Code::Internal, &message, request_id)
    })
}

/// A frame the server sent on the stream, as the whole message:
/// `{"chat_message": {...}, "request_id": "r1"}`.
///
/// A message that cannot be written as JSON is answered with an `INTERNAL`
/// error frame instead.
pub fn event_json(msg: &DynamicMessage) -> String {
    serde_json::to_string(&Proto(msg)).unwrap_or_else(|e| {
        let message = format!(
            "could not encode a {} as JSON: {e}",
            msg.descriptor().full_name()
        );
        tracing::warn!("{message}");
        error_json(Code::Internal, &message, None)
    })
}

/// An error frame: `{"error": {"code": "NOT_FOUND", "message": "..."},
/// "request_id": "r1"}`, request id only if given. `message` and
/// `request_id` are JSON-escaped (both may come from the browser).
pub fn error_json(code: Code, message: &str, request_id: Option<&str>) -> String {
    let envelope = Envelope {
        key: ERROR,
        body: ErrorBody {
            code: code_name(code),
            message,
        },
        request_id,
    };
    serde_json::to_string(&envelope).unwrap_or_else(|_| ENCODE_FAILED.to_owned())
}

/// The answer to a [`Frame::Ping`]: `{"request_id": "..."}`.
pub fn pong_json(request_id: &str) -> String {
    serde_json::json!({ REQUEST_ID: request_id }).to_string()
}

/// The error frame of a failed gRPC call.
pub fn status_json(status: &tonic::Status, request_id: Option<&str>) -> String {
    error_json(status.code(), status.message(), request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{chat, descriptor_pool};
    use crate::proxy::gateway::testing::{chat_gateway, method, test_service};
    use prost::Message;
    use prost_reflect::Value;

    fn stream_frame(gw: &Gateway, text: &str) -> chat::ChatStream {
        match gw.parse_frame(text) {
            Ok(Frame::Stream { message: m, .. }) => {
                chat::ChatStream::decode(m.encode_to_vec().as_slice()).expect("a ChatStream")
            }
            other => panic!("{text}: expected a stream frame, got {other:?}"),
        }
    }

    fn error(gw: &Gateway, text: &str) -> FrameError {
        match gw.parse_frame(text) {
            Err(e) => e,
            Ok(frame) => panic!("{text}: expected an error, got {frame:?}"),
        }
    }

    fn to_dynamic<M: Message>(name: &str, msg: &M) -> DynamicMessage {
        let desc = descriptor_pool().get_message_by_name(name).expect(name);
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).expect("decodes")
    }

    const SHAPE: &str =
        r#"a frame must be a JSON object with one action key, e.g. {"chat_message": {...}}"#;

    #[test]
    fn handout_frame_verbatim() {
        let gw = chat_gateway();
        let text = r#"{"chat_message": {"id": "msg1", "room_id": "room1", "sender_id": "client1", "content": "Hello World !"}}"#;
        assert_eq!(
            stream_frame(&gw, text),
            chat::ChatStream {
                event: Some(chat::chat_stream::Event::ChatMessage(chat::ChatMessage {
                    id: "msg1".into(),
                    room_id: "room1".into(),
                    sender_id: "client1".into(),
                    content: "Hello World !".into(),
                    timestamp: None,
                    seq: 0,
                    ..Default::default()
                })),
                request_id: None,
            }
        );
    }

    #[test]
    fn stream_frame_takes_camel_case_and_request_id() {
        let gw = chat_gateway();
        let text = r#"{"request_id": "j1", "join_room": {"roomId": "r1", "user_id": "u1"}}"#;
        assert_eq!(
            stream_frame(&gw, text),
            chat::ChatStream {
                event: Some(chat::chat_stream::Event::JoinRoom(chat::JoinRoom {
                    room_id: "r1".into(),
                    user_id: "u1".into(),
                })),
                request_id: Some("j1".into()),
            }
        );
    }

    #[test]
    fn unary_frame() {
        let gw = chat_gateway();
        let text = r#"{"get_chat_history": {"roomId": "r1", "limit": 10, "before_seq": "99"}, "request_id": "h\"1"}"#;
        let Ok(Frame::Unary {
            method,
            request,
            request_id,
        }) = gw.parse_frame(text)
        else {
            panic!("expected a unary frame");
        };
        assert_eq!(method.path.as_str(), "/chat.ChatService/GetChatHistory");
        assert_eq!(request_id.as_deref(), Some("h\"1"));
        let request = chat::GetChatHistoryRequest::decode(request.encode_to_vec().as_slice())
            .expect("a GetChatHistoryRequest");
        assert_eq!(
            request,
            chat::GetChatHistoryRequest {
                room_id: "r1".into(),
                limit: 10,
                before_seq: 99,
                after_seq: None,
                changed_since: None,
            }
        );

        let Ok(Frame::Unary { request_id, .. }) = gw.parse_frame(r#"{"get_user": {}}"#) else {
            panic!("expected a unary frame");
        };
        assert_eq!(request_id, None);
    }

    #[test]
    fn a_request_id_alone_is_a_ping_answered_with_it() {
        let gw = chat_gateway();
        let Ok(Frame::Ping { request_id }) = gw.parse_frame(r#"{"request_id": "p\"1"}"#) else {
            panic!("expected a ping");
        };
        assert_eq!(request_id, "p\"1");
        let pong: serde_json::Value = serde_json::from_str(&pong_json(&request_id)).expect("JSON");
        assert_eq!(pong, serde_json::json!({ "request_id": "p\"1" }));
        // Without an id there is nothing to answer with: a bad frame.
        assert!(gw.parse_frame("{}").is_err());
    }

    #[test]
    fn escaped_keys_are_unescaped() {
        let gw = chat_gateway();
        let Ok(Frame::Unary {
            method, request_id, ..
        }) =
            gw.parse_frame(r#"{"get\u005fuser": {"user\u005fid": "u1"}, "request\u005fid": "r1"}"#)
        else {
            panic!("expected a unary frame");
        };
        assert_eq!(method.action, "get_user");
        assert_eq!(request_id.as_deref(), Some("r1"));
        let m = stream_frame(
            &gw,
            r#"{"leave\u005froom": {"room_id": "r\u00e9"}, "request\u005fid": "r2"}"#,
        );
        assert_eq!(
            m,
            chat::ChatStream {
                event: Some(chat::chat_stream::Event::LeaveRoom(chat::LeaveRoom {
                    room_id: "ré".into()
                })),
                request_id: Some("r2".into()),
            }
        );
    }

    #[test]
    fn error_messages() {
        let gw = chat_gateway();
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "{\"a\":",
                "invalid JSON: EOF while parsing a value at line 1 column 5",
                None,
            ),
            (
                "{\"a\": }",
                "invalid JSON: expected value at line 1 column 7",
                None,
            ),
            (
                "",
                "invalid JSON: EOF while parsing a value at line 1 column 0",
                None,
            ),
            (
                r#"{"get_user": {}} x"#,
                "invalid JSON: trailing characters at line 1 column 18",
                None,
            ),
            ("[]", SHAPE, None),
            ("[1, 2", SHAPE, None),
            ("5", SHAPE, None),
            ("\"chat_message\"", SHAPE, None),
            ("null", SHAPE, None),
            ("{}", SHAPE, None),
            (
                r#"{"request_id": 5, "get_user": {}}"#,
                "request_id must be a string",
                None,
            ),
            (
                r#"{"request_id": null}"#,
                "request_id must be a string",
                None,
            ),
            (
                r#"{"foo": {}, "request_id": "r1"}"#,
                "unknown action \"foo\"; expected one of: chat_message, join_room, leave_room, error, presence, typing, \
                 edit_message, delete_message, message_changed, user_renamed, get_user, \
                 set_user_name, get_chat_history, list_rooms, get_limits",
                Some("r1"),
            ),
            (
                r#"{"resume": {"joins": []}}"#,
                "unknown action \"resume\"; expected one of: chat_message, join_room, leave_room, error, presence, typing, \
                 edit_message, delete_message, message_changed, user_renamed, get_user, \
                 set_user_name, get_chat_history, list_rooms, get_limits",
                None,
            ),
            (
                r#"{"ChatMessage": {}}"#,
                "unknown action \"ChatMessage\"; expected one of: chat_message, join_room, leave_room, error, presence, typing, \
                 edit_message, delete_message, message_changed, user_renamed, get_user, \
                 set_user_name, get_chat_history, list_rooms, get_limits",
                None,
            ),
            (
                r#"{"a": 1, "request_id": "r2", "b": 2}"#,
                "frame has 2 action keys (a, b); send one per frame",
                Some("r2"),
            ),
            (
                r#"{"get_user": {}, "join_room": {}, "x": 1}"#,
                "frame has 3 action keys (get_user, join_room, x); send one per frame",
                None,
            ),
            (
                r#"{"get_user": {}, "get_user": {}}"#,
                "key \"get_user\" appears more than once; send it once",
                None,
            ),
            (
                r#"{"request_id": "a", "get_user": {}, "request_id": "b"}"#,
                "key \"request_id\" appears more than once; send it once",
                Some("a"),
            ),
            (
                r#"{"get_user": {"user_id": 5}, "request_id": "r3"}"#,
                "invalid get_user: invalid type: integer `5`, expected a string at line 1 column 26",
                Some("r3"),
            ),
            (
                r#"{"get_user": {"userid": "u1"}}"#,
                "invalid get_user: unrecognized field name 'userid' at line 1 column 22",
                None,
            ),
            (
                r#"{"get_user": null}"#,
                "invalid get_user: invalid type: null, expected a map at line 1 column 17",
                None,
            ),
            (
                r#"{"join_room": {"room_id": 5}}"#,
                "invalid join_room: invalid type: integer `5`, expected a string at line 1 column 27",
                None,
            ),
            (
                r#"{"chat_message": {"room_id": "r", "colour": "red"}, "request_id": "r4"}"#,
                "invalid chat_message: unrecognized field name 'colour' at line 1 column 42",
                Some("r4"),
            ),
            (
                r#"{"chat_message": null}"#,
                "invalid chat_message: invalid type: null, expected a map at line 1 column 21",
                None,
            ),
        ];
        for &(text, message, request_id) in cases {
            let e = error(&gw, text);
            assert_eq!(e.message, message, "{text}");
            assert_eq!(e.request_id.as_deref(), request_id, "{text}");
        }
    }

    /// Issue 8: `after_seq` of 2^64 was read as u64::MAX (an empty page)
    /// while `limit` of the same size was refused.
    #[test]
    fn integers_out_of_range_are_refused_alike() {
        let gw = chat_gateway();
        let u64_range = "must be an integer from 0 to 18446744073709551615";
        for (text, message) in [
            (
                r#"{"get_chat_history": {"room_id": "r", "after_seq": 18446744073709551616}}"#,
                format!("invalid get_chat_history: after_seq {u64_range} at line 1 column 71"),
            ),
            (
                r#"{"get_chat_history": {"room_id": "r", "beforeSeq": "18446744073709551616"}}"#,
                format!("invalid get_chat_history: before_seq {u64_range} at line 1 column 73"),
            ),
            (
                r#"{"get_chat_history": {"room_id": "r", "limit": 18446744073709551616}}"#,
                "invalid get_chat_history: limit must be an integer from 0 to 4294967295 \
                 at line 1 column 67"
                    .to_owned(),
            ),
            (
                r#"{"get_chat_history": {"room_id": "r", "limit": 2.5}}"#,
                "invalid get_chat_history: limit must be an integer from 0 to 4294967295 \
                 at line 1 column 50"
                    .to_owned(),
            ),
            (
                r#"{"chat_message": {"room_id": "r", "seq": 18446744073709551616}}"#,
                format!("invalid chat_message: seq {u64_range} at line 1 column 61"),
            ),
        ] {
            assert_eq!(error(&gw, text).message, message, "{text}");
        }
    }

    #[test]
    fn unary_error_positions_are_in_the_frame() {
        let gw = chat_gateway();
        let text = "{\n  \"request_id\": \"r\",\n  \"get_user\": {\n    \"user_id\": 5\n  }\n}";
        // serde_json's column: bytes from the line start to just after the
        // offending token.
        assert_eq!(
            error(&gw, text).message,
            "invalid get_user: invalid type: integer `5`, expected a string at line 4 column 16"
        );
        let text = "{\"get_user\": {\n\"user_id\": 5}}";
        assert_eq!(
            error(&gw, text).message,
            "invalid get_user: invalid type: integer `5`, expected a string at line 2 column 12"
        );
    }

    #[test]
    fn stream_without_request_id_field_drops_it() {
        let gw = test_service(vec![method("Events", ".t.Ev", ".t.Ev", true)]).expect("valid");
        let Ok(Frame::Stream { message: m, .. }) =
            gw.parse_frame(r#"{"request_id": "r1", "a": {"x": "1"}}"#)
        else {
            panic!("expected a stream frame");
        };
        assert!(m.has_field_by_name("a"));
        assert_eq!(m.fields().count(), 1);
        // A scalar oneof member works like a message one.
        let Ok(Frame::Stream { message: m, .. }) =
            gw.parse_frame(r#"{"note": "hi", "request_id": "r2"}"#)
        else {
            panic!("expected a stream frame");
        };
        assert_eq!(
            m.get_field_by_name("note").as_deref(),
            Some(&Value::String("hi".into()))
        );
        let Ok(Frame::Stream { message: m, .. }) = gw.parse_frame(r#"{"note": ""}"#) else {
            panic!("expected a stream frame");
        };
        assert!(m.has_field_by_name("note"));
        assert_eq!(
            error(&gw, r#"{"note": null}"#).message,
            "invalid note: must not be null"
        );
        // Known wart of this rare path (scalar member, request id, no
        // `request_id` field): the position is in the rebuilt `{"note":5}`.
        assert_eq!(
            error(&gw, r#"{"note": 5, "request_id": "r"}"#).message,
            "invalid note: invalid type: integer `5`, expected a string at line 1 column 9"
        );
        let e = error(&gw, r#"{"a": {"x": 1}, "request_id": "r3"}"#);
        assert!(
            e.message
                .starts_with("invalid a: invalid type: integer `1`"),
            "{}",
            e.message
        );
        assert_eq!(e.request_id.as_deref(), Some("r3"));
        assert_eq!(
            error(&gw, "[]").message,
            r#"a frame must be a JSON object with one action key, e.g. {"a": {...}}"#
        );
    }

    #[test]
    fn frame_error_to_json() {
        let e = FrameError {
            message: "request_id must be a string".into(),
            request_id: None,
        };
        assert_eq!(
            e.to_json(),
            r#"{"error":{"code":"INVALID_ARGUMENT","message":"request_id must be a string"}}"#
        );
    }

    fn user(created: Option<prost_types::Timestamp>) -> DynamicMessage {
        to_dynamic(
            "chat.User",
            &chat::User {
                id: "u1".into(),
                name: String::new(),
                status: chat::UserStatus::Offline as i32,
                created_at: created,
            },
        )
    }

    #[test]
    fn reply_json_has_every_field() {
        let gw = chat_gateway();
        let get_user = &gw.unary_methods()[0];
        let reply = user(Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }));
        assert_eq!(
            reply_json(get_user, &reply, Some("r1")),
            r#"{"user":{"id":"u1","name":"","status":"OFFLINE","created_at":"2023-11-14T22:13:20Z"},"request_id":"r1"}"#
        );
        // An unset message field has presence, so it is omitted.
        assert_eq!(
            reply_json(get_user, &user(None), None),
            r#"{"user":{"id":"u1","name":"","status":"OFFLINE"}}"#
        );
        let history = &gw.unary_methods()[2];
        let reply = to_dynamic(
            "chat.ChatHistory",
            &chat::ChatHistory {
                room_id: "r1".into(),
                messages: vec![],
                has_more: false,
                revision: 0,
            },
        );
        assert_eq!(
            reply_json(history, &reply, None),
            r#"{"chat_history":{"room_id":"r1","messages":[],"has_more":false,"revision":"0"}}"#
        );
    }

    #[test]
    fn unencodable_reply_becomes_internal_error() {
        let gw = chat_gateway();
        // Past year 9999: RFC 3339 cannot say it.
        let reply = user(Some(prost_types::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        }));
        let json = reply_json(&gw.unary_methods()[0], &reply, Some("r1"));
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["error"]["code"], "INTERNAL", "{json}");
        assert_eq!(v["request_id"], "r1");
    }

    #[test]
    fn event_json_is_the_whole_message() {
        let mut event = chat::ChatStream {
            event: Some(chat::chat_stream::Event::ChatMessage(chat::ChatMessage {
                id: "m1".into(),
                room_id: "r1".into(),
                sender_id: "u1".into(),
                content: "hi".into(),
                timestamp: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 500_000_000,
                }),
                seq: 7,
                ..Default::default()
            })),
            request_id: None,
        };
        assert_eq!(
            event_json(&to_dynamic("chat.ChatStream", &event)),
            r#"{"chat_message":{"id":"m1","room_id":"r1","sender_id":"u1","content":"hi","timestamp":"2023-11-14T22:13:20.500Z","seq":"7"}}"#
        );
        event.request_id = Some("r1".into());
        assert_eq!(
            event_json(&to_dynamic("chat.ChatStream", &event)),
            r#"{"chat_message":{"id":"m1","room_id":"r1","sender_id":"u1","content":"hi","timestamp":"2023-11-14T22:13:20.500Z","seq":"7"},"request_id":"r1"}"#
        );
        // Present-but-empty is not unset: an explicit "" is kept.
        event.request_id = Some(String::new());
        assert!(
            event_json(&to_dynamic("chat.ChatStream", &event)).ends_with(r#","request_id":""}"#)
        );

        let error = chat::ChatStream {
            event: Some(chat::chat_stream::Event::Error(chat::Error {
                code: chat::Code::NotFound as i32,
                message: "no room".into(),
            })),
            request_id: Some("r2".into()),
        };
        assert_eq!(
            event_json(&to_dynamic("chat.ChatStream", &error)),
            r#"{"error":{"code":"NOT_FOUND","message":"no room"},"request_id":"r2"}"#
        );
    }

    #[test]
    fn error_json_escapes() {
        let json = error_json(
            Code::InvalidArgument,
            "bad \"x\"\nnext\\line \u{1}",
            Some("r\"1\n</script>"),
        );
        assert_eq!(
            json,
            r#"{"error":{"code":"INVALID_ARGUMENT","message":"bad \"x\"\nnext\\line \u0001"},"request_id":"r\"1\n</script>"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(v["error"]["message"], "bad \"x\"\nnext\\line \u{1}");
        assert_eq!(v["request_id"], "r\"1\n</script>");
        assert_eq!(
            error_json(Code::Unavailable, "down", None),
            r#"{"error":{"code":"UNAVAILABLE","message":"down"}}"#
        );
        assert_eq!(
            status_json(&tonic::Status::not_found("no user u1"), Some("r")),
            r#"{"error":{"code":"NOT_FOUND","message":"no user u1"},"request_id":"r"}"#
        );
    }
}
