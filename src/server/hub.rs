//! Who is in which room, who is online, and the fan-out of stored messages.
//!
//! The hub is in-memory state shared by every `Chat` stream. It never does
//! I/O while holding its locks: fan-out is a `try_send` per member into that
//! member's bounded outbox, so one slow member can never stall a room. A
//! frame for many members is built once and shared (`Arc`): the fan-out on
//! the writer thread costs a reference count per member, and each stream's
//! own task makes the copy tonic encodes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::proto::chat::{self, ChatStream, chat_stream::Event};
use crate::storage::{StoreError, StoredMessage, UserRecord, Written};

/// Identifies one `Chat` stream for as long as the process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(u64);

impl StreamId {
    pub fn next() -> StreamId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        StreamId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The sending side of one stream's bounded outbound queue.
///
/// A full queue means the client reads slower than its rooms talk. Waiting
/// would stall every room it is in, and dropping frames silently would lose
/// messages without anyone knowing, so the stream is ended instead with
/// `RESOURCE_EXHAUSTED`: the client reconnects and catches up from history.
#[derive(Clone)]
pub struct Outbox {
    stream: StreamId,
    tx: mpsc::Sender<Frame>,
    overflow: CancellationToken,
}

/// A frame queued towards a stream, possibly shared with other members.
pub type Frame = Arc<ChatStream>;

impl Outbox {
    pub fn new(stream: StreamId, tx: mpsc::Sender<Frame>, overflow: CancellationToken) -> Self {
        Outbox {
            stream,
            tx,
            overflow,
        }
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Queues a frame without waiting; ends the stream if its queue is full.
    pub fn push(&self, frame: ChatStream) {
        self.push_shared(Arc::new(frame));
    }

    /// Queues a frame shared with other streams.
    pub fn push_shared(&self, frame: Frame) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame)
            && !self.overflow.is_cancelled()
        {
            tracing::warn!(
                stream = self.stream.0,
                "outbound queue full, ending slow stream"
            );
            self.overflow.cancel();
        }
    }

    pub fn push_error(
        &self,
        code: chat::Code,
        message: impl Into<String>,
        request_id: Option<String>,
    ) {
        self.push(ChatStream {
            event: Some(Event::Error(chat::Error {
                code: code as i32,
                message: message.into(),
            })),
            request_id,
        });
    }
}

/// What the writer thread hands back with each committed write.
pub enum Tag {
    /// A chat message from this stream; `request_id` goes on its echo.
    Message {
        origin: Outbox,
        request_id: Option<String>,
    },
    /// A user write; the caller may wait for the result.
    User(Option<oneshot::Sender<Result<UserRecord, StoreError>>>),
}

struct Member {
    outbox: Outbox,
    /// The user this stream joined the room as.
    user_id: String,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Vec<Member>>,
    /// Number of open streams acting as each user.
    online: HashMap<String, usize>,
}

/// Rooms, membership and presence, shared by every stream.
#[derive(Default)]
pub struct Hub {
    // A std Mutex: critical sections are short and never await.
    state: Mutex<State>,
}

impl Hub {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than stopping the chat, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the stream to the room as `user_id` (no-op if it is already a
    /// member) and tells the others if that user was not there yet. With
    /// `snapshot`, the stream also gets everyone who is there.
    pub fn join(&self, room_id: &str, outbox: &Outbox, user_id: &str, snapshot: bool) {
        let mut state = self.state();
        let members = state.rooms.entry(room_id.to_owned()).or_default();
        if members.iter().any(|m| m.outbox.stream == outbox.stream) {
            return;
        }
        if !members.iter().any(|m| m.user_id == user_id) {
            let arrived = Arc::new(presence(
                room_id,
                vec![user_id.to_owned()],
                Vec::new(),
                false,
            ));
            for member in members.iter() {
                member.outbox.push_shared(arrived.clone());
            }
        }
        members.push(Member {
            outbox: outbox.clone(),
            user_id: user_id.to_owned(),
        });
        if snapshot {
            let online: BTreeSet<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
            let online = online.into_iter().map(str::to_owned).collect();
            outbox.push(presence(room_id, online, Vec::new(), true));
        }
    }

    /// Removes the stream from the room (no-op if it is not a member) and
    /// tells the others if its user has no other stream there.
    pub fn leave(&self, room_id: &str, stream: StreamId) {
        let mut state = self.state();
        let Some(members) = state.rooms.get_mut(room_id) else {
            return;
        };
        let Some(index) = members.iter().position(|m| m.outbox.stream == stream) else {
            return;
        };
        let left = members.swap_remove(index);
        if members.is_empty() {
            state.rooms.remove(room_id);
        } else if !members.iter().any(|m| m.user_id == left.user_id) {
            let gone = Arc::new(presence(room_id, Vec::new(), vec![left.user_id], false));
            for member in members.iter() {
                member.outbox.push_shared(gone.clone());
            }
        }
    }

    /// Relays "typing" to the room's members other than `from`; false if
    /// `from` is not a member.
    pub fn typing(&self, room_id: &str, from: StreamId, user_id: &str) -> bool {
        let state = self.state();
        let Some(members) = state.rooms.get(room_id) else {
            return false;
        };
        if !members.iter().any(|m| m.outbox.stream == from) {
            return false;
        }
        let frame = Arc::new(ChatStream {
            event: Some(Event::Typing(chat::Typing {
                room_id: room_id.to_owned(),
                user_id: user_id.to_owned(),
            })),
            request_id: None,
        });
        for member in members.iter().filter(|m| m.outbox.stream != from) {
            member.outbox.push_shared(frame.clone());
        }
        true
    }

    /// One more open stream acts as this user.
    pub fn user_connected(&self, user_id: &str) {
        *self.state().online.entry(user_id.to_owned()).or_default() += 1;
    }

    /// One stream acting as this user has ended.
    pub fn user_disconnected(&self, user_id: &str) {
        let mut state = self.state();
        if let Some(count) = state.online.get_mut(user_id) {
            *count -= 1;
            if *count == 0 {
                state.online.remove(user_id);
            }
        }
    }

    pub fn is_online(&self, user_id: &str) -> bool {
        self.state().online.contains_key(user_id)
    }

    /// Called on the writer thread after each commit, in commit order: this
    /// is what gives every member of a room the same order as the history.
    pub fn committed(&self, results: Vec<(Tag, Result<Written, StoreError>)>) {
        for (tag, result) in results {
            match (tag, result) {
                (Tag::Message { origin, request_id }, Ok(Written::Stored(msg))) => {
                    self.fan_out(msg, &origin, request_id);
                }
                (Tag::Message { origin, request_id }, Ok(Written::Duplicate(msg))) => {
                    origin.push(message_frame(msg, request_id));
                }
                (Tag::Message { origin, request_id }, Err(e)) => {
                    tracing::error!(error = %e, "message not stored");
                    origin.push_error(
                        chat::Code::Unavailable,
                        format!("message not stored: {e}"),
                        request_id,
                    );
                }
                (Tag::User(reply), result) => {
                    if let Some(reply) = reply {
                        let user = result.and_then(|w| match w {
                            Written::User(u) => Ok(u),
                            other => Err(StoreError(format!("unexpected write result {other:?}"))),
                        });
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(user);
                    }
                }
                (Tag::Message { origin, request_id }, Ok(Written::User(_))) => {
                    origin.push_error(chat::Code::Internal, "unexpected write result", request_id);
                }
            }
        }
    }

    /// Sends a newly stored message to every member of its room; the sender's
    /// own copy carries its `request_id` and is its confirmation.
    fn fan_out(&self, msg: StoredMessage, origin: &Outbox, request_id: Option<String>) {
        let room_id = msg.room_id.clone();
        let frame = message_frame(msg, None);
        // The sender's copy differs only by its request_id (if it gave one).
        let own = request_id.map(|id| {
            let mut own = frame.clone();
            own.request_id = Some(id);
            Arc::new(own)
        });
        let frame = Arc::new(frame);
        let own = own.unwrap_or_else(|| frame.clone());
        let state = self.state();
        let mut origin_served = false;
        for member in state.rooms.get(&room_id).into_iter().flatten() {
            if member.outbox.stream == origin.stream {
                member.outbox.push_shared(own.clone());
                origin_served = true;
            } else {
                member.outbox.push_shared(frame.clone());
            }
        }
        drop(state);
        if !origin_served {
            // The sender left the room before its message was committed: it
            // still gets its confirmation.
            origin.push_shared(own);
        }
    }
}

fn presence(
    room_id: &str,
    online: Vec<String>,
    offline: Vec<String>,
    snapshot: bool,
) -> ChatStream {
    ChatStream {
        event: Some(Event::Presence(chat::Presence {
            room_id: room_id.to_owned(),
            online,
            offline,
            snapshot,
        })),
        request_id: None,
    }
}

fn message_frame(msg: StoredMessage, request_id: Option<String>) -> ChatStream {
    ChatStream {
        event: Some(Event::ChatMessage(chat::ChatMessage::from(msg))),
        request_id,
    }
}
