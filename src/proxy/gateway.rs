//! What a gateway derives from a gRPC service descriptor: the WebSocket
//! actions, the method each one calls, and the key each reply goes under.
//!
//! Nothing here names a message, method or field of `chat.proto`. The rules:
//!
//! - Every unary method is an action named after the method in snake_case
//!   (`GetChatHistory` → `get_chat_history`). Its reply is sent under the
//!   snake_case short name of its output message (`ChatHistory` →
//!   `chat_history`).
//! - The service's bidirectional streaming method (at most one is used) is
//!   "the stream". Its input message must have exactly one (real) oneof; the
//!   names of that oneof's fields are the stream actions (`chat_message`,
//!   `join_room`, ...).
//! - `request_id` is the only other key a frame may have, so no action may be
//!   called that.
//! - Resume convention: if the stream's input and output both have a oneof
//!   field named `resume` of the same message type, the server's `resume`
//!   frames are state for the gateway to replay on a re-opened stream (see
//!   [`StreamMethod::take_resume`]), not events for the browser, and `resume`
//!   is not a client action (a browser must not forge the state).
//!
//! Every other field of the stream oneof is a client action, even those only
//! the server is meant to send (chat's `error`): the gateway stays generic and
//! the server rejects what it does not accept.

use std::collections::HashMap;

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor, ReflectMessage,
    ServiceDescriptor,
};
use tonic::codegen::http::uri::PathAndQuery;

/// The frame key carrying the client's correlation id. Reserved: no action
/// may be named this.
pub const REQUEST_ID: &str = "request_id";

/// The oneof field name of the resume convention.
pub const RESUME: &str = "resume";

/// Top-level key of error frames. Reserved as a unary reply key, so a
/// successful reply can never look like a failure.
pub const ERROR: &str = "error";

/// Why a service cannot be served by a gateway. These are configuration
/// errors, found once at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("service {service} has no method named {method:?}")]
    NoSuchMethod { service: String, method: String },
    #[error("method {method} is not bidirectional streaming, so it cannot be the gateway's stream")]
    NotBidiStreaming { method: String },
    #[error(
        "service {service} has {} bidirectional streaming methods ({}); choose the stream by name",
        methods.len(),
        methods.join(", ")
    )]
    AmbiguousStream {
        service: String,
        methods: Vec<String>,
    },
    #[error(
        "the input message {message} of stream method {method} must have exactly one oneof \
         (its fields are the stream actions), but it has {found}"
    )]
    StreamOneofs {
        method: String,
        message: String,
        found: usize,
    },
    #[error("action {action:?} is claimed by both {first} and {second}")]
    ActionCollision {
        action: String,
        first: String,
        second: String,
    },
    #[error("{owner} maps to the action {REQUEST_ID:?}, a key reserved for request ids")]
    ReservedAction { owner: String },
    #[error(
        "method {method} would reply under the reserved key {key:?}; rename its output message"
    )]
    ReservedReplyKey { method: String, key: String },
    #[error("method {method} has no valid gRPC path {path:?}: {reason}")]
    InvalidPath {
        method: String,
        path: String,
        reason: String,
    },
    #[error("service {service} has no unary method and no stream, so no action to offer")]
    NoActions { service: String },
}

/// A unary method, callable as one action.
#[derive(Debug, Clone)]
pub struct UnaryMethod {
    /// The gRPC path, e.g. `/chat.ChatService/GetUser`.
    pub path: PathAndQuery,
    /// The action that calls it, e.g. `get_user`.
    pub action: String,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    /// The key its reply frame carries the output under, e.g. `user`.
    pub reply_key: String,
}

/// The bidirectional stream and the actions that feed it.
#[derive(Debug, Clone)]
pub struct StreamMethod {
    /// The gRPC path, e.g. `/chat.ChatService/Chat`.
    pub path: PathAndQuery,
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    /// The client actions, in field order: the oneof's field names, less
    /// `resume` when the resume convention applies.
    pub actions: Vec<String>,
    /// The oneof fields behind `actions`, index for index.
    fields: Vec<FieldDescriptor>,
    /// The input's singular string `request_id` field, if it has one. When it
    /// has none, a frame's request id is not forwarded (the server could not
    /// echo it anyway).
    request_id: Option<FieldDescriptor>,
    /// `resume` in the input and in the output, when the convention applies.
    resume: Option<(FieldDescriptor, FieldDescriptor)>,
}

/// Where an action name points, as stored in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Index into [`Gateway::unary_methods`].
    Unary(usize),
    /// Index into [`StreamMethod::actions`].
    Stream(usize),
}

/// What an action key resolves to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    Unary(&'a UnaryMethod),
    /// The stream, and the oneof field the action sets.
    Stream(&'a StreamMethod, &'a FieldDescriptor),
}

/// The action tables of one gRPC service, derived from its descriptor.
#[derive(Debug, Clone)]
pub struct Gateway {
    service: String,
    unary: Vec<UnaryMethod>,
    stream: Option<StreamMethod>,
    actions: HashMap<String, Slot>,
    /// Every action, stream ones first, comma-separated: precomputed for the
    /// "unknown action" error.
    action_list: String,
    /// `{"<first action>": {...}}`: the example in the "not a frame" error.
    example: String,
}

impl Gateway {
    /// Derives the actions of `service`.
    ///
    /// `stream_method` names (by its short name, e.g. `Chat`) the
    /// bidirectional method to use as the stream. With `None` the service's
    /// only bidirectional method is used, if it has one; several are an error
    /// since guessing would silently pick the wrong one. Methods that are only
    /// client- or server-streaming, and unchosen bidirectional ones, are not
    /// served (a warning is logged): the protocol has no frames for them.
    pub fn from_service(
        service: &ServiceDescriptor,
        stream_method: Option<&str>,
    ) -> Result<Gateway, GatewayError> {
        let stream_desc = choose_stream(service, stream_method)?;
        let stream = stream_desc
            .as_ref()
            .map(|m| StreamMethod::new(service, m))
            .transpose()?;

        let mut unary = Vec::new();
        let mut unary_owners = Vec::new();
        for method in service.methods() {
            if !method.is_client_streaming() && !method.is_server_streaming() {
                unary.push(UnaryMethod::new(service, &method)?);
                unary_owners.push(format!("method {}", method.full_name()));
            } else if stream_desc.as_ref() != Some(&method) {
                tracing::warn!(
                    method = method.full_name(),
                    "streaming method not served by the gateway: it is not the chosen \
                     bidirectional stream"
                );
            }
        }

        let mut table = ActionTable::default();
        if let Some(stream) = &stream {
            let fields = stream.fields.iter().zip(&stream.actions);
            for (index, (field, action)) in fields.enumerate() {
                let owner = format!("stream field {}", field.full_name());
                table.insert(action, Slot::Stream(index), owner)?;
            }
        }
        for (index, (method, owner)) in unary.iter().zip(unary_owners).enumerate() {
            table.insert(&method.action, Slot::Unary(index), owner)?;
        }
        let Some(first) = table.order.first() else {
            return Err(GatewayError::NoActions {
                service: service.full_name().to_owned(),
            });
        };
        let example = format!("{{{}: {{...}}}}", json_quote(first));
        let action_list = table.order.join(", ");
        // lowerCamelCase spellings (`chatMessage`, `getChatHistory`) are
        // accepted too, as protobuf's JSON mapping accepts them for fields.
        let aliases: Vec<(String, Slot)> = table
            .actions
            .iter()
            .map(|(name, slot)| (lower_camel_case(name), *slot))
            .filter(|(camel, _)| !table.actions.contains_key(camel))
            .collect();
        table.actions.extend(aliases);

        Ok(Gateway {
            service: service.full_name().to_owned(),
            unary,
            stream,
            actions: table.actions,
            action_list,
            example,
        })
    }

    /// Full name of the service, e.g. `chat.ChatService`.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The unary methods, in declaration order.
    pub fn unary_methods(&self) -> &[UnaryMethod] {
        &self.unary
    }

    /// The bidirectional stream, if the service has one.
    pub fn stream(&self) -> Option<&StreamMethod> {
        self.stream.as_ref()
    }

    /// Every action name: the stream's, then the unary methods'.
    pub fn actions(&self) -> impl Iterator<Item = &str> + '_ {
        let stream = self.stream.iter().flat_map(|s| s.actions.iter());
        stream
            .chain(self.unary.iter().map(|m| &m.action))
            .map(String::as_str)
    }

    pub(crate) fn action(&self, key: &str) -> Option<Action<'_>> {
        match self.actions.get(key)? {
            Slot::Unary(i) => self.unary.get(*i).map(Action::Unary),
            Slot::Stream(i) => {
                let stream = self.stream.as_ref()?;
                stream.fields.get(*i).map(|f| Action::Stream(stream, f))
            }
        }
    }

    pub(crate) fn action_list(&self) -> &str {
        &self.action_list
    }

    pub(crate) fn example(&self) -> &str {
        &self.example
    }
}

impl UnaryMethod {
    fn new(service: &ServiceDescriptor, method: &MethodDescriptor) -> Result<Self, GatewayError> {
        let output = method.output();
        let reply_key = snake_case(output.name());
        if reply_key == ERROR || reply_key == REQUEST_ID {
            return Err(GatewayError::ReservedReplyKey {
                method: method.full_name().to_owned(),
                key: reply_key,
            });
        }
        Ok(UnaryMethod {
            path: grpc_path(service, method)?,
            action: snake_case(method.name()),
            input: method.input(),
            output,
            reply_key,
        })
    }
}

impl StreamMethod {
    fn new(service: &ServiceDescriptor, method: &MethodDescriptor) -> Result<Self, GatewayError> {
        let input = method.input();
        let output = method.output();
        let oneofs: Vec<_> = input.oneofs().filter(|o| !o.is_synthetic()).collect();
        let [oneof] = oneofs.as_slice() else {
            return Err(GatewayError::StreamOneofs {
                method: method.full_name().to_owned(),
                message: input.full_name().to_owned(),
                found: oneofs.len(),
            });
        };

        let resume = resume_fields(&input, &output);
        let fields: Vec<FieldDescriptor> = oneof
            .fields()
            .filter(|f| resume.as_ref().is_none_or(|(r, _)| r != f))
            .collect();
        let actions = fields.iter().map(|f| f.name().to_owned()).collect();
        let request_id = input.get_field_by_name(REQUEST_ID).filter(|f| {
            f.kind() == Kind::String
                && !f.is_list()
                && f.containing_oneof().is_none_or(|o| o.is_synthetic())
        });

        Ok(StreamMethod {
            path: grpc_path(service, method)?,
            input,
            output,
            actions,
            fields,
            request_id,
            resume,
        })
    }

    /// If `msg` (a message the server sent on the stream) is a resume frame,
    /// the input message that replays it on a re-opened stream; else `None`.
    ///
    /// Resume frames are the gateway's, not the browser's: the session keeps
    /// the newest and does not forward it:
    /// `if let Some(r) = stream.take_resume(&m) { last_resume = Some(r); continue; }`.
    /// Always `None` when the service does not follow the resume convention,
    /// and for messages not decoded with this gateway's descriptors
    /// ([`DynamicCodec::new`](super::codec::DynamicCodec::new) of
    /// [`StreamMethod::output`]): descriptors of another pool never match.
    pub fn take_resume(&self, msg: &DynamicMessage) -> Option<DynamicMessage> {
        let (input_field, output_field) = self.resume.as_ref()?;
        if msg.descriptor() != self.output || !msg.has_field(output_field) {
            return None;
        }
        let mut replay = DynamicMessage::new(self.input.clone());
        // Same message type on both sides (checked in `resume_fields`), so
        // the value fits the input field; `try_` keeps even a bug panic-free.
        replay
            .try_set_field(input_field, msg.get_field(output_field).into_owned())
            .ok()?;
        Some(replay)
    }

    /// Whether the service follows the resume convention.
    pub fn resumes(&self) -> bool {
        self.resume.is_some()
    }

    pub(crate) fn request_id_field(&self) -> Option<&FieldDescriptor> {
        self.request_id.as_ref()
    }
}

/// The `resume` fields of the input and output, if both are oneof members of
/// the same message type.
fn resume_fields(
    input: &MessageDescriptor,
    output: &MessageDescriptor,
) -> Option<(FieldDescriptor, FieldDescriptor)> {
    let in_oneof = |f: &FieldDescriptor| f.containing_oneof().is_some_and(|o| !o.is_synthetic());
    let input_field = input.get_field_by_name(RESUME).filter(in_oneof)?;
    let output_field = output.get_field_by_name(RESUME).filter(in_oneof)?;
    match (input_field.kind(), output_field.kind()) {
        (Kind::Message(a), Kind::Message(b)) if a == b => Some((input_field, output_field)),
        _ => None,
    }
}

/// The bidirectional method to serve, per `from_service`'s rules.
fn choose_stream(
    service: &ServiceDescriptor,
    name: Option<&str>,
) -> Result<Option<MethodDescriptor>, GatewayError> {
    let is_bidi = |m: &MethodDescriptor| m.is_client_streaming() && m.is_server_streaming();
    if let Some(name) = name {
        let method = service
            .methods()
            .find(|m| m.name() == name)
            .ok_or_else(|| GatewayError::NoSuchMethod {
                service: service.full_name().to_owned(),
                method: name.to_owned(),
            })?;
        if !is_bidi(&method) {
            return Err(GatewayError::NotBidiStreaming {
                method: method.full_name().to_owned(),
            });
        }
        return Ok(Some(method));
    }
    let mut bidi: Vec<_> = service.methods().filter(is_bidi).collect();
    if bidi.len() > 1 {
        return Err(GatewayError::AmbiguousStream {
            service: service.full_name().to_owned(),
            methods: bidi.iter().map(|m| m.name().to_owned()).collect(),
        });
    }
    Ok(bidi.pop())
}

fn grpc_path(
    service: &ServiceDescriptor,
    method: &MethodDescriptor,
) -> Result<PathAndQuery, GatewayError> {
    let path = format!("/{}/{}", service.full_name(), method.name());
    PathAndQuery::try_from(path.as_str()).map_err(|e| GatewayError::InvalidPath {
        method: method.full_name().to_owned(),
        reason: e.to_string(),
        path,
    })
}

/// Action names in insertion order, refusing duplicates and `request_id`.
#[derive(Default)]
struct ActionTable {
    actions: HashMap<String, Slot>,
    order: Vec<String>,
    owners: Vec<String>,
}

impl ActionTable {
    fn insert(&mut self, name: &str, action: Slot, owner: String) -> Result<(), GatewayError> {
        if name == REQUEST_ID {
            return Err(GatewayError::ReservedAction { owner });
        }
        if let Some(i) = self.order.iter().position(|n| n == name) {
            return Err(GatewayError::ActionCollision {
                action: name.to_owned(),
                first: self.owners[i].clone(),
                second: owner,
            });
        }
        self.actions.insert(name.to_owned(), action);
        self.order.push(name.to_owned());
        self.owners.push(owner);
        Ok(())
    }
}

/// `name` as a JSON string literal, for error messages that quote
/// user-supplied or descriptor-supplied names unambiguously.
pub(crate) fn json_quote(name: &str) -> String {
    // Serializing a &str cannot fail; the fallback only avoids a panic path.
    serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""))
}

/// lowerCamelCase of a snake_case name: `get_chat_history` → `getChatHistory`.
fn lower_camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// snake_case of a CamelCase protobuf name: `GetChatHistory` →
/// `get_chat_history`, `GetHTTPStatus` → `get_http_status`, `V2Thing` →
/// `v2_thing`. A word break goes before an upper-case letter that follows a
/// lower-case letter or digit, or that starts a word after an acronym.
/// Names already in snake_case are unchanged.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let breaks = match prev {
                None | Some('_') => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) => p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()),
            };
            if breaks {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Gateways for tests: chat's, and one over a tiny descriptor built at test
/// time, to exercise the rules that chat.proto does not.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::proto::{CHAT_SERVICE, descriptor_pool};
    use prost::Message;
    use prost_reflect::DescriptorPool;
    use prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        MethodDescriptorProto, OneofDescriptorProto, ServiceDescriptorProto,
        field_descriptor_proto::{Label, Type},
    };

    pub(crate) fn chat_gateway() -> Gateway {
        let pool = descriptor_pool();
        let service = pool
            .get_service_by_name(CHAT_SERVICE)
            .expect("chat service");
        Gateway::from_service(&service, None).expect("chat gateway")
    }

    fn message(name: &str, fields: Vec<FieldDescriptorProto>, oneofs: &[&str]) -> DescriptorProto {
        DescriptorProto {
            name: Some(name.into()),
            field: fields,
            oneof_decl: oneofs
                .iter()
                .map(|n| OneofDescriptorProto {
                    name: Some((*n).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn field(name: &str, number: i32, ty: Type, type_name: Option<&str>) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: type_name.map(Into::into),
            json_name: Some(name.into()),
            ..Default::default()
        }
    }

    fn in_oneof(mut f: FieldDescriptorProto, index: i32) -> FieldDescriptorProto {
        f.oneof_index = Some(index);
        f
    }

    pub(crate) fn method(
        name: &str,
        input: &str,
        output: &str,
        bidi: bool,
    ) -> MethodDescriptorProto {
        MethodDescriptorProto {
            name: Some(name.into()),
            input_type: Some(input.into()),
            output_type: Some(output.into()),
            client_streaming: Some(bidi),
            server_streaming: Some(bidi),
            ..Default::default()
        }
    }

    /// Service `t.S` over messages `t.A` (one string `x`), `t.Error`, and
    /// `t.Ev` (oneof `kind { A a = 1; string note = 2; }`, no request_id).
    pub(crate) fn test_service(
        methods: Vec<MethodDescriptorProto>,
    ) -> Result<Gateway, GatewayError> {
        let file = FileDescriptorProto {
            name: Some("t.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            message_type: vec![
                message("A", vec![field("x", 1, Type::String, None)], &[]),
                message("Error", vec![], &[]),
                message(
                    "Ev",
                    vec![
                        in_oneof(field("a", 1, Type::Message, Some(".t.A")), 0),
                        in_oneof(field("note", 2, Type::String, None), 0),
                    ],
                    &["kind"],
                ),
                message("NoOneof", vec![field("x", 1, Type::String, None)], &[]),
            ],
            service: vec![ServiceDescriptorProto {
                name: Some("S".into()),
                method: methods,
                ..Default::default()
            }],
            ..Default::default()
        };
        let set = FileDescriptorSet { file: vec![file] };
        let pool = DescriptorPool::decode(set.encode_to_vec().as_slice()).expect("valid test pool");
        let service = pool.get_service_by_name("t.S").expect("t.S");
        Gateway::from_service(&service, None)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{chat_gateway, method, test_service};
    use super::*;
    use crate::proto::{CHAT_SERVICE, chat, descriptor_pool};
    use prost::Message;
    use prost_reflect::Value;

    #[test]
    fn snake_case_of_protobuf_names() {
        for (name, want) in [
            ("GetChatHistory", "get_chat_history"),
            ("GetUser", "get_user"),
            ("User", "user"),
            ("ChatHistory", "chat_history"),
            ("GetHTTPStatus", "get_http_status"),
            ("HTTPStatus", "http_status"),
            ("V2Thing", "v2_thing"),
            ("GetV2", "get_v2"),
            ("already_snake", "already_snake"),
            ("Empty", "empty"),
        ] {
            assert_eq!(snake_case(name), want, "{name}");
        }
    }

    #[test]
    fn lower_camel_case_spellings_are_aliases() {
        let gw = chat_gateway();
        assert_eq!(
            gw.actions.get("chatMessage"),
            gw.actions.get("chat_message")
        );
        assert_eq!(
            gw.actions.get("getChatHistory"),
            gw.actions.get("get_chat_history")
        );
        assert!(gw.actions.contains_key("getChatHistory"));
        assert!(gw.action("ChatMessage").is_none());
        assert!(
            !gw.action_list().contains("chatMessage"),
            "aliases are not listed"
        );
    }

    #[test]
    fn chat_service_actions() {
        let gw = chat_gateway();
        assert_eq!(gw.service(), "chat.ChatService");
        let unary: Vec<_> = gw
            .unary_methods()
            .iter()
            .map(|m| (m.action.as_str(), m.reply_key.as_str(), m.path.as_str()))
            .collect();
        assert_eq!(
            unary,
            [
                ("get_user", "user", "/chat.ChatService/GetUser"),
                ("set_user_name", "user", "/chat.ChatService/SetUserName"),
                (
                    "get_chat_history",
                    "chat_history",
                    "/chat.ChatService/GetChatHistory"
                ),
                ("list_rooms", "room_list", "/chat.ChatService/ListRooms"),
                ("get_limits", "limits", "/chat.ChatService/GetLimits"),
            ]
        );
        let stream = gw.stream().expect("chat has a stream");
        assert_eq!(stream.path.as_str(), "/chat.ChatService/Chat");
        assert_eq!(stream.input.full_name(), "chat.ChatStream");
        assert_eq!(stream.output.full_name(), "chat.ChatStream");
        // `error` is a oneof field, so by the generic rule a client action
        // (the server rejects it); only `resume` is withheld.
        assert_eq!(
            stream.actions,
            [
                "chat_message",
                "join_room",
                "leave_room",
                "error",
                "presence",
                "typing",
                "edit_message",
                "delete_message",
                "message_changed",
                "user_renamed"
            ]
        );
        assert!(stream.resumes());
        assert_eq!(
            stream.request_id_field().map(|f| f.name()),
            Some("request_id")
        );
        assert_eq!(
            gw.actions().collect::<Vec<_>>(),
            [
                "chat_message",
                "join_room",
                "leave_room",
                "error",
                "presence",
                "typing",
                "edit_message",
                "delete_message",
                "message_changed",
                "user_renamed",
                "get_user",
                "set_user_name",
                "get_chat_history",
                "list_rooms",
                "get_limits"
            ]
        );
        assert!(gw.action("resume").is_none());
        assert!(matches!(
            gw.action("get_user"),
            Some(Action::Unary(m)) if m.action == "get_user"
        ));
        assert!(matches!(
            gw.action("join_room"),
            Some(Action::Stream(_, f)) if f.name() == "join_room"
        ));
    }

    #[test]
    fn choosing_the_stream_by_name() {
        let pool = descriptor_pool();
        let service = pool
            .get_service_by_name(CHAT_SERVICE)
            .expect("chat service");
        let gw = Gateway::from_service(&service, Some("Chat")).expect("by name");
        assert!(gw.stream().is_some());
        assert_eq!(
            Gateway::from_service(&service, Some("Nope")).err(),
            Some(GatewayError::NoSuchMethod {
                service: "chat.ChatService".into(),
                method: "Nope".into()
            })
        );
        assert_eq!(
            Gateway::from_service(&service, Some("GetUser")).err(),
            Some(GatewayError::NotBidiStreaming {
                method: "chat.ChatService.GetUser".into()
            })
        );
    }

    fn resume_event(desc: MessageDescriptor, rooms: &[&str]) -> DynamicMessage {
        let msg = chat::ChatStream {
            event: Some(chat::chat_stream::Event::Resume(chat::Resume {
                joins: rooms
                    .iter()
                    .map(|r| chat::JoinRoom {
                        room_id: (*r).into(),
                        user_id: "u1".into(),
                    })
                    .collect(),
            })),
            request_id: Some("q1".into()),
        };
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).expect("decodes")
    }

    #[test]
    fn take_resume_keeps_resume_frames_only() {
        let gw = chat_gateway();
        let stream = gw.stream().expect("stream");
        let resume = resume_event(stream.output.clone(), &["r1", "r2"]);
        let replay = stream.take_resume(&resume).expect("a resume frame");
        assert_eq!(replay.descriptor(), stream.input);
        // Only the resume is replayed, not the frame's request id.
        assert!(!replay.has_field_by_name("request_id"));
        let joins = replay
            .get_field_by_name("resume")
            .and_then(|v| v.as_message().cloned())
            .and_then(|m| m.get_field_by_name("joins").map(|j| j.into_owned()));
        let Some(Value::List(joins)) = joins else {
            panic!("resume.joins missing: {replay:?}");
        };
        assert_eq!(joins.len(), 2);

        let mut other = DynamicMessage::new(stream.output.clone());
        other.set_field_by_name(
            "leave_room",
            Value::Message(DynamicMessage::new(
                descriptor_pool()
                    .get_message_by_name("chat.LeaveRoom")
                    .expect("LeaveRoom"),
            )),
        );
        assert!(stream.take_resume(&other).is_none());
        // A message of another type is never a resume frame.
        let user = DynamicMessage::new(gw.unary_methods()[0].output.clone());
        assert!(stream.take_resume(&user).is_none());
        // Nor is one of another pool's ChatStream (its fields might not fit).
        let foreign = descriptor_pool()
            .get_message_by_name("chat.ChatStream")
            .expect("ChatStream");
        assert!(
            stream
                .take_resume(&resume_event(foreign, &["r1"]))
                .is_none()
        );
    }

    #[test]
    fn generic_service_without_resume_or_request_id() {
        let gw = test_service(vec![
            method("Do", ".t.A", ".t.A", false),
            method("Events", ".t.Ev", ".t.Ev", true),
        ])
        .expect("valid");
        let stream = gw.stream().expect("stream");
        assert_eq!(stream.actions, ["a", "note"]);
        assert!(!stream.resumes());
        assert!(stream.request_id_field().is_none());
        assert_eq!(gw.actions().collect::<Vec<_>>(), ["a", "note", "do"]);
        assert_eq!(gw.unary_methods()[0].reply_key, "a");
    }

    #[test]
    fn build_errors() {
        // Two methods mapping to one action.
        assert_eq!(
            test_service(vec![
                method("GetX", ".t.A", ".t.A", false),
                method("get_x", ".t.A", ".t.A", false),
            ])
            .err(),
            Some(GatewayError::ActionCollision {
                action: "get_x".into(),
                first: "method t.S.GetX".into(),
                second: "method t.S.get_x".into(),
            })
        );
        // A method and a stream field mapping to one action.
        assert_eq!(
            test_service(vec![
                method("Note", ".t.A", ".t.A", false),
                method("Events", ".t.Ev", ".t.Ev", true),
            ])
            .err(),
            Some(GatewayError::ActionCollision {
                action: "note".into(),
                first: "stream field t.Ev.note".into(),
                second: "method t.S.Note".into(),
            })
        );
        assert_eq!(
            test_service(vec![method("RequestId", ".t.A", ".t.A", false)]).err(),
            Some(GatewayError::ReservedAction {
                owner: "method t.S.RequestId".into()
            })
        );
        assert_eq!(
            test_service(vec![method("Fail", ".t.A", ".t.Error", false)]).err(),
            Some(GatewayError::ReservedReplyKey {
                method: "t.S.Fail".into(),
                key: "error".into()
            })
        );
        let two = test_service(vec![
            method("E1", ".t.Ev", ".t.Ev", true),
            method("E2", ".t.Ev", ".t.Ev", true),
        ])
        .err();
        assert_eq!(
            two,
            Some(GatewayError::AmbiguousStream {
                service: "t.S".into(),
                methods: vec!["E1".into(), "E2".into()]
            })
        );
        assert_eq!(
            two.map(|e| e.to_string()).as_deref(),
            Some(
                "service t.S has 2 bidirectional streaming methods (E1, E2); choose the stream by name"
            )
        );
        assert_eq!(
            test_service(vec![method("Events", ".t.NoOneof", ".t.Ev", true)]).err(),
            Some(GatewayError::StreamOneofs {
                method: "t.S.Events".into(),
                message: "t.NoOneof".into(),
                found: 0
            })
        );
        assert_eq!(
            test_service(vec![]).err(),
            Some(GatewayError::NoActions {
                service: "t.S".into()
            })
        );
    }
}
