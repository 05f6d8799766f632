//! One `Chat` stream: the rooms it joined, the users it acts as, and what
//! each frame it sends does.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use super::hub::{Hub, Outbox, Tag};
use super::{now_us, validate};
use crate::proto::chat::{self, ChatStream, Code, chat_stream::Event};
use crate::storage::{NewMessage, Write, Writer};

pub struct Session {
    hub: Arc<Hub>,
    writer: Writer<Tag>,
    outbox: Outbox,
    max_content_bytes: usize,
    /// Room -> the user this stream joined it as. Ordered so that the resume
    /// state a gateway keeps is stable.
    joins: BTreeMap<String, String>,
    /// Users this stream acts as; each is counted once in the hub's presence.
    users: HashSet<String>,
}

impl Session {
    pub fn new(
        hub: Arc<Hub>,
        writer: Writer<Tag>,
        outbox: Outbox,
        max_content_bytes: usize,
    ) -> Self {
        Session {
            hub,
            writer,
            outbox,
            max_content_bytes,
            joins: BTreeMap::new(),
            users: HashSet::new(),
        }
    }

    /// Serves the stream until the client ends it, vanishes, falls too far
    /// behind (`overflow`), or the server shuts down. Membership and presence
    /// are undone when the session is dropped, however it ends.
    #[tracing::instrument(name = "chat_stream", skip_all, fields(stream = ?self.outbox.stream()))]
    pub async fn run(
        mut self,
        mut inbound: Streaming<ChatStream>,
        shutdown: CancellationToken,
        overflow: CancellationToken,
    ) {
        tracing::debug!("stream opened");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = overflow.cancelled() => break,
                frame = inbound.message() => match frame {
                    Ok(Some(frame)) => self.handle(frame).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "stream broken by the client");
                        break;
                    }
                },
            }
        }
        tracing::debug!("stream closed");
    }

    async fn handle(&mut self, frame: ChatStream) {
        let request_id = frame.request_id;
        match frame.event {
            Some(Event::ChatMessage(message)) => self.send(message, request_id).await,
            Some(Event::JoinRoom(join)) => {
                if let Err(e) = validate::join_room(&join) {
                    return self
                        .outbox
                        .push_error(Code::InvalidArgument, e.0, request_id);
                }
                if self.join(join).await {
                    self.push_resume();
                }
            }
            Some(Event::LeaveRoom(leave)) => {
                if let Err(e) = validate::room_id(&leave.room_id) {
                    return self
                        .outbox
                        .push_error(Code::InvalidArgument, e.0, request_id);
                }
                if self.joins.remove(&leave.room_id).is_some() {
                    self.hub.leave(&leave.room_id, self.outbox.stream());
                    self.push_resume();
                }
            }
            Some(Event::Resume(resume)) => {
                let mut changed = false;
                for join in resume.joins {
                    if validate::join_room(&join).is_ok() {
                        changed |= self.join(join).await;
                    }
                }
                if changed {
                    self.push_resume();
                }
            }
            Some(Event::Typing(typing)) => {
                if let Err(e) =
                    validate::room_id(&typing.room_id).and(validate::user_id(&typing.user_id))
                {
                    return self
                        .outbox
                        .push_error(Code::InvalidArgument, e.0, request_id);
                }
                if !self
                    .hub
                    .typing(&typing.room_id, self.outbox.stream(), &typing.user_id)
                {
                    self.outbox.push_error(
                        Code::FailedPrecondition,
                        format!("join room {:?} before typing in it", typing.room_id),
                        request_id,
                    );
                }
            }
            Some(Event::Error(_) | Event::Presence(_)) => self.outbox.push_error(
                Code::InvalidArgument,
                "error and presence frames are sent by the server, not to it",
                request_id,
            ),
            None => self.outbox.push_error(
                Code::InvalidArgument,
                "empty frame: set one of chat_message, join_room, leave_room, typing",
                request_id,
            ),
        }
    }

    /// Stores a message; its echo comes back through the hub once committed.
    async fn send(&mut self, mut message: chat::ChatMessage, request_id: Option<String>) {
        if let Err(e) = validate::chat_message(&message, self.max_content_bytes) {
            return self
                .outbox
                .push_error(Code::InvalidArgument, e.0, request_id);
        }
        // Sending to a room joins it, so the sender gets the echo that
        // confirms its message, and every message after it. The store
        // registers the sender with the message itself.
        if self.enter(message.room_id.clone(), &message.sender_id, false) {
            self.push_resume();
        }
        self.act_as(&message.sender_id);
        if message.id.is_empty() {
            message.id = uuid::Uuid::now_v7().to_string();
        }
        let write = Write::Message(NewMessage {
            id: message.id,
            room_id: message.room_id,
            sender_id: message.sender_id,
            content: message.content,
            timestamp_us: now_us(),
        });
        let tag = Tag::Message {
            origin: self.outbox.clone(),
            request_id: request_id.clone(),
        };
        if self.writer.submit(write, tag).await.is_err() {
            self.outbox.push_error(
                Code::Unavailable,
                "the server is shutting down; message not stored",
                request_id,
            );
        }
    }

    /// Joins a room as a user, registering the user if this stream has not
    /// acted as it yet; false if already a member.
    async fn join(&mut self, join: chat::JoinRoom) -> bool {
        let new_user = !self.users.contains(&join.user_id);
        if !self.enter(join.room_id, &join.user_id, true) {
            return false;
        }
        if new_user {
            // Registering is confirmed to nobody, so nobody waits for it.
            let write = Write::EnsureUser {
                user_id: join.user_id,
                now_us: now_us(),
            };
            if self.writer.submit(write, Tag::User(None)).await.is_err() {
                tracing::warn!("user not registered: writer stopped");
            }
        }
        true
    }

    /// Adds this stream to a room as a user; false if already a member.
    /// With `snapshot`, the stream is told who is in the room (an explicit
    /// join asks for it; the implicit join of a send does not, so a sender
    /// gets exactly its echo back).
    fn enter(&mut self, room_id: String, user_id: &str, snapshot: bool) -> bool {
        if self.joins.contains_key(&room_id) {
            return false;
        }
        self.act_as(user_id);
        self.hub.join(&room_id, &self.outbox, user_id, snapshot);
        self.joins.insert(room_id, user_id.to_owned());
        true
    }

    /// Counts this stream as `user_id` being online; true the first time.
    fn act_as(&mut self, user_id: &str) -> bool {
        if self.users.contains(user_id) {
            return false;
        }
        self.users.insert(user_id.to_owned());
        self.hub.user_connected(user_id);
        true
    }

    /// Tells the gateway the state to restore if this stream must be re-opened.
    fn push_resume(&self) {
        let joins = self
            .joins
            .iter()
            .map(|(room_id, user_id)| chat::JoinRoom {
                room_id: room_id.clone(),
                user_id: user_id.clone(),
            })
            .collect();
        self.outbox.push(ChatStream {
            event: Some(Event::Resume(chat::Resume { joins })),
            request_id: None,
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for room_id in self.joins.keys() {
            self.hub.leave(room_id, self.outbox.stream());
        }
        for user_id in &self.users {
            self.hub.user_disconnected(user_id);
        }
    }
}
